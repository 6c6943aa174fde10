"""What a schema indexes: its sets, what feeds each, and what it cannot index and why.

Every relation and permission of a SpiceDB schema or OpenFGA model whose rewrite is a
union is an indexed *set*, one per object (``doc:1#view``). What feeds a set:

* ``direct``    the relation's own stored tuples (``doc:1#viewer@user:anne``): a leaf
                member, or a nested set when the subject is a userset of an indexed
                set; only subject types the relation allows (others are skipped and
                counted, as OpenFGA ignores them and SpiceDB refuses to write them);
* ``computed``  another relation of the same object: ``doc:X#view ⊇ doc:X#edit`` for
                every object ``doc:X`` that has a stored tuple;
* ``arrow``     a relation of what a tupleset relation points to: for every tuple
                ``doc:X#parent@folder:F``, ``doc:X#view ⊇ folder:F#view``.

So one closure serves them all: computed and arrow feeds are edges between sets,
*derived* from the stored tuples and kept apart from the edges tuples make directly.

Not indexed, with the reason recorded: a rewrite with an intersection (``&``, ``and``),
an exclusion (``-``, ``but not``) or an ``.all()`` arrow; a relation that allows
caveated, conditional or expiring subjects; an arrow over a relation that allows
usersets or wildcards; and anything that depends on what is not indexed (a computed
or arrow feed of it, or a userset of it allowed as a subject). ``only`` narrows the
index to the named sets and what they depend on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from leopard.errors import InvalidSchema
from leopard.model.schema.ast import (
    Arrow,
    Computed,
    Exclusion,
    Intersection,
    Nil,
    Rewrite,
    Schema,
    Self,
    This,
    Union,
)

__all__ = ["Feed", "SetPlan", "Plan", "compile_schema", "same_object"]

SetKey = tuple[str, str]  # (type, relation)


@dataclass(frozen=True)
class Feed:
    """One way a set is fed: ``direct`` tuples, a ``computed`` relation of the same
    object, or an ``arrow`` to ``relation`` over the tupleset relation ``tupleset``."""

    kind: str
    relation: str
    tupleset: str | None = None

    def __str__(self) -> str:
        if self.kind == "arrow":
            return f"{self.tupleset}->{self.relation}"
        return self.relation if self.kind == "computed" else "its own tuples"


@dataclass(frozen=True)
class SetPlan:
    """An indexed set and its feeds; ``allowed`` are the subject kinds its own tuples
    may name (``user``, ``user:*``, ``group#member``)."""

    type: str
    relation: str
    feeds: tuple[Feed, ...]
    allowed: frozenset[str] = frozenset()

    @property
    def direct(self) -> bool:
        return any(f.kind == "direct" for f in self.feeds)


@dataclass
class Plan:
    """The compiled schema: indexed sets, refused ones (with why), and lookups."""

    sets: dict[SetKey, SetPlan]
    refused: dict[SetKey, str]
    schema: Schema
    #: the sets that groups are made of: every set named as a userset subject
    #: (``group#member``) and every set below one. Their closures are whole, as in a
    #: group index; the other sets (a document's ``view``, a folder's ``edit``) are the
    #: *resource tier*, whose closures stop at the first group set they reach, so that
    #: a document does not carry the whole of every group that may see it.
    group_tier: frozenset[SetKey] = frozenset()
    _arrows: dict[SetKey, list[tuple[str, str, int]]] = field(default_factory=dict)
    _computed: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)
    _per_type: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _including: dict[SetKey, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        per_type: dict[str, list[str]] = {}
        for (t, r), sp in self.sets.items():
            per_type.setdefault(t, []).append(r)
            for bit, f in enumerate(sp.feeds):
                if f.kind == "arrow":
                    assert f.tupleset is not None
                    self._arrows.setdefault((t, f.tupleset), []).append((r, f.relation, bit))
                elif f.kind == "computed":
                    self._computed.setdefault(t, []).append((r, f.relation, bit))
        self._per_type = {t: tuple(rs) for t, rs in per_type.items()}

    # -- lookups ------------------------------------------------------------------------

    def including(self, type: str, relation: str) -> tuple[str, ...]:
        """The sets of ``type`` that hold ``type:X#relation`` for every object ``X``
        (``same_object``), in the order of ``sets_of``; remembered."""
        found = self._including.get((type, relation))
        if found is None:
            found = tuple(p for p in self.sets_of(type) if same_object(self, type, p, relation))
            self._including[(type, relation)] = found
        return found

    def is_set(self, type: str, relation: str) -> bool:
        return (type, relation) in self.sets

    def sets_of(self, type: str) -> tuple[str, ...]:
        return self._per_type.get(type, ())

    def direct(self, type: str, relation: str) -> SetPlan | None:
        """The set a stored ``type#relation`` tuple feeds directly, if any."""
        sp = self.sets.get((type, relation))
        return sp if sp is not None and sp.direct else None

    def arrows(self, type: str, tupleset: str) -> list[tuple[str, str, int]]:
        """``(set relation, target relation, feed index)`` of the arrows over a tupleset."""
        return self._arrows.get((type, tupleset), [])

    def arrow_tuplesets(self) -> list[SetKey]:
        """Every ``(type, tupleset relation)`` an arrow reads."""
        return sorted(self._arrows)

    def computed(self, type: str) -> list[tuple[str, str, int]]:
        """``(set relation, same-object relation, feed index)`` of a type's computed feeds."""
        return self._computed.get(type, [])

    def has_computed(self, type: str) -> bool:
        return type in self._computed

    def direct_relations(self, type: str) -> list[str]:
        """The relations of a type whose own tuples are indexed (an object exists, for
        its computed feeds, while one of these holds a tuple of it)."""
        return [r for r in self.sets_of(type) if self.sets[(type, r)].direct]

    def is_resource(self, type: str, relation: str) -> bool:
        """Whether an indexed set is of the resource tier (see ``group_tier``)."""
        return (type, relation) not in self.group_tier

    def why_not(self, type: str, relation: str) -> str | None:
        """Why ``type#relation`` is not an indexed set (None when it is one)."""
        if (type, relation) in self.sets:
            return None
        reason = self.refused.get((type, relation))
        if reason is not None:
            return reason
        if type not in self.schema.types:
            return f"the schema has no type {type!r}"
        return f"the type {type!r} has no relation or permission {relation!r}"


def subject_kind(type: str, relation: str | None, wildcard: bool) -> str:
    """How an allowed subject type is written: ``user``, ``user:*``, ``group#member``."""
    if wildcard:
        return f"{type}:*"
    return f"{type}#{relation}" if relation is not None else type


def _terms(rewrite: Rewrite, where: str) -> tuple[list[Rewrite], str | None]:
    """The terms of a union-only rewrite, or the reason it is not one."""
    if isinstance(rewrite, Union):
        out: list[Rewrite] = []
        for child in rewrite.children:
            terms, why = _terms(child, where)
            if why is not None:
                return [], why
            out += terms
        return out, None
    if isinstance(rewrite, Intersection):
        return [], "uses an intersection (&, and): not a union"
    if isinstance(rewrite, Exclusion):
        return [], "uses an exclusion (-, but not): not a union"
    if isinstance(rewrite, Arrow) and rewrite.all:
        return [], f"uses {rewrite.tupleset}.all({rewrite.relation}): not a union"
    if isinstance(rewrite, Nil):
        return [], None
    if isinstance(rewrite, Self):
        return [], "uses self (the object as its own subject): not indexed"
    return [rewrite], None


def compile_schema(schema: Schema, only: Iterable[str] = ()) -> Plan:
    """Decide what ``schema`` indexes (see the module docstring).

    ``only`` names ``type#relation`` sets: then just those and what they depend on are
    indexed; a name the schema does not have is an InvalidSchema error.
    """
    candidates: dict[SetKey, SetPlan] = {}
    refused: dict[SetKey, str] = {}
    deps: dict[SetKey, set[SetKey]] = {}
    below: dict[SetKey, set[SetKey]] = {}  # the sets whose members a set's edges reach
    nested: set[SetKey] = set()  # sets named as userset subjects
    for tname, typedef in schema.types.items():
        for rname, rel in typedef.relations.items():
            key = (tname, rname)
            terms, why = _terms(rel.rewrite, f"{tname}#{rname}")
            if why is not None:
                refused[key] = why
                continue
            feeds: list[Feed] = []
            need: set[SetKey] = set()
            reach: set[SetKey] = set()
            allowed: set[str] = set()
            for term in terms:
                if isinstance(term, This):
                    for st in rel.types:
                        if st.caveat is not None:
                            why = f"allows subjects with a caveat or condition ({st})"
                        elif st.expiration:
                            why = f"allows expiring subjects ({st})"
                        if why is not None:
                            break
                        allowed.add(subject_kind(st.type, st.relation, st.wildcard))
                        if st.relation is not None:
                            need.add((st.type, st.relation))
                            reach.add((st.type, st.relation))
                            nested.add((st.type, st.relation))
                    feed = Feed("direct", rname)
                elif isinstance(term, Computed):
                    feed = Feed("computed", term.relation)
                    need.add((tname, term.relation))
                    reach.add((tname, term.relation))
                else:
                    assert isinstance(term, Arrow)
                    feed = Feed("arrow", term.relation, term.tupleset)
                    ts = typedef.relations.get(term.tupleset)
                    if ts is None:
                        why = f"its arrow reads {term.tupleset!r}, which {tname!r} does not have"
                    else:
                        need.add((tname, term.tupleset))
                        for st in ts.types:
                            if st.relation is not None or st.wildcard:
                                why = (
                                    f"its arrow {term.tupleset}->{term.relation} reads "
                                    f"{term.tupleset!r}, which allows {st}: an arrow needs "
                                    "plain objects"
                                )
                                break
                            target = schema.types.get(st.type)
                            if target is not None and term.relation in target.relations:
                                need.add((st.type, term.relation))
                                reach.add((st.type, term.relation))
                if why is not None:
                    break
                if feed not in feeds:
                    feeds.append(feed)
            if why is not None:
                refused[key] = why
                continue
            candidates[key] = SetPlan(tname, rname, tuple(feeds), frozenset(allowed))
            deps[key] = need
            below[key] = reach
    # Anything that depends on a refused set is refused in turn, until nothing changes.
    changed = True
    while changed:
        changed = False
        for key in list(candidates):
            bad = sorted(d for d in deps[key] if d not in candidates)
            if bad:
                t, r = bad[0]
                why_dep = refused.get(bad[0], "it is not indexed")
                refused[key] = f"depends on {t}#{r}, which is not indexed ({why_dep})"
                del candidates[key]
                changed = True
    wanted = list(only)
    if wanted:
        keep: set[SetKey] = set()
        todo: list[SetKey] = []
        for name in wanted:
            t, sep, r = name.partition("#")
            if not sep or (t, r) not in candidates and (t, r) not in refused:
                raise InvalidSchema(
                    f"--only {name!r}: the schema has no set {name!r} (expected TYPE#RELATION)"
                )
            if (t, r) in refused:
                raise InvalidSchema(f"--only {name!r}: not indexable: {refused[(t, r)]}")
            todo.append((t, r))
        while todo:
            key = todo.pop()
            if key not in keep:
                keep.add(key)
                todo += deps[key]
        for key in list(candidates):
            if key not in keep:
                refused[key] = "not asked for (--only)"
                del candidates[key]
    # The group tier: sets named as userset subjects, and every set below them. Nothing
    # in it leads back out of it, so a path from a set to a member runs through resource
    # sets first, then group sets (see ``Plan.group_tier``).
    tier: set[SetKey] = set()
    todo = [k for k in nested if k in candidates]
    while todo:
        key = todo.pop()
        if key not in tier:
            tier.add(key)
            todo += [k for k in below.get(key, ()) if k in candidates]
    return Plan(candidates, refused, schema, group_tier=frozenset(tier))


def same_object(plan: Plan | None, type: str, permission: str, relation: str) -> bool:
    """Whether ``type:X#relation`` is in ``type:X#permission`` for every object ``X``:
    the same relation, or one ``permission`` includes through computed terms alone."""
    if relation == permission:
        return True
    if plan is None:
        return False
    seen = {permission}
    todo = [permission]
    while todo:
        sp = plan.sets.get((type, todo.pop()))
        for feed in sp.feeds if sp is not None else ():
            if feed.kind == "computed" and feed.relation not in seen:
                if feed.relation == relation:
                    return True
                seen.add(feed.relation)
                todo.append(feed.relation)
    return False
