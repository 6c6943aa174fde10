"""A plain oracle for schemas: who is in every (object, relation) of a parsed schema.

Leopard indexes the permissions of a SpiceDB schema or an OpenFGA model; the tests
compare its answers with this model, which evaluates the rewrites of
``leopard.model.schema`` as the peers define them, one subject at a time, with no ids,
closures or bitmaps. Every rewrite is answered, the ones Leopard cannot index
(intersections, exclusions, ``.all()`` arrows) too, so refusals and forwarding can be
tested against it.

Semantics. A *node* is an object and one of its relations or permissions
(``doc:d`` and ``view``). Whether a subject ``s`` is in a node follows its rewrite:

* ``This()``: a stored tuple of the node names ``s`` itself; or names ``t:*`` and ``s``
  is a plain subject of type ``t`` (a wildcard admits plain subjects, never usersets);
  or names a userset ``x#r`` and ``s`` is in the node ``(x, r)``. Only tuples whose
  subject type the relation's ``types`` allow count (``user``, ``user:*``,
  ``group#member``; a type that demands a caveat or an expiration admits none, since
  tuples here carry neither); the others are listed in ``ignored``.
* ``Computed(r)``: ``s`` is in ``(object, r)``.
* ``Arrow(t, r)``: ``s`` is in ``(y, r)`` for some ``y`` that a tuple ``object#t@y``
  names as a plain object (a userset or wildcard on the tupleset is not followed); with
  ``all=True`` there must be at least one such ``y`` and ``s`` must be in every one
  (a ``y`` whose type lacks ``r`` holds nobody).
* ``Union``, ``Intersection``, ``Exclusion`` (``base`` but not ``subtract``) and
  ``Nil`` (nobody) as their names say.

Cycles (groups nested in each other, folders reaching themselves through arrows) take
the least fixed point: ``s`` is in a node only for a reason that does not rest on
itself. Exclusions are evaluated after everything they subtract is final (the
relations are stratified); a schema that subtracts a relation from itself through a
cycle is refused.

Subjects are ``user:anne`` (plain), ``user:*`` (a wildcard: in a node exactly when
that wildcard reaches it, as OpenFGA answers; SpiceDB refuses to check it) or a
userset ``group:g#member``. A userset is in a node when the node holds it as a stored
subject, directly or through nesting and rewrites, and every userset is in its own
node: ``group:g#member`` is in ``group:g#member`` even with no tuple at all, and so is
``doc:d#viewer`` in ``doc:d#view`` when ``view = viewer + ...``. Both peers answer so.

Lookups: ``objects`` is SpiceDB's LookupResources (OpenFGA's ListObjects);
``subjects`` is LookupSubjects (ListUsers) for a plain subject type: ``type:*`` when
the wildcard is in the node, and the subjects of that type that the node holds by
name, as the peers list them: named in a child of a union, in every child of an
intersection and named in one (``{anne} & {user:*}`` names anne), named in an
exclusion's base and not subtracted. A subject in the node only through a wildcard
is not listed apart, nor are the exceptions of a wildcard (``view - banned``).

Speed: ``objects`` walks up from the subject to everything it reaches, once per
subject; ``check`` and ``subjects`` walk only the nodes the asked node rests on (its
*cone*), so a few thousand tuples answer in milliseconds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from collections.abc import Set as AbstractSet

from leopard.model.names import RelationTuple, parse_object, parse_subject, parse_tuple
from leopard.model.schema import (
    Arrow,
    Computed,
    Exclusion,
    Intersection,
    Nil,
    Relation,
    Rewrite,
    Schema,
    This,
    Union,
)
from leopard.model.schema.ast import walk

__all__ = ["Node", "NotStratified", "SchemaOracle"]

Node = tuple[str, str]  # (object "type:id", relation or permission)
_Rel = tuple[str, str]  # (type, relation or permission)


class NotStratified(ValueError):
    """A relation subtracts (``-``, ``but not``) something that depends on itself."""


def _type(obj: str) -> str:
    return obj.split(":", 1)[0]


class SchemaOracle:
    """Who is in every (object, relation) of ``schema`` given ``tuples``.

    ``check(subject, obj, relation)``, ``objects(type, relation, subject)`` and
    ``subjects(obj, relation, subject_type)``; see the module docstring for the rules.
    """

    def __init__(self, schema: Schema, tuples: Iterable[RelationTuple | str]) -> None:
        self.schema = schema
        self.ignored: list[RelationTuple] = []
        self._stored: dict[Node, set[str]] = defaultdict(set)  # subjects as written
        self._usersets: dict[Node, set[Node]] = defaultdict(set)  # userset subjects
        self._holders: dict[str, set[Node]] = defaultdict(set)  # subject -> nodes storing it
        self._tupleset: dict[Node, set[str]] = defaultdict(set)  # (obj, t) -> plain objects
        self._pointed: dict[str, set[Node]] = defaultdict(set)  # y -> (obj, t) naming it
        self._objects: dict[str, set[str]] = defaultdict(set)  # type -> objects named
        for item in tuples:
            self._add(parse_tuple(item) if isinstance(item, str) else item)
        self._computed_by: dict[_Rel, set[str]] = defaultdict(set)
        self._arrowed_by: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        for typedef in schema.types.values():
            for rel in typedef.relations.values():
                for node in walk(rel.rewrite):
                    if isinstance(node, Computed):
                        self._computed_by[(typedef.name, node.relation)].add(rel.name)
                    elif isinstance(node, Arrow):
                        key = (typedef.name, node.tupleset, node.relation)
                        self._arrowed_by[key].add(rel.name)
        self._stratum = _strata(schema)
        self._reach: dict[tuple[str, bool], frozenset[Node]] = {}
        self._cones: dict[Node, frozenset[Node]] = {}

    # -- the questions -----------------------------------------------------------------

    def check(self, subject: str, obj: str, relation: str) -> bool:
        """Whether ``subject`` is in ``relation`` of ``obj`` (CheckPermission)."""
        self._relation(parse_object(obj, what="object").namespace, relation)
        node = (obj, relation)
        if (subject, False) in self._reach:
            return node in self._reach[(subject, False)]
        return node in self._reached(subject, self._cone(node))

    def objects(self, type: str, relation: str, subject: str) -> set[str]:
        """Every object of ``type`` whose ``relation`` holds ``subject`` (LookupResources)."""
        self._relation(type, relation)
        return {o for o, r in self._reached(subject) if r == relation and _type(o) == type}

    def subjects(self, obj: str, relation: str, subject_type: str) -> set[str]:
        """The ``subject_type`` subjects named in the tuples that are in ``relation`` of
        ``obj``, and ``subject_type:*`` if the wildcard is (LookupSubjects)."""
        self._relation(_type(obj), relation)
        if "#" in subject_type:
            raise ValueError(f"subjects() takes a plain subject type, not {subject_type!r}")
        node = (obj, relation)
        cone = self._cone(node)
        named = {s for n in cone for s in self._stored.get(n, ())}
        found = {
            c
            for c in self._objects.get(subject_type, set()) & named
            if node in self._reached(c, cone, named=True)
        }
        if node in self._reached(f"{subject_type}:*", cone):
            found.add(f"{subject_type}:*")
        return found

    # -- the model ---------------------------------------------------------------------

    def _relation(self, type: str, relation: str) -> Relation:
        rel = self.schema.relation(type, relation)
        if rel is None:
            raise KeyError(f"the schema defines no relation {relation!r} on type {type!r}")
        return rel

    def _add(self, t: RelationTuple) -> None:
        rel = self.schema.relation(t.resource_type, t.relation)
        srel = None if t.subject_relation == "..." else t.subject_relation
        wildcard = t.subject_id == "*"
        allowed = rel is not None and any(
            st.type == t.subject_type
            and st.relation == srel
            and st.wildcard == wildcard
            and st.caveat is None
            and not st.expiration
            for st in rel.types
        )
        if not allowed:
            self.ignored.append(t)
            return
        obj = f"{t.resource_type}:{t.resource_id}"
        node = (obj, t.relation)
        subject = f"{t.subject_type}:{t.subject_id}" + (f"#{srel}" if srel else "")
        self._stored[node].add(subject)
        self._holders[subject].add(node)
        self._objects[t.resource_type].add(obj)
        if srel is not None:
            self._usersets[node].add((f"{t.subject_type}:{t.subject_id}", srel))
        if not wildcard:
            self._objects[t.subject_type].add(f"{t.subject_type}:{t.subject_id}")
        if srel is None and not wildcard:
            self._tupleset[node].add(subject)
            self._pointed[subject].add(node)

    def _dependents(self, node: Node) -> Iterable[Node]:
        """The nodes whose rewrite reads ``node``: the only ones it can turn true."""
        obj, relation = node
        for rel in self._computed_by.get((_type(obj), relation), ()):
            yield obj, rel
        yield from self._holders.get(f"{obj}#{relation}", ())
        for source, tupleset in self._pointed.get(obj, ()):
            for rel in self._arrowed_by.get((_type(source), tupleset, relation), ()):
                yield source, rel

    def _cone(self, node: Node) -> frozenset[Node]:
        """``node`` and every node its rewrite reads, transitively: all its answer rests on."""
        if node in self._cones:
            return self._cones[node]
        seen, todo = {node}, [node]
        while todo:
            obj, relation = todo.pop()
            rel = self.schema.relation(_type(obj), relation)
            for rw in walk(rel.rewrite) if rel is not None else ():
                if isinstance(rw, This):
                    nxt: Iterable[Node] = self._usersets.get((obj, relation), ())
                elif isinstance(rw, Computed):
                    nxt = [(obj, rw.relation)]
                elif isinstance(rw, Arrow):
                    nxt = [(y, rw.relation) for y in self._tupleset.get((obj, rw.tupleset), ())]
                else:
                    continue
                for n in nxt:
                    if n not in seen:
                        seen.add(n)
                        todo.append(n)
        self._cones[node] = found = frozenset(seen)
        return found

    def _reached(
        self, subject: str, within: frozenset[Node] | None = None, *, named: bool = False
    ) -> frozenset[Node]:
        """Every node holding ``subject`` (of the nodes ``within``, if given), or with
        ``named`` every node holding it as a named subject, not as a wildcard's; a
        worklist per stratum, dependencies first. Only whole answers are kept."""
        key = (subject, named)
        if key in self._reach:
            return self._reach[key] if within is None else self._reach[key] & within
        s = parse_subject(subject)
        subject = str(s)
        plain = s.relation is None and not s.is_wildcard
        full = self._reached(subject, within) if named else frozenset()
        true: set[Node] = set()
        pending: dict[int, set[Node]] = defaultdict(set)

        def queue(nodes: Iterable[Node]) -> None:
            for n in nodes:
                rel = (_type(n[0]), n[1])
                if n not in true and rel in self._stratum and (within is None or n in within):
                    pending[self._stratum[rel]].add(n)

        queue(self._holders.get(subject, ()))
        if plain and not named:
            queue(self._holders.get(f"{s.namespace}:*", ()))
        if s.relation is not None:  # a userset is in its own node
            identity = (f"{s.namespace}:{s.object_id}", s.relation)
            true.add(identity)
            queue(self._dependents(identity))
        for stratum in range(max(self._stratum.values(), default=-1) + 1):
            todo = pending.pop(stratum, set())
            while todo:
                node = todo.pop()
                if node in true:
                    continue
                rel = self.schema.relation(_type(node[0]), node[1])
                assert rel is not None
                if (
                    self._named(rel.rewrite, node, subject, plain, true, full)
                    if named
                    else self._holds(rel.rewrite, node, subject, plain, true)
                ):
                    true.add(node)
                    queue(self._dependents(node))
                    todo |= pending.pop(stratum, set())
        found = frozenset(true)
        if within is None:
            self._reach[key] = found
        return found

    def _holds(
        self, rw: Rewrite, node: Node, subject: str, wild: bool, true: AbstractSet[Node]
    ) -> bool:
        """Whether ``subject`` is in ``rw`` at ``node``, given the nodes ``true`` so far
        (``wild``: a wildcard of its type admits it)."""
        obj = node[0]
        if isinstance(rw, This):
            stored = self._stored.get(node, set())
            return (
                subject in stored
                or (wild and f"{subject.split(':', 1)[0]}:*" in stored)
                or not true.isdisjoint(self._usersets.get(node, ()))
            )
        if isinstance(rw, Computed):
            return (obj, rw.relation) in true
        if isinstance(rw, Arrow):
            ys = self._tupleset.get((obj, rw.tupleset), set())
            if rw.all:
                return bool(ys) and all((y, rw.relation) in true for y in ys)
            return any((y, rw.relation) in true for y in ys)
        if isinstance(rw, Union):
            return any(self._holds(c, node, subject, wild, true) for c in rw.children)
        if isinstance(rw, Intersection):
            return all(self._holds(c, node, subject, wild, true) for c in rw.children)
        if isinstance(rw, Exclusion):
            return self._holds(rw.base, node, subject, wild, true) and not self._holds(
                rw.subtract, node, subject, wild, true
            )
        assert isinstance(rw, Nil), rw
        return False

    def _named(
        self,
        rw: Rewrite,
        node: Node,
        subject: str,
        wild: bool,
        true: set[Node],
        full: frozenset[Node],
    ) -> bool:
        """Whether ``rw`` at ``node`` holds ``subject`` by name, as the peers' lookups list
        subjects: named in a union's child; in every child of an intersection and named in
        one (``{anne} & {user:*}`` names anne); named in an exclusion's base and not in
        what it subtracts at all. ``true`` are the nodes naming it so far, ``full`` the
        nodes holding it at all."""
        obj = node[0]
        if isinstance(rw, This):
            return subject in self._stored.get(node, set()) or not true.isdisjoint(
                self._usersets.get(node, ())
            )
        if isinstance(rw, Computed):
            return (obj, rw.relation) in true
        if isinstance(rw, Arrow):
            ys = self._tupleset.get((obj, rw.tupleset), set())
            if rw.all and not all((y, rw.relation) in full for y in ys):
                return False
            return any((y, rw.relation) in true for y in ys)
        if isinstance(rw, Union):
            return any(self._named(c, node, subject, wild, true, full) for c in rw.children)
        if isinstance(rw, Intersection):
            return all(self._holds(c, node, subject, wild, full) for c in rw.children) and any(
                self._named(c, node, subject, wild, true, full) for c in rw.children
            )
        if isinstance(rw, Exclusion):
            return self._named(rw.base, node, subject, wild, true, full) and not self._holds(
                rw.subtract, node, subject, wild, full
            )
        assert isinstance(rw, Nil), rw
        return False


def _reads(schema: Schema, type: str, rw: Rewrite, negative: bool) -> Iterable[tuple[_Rel, bool]]:
    """The relations a rewrite of ``type`` reads, each with whether it is subtracted."""
    if isinstance(rw, This):
        return  # the relation's own tuples; its usersets are read through _strata
    if isinstance(rw, Computed):
        yield (type, rw.relation), negative
    elif isinstance(rw, Arrow):
        tupleset = schema.relation(type, rw.tupleset)
        for st in tupleset.types if tupleset is not None else ():
            if st.relation is None and not st.wildcard:
                yield (st.type, rw.relation), negative
    elif isinstance(rw, (Union, Intersection)):
        for child in rw.children:
            yield from _reads(schema, type, child, negative)
    elif isinstance(rw, Exclusion):
        yield from _reads(schema, type, rw.base, negative)
        yield from _reads(schema, type, rw.subtract, True)


def _strata(schema: Schema) -> dict[_Rel, int]:
    """A number per relation: what it reads has a lower one, or the same when they are
    in one cycle (which then subtracts nothing of its own). Tarjan's algorithm."""
    edges: dict[_Rel, set[tuple[_Rel, bool]]] = {}
    for typedef in schema.types.values():
        for rel in typedef.relations.values():
            out = set(_reads(schema, typedef.name, rel.rewrite, False))
            if any(isinstance(n, This) for n in walk(rel.rewrite)):
                out |= {((st.type, st.relation), False) for st in rel.types if st.relation}
            edges[(typedef.name, rel.name)] = {
                (r, neg) for r, neg in out if schema.relation(*r) is not None
            }
    index: dict[_Rel, int] = {}
    low: dict[_Rel, int] = {}
    stack: list[_Rel] = []
    on_stack: set[_Rel] = set()
    stratum: dict[_Rel, int] = {}
    components = 0

    def connect(v: _Rel) -> None:  # recursion depth: the relations of one schema
        nonlocal components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _ in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            for w in component:
                stratum[w] = components
            components += 1
            for w in component:
                for r, negative in edges[w]:
                    if negative and r in component:
                        raise NotStratified(
                            f"{w[0]}#{w[1]} subtracts {r[0]}#{r[1]}, which depends on it"
                        )

    for v in edges:
        if v not in index:
            connect(v)
    return stratum
