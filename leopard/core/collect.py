"""Classifying tuple batches: nesting edges, leaf memberships and what is skipped.

The first phase of the build. Work is columnar (Arrow compute for classification
and string keys, numpy for grouping) because Python-level loops over 10M tuples cost
seconds; names are interned per batch on Arrow dictionaries and once more at the end.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from leopard.core.derive import SchemaRows
from leopard.model.config import DEFAULT_RELATION, Config
from leopard.store.layout import mask_value, support_key

__all__ = ["Collector", "prefetch", "edges_of", "support_masks", "concat"]


class Collector:
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
        # edges a schema's computed and arrow feeds derive: parent, child, feed index
        self.d_parent: list[np.ndarray] = []
        self.d_child: list[np.ndarray] = []
        self.d_bit: list[np.ndarray] = []
        plan = config.plan
        self.schema_rows = (
            None
            if plan is None
            else SchemaRows(
                plan, lambda t, r: self._add_fed(t, r, [r]), self._add_derived, self.skipped
            )
        )

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

    def _add_derived(self, parents: Any, children: Any, bits: np.ndarray) -> None:
        if isinstance(parents, pa.ChunkedArray):
            parents = parents.combine_chunks()
        if isinstance(children, pa.ChunkedArray):
            children = children.combine_chunks()
        self.d_parent.append(self._groups(parents))
        self.d_child.append(self._groups(children))
        self.d_bit.append(bits)

    def finish(self) -> None:
        """Turn every edge end from a position into a dense id; names in id order."""
        if self.schema_rows is not None:
            self.schema_rows.finish()
        self.group_names, g_of = self._dedupe(self.g_parts)
        self.leaf_names, l_of = self._dedupe(self.l_parts)
        self.g_parts = self.l_parts = []
        self.n_parent = [g_of[a] for a in self.n_parent]
        self.n_child = [g_of[a] for a in self.n_child]
        self.m_group = [g_of[a] for a in self.m_group]
        self.m_leaf = [l_of[a] for a in self.m_leaf]
        self.d_parent = [g_of[a] for a in self.d_parent]
        self.d_child = [g_of[a] for a in self.d_child]
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
        if self.schema_rows is not None:
            self.indexed += self.schema_rows.add(table)
            return
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


def prefetch(batches: Iterable[pa.Table], depth: int = 2) -> Iterator[pa.Table]:
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


def concat(parts: list[np.ndarray], dtype: Any = np.int64) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


def edges_of(
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


def support_masks(
    col: Collector,
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
        out.append((key, mask_value(bits_mask)))
    out.sort()
    return out
