"""The model both schema dialects parse into: types, relations and their rewrites.

A schema is a set of object types (``TypeDef``), each with named relations
(``Relation``). A relation's ``rewrite`` says which subjects it holds:

* ``This()``            the relation's own stored tuples (a SpiceDB ``relation``,
                        OpenFGA's ``[types]``); ``types`` lists the subject types they
                        may name,
* ``Computed(r)``       relation ``r`` of the same object (SpiceDB ``+ edit``,
                        OpenFGA ``or editor``),
* ``Arrow(t, r)``       relation ``r`` of every object the tupleset relation ``t``
                        points to (SpiceDB ``parent->view``, OpenFGA ``view from
                        parent``); ``all=True`` is SpiceDB's ``parent.all(view)``,
* ``Union``, ``Intersection``, ``Exclusion`` of those, ``Nil()`` (no subject) and
  ``Self()`` (the object itself, SpiceDB's ``self``).

Each parser keeps the shape its peer compiles the text to: SpiceDB flattens a union
of unions into one (``a + (b + c)`` is ``Union(a, b, c)``), OpenFGA keeps the nesting
its parentheses give (``(a or b) or c`` is ``Union(Union(a, b), c)``).

Nodes carry the ``line`` and ``column`` they start at in the source (None for the
JSON form); they take no part in equality, so a schema printed and parsed again
equals the first. ``Schema`` equality likewise ignores ``source`` and ``filename``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from leopard.errors import InvalidSchema

__all__ = [
    "MAX_NESTING",
    "Arrow",
    "Dialect",
    "Kind",
    "Computed",
    "Condition",
    "Exclusion",
    "Intersection",
    "Nil",
    "Self",
    "Relation",
    "Rewrite",
    "Schema",
    "SubjectType",
    "This",
    "TypeDef",
    "Union",
    "fail",
    "walk",
]

Dialect = Literal["spicedb", "openfga"]
Kind = Literal["relation", "permission"]


#: how deep parentheses (or a JSON model's usersets) may nest in one rewrite: deeper is
#: refused with its place, not read until Python's recursion limit stops the reader
MAX_NESTING = 100


def fail(filename: str, line: int | None, column: int | None, message: str) -> InvalidSchema:
    """The error for ``message`` at a place: ``file:line:column: message``."""
    where = filename
    if line is not None:
        where += f":{line}"
        if column is not None:
            where += f":{column}"
    return InvalidSchema(f"{where}: {message}")


def _pos() -> Any:
    """A position field: kept, shown by no repr, and no part of equality."""
    return field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SubjectType:
    """An allowed subject type of a relation: ``user``, ``group#member``, ``user:*``.

    ``caveat`` is the SpiceDB caveat or OpenFGA condition a tuple must carry
    (``user with cond``); ``expiration`` is SpiceDB's ``with expiration``.
    """

    type: str
    relation: str | None = None
    wildcard: bool = False
    caveat: str | None = None
    expiration: bool = False
    line: int | None = _pos()
    column: int | None = _pos()

    def __str__(self) -> str:
        text = self.type + (":*" if self.wildcard else "")
        if self.relation is not None:
            text += f"#{self.relation}"
        traits = [t for t in (self.caveat, "expiration" if self.expiration else None) if t]
        return text + (" with " + " and ".join(traits) if traits else "")


@dataclass(frozen=True)
class This:
    """The relation's own stored tuples."""

    line: int | None = _pos()
    column: int | None = _pos()


@dataclass(frozen=True)
class Computed:
    """Another relation of the same object."""

    relation: str
    line: int | None = _pos()
    column: int | None = _pos()


@dataclass(frozen=True)
class Arrow:
    """``relation`` of the objects that ``tupleset`` points to (all of them if ``all``)."""

    tupleset: str
    relation: str
    all: bool = False
    line: int | None = _pos()
    column: int | None = _pos()


@dataclass(frozen=True)
class Union:
    """Subjects in any child."""

    children: tuple[Rewrite, ...]
    line: int | None = _pos()
    column: int | None = _pos()


@dataclass(frozen=True)
class Intersection:
    """Subjects in every child."""

    children: tuple[Rewrite, ...]
    line: int | None = _pos()
    column: int | None = _pos()


@dataclass(frozen=True)
class Exclusion:
    """Subjects of ``base`` that are not in ``subtract``."""

    base: Rewrite
    subtract: Rewrite
    line: int | None = _pos()
    column: int | None = _pos()


@dataclass(frozen=True)
class Nil:
    """No subject at all (SpiceDB's ``nil``)."""

    line: int | None = _pos()
    column: int | None = _pos()


@dataclass(frozen=True)
class Self:
    """The object itself as its subject (SpiceDB's ``self``, after ``use self``)."""

    line: int | None = _pos()
    column: int | None = _pos()


Rewrite = This | Computed | Arrow | Union | Intersection | Exclusion | Nil | Self


def walk(rewrite: Rewrite) -> Iterator[Rewrite]:
    """Every node of a rewrite, the root first, children left to right."""
    yield rewrite
    if isinstance(rewrite, (Union, Intersection)):
        for child in rewrite.children:
            yield from walk(child)
    elif isinstance(rewrite, Exclusion):
        yield from walk(rewrite.base)
        yield from walk(rewrite.subtract)


@dataclass(frozen=True)
class Relation:
    """A relation or permission of a type.

    A SpiceDB ``relation`` is ``kind="relation"`` with rewrite ``This()``; a
    ``permission`` has an expression and no types. An OpenFGA ``define`` is a
    ``"relation"`` when its rewrite is its own tuples alone (``[user]``) and a
    ``"permission"`` otherwise; it may then still hold tuples (``[user] or editor``),
    whose ``types`` it lists.
    """

    name: str
    kind: Kind
    types: tuple[SubjectType, ...]
    rewrite: Rewrite
    line: int | None = _pos()
    column: int | None = _pos()


@dataclass(frozen=True)
class TypeDef:
    """An object type and its relations, in source order."""

    name: str
    relations: dict[str, Relation]
    line: int | None = _pos()
    column: int | None = _pos()


@dataclass(frozen=True)
class Condition:
    """A SpiceDB caveat or an OpenFGA condition.

    ``parameters`` are ``(name, type)`` pairs with the type as written
    (``int``, ``map<string>``); ``expression`` is the CEL text, which Leopard keeps but
    never evaluates.
    """

    name: str
    parameters: tuple[tuple[str, str], ...]
    expression: str
    line: int | None = _pos()
    column: int | None = _pos()


@dataclass(frozen=True)
class Schema:
    """A parsed schema.

    ``conditions`` names the caveats (SpiceDB, in source order) or conditions
    (OpenFGA, by name: its model keeps them in a map, their parameters too);
    ``condition_defs`` holds them whole. ``source`` is the text parsed (the
    JSON text for a model given as a dict) and ``filename`` where it came from.
    """

    types: dict[str, TypeDef]
    conditions: tuple[str, ...]
    dialect: Dialect
    source: str = field(default="", compare=False, repr=False)
    filename: str = field(default="<schema>", compare=False)
    condition_defs: tuple[Condition, ...] = ()
    schema_version: str | None = None

    def relation(self, type: str, name: str) -> Relation | None:
        """The relation ``name`` of ``type``, or None when either is not defined."""
        typedef = self.types.get(type)
        return None if typedef is None else typedef.relations.get(name)
