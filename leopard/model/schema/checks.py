"""The references of a parsed schema, checked as each peer's validation checks them.

Both dialects refuse an allowed subject type or a ``type#relation`` that is not
defined, an unknown caveat or condition, a computed relation that the type does not
define, and an arrow whose left side (the tupleset) is not a relation that stores
tuples. Then each peer adds its own rules:

* SpiceDB: a subject type may not be listed twice; no wildcard may be included through
  a relation of another definition (``group#member`` where ``member`` allows
  ``user:*``; one of the relation's own definition is taken), nor sit on an arrow's
  left side; permissions that are plain aliases of each other may not form a cycle.
* OpenFGA: a tupleset's types must be plain types (no ``#relation``, no wildcard), the
  arrow's relation must be defined on at least one of them, a relation holds its own
  tuples exactly when it lists subject types, relations may not be computed from each
  other in a cycle (OpenFGA's ``HasCycle``), every relation must be able to hold a
  subject (an entrypoint: some path to stored tuples of a plain type or a wildcard),
  and ``self`` and ``this`` are reserved.

Also here: the name rules of OpenFGA schemas, whose names must also be Leopard names
(``leopard.model.names``) to be indexed; every name OpenFGA takes is one, but for a
control character and the relation ``...``.
"""

from __future__ import annotations

from leopard.errors import InvalidSchema
from leopard.model.names import MAX_OPENFGA_RELATION_CHARS, namespace_problem, relation_problem
from leopard.model.schema.ast import (
    Arrow,
    Computed,
    Exclusion,
    Intersection,
    Relation,
    Rewrite,
    Schema,
    SubjectType,
    This,
    TypeDef,
    Union,
    fail,
    walk,
)

__all__ = ["check_schema", "openfga_name_problem"]


def openfga_name_problem(name: str, *, is_type: bool) -> str | None:
    """Why an OpenFGA type or relation name cannot be used, or None when it can.

    OpenFGA's rules (``^[^:#@\\s]{1,254}$`` for a type, ``^[^:#@\\s]{1,50}$`` for a
    relation, ``self`` and ``this`` reserved) and Leopard's grammar, which takes every
    such name but those with a control character (no tuple can hold one) and the
    relation ``...`` (SpiceDB's ellipsis).
    """
    what = "type" if is_type else "relation"
    if name in ("self", "this"):
        return f"{what} name {name!r} is reserved in OpenFGA"
    if is_type:
        return namespace_problem(name, "type name")
    if len(name) > MAX_OPENFGA_RELATION_CHARS:
        shown = name if len(name) <= 120 else name[:100] + "..."
        return (
            f"relation name {shown!r} is over OpenFGA's limit of {MAX_OPENFGA_RELATION_CHARS} "
            f"characters ({len(name):,})"
        )
    return relation_problem(name, "relation name")


def check_schema(schema: Schema) -> None:
    """Raise InvalidSchema for the first reference the schema's peer would refuse."""
    if schema.dialect != "spicedb" and not schema.types:
        raise fail(schema.filename, None, None, "the model defines no type; OpenFGA needs one")
    checker = _Checker(schema)
    for typedef in schema.types.values():
        for relation in typedef.relations.values():
            checker.relation(typedef, relation)
    for typedef in schema.types.values():
        checker.cycles(typedef)
    if not checker.spicedb:
        checker.entrypoints()


class _Checker:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.spicedb = schema.dialect == "spicedb"
        self.caveat_word = "caveat" if self.spicedb else "condition"

    def error(self, node: object, owner: str, message: str) -> InvalidSchema:
        line = getattr(node, "line", None)
        column = getattr(node, "column", None)
        return fail(self.schema.filename, line, column, f"{owner}: {message}")

    def relation(self, typedef: TypeDef, rel: Relation) -> None:
        owner = f"{rel.kind} {rel.name!r} of {typedef.name!r}"
        seen: set[SubjectType] = set()
        for subject in rel.types:
            self.subject(typedef, owner, subject)
            if subject in seen and self.spicedb:  # OpenFGA takes '[user, user]'
                raise self.error(subject, owner, f"{str(subject)!r} is listed twice")
            seen.add(subject)
        reads_own = any(isinstance(node, This) for node in walk(rel.rewrite))
        if reads_own and not rel.types:
            raise self.error(rel, owner, "it holds its own tuples but allows no subject type")
        if rel.types and not reads_own:
            raise self.error(
                rel, owner, "it lists subject types but its rewrite never reads its own tuples"
            )
        for node in walk(rel.rewrite):
            if isinstance(node, Computed):
                if node.relation not in typedef.relations:
                    raise self.error(
                        node, owner, f"{node.relation!r} is not defined on {typedef.name!r}"
                    )
            elif isinstance(node, Arrow):
                self.arrow(typedef, owner, node)

    def subject(self, typedef: TypeDef, owner: str, subject: SubjectType) -> None:
        target = self.schema.types.get(subject.type)
        if target is None:
            raise self.error(subject, owner, f"subject type {subject.type!r} is not defined")
        if subject.relation is not None and subject.relation not in target.relations:
            raise self.error(
                subject,
                owner,
                f"{subject.type!r} has no relation {subject.relation!r} (in {str(subject)!r})",
            )
        if subject.caveat is not None and subject.caveat not in self.schema.conditions:
            hint = ""
            if self.spicedb and subject.caveat == "expiration":
                hint = " ('use expiration' at the top of the schema enables expiring tuples)"
            raise self.error(
                subject, owner, f"no {self.caveat_word} named {subject.caveat!r} is defined{hint}"
            )
        if self.spicedb and subject.relation is not None and subject.type != typedef.name:
            # SpiceDB takes a wildcard through a userset of the relation's own definition
            # (``relation viewer: doc#member`` in ``doc``, ``member: user:*``), and
            # answers through it; only one of another definition is refused.
            found = self.wildcard_in(subject.type, subject.relation, set())
            if found:
                raise self.error(
                    subject,
                    owner,
                    f"{str(subject)!r} includes the wildcard {found[0]!r} through "
                    f"{found[1]!r}; SpiceDB does not allow a wildcard to be included through "
                    "a relation of another definition",
                )

    def wildcard_in(self, type: str, relation: str, seen: set[str]) -> tuple[str, str] | None:
        """A wildcard a SpiceDB relation allows, directly or through ``type#relation``."""
        key = f"{type}#{relation}"
        rel = self.schema.relation(type, relation)
        if key in seen or rel is None:
            return None
        seen.add(key)
        for subject in rel.types:
            if subject.wildcard:
                return f"{subject.type}:*", key
            if subject.relation is not None:
                found = self.wildcard_in(subject.type, subject.relation, seen)
                if found:
                    return found
        return None

    def arrow(self, typedef: TypeDef, owner: str, node: Arrow) -> None:
        spelled = (
            f"'{node.tupleset}->{node.relation}'"
            if self.spicedb
            else f"'{node.relation} from {node.tupleset}'"
        )
        tupleset = typedef.relations.get(node.tupleset)
        if tupleset is None:
            raise self.error(
                node,
                owner,
                f"the arrow {spelled} starts from {node.tupleset!r}, which {typedef.name!r} "
                "does not define",
            )
        if tupleset.kind != "relation":
            if self.spicedb:
                message = f"the left side of an arrow must be a relation, and {node.tupleset!r}"
                message += " is a permission"
            else:
                message = (
                    f"{node.tupleset!r} is the tupleset of {spelled}, so it must be a "
                    "direct relation (only '[types]'), not a rewrite"
                )
            raise self.error(node, owner, message)
        if self.spicedb:
            found = self.wildcard_in(typedef.name, node.tupleset, set())
            if found:
                raise self.error(
                    node,
                    owner,
                    f"the left side of the arrow {spelled} allows the wildcard {found[0]!r} "
                    f"(through {found[1]!r}); wildcards cannot be used on the left of an arrow",
                )
            return
        for subject in tupleset.types:
            if subject.relation is not None or subject.wildcard:
                raise self.error(
                    node,
                    owner,
                    f"{node.tupleset!r} is the tupleset of {spelled}, so its types must be "
                    f"plain types, not {str(subject)!r}",
                )
        if not any(
            self.schema.relation(subject.type, node.relation) is not None
            for subject in tupleset.types
        ):
            names = ", ".join(sorted({repr(s.type) for s in tupleset.types}))
            raise self.error(
                node,
                owner,
                f"{spelled}: no type that {node.tupleset!r} allows ({names}) has a relation "
                f"{node.relation!r}",
            )

    def cycles(self, typedef: TypeDef) -> None:
        """SpiceDB: permissions that alias each other; OpenFGA: any computed cycle."""
        edges: dict[str, list[str]] = {}
        for rel in typedef.relations.values():
            if self.spicedb:
                alias = rel.rewrite
                if rel.kind == "permission" and isinstance(alias, Computed):
                    target = typedef.relations.get(alias.relation)
                    if target is not None and target.kind == "permission":
                        edges[rel.name] = [alias.relation]
            else:
                edges[rel.name] = list(_computed(rel.rewrite))
        state: dict[str, int] = {}  # 1: on the path, 2: done
        path: list[str] = []

        def visit(name: str) -> None:
            state[name] = 1
            path.append(name)
            for nxt in edges.get(name, ()):
                if state.get(nxt) == 1:
                    cycle = [*path[path.index(nxt) :], nxt]
                    rel = typedef.relations[cycle[0]]
                    shown = " -> ".join(repr(n) for n in cycle)
                    how = "are aliases of each other" if self.spicedb else "are computed"
                    raise fail(
                        self.schema.filename,
                        rel.line,
                        rel.column,
                        f"{shown} of {typedef.name!r} {how} in a cycle",
                    )
                if nxt not in state:
                    visit(nxt)
            path.pop()
            state[name] = 2

        for name in edges:
            if name not in state:
                visit(name)

    def entrypoints(self) -> None:
        """OpenFGA: every relation can hold a subject through some path to stored tuples."""
        types = self.schema.types
        live: set[tuple[str, str]] = set()
        changed = True
        while changed:  # the least fixpoint: a loop with no way out stays dead
            changed = False
            for typedef in types.values():
                for rel in typedef.relations.values():
                    key = (typedef.name, rel.name)
                    if key not in live and self.reaches(typedef, rel, rel.rewrite, live):
                        live.add(key)
                        changed = True
        for typedef in types.values():
            for rel in typedef.relations.values():
                if (typedef.name, rel.name) not in live:
                    raise self.error(
                        rel,
                        f"relation {rel.name!r} of {typedef.name!r}",
                        "it can never hold a subject: no path leads from it to tuples of a "
                        "plain type or a wildcard (OpenFGA: no entrypoint)",
                    )

    def reaches(
        self, typedef: TypeDef, rel: Relation, rewrite: Rewrite, live: set[tuple[str, str]]
    ) -> bool:
        if isinstance(rewrite, This):
            return any(s.relation is None or (s.type, s.relation) in live for s in rel.types)
        if isinstance(rewrite, Computed):
            return (typedef.name, rewrite.relation) in live
        if isinstance(rewrite, Arrow):
            tupleset = typedef.relations[rewrite.tupleset]
            return any((s.type, rewrite.relation) in live for s in tupleset.types)
        if isinstance(rewrite, Union):
            return any(self.reaches(typedef, rel, c, live) for c in rewrite.children)
        if isinstance(rewrite, Intersection):
            return all(self.reaches(typedef, rel, c, live) for c in rewrite.children)
        if isinstance(rewrite, Exclusion):
            return self.reaches(typedef, rel, rewrite.base, live)
        return False


def _computed(rewrite: Rewrite) -> list[str]:
    """The relations a rewrite computes from directly (arrows and own tuples excluded)."""
    if isinstance(rewrite, Computed):
        return [rewrite.relation]
    if isinstance(rewrite, (Union, Intersection)):
        return [name for child in rewrite.children for name in _computed(child)]
    if isinstance(rewrite, Exclusion):
        return _computed(rewrite.base) + _computed(rewrite.subtract)
    return []
