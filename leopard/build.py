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

import functools
import gc
import json
import os
import queue
import shutil
import signal
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap
from rocksdict import IngestExternalFileOptions, Options, Rdict, SstFileWriter, WriteBatch

from leopard.closure import Graph, closures, condense, depths, dfs_order
from leopard.config import DEFAULT_RELATION, Config
from leopard.errors import StorageError
from leopard.storage import FORMAT_VERSION, SET_FAMILIES, IndexDir, dir_size, gkey, open_db
from leopard.tuples import RelationTuple

__all__ = ["BuildReport", "build_from_batches", "Position", "table_from_tuples", "COLUMNS"]

COLUMNS = ("rns", "rid", "rel", "sns", "sid", "srel")
_FORK_SUBJECTS = 50_000  # below this, writing the subjects is not worth a process
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
    """Classifies tuple batches into nesting edges and leaf memberships, interning names.

    Interning is per batch on the dictionary of distinct names (Arrow's
    ``dictionary_encode``), so Python touches each distinct name of a batch once
    instead of every row. Leaf ids here are in order of first appearance; the build
    renumbers them in name order at the end.

    For a set fed by several stored relations it also records which ones feed each
    edge (a bit per source), so that the incremental layer can tell whether deleting
    one stored tuple leaves the edge fed by another.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        # Interning: each batch's distinct names are appended here, and an edge end is
        # first a position in the concatenation; ``finish`` deduplicates the whole
        # concatenation once and turns positions into ids (no Python loop per name).
        self.g_parts: list[pa.Array] = []
        self.g_size = 0
        self.l_parts: list[pa.Array] = []
        self.l_size = 0
        # edges as parallel arrays; `flag` marks rows fed by a set's non-first source
        self.n_parent: list[np.ndarray] = []
        self.n_child: list[np.ndarray] = []
        self.n_flag: list[np.ndarray] = []
        self.m_group: list[np.ndarray] = []
        self.m_leaf: list[np.ndarray] = []
        self.m_flag: list[np.ndarray] = []
        # (group, nested, other, source bit) of rows fed by a non-first source
        self.extra_bits: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.skipped: Counter[str] = Counter()
        self.read = 0
        self.indexed = 0
        self.wildcards = 0
        self.opaque = 0
        self.group_names: pa.Array = pa.array([], pa.string())
        self.leaf_names: pa.Array = pa.array([], pa.string())

    # -- interning ------------------------------------------------------------------

    def _groups(self, names: pa.Array) -> np.ndarray:
        """Positions of ``names`` among all group names seen."""
        start = self.g_size
        self.g_parts.append(names)
        self.g_size += len(names)
        return np.arange(start, self.g_size, dtype=np.int64)

    def _leaves(self, names: pa.Array) -> np.ndarray:
        start = self.l_size
        self.l_parts.append(names)
        self.l_size += len(names)
        return np.arange(start, self.l_size, dtype=np.int64)

    @staticmethod
    def _encode(keys: Any) -> tuple[pa.Array, np.ndarray]:
        if isinstance(keys, pa.ChunkedArray):
            keys = keys.combine_chunks()
        enc = pc.dictionary_encode(keys)
        return enc.dictionary, enc.indices.to_numpy(zero_copy_only=False)

    @staticmethod
    def _dedupe(parts: list[pa.Array]) -> tuple[pa.Array, np.ndarray]:
        if not parts:
            return pa.array([], pa.string()), np.zeros(0, dtype=np.int64)
        enc = pc.dictionary_encode(pa.concat_arrays([p.cast(pa.string()) for p in parts]))
        return enc.dictionary, enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)

    def finish(self) -> None:
        """Turn every edge end from a position into a dense id; names in id order."""
        self.group_names, g_of = self._dedupe(self.g_parts)
        self.leaf_names, l_of = self._dedupe(self.l_parts)
        self.g_parts = self.l_parts = []
        self.n_parent = [g_of[a] for a in self.n_parent]
        self.n_child = [g_of[a] for a in self.n_child]
        self.m_group = [g_of[a] for a in self.m_group]
        self.m_leaf = [l_of[a] for a in self.m_leaf]
        # every entry of one extra_bits item is of one kind (nested or leaf)
        self.extra_bits = [
            (g_of[g], nested, g_of[o] if len(nested) and nested[0] else l_of[o], b)
            for g, nested, o, b in self.extra_bits
        ]

    # -- batches --------------------------------------------------------------------

    def add(self, table: pa.Table) -> None:
        n = table.num_rows
        if n == 0:
            return
        self.read += n
        rns, rel = table["rns"], table["rel"]
        selections: list[tuple[str, Any, list[str]]] = []
        if self.config.is_default:
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
        n_fed = pc.sum(fed).as_py() or 0
        self.indexed += n_fed
        if n_fed < n:
            unfed = pc.invert(fed)
            keys = pc.binary_join_element_wise(pc.filter(rns, unfed), pc.filter(rel, unfed), "#")
            for item in pc.value_counts(keys).to_pylist():
                self.skipped[f"{item['values']} is not fed into an indexed set"] += item["counts"]
        for set_rel, mask, sources in selections:
            hits = pc.sum(mask).as_py() or 0
            if hits == n:
                self._add_fed(table, set_rel, sources)
            elif hits:
                self._add_fed(table.filter(mask), set_rel, sources)

    def _add_fed(self, t: pa.Table, set_rel: str, sources: list[str]) -> None:
        n = t.num_rows
        names, idx = self._encode(pc.binary_join_element_wise(t["rns"], t["rid"], ":"))
        keys = pc.binary_join_element_wise(names, pa.scalar(set_rel), "#")
        gids = self._groups(keys)[idx]
        if len(sources) > 1:
            bits = pc.index_in(t["rel"], value_set=pa.array(sources)).to_numpy(zero_copy_only=False)
        else:
            bits = np.zeros(n, dtype=np.int64)
        sid = t["sid"]
        self.wildcards += pc.sum(pc.equal(sid, "*")).as_py() or 0
        srel = t["srel"]
        with_rel = srel.null_count != n  # any userset subjects in this batch?
        plain = pc.is_null(srel) if with_rel else None
        # plain subjects: leaves
        sub = t if plain is None else t.filter(plain)
        if sub.num_rows:
            names, idx = self._encode(pc.binary_join_element_wise(sub["sns"], sub["sid"], ":"))
            lid_of = self._leaves(names)
            rows = slice(None) if plain is None else plain.to_numpy(zero_copy_only=False)
            self._add_edges(False, gids[rows], lid_of[idx], bits[rows])
        if plain is None:
            return
        # usersets: nested sets, or opaque leaves when not an indexed set
        userset = pc.invert(plain).to_numpy(zero_copy_only=False)
        sub = t.filter(pc.invert(plain))
        keys = pc.binary_join_element_wise(
            pc.binary_join_element_wise(sub["sns"], sub["sid"], ":"), sub["srel"], "#"
        )
        names, idx = self._encode(keys)
        is_set = np.fromiter((self._is_set(v) for v in names.to_pylist()), bool, len(names))
        ref = np.zeros(len(names), dtype=np.int64)
        mask = pa.array(is_set)
        ref[is_set] = self._groups(pc.filter(names, mask))
        ref[~is_set] = self._leaves(pc.filter(names, pc.invert(mask)))
        nested = is_set[idx]
        other = ref[idx]
        g, b = gids[userset], bits[userset]
        self.opaque += int((~nested).sum())
        self._add_edges(True, g[nested], other[nested], b[nested])
        self._add_edges(False, g[~nested], other[~nested], b[~nested])

    def _is_set(self, name: str) -> bool:
        obj, _, rel = name.rpartition("#")
        return self.config.is_set(obj[: obj.index(":")], rel)

    def _add_edges(self, nested: bool, g: np.ndarray, other: np.ndarray, bits: np.ndarray) -> None:
        if not len(g):
            return
        flag = bits != 0
        if nested:
            self.n_parent.append(g)
            self.n_child.append(other)
            self.n_flag.append(flag)
        else:
            self.m_group.append(g)
            self.m_leaf.append(other)
            self.m_flag.append(flag)
        if flag.any():
            nz = np.flatnonzero(flag)
            self.extra_bits.append(
                (g[nz], np.full(len(nz), nested), other[nz], bits[nz].astype(np.int64))
            )


def _prefetch(batches: Iterable[pa.Table], depth: int = 2) -> Iterator[pa.Table]:
    """Read the next batches in a thread while this one classifies the current one.

    Reading is mostly Arrow and numpy work that releases the GIL, so the two overlap.
    An error in the reader is raised here, in order, where the batch would have been.
    """
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(("batch", batch)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed over to the consumer of the batches
            put(("error", exc))

    thread = threading.Thread(target=produce, name="leopard-read", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "batch":
                yield item
            elif kind == "end":
                return
            else:
                raise item
    finally:
        stop.set()
        thread.join(timeout=5)


def _cat(parts: list[np.ndarray], dtype: Any = np.int64) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


def _edges(
    parent: np.ndarray, other: np.ndarray, flag: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``parent<<32|other`` keys, sorted, and which of them a first source feeds.

    The flag rides in the lowest bit during the one sort the deduplication needs
    anyway, so knowing whether an edge also has a first-source row costs nothing.
    """
    if not len(parent):
        return np.zeros(0, np.uint64), np.zeros(0, bool)
    key = (parent.astype(np.uint64) << np.uint64(33)) | (other.astype(np.uint64) << np.uint64(1))
    key |= flag.astype(np.uint64)
    key.sort()
    edge = key >> np.uint64(1)
    first = np.empty(len(key), dtype=bool)
    first[0] = True
    np.not_equal(edge[1:], edge[:-1], out=first[1:])
    # the first row of each edge has the smallest flag: 0 when a first source feeds it
    fed_by_first = (key[first] & np.uint64(1)) == 0
    return edge[first], fed_by_first


def support_key(gid: int, nested: bool, other: int) -> bytes:
    """Key of the support mask of the edge from group ``gid`` to a group or subject."""
    return gkey(gid) + (b"g" if nested else b"s") + gkey(other)


def _support(
    col: _Collector,
    edges: dict[bool, tuple[np.ndarray, np.ndarray]],
    group_id: np.ndarray,
    leaf_id: np.ndarray,
) -> list[tuple[bytes, bytes]]:
    """Support masks of the edges that are not fed by their set's first source alone."""
    if not col.extra_bits:
        return []
    masks: dict[tuple[int, bool, int], int] = {}
    for g, nested, other, bits in col.extra_bits:
        for gi, ni, oi, bi in zip(
            g.tolist(), nested.tolist(), other.tolist(), bits.tolist(), strict=True
        ):
            k = (gi, ni, oi)
            masks[k] = masks.get(k, 0) | (1 << bi)
    out = []
    for (grp, is_nested, oth), bits_mask in masks.items():
        keys, fed_by_first = edges[is_nested]
        pos = int(np.searchsorted(keys, np.uint64((grp << 32) | oth)))
        if pos < len(keys) and fed_by_first[pos]:
            bits_mask |= 1
        final_other = int(group_id[oth]) if is_nested else int(leaf_id[oth])
        key = support_key(int(group_id[grp]), is_nested, final_other)
        out.append((key, bits_mask.to_bytes(8, "little")))
    out.sort()
    return out


def _split_sorted(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For uint64 ``hi<<32|lo`` keys, sorted: the distinct ``hi``, run bounds and the ``lo``s."""
    hi = (keys >> np.uint64(32)).astype(np.int64)
    lo = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    if len(hi) == 0:
        return hi, np.zeros(1, dtype=np.int64), lo
    starts = np.flatnonzero(np.diff(hi)) + 1
    bounds = np.concatenate(([0], starts, [len(hi)]))
    return hi[bounds[:-1]], bounds, lo


def _remap(keys: np.ndarray, hi_map: np.ndarray, lo_map: np.ndarray, swap: bool) -> np.ndarray:
    """Renumber ``hi<<32|lo`` keys (optionally swapping the halves) and sort them."""
    hi = hi_map[(keys >> np.uint64(32)).astype(np.int64)].astype(np.uint64)
    lo = lo_map[(keys & np.uint64(0xFFFFFFFF)).astype(np.int64)].astype(np.uint64)
    out = (lo << np.uint64(32)) | hi if swap else (hi << np.uint64(32)) | lo
    out.sort()
    return out


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
    child: int | None = None  # the forked subject writer, until it has been waited for
    # Millions of short-lived ints and bytes would trigger a full collection again
    # and again; nothing built here forms reference cycles.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        col = _Collector(config)
        for batch in _prefetch(batches):
            col.add(batch)
        col.finish()
        phase("read")

        n_groups = len(col.group_names)
        n_leaves = len(col.leaf_names)
        n_p, n_c = _cat(col.n_parent), _cat(col.n_child)
        nested = _edges(n_p, n_c, _cat(col.n_flag, bool))
        member = _edges(_cat(col.m_group), _cat(col.m_leaf), _cat(col.m_flag, bool))
        col.n_parent = col.n_child = col.m_group = col.m_leaf = []
        col.n_flag = col.m_flag = []
        # leaf ids in name order, so pages of members_of are id ranges
        leaf_names = col.leaf_names
        by_name = pc.sort_indices(leaf_names).to_numpy()
        leaf_id = np.empty(n_leaves, dtype=np.int64)
        leaf_id[by_name] = np.arange(n_leaves, dtype=np.int64)
        phase("intern")

        # -- closure ------------------------------------------------------------
        down_tmp = nested[0]
        graph = Graph.from_edges(
            n_groups,
            (down_tmp >> np.uint64(32)).astype(np.int64),
            (down_tmp & np.uint64(0xFFFFFFFF)).astype(np.int64),
        )
        cond = condense(graph)
        if id_order == "dfs":
            new_id = dfs_order(cond)
        else:
            new_id = np.arange(n_groups, dtype=np.int64)
        by_leaf = _remap(member[0], new_id, leaf_id, swap=True)
        names_sorted = pc.take(leaf_names, pa.array(by_name)).to_pylist()
        del leaf_names
        phase("order")

        order = np.argsort(new_id)
        comp_of = cond.comp[order].tolist()  # component of each final id

        # Subjects (a million or more keys) and GROUP2ANCESTOR are computed and written
        # by a child process while this one does GROUP2GROUP and the edges: pyroaring
        # holds the GIL, so threads would not help.
        sst_dir = tmp / "sst"
        sst_dir.mkdir()
        _Sst.pending.clear()
        if n_leaves >= _FORK_SUBJECTS:
            work = functools.partial(
                _child_work, sst_dir, by_leaf, names_sorted, cond, new_id, comp_of, True
            )
            child = _fork(work)
        if child is None:
            _child_work(sst_dir, by_leaf, names_sorted, cond, new_id, comp_of, False)
        del by_leaf, names_sorted

        g2g = closures(cond, new_id)
        depth = depths(cond)
        phase("closure")

        names_in_order = pc.take(col.group_names, pa.array(order)).to_pylist()
        down = _remap(down_tmp, new_id, new_id, swap=False)
        up = _remap(down_tmp, new_id, new_id, swap=True)
        by_group = _remap(member[0], new_id, leaf_id, swap=False)
        support = _support(col, {True: nested, False: member}, new_id, leaf_id)
        del member, nested
        phase("edges")

        # -- write --------------------------------------------------------------
        _write_closures(sst_dir, "g2g", g2g, comp_of, file_only=False)
        for family, keys in (("child", down), ("parent", up), ("g2m", by_group)):
            with _Sst(sst_dir, family) as w:
                heads, bounds, lows = _split_sorted(keys)
                for i, head in enumerate(heads.tolist()):
                    vals = array("I", lows[bounds[i] : bounds[i + 1]].tobytes())
                    w.put(gkey(head), BitMap(vals).serialize())
        with _Sst(sst_dir, "support") as w:
            for key, mask in support:
                w.put(key, mask)
        phase("write groups")

        largest_gid, largest_n = _largest_group(cond, g2g, new_id, comp_of, by_group)
        largest = names_in_order[largest_gid] if largest_gid >= 0 else None
        if child is not None:
            pid, child = child, None
            _wait(pid)
        phase("write subjects")

        report.tuples_read = col.read
        report.tuples_indexed = col.indexed
        report.skipped = dict(col.skipped.most_common())
        report.rejected = rejected() if rejected else 0
        report.groups = n_groups
        report.subjects = n_leaves
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
            "subjects": n_leaves,
            "built_at": time.time(),
            "id_order": id_order,
        }
        db = open_db(tmp / "base", read_only=False, bulk=True)
        try:
            _store(db, sst_dir)
            db.put(b"groups", "\n".join(names_in_order).encode())
            db.put(b"meta", json.dumps(meta, sort_keys=True).encode())
            db.put(b"format", str(FORMAT_VERSION).encode())
            db.flush()
        finally:
            db.close()
        shutil.rmtree(sst_dir, ignore_errors=True)
        phase("ingest")
        report.bytes_on_disk = dir_size(tmp)
        report.phases = phases
        report.seconds = round(time.perf_counter() - started, 3)
        _write_report(tmp, report)
        index_dir.publish(tmp)
    except BaseException:
        if child is not None:
            _kill(child)  # before removing its directory, and so that it is no zombie
        index_dir.abandon(tmp)
        raise
    finally:
        if gc_was_enabled:
            gc.enable()
    return report


class _Sst:
    """One column family's keys, in increasing order, for the new base.

    Large families go to an SST file that is ingested whole; small ones stay in
    memory and go in with a write batch, because ingesting a file costs a few fsyncs
    (tens of milliseconds) whatever its size, which would dominate small builds.
    """

    SMALL = 20_000  # keys kept in memory before switching to a file

    #: families kept in memory by this process, for ``_store``
    pending: dict[str, list[tuple[bytes, bytes]]] = {}

    def __init__(self, directory: Path, family: str, *, file_only: bool = False) -> None:
        self.path = directory / f"{family}.sst"
        self.family = family
        self.buffer: list[tuple[bytes, bytes]] | None = None if file_only else []
        self.writer: SstFileWriter | None = None
        if file_only:
            self._open()
        self.count = 0

    def _open(self) -> None:
        self.writer = SstFileWriter(Options(raw_mode=True))
        self.writer.open(str(self.path))

    def put(self, key: bytes, value: bytes) -> None:
        self.count += 1
        if self.buffer is not None:
            self.buffer.append((key, value))
            if len(self.buffer) < self.SMALL:
                return
            self._open()
            assert self.writer is not None
            for k, v in self.buffer:
                self.writer[k] = v
            self.buffer = None
            return
        assert self.writer is not None
        self.writer[key] = value

    def __enter__(self) -> _Sst:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.buffer is not None:
            _Sst.pending[self.family] = self.buffer
        elif self.count:
            assert self.writer is not None
            self.writer.finish()
        else:  # an SST file cannot be empty
            self.path.unlink(missing_ok=True)


def _store(db: Rdict, sst_dir: Path) -> None:
    """Put every family into the new base: files by ingestion, small ones by batch."""
    batch = WriteBatch(raw_mode=True)
    for family in SET_FAMILIES:
        path = sst_dir / f"{family}.sst"
        if path.exists():
            _ingest(db, family, path)
        pairs = _Sst.pending.pop(family, None)
        if pairs:
            handle = db.get_column_family_handle(family)
            for key, value in pairs:
                batch.put(key, value, handle)
    _Sst.pending.clear()
    try:
        db.write(batch)
    except Exception as exc:
        raise StorageError(f"write to {db.path()!r} failed: {exc}") from exc


def _ingest(db: Rdict, family: str, path: Path) -> None:
    opts = IngestExternalFileOptions()
    opts.set_move_files(True)
    try:
        db.get_column_family(family).ingest_external_file([str(path)], opts)
    except Exception as exc:
        raise StorageError(f"ingesting {family} into {db.path()!r} failed: {exc}") from exc


def _write_closures(
    directory: Path, family: str, sets: list[BitMap], comp_of: list[int], *, file_only: bool
) -> None:
    """One closure family: every group gets its component's set."""
    serialized = [b.serialize() for b in sets]
    with _Sst(directory, family, file_only=file_only) as w:
        for gid, c in enumerate(comp_of):
            w.put(gkey(gid), serialized[c])


def _child_work(
    directory: Path,
    by_leaf: np.ndarray,
    names: list[str],
    cond: Any,
    new_id: np.ndarray,
    comp_of: list[int],
    file_only: bool,
) -> None:
    """The share of the writing done beside the main process: subjects, ancestors."""
    _write_subjects(directory, by_leaf, names, file_only)
    g2a = closures(cond, new_id, reverse=True)
    _write_closures(directory, "g2a", g2a, comp_of, file_only=file_only)


def _write_subjects(
    directory: Path, by_leaf: np.ndarray, names: list[str], file_only: bool
) -> None:
    """MEMBER2GROUP and subject names, in subject id (= name) order."""
    heads, bounds, lows = _split_sorted(by_leaf)
    low_bytes = lows.tobytes()
    b_list = bounds.tolist()
    with (
        _Sst(directory, "m2g", file_only=file_only) as m2g,
        _Sst(directory, "sname", file_only=file_only) as sname,
    ):
        for i, sid in enumerate(heads.tolist()):
            vals = array("I")
            vals.frombytes(low_bytes[b_list[i] * 4 : b_list[i + 1] * 4])
            key = gkey(sid)
            name = names[sid].encode()
            m2g.put(name, key + BitMap(vals).serialize())
            sname.put(key, name)


def _fork(work: Callable[[], None]) -> int | None:
    """Run ``work`` in a forked child; None where fork is unavailable.

    The child touches only numpy, pyroaring and its own SST writers (no RocksDB
    database, no Arrow thread pool), so forking a threaded parent is safe here.
    """
    if not hasattr(os, "fork"):
        return None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            work()
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        os._exit(code)
    return pid


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # pragma: no cover - already gone (but not yet reaped)
        pass
    os.waitpid(pid, 0)


def _wait(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise StorageError("writing the subjects failed in the child process (see above)")


def _largest_group(
    cond: Any, g2g: list[BitMap], new_id: np.ndarray, comp_of: list[int], by_group: np.ndarray
) -> tuple[int, int]:
    """The group with the most leaf members, transitively, among the likeliest candidates."""
    if not len(by_group):
        return -1, 0
    heads, bounds, lows = _split_sorted(by_group)
    pos = {h: i for i, h in enumerate(heads.tolist())}
    sizes = np.diff(bounds)
    cache: dict[int, BitMap] = {}

    def direct(g: int) -> BitMap:
        if g not in cache:
            i = pos.get(g)
            cache[g] = (
                BitMap()
                if i is None
                else BitMap(array("I", lows[bounds[i] : bounds[i + 1]].tobytes()))
            )
        return cache[g]

    by_reach = sorted(range(cond.count), key=lambda c: len(g2g[c]), reverse=True)[:3]
    candidates = {int(new_id[cond.members[c][0]]) for c in by_reach}
    candidates.add(int(heads[int(np.argmax(sizes))]))
    best, best_n = -1, -1
    for gid in sorted(candidates):
        total = len(BitMap.union(BitMap(), *(direct(d) for d in g2g[comp_of[gid]])))
        if total > best_n:
            best, best_n = gid, total
    return best, best_n


def _write_report(tmp: Path, report: BuildReport) -> None:
    (tmp / "build-report.json").write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True))
