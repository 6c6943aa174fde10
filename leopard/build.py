"""The offline build: tuple batches in, a RocksDB base layer out.

Input is a stream of Arrow tables with the string columns ``rns, rid, rel, sns, sid,
srel`` (``srel`` null for a plain subject), as the snapshot readers yield them. The
work is columnar wherever it can be (Arrow compute for classification and string
keys, numpy for grouping), because Python-level loops over 10M tuples cost seconds;
the loops that remain run once per group or once per subject.

Steps:
1. classify each tuple by the set configuration: a nesting edge (its subject is a
   userset of an indexed set), a leaf membership, or skipped (counted by reason);
2. intern names: groups get dense numbers, leaf subjects get ids in name order
   (so that ``members_of`` pages in id order are pages in name order);
3. collapse cycles, number groups depth-first so related groups are close, and
   compute GROUP2GROUP and GROUP2ANCESTOR in one pass each (``closure``);
4. write every set to a fresh generation and swap it in (``storage``).
"""

from __future__ import annotations

import json
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from leopard.closure import Graph, closures, condense, depths, dfs_order
from leopard.config import DEFAULT_RELATION, Config
from leopard.tuples import RelationTuple
from leopard.storage import FORMAT_VERSION, BatchWriter, IndexDir, dir_size, gkey, open_db

__all__ = ["BuildReport", "build_from_batches", "Position", "table_from_tuples", "COLUMNS"]

COLUMNS = ("rns", "rid", "rel", "sns", "sid", "srel")
_SCHEMA = pa.schema([(c, pa.string()) for c in COLUMNS])

Position = dict[str, int]  # "topic:partition" -> next offset to consume


@dataclass
class BuildReport:
    """What a build read, indexed and skipped, and what it produced."""

    tuples_read: int = 0
    tuples_indexed: int = 0
    rejected: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    groups: int = 0
    subjects: int = 0
    member_edges: int = 0
    nested_edges: int = 0
    wildcards: int = 0
    opaque_usersets: int = 0
    largest_group: str | None = None
    largest_group_members: int = 0
    deepest_nesting: int = 0
    cycles_collapsed: int = 0
    groups_in_cycles: int = 0
    bytes_on_disk: int = 0
    seconds: float = 0.0
    id_order: str = "dfs"
    phases: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def table_from_tuples(tuples: Iterable[RelationTuple]) -> pa.Table:
    """An Arrow batch of parsed tuples, in the column layout the build reads."""
    cols: list[list[str | None]] = [[] for _ in COLUMNS]
    for t in tuples:
        for col, value in zip(cols, t, strict=True):
            col.append(value)
    return pa.Table.from_arrays([pa.array(c, pa.string()) for c in cols], schema=_SCHEMA)


class _Collector:
    """Classifies tuple batches into nesting edges and leaf memberships.

    For a set fed by several stored relations it also records which ones feed each
    edge (a bit per source), so the incremental layer can tell whether deleting one
    stored tuple leaves the edge supported by another.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.parents: list[pa.Array] = []
        self.children: list[pa.Array] = []
        self.m_groups: list[pa.Array] = []
        self.m_leaves: list[pa.Array] = []
        # support of multi-source sets: (group, subject, is_nested, source bit)
        self.s_groups: list[pa.Array] = []
        self.s_subjects: list[pa.Array] = []
        self.s_nested: list[pa.Array] = []
        self.s_bits: list[pa.Array] = []
        self.skipped: Counter[str] = Counter()
        self.read = 0
        self.indexed = 0
        self.wildcards = 0
        self.opaque = 0
        if config.is_default:
            self.set_keys: pa.Array | None = None
        else:
            self.set_keys = pa.array(
                sorted({f"{s.namespace}#{s.relation}" for s in config.sets or ()}), pa.string()
            )

    def add(self, table: pa.Table) -> None:
        n = table.num_rows
        if n == 0:
            return
        self.read += n
        rns, rel = table["rns"], table["rel"]
        selections: list[tuple[str, Any, list[str]]] = []
        if self.set_keys is None:
            selections.append((DEFAULT_RELATION, pc.equal(rel, DEFAULT_RELATION), []))
        else:
            for sc in self.config.sets or ():
                mask = pc.and_(
                    pc.equal(rns, sc.namespace), pc.is_in(rel, value_set=pa.array(sc.sources))
                )
                selections.append((sc.relation, mask, sc.sources))
        fed = selections[0][1]
        for _, mask, _ in selections[1:]:
            fed = pc.or_(fed, mask)
        self.indexed += pc.sum(fed).as_py() or 0
        unfed = pc.invert(fed)
        if pc.any(unfed).as_py():
            keys = pc.binary_join_element_wise(pc.filter(rns, unfed), pc.filter(rel, unfed), "#")
            for item in pc.value_counts(keys).to_pylist():
                self.skipped[f"{item['values']} is not fed into an indexed set"] += item["counts"]
        for set_rel, mask, sources in selections:
            if pc.any(mask).as_py():
                self._add_fed(table.filter(mask), set_rel, sources)

    def _add_fed(self, t: pa.Table, set_rel: str, sources: list[str]) -> None:
        group = pc.binary_join_element_wise(
            pc.binary_join_element_wise(t["rns"], t["rid"], ":"), pa.scalar(set_rel), "#"
        )
        sns, sid, srel = t["sns"], t["sid"], t["srel"]
        has_rel = pc.is_valid(srel)
        if self.set_keys is None:
            nested = pc.and_kleene(has_rel, pc.equal(srel, DEFAULT_RELATION))
        else:
            nested = pc.and_kleene(
                has_rel,
                pc.is_in(pc.binary_join_element_wise(sns, srel, "#"), value_set=self.set_keys),
            )
        nested = pc.fill_null(nested, False)
        obj = pc.binary_join_element_wise(sns, sid, ":")
        subject = pc.coalesce(pc.binary_join_element_wise(obj, srel, "#"), obj)
        leaf = pc.invert(nested)
        self.opaque += pc.sum(pc.and_(has_rel, leaf)).as_py() or 0
        self.wildcards += pc.sum(pc.equal(sid, "*")).as_py() or 0
        self.parents.append(pc.filter(group, nested).combine_chunks())
        self.children.append(pc.filter(subject, nested).combine_chunks())
        self.m_groups.append(pc.filter(group, leaf).combine_chunks())
        self.m_leaves.append(pc.filter(subject, leaf).combine_chunks())
        if len(sources) > 1:
            self.s_groups.append(group.combine_chunks())
            self.s_subjects.append(subject.combine_chunks())
            self.s_nested.append(nested.combine_chunks())
            self.s_bits.append(
                pc.index_in(t["rel"], value_set=pa.array(sources)).combine_chunks()
            )


def _concat(arrays: list[pa.Array]) -> pa.Array:
    if not arrays:
        return pa.array([], pa.string())
    return pa.concat_arrays([a.cast(pa.string()) for a in arrays])


def support_key(gid: int, nested: bool, other: int) -> bytes:
    """Key of the support mask of the edge from group ``gid`` to a group or subject."""
    return gkey(gid) + (b"g" if nested else b"s") + gkey(other)


def _support(
    col: _Collector, group_names: pa.Array, leaf_names: pa.Array, new_id: np.ndarray
) -> list[tuple[bytes, bytes]]:
    """Support masks of the edges of multi-source sets, as (key, value) pairs."""
    if not col.s_groups:
        return []
    g = new_id[pc.index_in(_concat(col.s_groups), value_set=group_names).to_numpy()]
    nested = pa.concat_arrays(col.s_nested).to_numpy(zero_copy_only=False)
    subjects = _concat(col.s_subjects)
    as_group = pc.fill_null(pc.index_in(subjects, value_set=group_names), 0).to_numpy()
    as_leaf = pc.fill_null(pc.index_in(subjects, value_set=leaf_names), 0).to_numpy()
    other = np.where(nested, new_id[as_group], as_leaf).astype(np.uint64)
    bits = pa.concat_arrays(col.s_bits).to_numpy(zero_copy_only=False).astype(np.uint64)
    key = (g.astype(np.uint64) << np.uint64(33)) | (nested.astype(np.uint64) << np.uint64(32)) | other
    uniq, inverse = np.unique(key, return_inverse=True)
    masks = np.zeros(len(uniq), dtype=np.uint64)
    np.bitwise_or.at(masks, inverse, np.left_shift(np.uint64(1), bits))
    out = []
    # An edge fed by the first source alone is the common case and needs no entry.
    keep = masks != np.uint64(1)
    for k, m in zip(uniq[keep].tolist(), masks[keep].tolist(), strict=True):
        out.append((support_key(k >> 33, bool((k >> 32) & 1), k & 0xFFFFFFFF), m.to_bytes(8, "little")))
    return out


def _split_sorted(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For uint64 ``hi<<32|lo`` keys, sorted: the distinct ``hi``, run starts and the ``lo``s."""
    hi = (keys >> np.uint64(32)).astype(np.int64)
    lo = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    if len(hi) == 0:
        return hi, np.zeros(1, dtype=np.int64), lo
    starts = np.flatnonzero(np.diff(hi)) + 1
    bounds = np.concatenate(([0], starts, [len(hi)]))
    return hi[bounds[:-1]], bounds, lo


def build_from_batches(
    batches: Iterable[pa.Table],
    path: str | Path,
    config: Config,
    *,
    position: Position | None = None,
    id_order: str = "dfs",
    rejected: Callable[[], int] | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> BuildReport:
    """Build an index at ``path`` from tuple batches and swap it in.

    ``id_order`` is ``"dfs"`` (related groups get nearby ids) or ``"input"`` (first
    appearance), kept for measuring what the ordering buys.
    """
    if id_order not in ("dfs", "input"):
        raise ValueError(f"id_order must be 'dfs' or 'input', not {id_order!r}")
    started = time.perf_counter()
    report = BuildReport(id_order=id_order)
    phases: dict[str, float] = {}
    mark = started

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 3)
        mark = now
        if on_phase is not None:
            on_phase(name)

    index_dir = IndexDir(path)
    tmp = index_dir.prepare()
    try:
        col = _Collector(config)
        for batch in batches:
            col.add(batch)
        phase("read")

        parents = _concat(col.parents)
        children = _concat(col.children)
        m_groups = _concat(col.m_groups)
        m_leaves = _concat(col.m_leaves)
        col.parents = col.children = col.m_groups = col.m_leaves = []

        # -- intern -------------------------------------------------------------
        group_names = pc.unique(pa.concat_arrays([m_groups, parents, children]))
        n_groups = len(group_names)
        p_tmp = pc.index_in(parents, value_set=group_names).to_numpy()
        c_tmp = pc.index_in(children, value_set=group_names).to_numpy()
        mg_tmp = pc.index_in(m_groups, value_set=group_names).to_numpy()
        leaf_names = pc.unique(m_leaves)
        leaf_names = pc.take(leaf_names, pc.sort_indices(leaf_names))
        leaf_ids = pc.index_in(m_leaves, value_set=leaf_names).to_numpy().astype(np.uint64)
        del parents, children, m_groups, m_leaves
        phase("intern")

        # -- closure ------------------------------------------------------------
        graph = Graph.from_edges(n_groups, p_tmp, c_tmp)
        cond = condense(graph)
        if id_order == "dfs":
            new_id = dfs_order(cond)
        else:
            new_id = np.arange(n_groups, dtype=np.int64)
        g2g = closures(cond, new_id)
        g2a = closures(cond, new_id, reverse=True)
        depth = depths(cond)
        phase("closure")

        # final group numbering
        order = np.argsort(new_id)
        names_in_order = pc.take(group_names, pa.array(order)).to_pylist()
        comp_of = cond.comp[order].tolist()  # component of each final id

        # direct edges by final id
        ep = new_id[p_tmp].astype(np.uint64) if len(p_tmp) else np.zeros(0, np.uint64)
        ec = new_id[c_tmp].astype(np.uint64) if len(c_tmp) else np.zeros(0, np.uint64)
        down = np.unique(ep << np.uint64(32) | ec)
        up = np.unique(ec << np.uint64(32) | ep)
        mg = new_id[mg_tmp].astype(np.uint64) if len(mg_tmp) else np.zeros(0, np.uint64)
        by_group = np.unique(mg << np.uint64(32) | leaf_ids)
        by_leaf = np.sort(leaf_ids << np.uint64(32) | mg)
        support = _support(col, group_names, leaf_names, new_id)
        phase("edges")

        # -- write --------------------------------------------------------------
        db = open_db(tmp / "base", read_only=False, bulk=True)
        try:
            w = BatchWriter(db)
            ser_g2g = [b.serialize() for b in g2g]
            ser_g2a = [b.serialize() for b in g2a]
            for gid in range(n_groups):
                c = comp_of[gid]
                k = gkey(gid)
                w.put("g2g", k, ser_g2g[c])
                w.put("g2a", k, ser_g2a[c])
            del ser_g2g, ser_g2a
            for family, keys in (("child", down), ("parent", up), ("g2m", by_group)):
                heads, bounds, lows = _split_sorted(keys)
                for i, head in enumerate(heads.tolist()):
                    vals = array("I", lows[bounds[i] : bounds[i + 1]].tobytes())
                    w.put(family, gkey(head), BitMap(vals).serialize())
            for key, mask in support:
                w.put("support", key, mask)
            phase("write groups")

            heads, bounds, lows = _split_sorted(by_leaf)
            names_py = leaf_names.to_pylist()
            low_bytes = lows.tobytes()
            b_list = bounds.tolist()
            for i, sid in enumerate(heads.tolist()):
                vals = array("I")
                vals.frombytes(low_bytes[b_list[i] * 4 : b_list[i + 1] * 4])
                key = gkey(sid)
                name = names_py[sid].encode()
                w.put("m2g", name, key + BitMap(vals).serialize())
                w.put("sname", key, name)
            phase("write subjects")

            # largest group by transitive leaf members: check the biggest candidates
            sizes = np.diff(_split_sorted(by_group)[1]) if len(by_group) else np.zeros(0)
            g2m_heads = _split_sorted(by_group)[0]
            direct_size = dict(zip(g2m_heads.tolist(), sizes.tolist(), strict=True))
            candidates = sorted(
                range(cond.count), key=lambda c: len(g2g[c]), reverse=True
            )[:3]
            largest, largest_n = None, 0
            g2m_cache: dict[int, BitMap] = {}
            if len(by_group):
                heads2, bounds2, lows2 = _split_sorted(by_group)
                pos = {h: i for i, h in enumerate(heads2.tolist())}

                def g2m_of(g: int) -> BitMap:
                    if g not in g2m_cache:
                        i = pos.get(g)
                        if i is None:
                            g2m_cache[g] = BitMap()
                        else:
                            vals = array("I", lows2[bounds2[i] : bounds2[i + 1]].tobytes())
                            g2m_cache[g] = BitMap(vals)
                    return g2m_cache[g]

                best_direct = max(direct_size, key=direct_size.__getitem__)
                cand_groups = {int(cond.members[c][0]) for c in candidates}
                cand_ids = {int(new_id[v]) for v in cand_groups} | {best_direct}
                for gid in cand_ids:
                    comp = comp_of[gid]
                    total = len(BitMap.union(*(g2m_of(d) for d in g2g[comp])))
                    if total > largest_n:
                        largest, largest_n = names_in_order[gid], total
                g2m_cache.clear()

            report.tuples_read = col.read
            report.tuples_indexed = col.indexed
            report.skipped = dict(col.skipped.most_common())
            report.rejected = rejected() if rejected else 0
            report.groups = n_groups
            report.subjects = len(leaf_names)
            report.member_edges = int(len(by_group))
            report.nested_edges = int(len(down))
            report.wildcards = col.wildcards
            report.opaque_usersets = col.opaque
            report.largest_group = largest
            report.largest_group_members = largest_n
            report.deepest_nesting = max(depth) if depth else 0
            report.cycles_collapsed = cond.cycles
            report.groups_in_cycles = sum(len(m) for m in cond.members if len(m) > 1)

            meta = {
                "format_version": FORMAT_VERSION,
                "config": json.loads(config.to_json()),
                "position": dict(position or {}),
                "groups": n_groups,
                "subjects": len(leaf_names),
                "built_at": time.time(),
                "id_order": id_order,
            }
            w.put_meta(b"groups", "\n".join(names_in_order).encode())
            w.put_meta(b"meta", json.dumps(meta, sort_keys=True).encode())
            w.put_meta(b"format", str(FORMAT_VERSION).encode())
            w.finish()
            db.compact_range(None, None)
        finally:
            db.close()
        phase("flush")
        report.bytes_on_disk = dir_size(tmp)
        report.phases = phases
        report.seconds = round(time.perf_counter() - started, 3)
        _write_report(tmp, report)
        index_dir.publish(tmp)
    except BaseException:
        index_dir.abandon(tmp)
        raise
    return report


def _write_report(tmp: Path, report: BuildReport) -> None:
    (tmp / "build-report.json").write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True))
