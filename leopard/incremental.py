"""The incremental layer: apply tuple changes, recompute exactly the affected sets.

A batch of changes is coalesced (the last change of each tuple wins), applied to
the direct edges, and then the closures are re-derived once for the whole batch:

* every group whose GROUP2GROUP can change is an ancestor, in the old graph, of the
  parent of a changed nesting edge (an ancestor through a new edge is an old
  ancestor of that edge's parent, so the old ancestors cover the new ones);
* those groups are re-derived bottom-up over the new edges, cycles collapsed as
  in the build, reading the unchanged closures of children outside the region;
* GROUP2ANCESTOR is the mirror image over the descendants of changed children.

Deleting an edge therefore never needs to guess whether another path remains: the
closure is recomputed from the edges that are left. Member and wildcard changes
touch only MEMBER2GROUP and GROUP2MEMBER.

The changed sets, the new names and the stream position go to the delta RocksDB in
one write batch, so a crash leaves either all of a batch or none of it; then the
reader's in-memory overlay is updated under its lock, so a query never sees half a
batch.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyroaring import BitMap
from rocksdict import Rdict, WriteBatch

from leopard.closure import Graph, condense
from leopard.config import Config
from leopard.errors import StorageError
from leopard.layers import SetReader, open_delta
from leopard.storage import gkey
from leopard.tuples import RelationTuple

__all__ = ["ApplyReport", "DeltaWriter", "Edge", "classify"]

_U32 = struct.Struct(">I")
# Sets a writer keeps deserialized between batches (all are dropped when it is full).
# Full of the 10M-tuple org's closures it takes ~170 MB (74 MB serialized).
_READ_CACHE_LIMIT = 300_000
TOUCH = "touch"
DELETE = "delete"


@dataclass(frozen=True)
class Edge:
    """One index edge a stored tuple feeds: group -> child group, or group -> leaf."""

    group: str
    subject: str
    nested: bool
    bit: int | None  # source bit for a set fed by several relations, else None


def classify(config: Config, t: RelationTuple) -> list[Edge]:
    """The index edges a stored tuple feeds (none when it feeds no set)."""
    out = []
    for set_rel in config.feeds(t.resource_type, t.relation):
        sources = _sources(config, t.resource_type, set_rel)
        bit = sources.index(t.relation) if len(sources) > 1 else None
        group = f"{t.resource_type}:{t.resource_id}#{set_rel}"
        srel = t.subject_relation
        if srel is not None and config.is_set(t.subject_type, srel):
            out.append(Edge(group, f"{t.subject_type}:{t.subject_id}#{srel}", True, bit))
        else:
            subject = f"{t.subject_type}:{t.subject_id}"
            if srel is not None:
                subject += f"#{srel}"
            out.append(Edge(group, subject, False, bit))
    return out


def _sources(config: Config, namespace: str, set_rel: str) -> list[str]:
    if config.sets is None:
        return [set_rel]
    for s in config.sets:
        if s.namespace == namespace and s.relation == set_rel:
            return s.sources
    return [set_rel]


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


class _Work:
    """Copy-on-write view of the sets one batch changes."""

    def __init__(self, reader: SetReader, read: Callable[[str, int], BitMap]) -> None:
        self.r = reader
        self.read = read  # the writer's cached, read-only ``reader.bitmap``
        self.sets: dict[tuple[str, bytes], BitMap] = {}
        self.dirty: set[tuple[str, bytes]] = set()
        self.m2g: dict[str, tuple[int, BitMap]] = {}
        self.m2g_dirty: set[str] = set()
        self.support: dict[bytes, int] = {}
        self.new_groups: list[str] = []
        self.new_group_ids: dict[str, int] = {}
        self.new_subjects: dict[int, str] = {}
        self.next_subject = reader.next_subject()

    def bitmap(self, family: str, gid: int, *, write: bool = False) -> BitMap:
        """The batch's copy of a set; ``write=True`` marks it for persisting."""
        key = (family, gkey(gid))
        bm = self.sets.get(key)
        if bm is None:
            bm = self.sets[key] = BitMap(self.read(family, gid))
        if write:
            self.dirty.add(key)
        return bm

    def group_id(self, name: str) -> int | None:
        gid = self.r.group_id(name)
        return gid if gid is not None else self.new_group_ids.get(name)

    def ensure_group(self, name: str) -> int:
        gid = self.group_id(name)
        if gid is None:
            gid = self.r.group_count() + len(self.new_groups)
            self.new_groups.append(name)
            self.new_group_ids[name] = gid
            for fam in ("g2g", "g2a"):
                self.sets[(fam, gkey(gid))] = BitMap([gid])
                self.dirty.add((fam, gkey(gid)))
            for fam in ("child", "parent", "g2m"):
                self.sets[(fam, gkey(gid))] = BitMap()
        return gid

    def subject(self, name: str, create: bool) -> tuple[int, BitMap] | None:
        got = self.m2g.get(name)
        if got is not None:
            return got
        found = self.r.m2g(name)
        if found is not None:
            got = (found[0], BitMap(found[1]))
        elif create:
            sid = self.next_subject
            self.next_subject += 1
            self.new_subjects[sid] = name
            got = (sid, BitMap())
        else:
            return None
        self.m2g[name] = got
        return got

    def mask(self, key: bytes, present: bool) -> int:
        if key in self.support:
            return self.support[key]
        if not present:  # an absent edge is fed by nothing: no read needed
            return 0
        raw = self.r.raw("support", key)
        if raw:
            return int.from_bytes(raw, "little")
        return 1 if present else 0


class DeltaWriter:
    """Applies change batches to the incremental layer of one index generation."""

    def __init__(self, reader: SetReader) -> None:
        self.reader = reader
        self.config = reader.config
        db = open_delta(reader.generation, read_only=False)
        assert db is not None  # read-write opening creates it
        self.db: Rdict = db
        self._handles = {
            name: self.db.get_column_family_handle(name)
            for name in ("m2g", "sname", "g2g", "g2a", "g2m", "child", "parent", "support")
        }
        # Group-keyed sets as this writer last read or wrote them, deserialized, shared
        # read-only (callers copy before changing one). Consecutive batches read the
        # same upper hierarchy and popular groups again and again (on the 10M org, 8
        # batches of 500 edge changes made 786k reads of 186k distinct sets). Only this
        # writer changes the sets of its generation, so an entry stays right until one
        # of its batches replaces it, which _persist installs here too; a reloaded
        # overlay (SetReader.refresh) empties the cache all the same.
        self._cache: dict[tuple[str, int], BitMap] = {}
        self._cache_overlay = reader.overlay

    def close(self) -> None:
        # The column family handles keep the RocksDB, and its LOCK, alive: drop them
        # first, or a writer opened again in this process fails with "lock hold by
        # current process" for as long as this object is referenced.
        self._handles.clear()
        try:
            self.db.close()
        except Exception:
            pass

    # -- applying -----------------------------------------------------------------------

    def apply(
        self, changes: Iterable[tuple[str, RelationTuple]], position: dict[str, int] | None = None
    ) -> ApplyReport:
        """Apply ``(op, tuple)`` changes in order and persist them with ``position``.

        ``op`` is ``"touch"`` or ``"delete"``. Touching a present tuple or deleting an
        absent one changes nothing, so replaying changes is harmless.
        """
        started = time.perf_counter()
        rep = ApplyReport()
        last: dict[RelationTuple, str] = {}
        for op, t in changes:
            rep.changes += 1
            if op not in (TOUCH, DELETE):
                raise ValueError(f"change op must be 'touch' or 'delete', not {op!r}")
            last.pop(t, None)  # keep the order of the last change of each tuple
            last[t] = op
        rep.coalesced = rep.changes - len(last)
        if self.reader.overlay is not self._cache_overlay:
            self._cache.clear()
            self._cache_overlay = self.reader.overlay
        w = _Work(self.reader, self._read)
        changed_edges: list[tuple[int, int]] = []
        for t, op in last.items():
            edges = classify(self.config, t)
            if not edges:
                rep.skipped += 1
                reason = f"{t.resource_type}#{t.relation} is not fed into an indexed set"
                rep.skipped_reasons[reason] = rep.skipped_reasons.get(reason, 0) + 1
                continue
            for e in edges:
                if e.nested:
                    if self._nested(w, e, op == TOUCH, changed_edges):
                        rep.edge_changes += 1
                elif self._member(w, e, op == TOUCH):
                    rep.member_changes += 1
        if changed_edges:
            self._rederive(w, changed_edges)
        rep.new_groups = len(w.new_groups)
        rep.new_subjects = len(w.new_subjects)
        rep.sets_written = self._persist(w, position)
        rep.seconds = time.perf_counter() - started
        return rep

    def _edge_support(
        self, w: _Work, key: bytes, present: bool, bit: int | None, add: bool
    ) -> bool:
        """Update the support mask of an edge; whether the edge exists afterwards."""
        if bit is None:
            return add
        mask = w.mask(key, present)
        mask = mask | (1 << bit) if add else mask & ~(1 << bit)
        w.support[key] = mask
        return mask != 0

    def _nested(self, w: _Work, e: Edge, add: bool, changed: list[tuple[int, int]]) -> bool:
        if add:
            p, c = w.ensure_group(e.group), w.ensure_group(e.subject)
        else:
            gp, gc = w.group_id(e.group), w.group_id(e.subject)
            if gp is None or gc is None:
                return False
            p, c = gp, gc
        kids = w.bitmap("child", p)
        present = c in kids
        keep = self._edge_support(w, gkey(p) + b"g" + gkey(c), present, e.bit, add)
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

    def _member(self, w: _Work, e: Edge, add: bool) -> bool:
        if add:
            gid: int | None = w.ensure_group(e.group)
        else:
            gid = w.group_id(e.group)
            if gid is None:
                return False
        got = w.subject(e.subject, create=add)
        if got is None or gid is None:
            return False
        sid, groups = got
        present = gid in groups
        keep = self._edge_support(w, gkey(gid) + b"s" + gkey(sid), present, e.bit, add)
        if keep == present:
            return False
        if keep:
            groups.add(gid)
            w.bitmap("g2m", gid, write=True).add(sid)
        else:
            groups.discard(gid)
            w.bitmap("g2m", gid, write=True).discard(sid)
        w.m2g_dirty.add(e.subject)
        return True

    def _rederive(self, w: _Work, changed: list[tuple[int, int]]) -> None:
        up = BitMap.union(BitMap(), *(self._old(w, "g2a", p) for p, _ in changed))
        down = BitMap.union(BitMap(), *(self._old(w, "g2g", c) for _, c in changed))
        self._region(w, up, "child", "g2g")
        self._region(w, down, "parent", "g2a")

    def _read(self, family: str, gid: int) -> BitMap:
        """``reader.bitmap`` through the writer's cache; never change the result."""
        key = (family, gid)
        bm = self._cache.get(key)
        if bm is None:
            if len(self._cache) >= _READ_CACHE_LIMIT:
                self._cache.clear()
            bm = self._cache[key] = self.reader.bitmap(family, gid)
        return bm

    def _old(self, w: _Work, family: str, gid: int) -> BitMap:
        """A closure as it was before this batch (new groups: just themselves)."""
        if gid >= self.reader.group_count():
            return BitMap([gid])
        return self._read(family, gid)

    def _region(self, w: _Work, region: BitMap, edges: str, family: str) -> None:
        """Recompute ``family`` closures of every group in ``region`` over ``edges``."""
        nodes = list(region)
        local = {g: i for i, g in enumerate(nodes)}
        src: list[int] = []
        dst: list[int] = []
        outside: list[list[BitMap]] = [[] for _ in nodes]
        edges_of, closure_of = self._reads(w, edges), self._reads(w, family)
        for i, g in enumerate(nodes):
            row = outside[i]
            for k in edges_of(g):
                j = local.get(k)
                if j is None:
                    row.append(closure_of(k))
                else:
                    src.append(i)
                    dst.append(j)
        graph = Graph.from_edges(
            len(nodes), np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
        )
        cond = condense(graph)
        done: list[BitMap] = [BitMap()] * cond.count
        for c in range(cond.count):  # children-first
            parts = [BitMap([nodes[v] for v in cond.members[c]])]
            parts += [done[k] for k in cond.children[c]]
            for v in cond.members[c]:
                parts += outside[v]
            done[c] = BitMap.union(*parts)
        for v, g in enumerate(nodes):
            new = done[cond.comp[v]]
            if new != closure_of(g):  # no set of this family has changed since
                key = (family, gkey(g))
                w.sets[key] = new
                w.dirty.add(key)

    def _reads(self, w: _Work, family: str) -> Callable[[int], BitMap]:
        """The current set of one family as a plain function, for the hot loop of
        ``_region`` (up to millions of calls a batch); valid until ``w.sets`` changes."""
        batch = {_U32.unpack(key)[0]: bm for (f, key), bm in w.sets.items() if f == family}
        cache, read = self._cache, self._read

        def current(gid: int) -> BitMap:
            bm = batch.get(gid)
            if bm is None:
                bm = cache.get((family, gid))
                if bm is None:
                    bm = read(family, gid)
            return bm

        return current

    # -- persisting ---------------------------------------------------------------------

    def _persist(self, w: _Work, position: dict[str, int] | None) -> int:
        r = self.reader
        wb = WriteBatch(raw_mode=True)
        updates: dict[str, dict[bytes, bytes | None]] = {}

        def put(family: str, key: bytes, value: bytes) -> None:
            wb.put(key, value, self._handles[family])
            updates.setdefault(family, {})[key] = value

        for family, key in w.dirty:
            put(family, key, w.sets[(family, key)].serialize())
        for name in w.m2g_dirty:
            sid, groups = w.m2g[name]
            put("m2g", name.encode(), _U32.pack(sid) + groups.serialize())
        for sid, name in w.new_subjects.items():
            put("sname", gkey(sid), name.encode())
        for key, mask in w.support.items():
            # an empty value means "no entry": fed by the first source alone, or absent
            # (an absent edge is fed by nothing, whatever its entry says)
            put("support", key, b"" if mask in (0, 1) else mask.to_bytes(8, "little"))
        first_new = r.group_count()
        for i, name in enumerate(w.new_groups):
            wb.put(b"group:" + gkey(first_new + i), name.encode())
        new_position = dict(r.position)
        if position:
            new_position.update(position)
        seq = r.overlay.seq + 1
        wb.put(b"position", json.dumps(new_position, sort_keys=True).encode())
        wb.put(b"next_subject", str(w.next_subject).encode())
        wb.put(b"seq", str(seq).encode())
        try:
            self.db.write(wb)
        except Exception as exc:
            raise StorageError(f"write to the incremental layer failed: {exc}") from exc
        r.apply_overlay(updates, w.new_groups, w.next_subject, new_position, seq)
        cache = self._cache
        for family, key in w.dirty:  # the batch's sets are the new state: keep them
            if len(cache) >= _READ_CACHE_LIMIT:
                cache.clear()
            cache[(family, _U32.unpack(key)[0])] = w.sets[(family, key)]
        self._cache_overlay = r.overlay
        return sum(len(v) for v in updates.values())

    def stats(self) -> dict[str, Any]:
        return {"overlay_sets": self.reader.overlay.size()}
