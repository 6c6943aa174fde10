"""A plain model of the index: Python sets walked by breadth-first search.

The property tests build a real index and this model from the same tuples and
compare every answer. The model is deliberately naive: it keeps the direct edges
and direct leaf members as dicts of sets and answers every question by BFS over
them, with no closures, ids or bitmaps, so that it is obviously right by reading.

Semantics (``leopard/index.py`` docstrings are the spec):

* a tuple feeds the index when ``config.feeds(resource_ns, relation)`` names set
  relations; it then feeds the group ``ns:id#set`` of each of them;
* its subject is a nested group when it is a userset ``ns:id#rel`` of an indexed
  set (``config.is_set``), otherwise a leaf: ``ns:id`` (``#...`` is the same), a
  wildcard ``ns:*``, or an opaque userset ``ns:id#rel`` of an unindexed relation;
* a leaf is in ``g`` when a group reachable from ``g`` (``g`` included) holds it
  directly, or holds the wildcard of its namespace (a wildcard itself only counts
  as the literal leaf ``ns:*``); a set is in ``g`` when reachable from ``g``.

With a schema (``config.plan``), three more kinds of edges, added as plainly:

* a tuple whose subject type its relation does not allow is skipped;
* an arrow ``P = ... + t->R`` of type ``T``: for every indexed tuple ``T:X#t@S:Y``
  (a plain object, ``S#R`` an indexed set), ``T:X#P -> S:Y#R``;
* a computed ``P = ... + R``: for every object ``T:X`` with an indexed tuple,
  ``T:X#P -> T:X#R``;
* a set subject ``T:X#R`` is also held by every set ``T:X#P`` whose relation includes
  ``R`` through computed terms alone, tuples or not (as both peers count it); a
  namespace's wildcard ``T:*`` holds usersets of ``T`` (indexed or opaque) with a
  SpiceDB schema, none with an OpenFGA model.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from leopard.model.config import Config
from leopard.model.names import RelationTuple, parse_tuple
from leopard.model.plan import same_object

__all__ = ["Oracle", "NotASet"]


def _type(obj: str) -> str:
    return obj.split(":", 1)[0]


class NotASet(Exception):
    """A well-formed group name that names no indexed set (the index raises InvalidInput)."""


class Oracle:
    """Direct edges and direct leaf members of every group, queried by BFS."""

    def __init__(self, tuples: Iterable[str | RelationTuple], config: Config) -> None:
        self.config = config
        self.children: dict[str, set[str]] = {}  # group -> directly nested groups
        self.leaves: dict[str, set[str]] = {}  # group -> direct leaf members
        self.groups: set[str] = set()  # every group named by an indexed tuple
        self.skipped = 0
        self.indexed = 0
        self.objects: set[tuple[str, str]] = set()  # (type, object) with an indexed tuple
        kept: list[RelationTuple] = []
        for item in tuples:
            t = parse_tuple(item) if isinstance(item, str) else item
            if self._add(t):
                kept.append(t)
        if config.plan is not None:
            self._derive(kept)
        self._reach: dict[str, frozenset[str]] = {}

    def _edge(self, group: str, child: str) -> None:
        for g in (group, child):
            self.groups.add(g)
            self.children.setdefault(g, set())
            self.leaves.setdefault(g, set())
        self.children[group].add(child)

    def _derive(self, kept: list[RelationTuple]) -> None:
        plan = self.config.plan
        assert plan is not None
        for t in kept:
            for set_rel, target, _ in plan.arrows(t.resource_type, t.relation):
                plain = t.subject_relation is None and t.subject_id != "*"
                if plain and plan.is_set(t.subject_type, target):
                    self._edge(
                        f"{t.resource_type}:{t.resource_id}#{set_rel}",
                        f"{t.subject_type}:{t.subject_id}#{target}",
                    )
        for type_name, obj in self.objects:
            for set_rel, target, _ in plan.computed(type_name):
                self._edge(f"{obj}#{set_rel}", f"{obj}#{target}")

    def _add(self, t: RelationTuple) -> bool:
        set_rels = self.config.feeds(t.resource_type, t.relation)
        if not set_rels or not self._allowed(t):
            self.skipped += 1
            return False
        self.indexed += 1
        self.objects.add((t.resource_type, f"{t.resource_type}:{t.resource_id}"))
        srel = t.subject_relation
        if srel == "...":
            srel = None
        for set_rel in set_rels:
            group = f"{t.resource_type}:{t.resource_id}#{set_rel}"
            self.groups.add(group)
            self.children.setdefault(group, set())
            self.leaves.setdefault(group, set())
            if srel is not None and self.config.is_set(t.subject_type, srel):
                child = f"{t.subject_type}:{t.subject_id}#{srel}"
                self.groups.add(child)
                self.children.setdefault(child, set())
                self.leaves.setdefault(child, set())
                self.children[group].add(child)
            elif srel is None:
                self.leaves[group].add(f"{t.subject_type}:{t.subject_id}")
            else:
                self.leaves[group].add(f"{t.subject_type}:{t.subject_id}#{srel}")
        return True

    def _allowed(self, t: RelationTuple) -> bool:
        """Whether a schema's relation allows the tuple's subject type (no schema: yes)."""
        plan = self.config.plan
        if plan is None:
            return True
        allowed = plan.sets[(t.resource_type, t.relation)].allowed
        if t.subject_relation is not None:
            return f"{t.subject_type}#{t.subject_relation}" in allowed
        if t.subject_id == "*":
            return f"{t.subject_type}:*" in allowed
        return t.subject_type in allowed

    # -- names ------------------------------------------------------------------------

    def full_group(self, name: str) -> str:
        """``ns:id#rel`` for a well-formed group name; NotASet when it names no set."""
        obj, _, rel = name.partition("#")
        ns = obj.split(":", 1)[0]
        if not rel:
            sets = self.config.sets_of(ns)
            if len(sets) != 1:
                raise NotASet(name)
            return f"{obj}#{sets[0]}"
        if not self.config.is_set(ns, rel):
            raise NotASet(name)
        return name

    def subject_kind(self, name: str) -> tuple[str, str]:
        """``("set", full name)`` or ``("leaf", canonical leaf name)``."""
        obj, _, rel = name.partition("#")
        if not rel or rel == "...":
            return "leaf", obj
        ns = obj.split(":", 1)[0]
        if self.config.is_set(ns, rel):
            return "set", name
        return "leaf", name

    @staticmethod
    def wildcard_of(leaf: str) -> str | None:
        """The wildcard leaf that covers ``leaf`` (None for a wildcard itself)."""
        obj = leaf.split("#", 1)[0]
        ns, oid = obj.split(":", 1)
        if oid == "*":
            return None
        return f"{ns}:*"

    # -- graph walks ------------------------------------------------------------------

    def reach(self, group: str) -> frozenset[str]:
        """Every group reachable from ``group`` over nested edges, itself included."""
        if group not in self.groups:
            return frozenset()
        found = self._reach.get(group)
        if found is None:
            seen = {group}
            queue = deque([group])
            while queue:
                g = queue.popleft()
                for c in self.children[g]:
                    if c not in seen:
                        seen.add(c)
                        queue.append(c)
            found = self._reach[group] = frozenset(seen)
        return found

    def holds(self, group: str, subject: str) -> bool:
        """Whether ``group`` holds ``subject`` directly (a set subject: is that group,
        or with a schema a set of its object whose relation includes it)."""
        kind, key = self.subject_kind(subject)
        direct = self.leaves.get(group, set())
        wild = self.wildcard_of(key)
        source = self.config.schema_source
        if kind == "set" or "#" in key:  # a userset: wildcards by the schema's peer
            if source is not None and source.dialect != "spicedb":
                wild = None
        if kind == "set":
            if group == key:
                return True
            plan = self.config.plan
            obj, _, rel = key.rpartition("#")
            gobj, _, grel = group.rpartition("#")
            if plan is not None and gobj == obj and same_object(plan, _type(obj), grel, rel):
                return True
            return source is not None and wild is not None and wild in direct
        if key in direct:
            return True
        return wild is not None and wild in direct

    # -- queries ----------------------------------------------------------------------

    def check(self, subject: str, group: str) -> bool:
        g = self.full_group(group)
        return any(self.holds(d, subject) for d in self._nodes(g))

    def groups_of(self, subject: str) -> list[str]:
        kind, key = self.subject_kind(subject)
        own: set[str] = set()
        if kind == "set" and self.config.plan is not None:  # sets its object may hold
            obj = key.rpartition("#")[0]
            own = {f"{obj}#{rel}" for rel in self.config.sets_of(_type(obj))}
        return sorted(
            g for g in self.groups | own if any(self.holds(d, subject) for d in self._nodes(g))
        )

    def _nodes(self, g: str) -> frozenset[str]:
        """The groups reachable from ``g``; with a schema ``g`` itself always (a userset
        of its object may be in it by the schema alone, without a tuple)."""
        return self.reach(g) or (frozenset([g]) if self.config.plan is not None else frozenset())

    def members_of(
        self, group: str, limit: int | None = None, after: str | None = None
    ) -> list[str]:
        g = self.full_group(group)
        names: set[str] = set()
        for d in self.reach(g):
            names |= self.leaves[d]
        out = sorted(n for n in names if after is None or n > after)
        return out if limit is None else out[:limit]

    def explain_length(self, subject: str, group: str) -> int | None:
        """The number of groups on a shortest chain from ``group`` to a holder of ``subject``."""
        g = self.full_group(group)
        if g not in self.groups:
            return 1 if self.config.plan is not None and self.holds(g, subject) else None
        dist = {g: 1}
        queue = deque([g])
        while queue:
            v = queue.popleft()
            if self.holds(v, subject):
                return dist[v]
            for c in self.children[v]:
                if c not in dist:
                    dist[c] = dist[v] + 1
                    queue.append(c)
        return None

    def chain_problem(self, subject: str, group: str, chain: list[str]) -> str | None:
        """Why ``chain`` is not a valid explanation of ``subject`` in ``group``; None if it is."""
        if not chain:
            return "the chain is empty"
        if chain[0] != self.full_group(group):
            return f"the chain starts at {chain[0]!r}, not at {self.full_group(group)!r}"
        for a, b in zip(chain, chain[1:], strict=False):
            if b not in self.children.get(a, set()):
                return f"{b!r} is not directly nested in {a!r}"
        if not self.holds(chain[-1], subject):
            return f"{chain[-1]!r} does not hold {subject!r} directly"
        return None

    # -- universes of names for the tests ---------------------------------------------

    def leaf_names(self) -> set[str]:
        out: set[str] = set()
        for names in self.leaves.values():
            out |= names
        return out
