"""The incremental layer: apply tuple changes, recompute exactly the affected sets.

A batch of changes is coalesced (the last change of each tuple wins), applied to
the direct edges, and then the closures are re-derived once for the whole batch:

* every group whose GROUP2GROUP can change is an ancestor, in the old graph, of the
  parent of a changed nesting edge (an ancestor through a new edge is an old
  ancestor of that edge's parent, so the old ancestors cover the new ones);
* those groups, found by walking the parent edges up (no ancestor sets are
  stored), are re-derived bottom-up over the new edges, cycles collapsed as in the
  build, reading the unchanged closures of children outside the region.

Deleting an edge therefore never needs to guess whether another path remains: the
closure is recomputed from the edges that are left. Member and wildcard changes
touch only MEMBER2GROUP and GROUP2MEMBER.

The changed sets, the new names and the stream position go to the delta RocksDB in
one write batch, so a crash leaves either all of a batch or none of it; then the
reader's in-memory overlay is updated under its lock, so a query never sees half a
batch.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from pyroaring import BitMap

from leopard.core.batchwork import Work
from leopard.core.derived import Derivations, support_entries
from leopard.core.layers import SetReader, Updates, open_delta
from leopard.core.readcache import ReadCache
from leopard.errors import InvalidInput
from leopard.model.closure import Graph, condense, walk_up
from leopard.model.edges import Edge, disallowed, edges_of
from leopard.model.edges import feeding as model_feeding
from leopard.model.names import RelationTuple
from leopard.model.setcodec import pack
from leopard.model.shards import ShardRule
from leopard.store.layout import (
    NEXT_SUBJECT_KEY,
    POSITION_KEY,
    SEQ_KEY,
    SOURCE_STATE_KEY,
    encode_int,
    encode_position,
    encode_source_state,
    gkey,
    m2g_value,
    mask_value,
    merge_source_state,
    new_group_key,
    support_key,
)
from leopard.store.rocks import RocksDB

__all__ = ["ApplyReport", "DeltaWriter", "collector_paused"]

TOUCH = "touch"
DELETE = "delete"
_OPS = frozenset((TOUCH, DELETE))
_new = tuple.__new__


@dataclass
class ApplyReport:
    """What one batch did."""

    changes: int = 0
    coalesced: int = 0
    skipped: int = 0
    member_changes: int = 0
    edge_changes: int = 0
    sets_written: int = 0
    new_groups: int = 0
    new_subjects: int = 0
    seconds: float = 0.0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    #: changes of subjects another shard holds (a shard of a sharded index skips them)
    other_shard: int = 0


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold off Python's cyclic garbage collector for a batch.

    A batch makes a few short-lived tuples a change (decoded changes, edges, the rows
    of ``Work``), none of them in a cycle, all freed by reference counting when it is
    done. While they live, the collector would walk them again and again, each time
    its allocation count runs over: on the 10M org, a fifth of the cost of a member
    change. It runs as before once the batch is done.
    """
    if not gc.isenabled():  # paused already (a caller's batch around this one)
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class DeltaWriter:
    """Applies change batches to the incremental layer of one index generation."""

    def __init__(self, reader: SetReader) -> None:
        self.reader = reader
        self.config = reader.config
        db = open_delta(reader.generation, read_only=False)
        assert db is not None  # read-write opening creates it
        self.db: RocksDB = db
        # the sets this writer last read or wrote, kept deserialized between batches
        self._cache = ReadCache(reader)
        self._read, self._read_many = self._cache.read, self._cache.read_many
        self._feeding: dict[tuple[str, str], list[tuple[str, int | None]]] = {}
        # a shard of a sharded index applies only the changes it holds
        shard = reader.meta.get("shard")
        self._shard = (ShardRule(self.config, shard[1]), shard[0]) if shard else None

    def close(self) -> None:
        self.db.close()

    # -- applying -----------------------------------------------------------------------

    def apply(
        self,
        changes: Iterable[tuple[str, RelationTuple]],
        position: dict[str, int] | None = None,
        *,
        source_state: dict[str, dict[str, Any]] | None = None,
    ) -> ApplyReport:
        """Apply ``(op, tuple)`` changes in order and persist them with ``position``.

        ``op`` is ``"touch"`` or ``"delete"``. Touching a present tuple or deleting an
        absent one changes nothing, so replaying changes is harmless.
        """
        started = time.perf_counter()
        rep = ApplyReport()
        with collector_paused():
            last = self._coalesce(changes, rep)
            self._cache.follow()
            try:
                self._apply(last, rep, position, source_state)
            except BaseException:
                self._cache.sets.clear()  # its member sets may hold changes not persisted
                raise
        rep.seconds = time.perf_counter() - started
        return rep

    def _coalesce(
        self, changes: Iterable[tuple[str, RelationTuple]], rep: ApplyReport
    ) -> dict[RelationTuple, str]:
        """The last op of each tuple, in the order of those last changes."""
        batch = changes if isinstance(changes, list) else list(changes)
        rep.changes = len(batch)
        if not batch:
            return {}
        ops, tuples = zip(*batch, strict=True)
        try:
            valid = _OPS.issuperset(ops)
        except TypeError:  # an op that is no string at all
            valid = False
        if not valid:
            bad = next(op for op in ops if op not in _OPS)
            raise InvalidInput(f"change op must be 'touch' or 'delete', not {bad!r}")
        if self._shard is not None:
            rule, shard = self._shard
            held = [rule.holds(t, shard) for t in tuples]
            ops = tuple(op for op, h in zip(ops, held, strict=True) if h)
            tuples = tuple(t for t, h in zip(tuples, held, strict=True) if h)
            rep.other_shard = rep.changes - len(tuples)
        last = dict(zip(tuples, ops, strict=True))
        if len(last) < len(tuples):  # a tuple changed twice: it goes where it changed last
            at = dict(zip(tuples, range(len(tuples)), strict=True))
            last = {tuples[i]: ops[i] for i in sorted(at.values())}
        rep.coalesced = len(tuples) - len(last)
        return last

    def _apply(
        self,
        last: dict[RelationTuple, str],
        rep: ApplyReport,
        position: dict[str, int] | None,
        source_state: dict[str, dict[str, Any]] | None,
    ) -> None:
        w = Work(self.reader, self._read, self._cache.take)
        work = self._work(last, rep)
        plan = self.config.plan
        derivations = Derivations(plan, work, w) if plan is not None else None
        flipped = w.members(work, self._read_many)
        rep.member_changes = len(flipped)
        changed_edges: list[tuple[int, int]] = []
        self._prefetch_nested(w, work)
        for e, add in work:
            if e.nested and self._nested(w, e, add, changed_edges):
                rep.edge_changes += 1
        if derivations is not None:
            for e, add, *_ in flipped:  # only member edges bring derived edges with them
                derivations.flipped(e, add)
            rep.edge_changes += derivations.apply(w, changed_edges)
        if changed_edges:
            self._rederive(w, changed_edges)
        rep.new_groups = len(w.new_groups)
        rep.new_subjects = len(w.new_subjects)
        rep.sets_written = self._persist(w, position, source_state)

    def _work(self, last: dict[RelationTuple, str], rep: ApplyReport) -> list[tuple[Edge, bool]]:
        """The index edges the changes of a batch touch (``True``) or delete, in order."""
        config, feeding_of = self.config, self._feeding
        schema = config.plan is not None
        work: list[tuple[Edge, bool]] = []
        append = work.append
        for t, op in last.items():
            kind = (t.resource_type, t.relation)
            feeding = feeding_of.get(kind)
            if feeding is None:
                feeding = feeding_of[kind] = model_feeding(config, *kind)
            if not feeding:
                rep.skipped += 1
                reason = f"{t.resource_type}#{t.relation} is not fed into an indexed set"
                rep.skipped_reasons[reason] = rep.skipped_reasons.get(reason, 0) + 1
                continue
            if schema:  # without one every subject is allowed
                why = disallowed(config, t)
                if why is not None:
                    rep.skipped += 1
                    rep.skipped_reasons[why] = rep.skipped_reasons.get(why, 0) + 1
                    continue
            add = op == TOUCH
            if t.subject_relation is None and len(feeding) == 1:
                # the common change, a plain subject in one set: ``edges_of``'s edge
                # (made as its tuple is: Edge's generated __new__ is a Python call)
                set_rel, bit = feeding[0]
                group = f"{t.resource_type}:{t.resource_id}#{set_rel}"
                edge = (group, f"{t.subject_type}:{t.subject_id}", False, bit)
                append((_new(Edge, edge), add))
            else:
                for e in edges_of(feeding, config, t):
                    append((e, add))
        return work

    def _prefetch_nested(self, w: Work, work: list[tuple[Edge, bool]]) -> None:
        """Read what ``_nested`` reads with one multi-get a family, not a point read an
        edge: the parents' children, the children's parents and the support masks of
        the edges the index holds already (after ``Work.members`` made new groups)."""
        known = self.reader.group_count()
        pairs: list[tuple[int, int, int | None]] = []
        for e, _ in work:
            if e.nested:
                p, c = w.group_id(e.group), w.group_id(e.subject)
                if p is not None and c is not None and p < known and c < known:
                    pairs.append((p, c, e.bit))
        if not pairs:
            return
        self._read_many("child", [p for p, _, _ in pairs])
        self._read_many("parent", [c for _, c, _ in pairs])
        read = self._read
        keys = [
            support_key(p, True, c)
            for p, c, bit in pairs
            if bit is not None and c in read("child", p)
        ]
        if keys:
            raws = self.reader.raw_many("support", keys)
            w.stored_support.update(zip(keys, raws, strict=True))

    def _edge_support(self, w: Work, key: bytes, present: bool, bit: int | None, add: bool) -> bool:
        """Update the support mask of an edge; whether the edge exists afterwards."""
        if bit is None:
            return add
        mask = w.mask(key, present)
        mask = mask | (1 << bit) if add else mask & ~(1 << bit)
        w.support[key] = mask
        return mask != 0

    def _nested(self, w: Work, e: Edge, add: bool, changed: list[tuple[int, int]]) -> bool:
        if add:
            p, c = w.ensure_group(e.group), w.ensure_group(e.subject)
        else:
            gp, gc = w.group_id(e.group), w.group_id(e.subject)
            if gp is None or gc is None:
                return False
            p, c = gp, gc
        kids = w.bitmap("child", p)
        present = c in kids
        keep = self._edge_support(w, support_key(p, True, c), present, e.bit, add)
        if keep == present:
            return False
        w.bitmap("child", p, write=True)
        if keep:
            kids.add(c)
            w.bitmap("parent", c, write=True).add(p)
        else:
            kids.discard(c)
            w.bitmap("parent", c, write=True).discard(p)
        changed.append((p, c))
        return True

    def _rederive(self, w: Work, changed: list[tuple[int, int]]) -> None:
        rset = w.resource_ids()
        # With a schema's tiers: an edge between group sets changes the closures of the
        # group tier alone (a resource set's closure stops at the group it names); an
        # edge from a resource set changes those of the resource sets above it.
        groups = BitMap(p for p, _ in changed if not rset or p not in rset)
        if groups:
            self._region(w, self._above(w, groups, rset, False), rset)
        starts = BitMap(p for p, _ in changed if p in rset) if rset else None
        if starts:
            self._region(w, self._above(w, starts, rset, True), rset)

    def _above(self, w: Work, starts: BitMap, rset: BitMap, resource_tier: bool) -> BitMap:
        """``starts`` and the sets of their tier above them, over the edges before the
        batch and after it (a closure changes on either side of a removed edge): one
        multi-get a family for each level of the walk."""
        known = self.reader.group_count()  # newer groups have no edges stored
        families = ("parent", "dparent") if self.config.plan is not None else ("parent",)
        sets, read = w.sets, self._read

        def parents_of(frontier: BitMap) -> list[BitMap]:
            stored = [g for g in frontier if g < known]
            parts: list[BitMap] = []
            for family in families:
                self._read_many(family, stored)
                parts += [read(family, g) for g in stored]
                parts += [bm for g in frontier if (bm := sets.get((family, g))) is not None]
            return parts

        if not rset:
            return walk_up(starts, parents_of)
        if resource_tier:
            return walk_up(starts, parents_of, lambda level: level & rset)
        return walk_up(starts, parents_of, lambda level: level - rset)

    def _region(self, w: Work, region: BitMap, rset: BitMap) -> None:
        """Recompute the closures of every group in ``region`` over its child edges (the
        edges of tuples, and with a schema also those its feeds derive). A region is of
        one tier; a resource set takes the group sets below it as they are, not their
        closures."""
        family, edges = "g2g", ("child", "dchild")
        nodes = list(region)
        local = {g: i for i, g in enumerate(nodes)}
        src: list[int] = []
        dst: list[int] = []
        outside: list[list[BitMap]] = [[] for _ in nodes]
        edges_of, closure_of = self._reads(w, edges[0]), self._reads(w, family)
        if self.config.plan is not None:
            direct, derived = edges_of, self._reads(w, edges[1])

            def edges_of(gid: int) -> BitMap:
                return direct(gid) | derived(gid)

        # one multi-get per family for what the loop below reads (a region can hold
        # a hundred thousand groups): their edges, then their closures and those of
        # the groups their edges lead to
        self._read_many(edges[0], nodes)
        if self.config.plan is not None:
            self._read_many(edges[1], nodes)
        kids_of = [edges_of(g) for g in nodes]
        self._read_many(family, BitMap.union(region, *kids_of))
        for i, g in enumerate(nodes):
            row = outside[i]
            stop = rset and g in rset  # a resource set: its closure stops at groups
            for k in kids_of[i]:
                j = local.get(k)
                if j is None:
                    if not rset:
                        row.append(closure_of(k))
                    elif stop and k not in rset:
                        row.append(BitMap([k]))  # a resource set stops at the group it names
                    else:
                        row.append(closure_of(k))
                else:
                    src.append(i)
                    dst.append(j)
        graph = Graph.from_edges(
            len(nodes), np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
        )
        cond = condense(graph)
        done: list[BitMap] = [BitMap()] * cond.count
        members, children = cond.members, cond.children
        for c in range(cond.count):  # children-first
            parts = [BitMap([nodes[v] for v in members[c]])]
            parts += [done[k] for k in children[c]]
            for v in members[c]:
                parts += outside[v]
            done[c] = BitMap.union(*parts)
        for v, g in enumerate(nodes):
            new = done[cond.comp[v]]
            if new != closure_of(g):  # no set of this family has changed since
                key = (family, g)
                w.sets[key] = new
                w.dirty.add(key)

    def _reads(self, w: Work, family: str) -> Callable[[int], BitMap]:
        """The current set of one family as a plain function, for the hot loop of
        ``_region`` (up to millions of calls a batch); valid until ``w.sets`` changes."""
        batch = {gid: bm for (f, gid), bm in w.sets.items() if f == family}
        cache, read = self._cache.sets, self._read

        def current(gid: int) -> BitMap:
            bm = batch.get(gid)
            if bm is None:
                bm = cache.get((family, gid))
                if bm is None:
                    bm = read(family, gid)
            return bm

        return current

    # -- persisting ---------------------------------------------------------------------

    def _persist(
        self,
        w: Work,
        position: dict[str, int] | None,
        source_state: dict[str, dict[str, Any]] | None,
    ) -> int:
        r = self.reader
        wb = self.db.batch()
        # what the batch replaced, by family: written here and installed in the overlay
        updates: dict[str, dict[bytes, bytes]] = {}
        sets = w.sets
        for family, gid in w.dirty:
            fam = updates.get(family)
            if fam is None:
                fam = updates[family] = {}
            fam[gkey(gid)] = pack(sets[(family, gid)].serialize())
        m2g = w.m2g
        updates["m2g"] = {n.encode(): m2g_value(*m2g[n]) for n in w.m2g_dirty}
        updates["sname"] = {gkey(sid): n.encode() for sid, n in w.new_subjects.items()}
        # An empty value means "no entry": fed by the first source alone, or absent.
        # Only a stored entry needs one written over it; an edge without one (every
        # absent edge, as deletes clear theirs) needs nothing.
        entries = w.support_entries
        updates["support"] = {
            key: b"" if mask in (0, 1) else mask_value(mask)
            for key, mask in w.support.items()
            if mask not in (0, 1) or key in entries
        }
        updates["dsupport"] = dict(support_entries(w))
        for family in [f for f, fam in updates.items() if not fam]:
            del updates[family]  # a family the batch left alone is not named
        for family, fam in updates.items():
            wb.put_many(family, fam.items())
        first_new = r.group_count()
        for i, name in enumerate(w.new_groups):
            wb.put_default(new_group_key(first_new + i), name.encode())
        new_position = dict(r.position)
        if position:
            new_position.update(position)
        seq = r.overlay.seq + 1
        wb.put_default(POSITION_KEY, encode_position(new_position))
        wb.put_default(NEXT_SUBJECT_KEY, encode_int(w.next_subject))
        wb.put_default(SEQ_KEY, encode_int(seq))
        state = None
        if source_state:
            state = merge_source_state(r.source_state, source_state)
            wb.put_default(SOURCE_STATE_KEY, encode_source_state(state))
        self.db.write(wb)
        installed = cast(Updates, updates)  # the writer never writes a value of None
        r.apply_overlay(installed, w.new_groups, w.next_subject, new_position, seq, state)
        self._cache.keep(w.sets, w.dirty)
        return sum(len(v) for v in updates.values())

    def stats(self) -> dict[str, Any]:
        return {"overlay_sets": self.reader.overlay.size()}
