"""Classifying tuple batches: nesting edges, leaf memberships and what is skipped.

The first phase of the build. Work is columnar (Arrow compute for classification
and string keys, numpy for grouping) because Python-level loops over 10M tuples cost
seconds; names are interned per batch on Arrow dictionaries and once more at the end.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from leopard.core.derive import SchemaRows
from leopard.core.interning import GroupNames, dedupe
from leopard.model.config import DEFAULT_RELATION, Config
from leopard.store.layout import mask_value

__all__ = [
    "Collector",
    "prefetch",
    "edges_of",
    "distinct_flagged",
    "member_edges",
    "sort_keys",
    "support_masks",
    "concat",
]


class Collector:
    """Classifies tuple batches into nesting edges and leaf memberships, interning names.

    Interning is per batch on the dictionary of distinct names (Arrow's
    ``dictionary_encode``), so Python touches each distinct name of a batch once
    instead of every row. Leaf ids here are in order of first appearance; the build
    renumbers them in name order at the end.

    A batch is classified by ``prepare`` (on a reading thread: it touches nothing
    shared) into a collector of its own, which ``absorb`` appends, batch after batch.

    For a set fed by several stored relations it also records which ones feed each
    edge (a bit per source), so that the incremental layer can tell whether deleting
    one stored tuple leaves the edge fed by another.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        # Interning: each batch's distinct names are appended here, and an edge end is
        # first a position in the concatenation; ``finish`` deduplicates the whole
        # concatenation once and turns positions into ids (no Python loop per name).
        self.groups = GroupNames()
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
        return self.groups.add(names)

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

    @classmethod
    def _objects(cls, ns: Any, ids: Any, suffix: str = "") -> tuple[pa.Array, np.ndarray]:
        """The distinct ``ns:id`` + ``suffix`` of the rows (in order of first
        appearance) and each row's place among them. A batch's rows are usually of one
        namespace: then the ids alone are hashed and the distinct ones joined to it,
        which gives the same names in the same order without joining (and hashing)
        every row's longer key; prefix, id and suffix are joined in one pass."""
        if isinstance(ns, pa.ChunkedArray):
            ns = ns.combine_chunks()
        tail = [pa.scalar(suffix, pa.string())] if suffix else []
        if len(ns) and pc.all(pc.equal(ns, ns[0])).as_py():
            ids, idx = cls._encode(ids)
            head = pa.scalar(f"{ns[0].as_py()}:", pa.string())
            return pc.binary_join_element_wise(head, ids, *tail, ""), idx
        names, idx = cls._encode(pc.binary_join_element_wise(ns, ids, ":"))
        return (pc.binary_join_element_wise(names, *tail, "") if suffix else names), idx

    def _add_derived(self, parents: Any, children: Any, bits: np.ndarray) -> None:
        if isinstance(parents, pa.ChunkedArray):
            parents = parents.combine_chunks()
        if isinstance(children, pa.ChunkedArray):
            children = children.combine_chunks()
        self.d_parent.append(self._groups(parents))
        self.d_child.append(self._groups(children))
        self.d_bit.append(bits)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Turn every edge end from a position into a dense id; names in id order. The
        maps of group and leaf positions to ids (for the rows a ``Spill`` holds)."""
        if self.schema_rows is not None:
            self.schema_rows.finish()
        # the two are independent and Arrow works without the GIL: side by side
        with ThreadPoolExecutor(1) as pool:
            leaves = pool.submit(dedupe, self.l_parts)
            self.group_names, g_of = self.groups.finish()
            self.leaf_names, l_of = leaves.result()
        self.l_parts = []
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
        return g_of, l_of

    # -- batches --------------------------------------------------------------------

    def prepare(self, table: pa.Table) -> Collector:
        """What ``table`` adds, as a collector of its own (names at positions of its
        own): the hashing and the classifying, which may run on a reading thread
        while ``absorb`` takes the batch before, in order."""
        part = Collector(self.config)
        part._classify(table)
        return part

    def absorb(self, part: Collector) -> None:
        """Append what ``prepare`` made of the next batch."""
        g0, l0 = self.groups.size, self.l_size
        self.groups.extend(part.groups.waiting, part.groups.size)
        self.l_parts += part.l_parts
        self.l_size += part.l_size
        for mine, theirs, base in (
            (self.n_parent, part.n_parent, g0),
            (self.n_child, part.n_child, g0),
            (self.m_group, part.m_group, g0),
            (self.m_leaf, part.m_leaf, l0),
            (self.d_parent, part.d_parent, g0),
            (self.d_child, part.d_child, g0),
        ):
            mine += [a + base for a in theirs] if base else theirs
        self.n_flag += part.n_flag
        self.m_flag += part.m_flag
        self.d_bit += part.d_bit
        # every entry of one extra_bits item is of one kind (nested or leaf)
        self.extra_bits += [
            (g + g0, nested, o + (g0 if len(nested) and nested[0] else l0), b)
            for g, nested, o, b in part.extra_bits
        ]
        self.skipped.update(part.skipped)
        self.read += part.read
        self.indexed += part.indexed
        self.wildcards += part.wildcards
        self.opaque += part.opaque
        if self.schema_rows is not None and part.schema_rows is not None:
            for type_name, objects in part.schema_rows.objects.items():
                self.schema_rows.objects.setdefault(type_name, []).extend(objects)
        # its callbacks refer back to the part: a cycle that the build, which holds
        # the cyclic collector off, would never free (nor the arrays the part holds)
        part.schema_rows = None
        self.groups.fold()  # on a worker thread, once enough names wait

    def close(self) -> None:
        """Stop the name-folding worker after a failure (``finish`` stops it otherwise)."""
        self.groups.close(check=False)

    def _classify(self, table: pa.Table) -> None:
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
        keys, idx = self._objects(t["rns"], t["rid"], f"#{set_rel}")
        gids = self._groups(keys)[idx]
        if len(sources) > 1:
            bits = pc.index_in(t["rel"], value_set=pa.array(sources)).to_numpy(zero_copy_only=False)
        else:
            bits = np.zeros(n, dtype=np.int64)
        sns, sid, srel = t["sns"], t["sid"], t["srel"]
        self.wildcards += pc.sum(pc.equal(sid, "*")).as_py() or 0
        with_rel = srel.null_count != n  # any userset subjects in this batch?
        plain = pc.is_null(srel) if with_rel else None
        # plain subjects: leaves (the columns are filtered, not the table: a table's
        # filter costs several times the two columns')
        if plain is None:
            names, idx = self._objects(sns, sid)
            self._add_edges(False, gids, self._leaves(names)[idx], bits)
            return
        rows = plain.to_numpy(zero_copy_only=False)
        if rows.any():
            names, idx = self._objects(pc.filter(sns, plain), pc.filter(sid, plain))
            self._add_edges(False, gids[rows], self._leaves(names)[idx], bits[rows])
        # usersets: nested sets, or opaque leaves when not an indexed set
        userset = ~rows
        other = pc.invert(plain)
        u_ns, u_rel = pc.filter(sns, other), pc.filter(srel, other)
        keys = pc.binary_join_element_wise(
            pc.binary_join_element_wise(u_ns, pc.filter(sid, other), ":"), u_rel, "#"
        )
        names, idx = self._encode(keys)
        # every row of a name has its namespace and relation: a name's kind is its rows'
        is_set = np.zeros(len(names), dtype=bool)
        is_set[idx] = self._sets_among(u_ns, u_rel)
        ref = np.zeros(len(names), dtype=np.int64)
        mask = pa.array(is_set)
        ref[is_set] = self._groups(pc.filter(names, mask))
        ref[~is_set] = self._leaves(pc.filter(names, pc.invert(mask)))
        nested = is_set[idx]
        other_ids = ref[idx]
        g, b = gids[userset], bits[userset]
        self.opaque += int((~nested).sum())
        self._add_edges(True, g[nested], other_ids[nested], b[nested])
        self._add_edges(False, g[~nested], other_ids[~nested], b[~nested])

    def _sets_among(self, ns: Any, rel: Any) -> np.ndarray:
        """Per row, whether its ``ns#rel`` is an indexed set: ``Config.is_set`` asked
        once per distinct pair (a batch holds a few), not once per name."""
        ns_names, ns_idx = self._encode(ns)
        rel_names, rel_idx = self._encode(rel)
        code = ns_idx.astype(np.int64) * len(rel_names) + rel_idx
        pairs, at = np.unique(code, return_inverse=True)
        namespaces, relations = ns_names.to_pylist(), rel_names.to_pylist()
        width = len(rel_names)
        answer = [
            self.config.is_set(namespaces[c // width], relations[c % width]) for c in pairs.tolist()
        ]
        return np.asarray(answer, dtype=bool)[at.reshape(-1)]

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


def prefetch(
    batches: Iterable[pa.Table],
    depth: int = 2,
    prepare: Callable[[pa.Table], Any] | None = None,
    workers: int = 2,
) -> Iterator[Any]:
    """Read the next batches in a thread while this one classifies the current one;
    with ``prepare``, yield what it makes of each batch, made by ``workers`` threads
    (a batch's at a time each), in the batches' order.

    Reading is mostly Arrow and numpy work that releases the GIL, so the two overlap.
    An error in the reader is raised here, in order, where the batch would have been.
    """
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    pool = None if prepare is None else ThreadPoolExecutor(workers, "leopard-prepare")
    make: Callable[[pa.Table], Any] = prepare or (lambda batch: batch)

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
                if not put(("batch", batch if pool is None else pool.submit(make, batch))):
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
                yield item if pool is None else item.result()
            elif kind == "end":
                return
            else:
                raise item
    finally:
        stop.set()
        thread.join(timeout=5)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


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
    return distinct_flagged(key)


def member_edges(
    col: Collector, group_id: np.ndarray, leaf_id: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The leaf memberships as ``edges_of`` gives them, in final ids and subject first:
    distinct ``subject<<32|group`` keys, sorted (MEMBER2GROUP's order), and which of
    them a first source feeds. Keyed by final ids from the start, the one sort that
    deduplicates is also the one that orders, and a snapshot in subject order is
    nearly sorted already (``sort_keys``)."""
    parts = list(zip(col.m_group, col.m_leaf, col.m_flag, strict=True))
    col.m_group = col.m_leaf = col.m_flag = []
    if not parts:
        return np.zeros(0, np.uint64), np.zeros(0, bool)
    # keyed a batch's rows at a time, straight into place: a few passes over
    # megabytes, not a dozen over the whole (ten million rows: 80 MB an array)
    leaf_key = leaf_id.astype(np.uint64) << np.uint64(33)
    group_key = group_id.astype(np.uint64) << np.uint64(1)
    key = np.empty(sum(len(g) for g, _, _ in parts), dtype=np.uint64)
    at = 0
    for group, leaf, flag in parts:
        part = key[at : at + len(group)]
        np.take(leaf_key, leaf, out=part)
        part |= group_key[group]
        part |= flag
        at += len(group)
    del parts
    return distinct_flagged(key)


def distinct_flagged(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sort_keys(key)
    edge = key >> np.uint64(1)
    first = np.empty(len(key), dtype=bool)
    first[0] = True
    np.not_equal(edge[1:], edge[:-1], out=first[1:])
    # the first row of each edge has the smallest flag: 0 when a first source feeds it
    fed_by_first = (key[first] & np.uint64(1)) == 0
    return edge[first], fed_by_first


def sort_keys(keys: np.ndarray) -> None:
    """Sort uint64 keys in place. A snapshot often lists its tuples in the order of one
    side (by subject, or by resource), so that keys led by that side come in long
    runs of one high half: numpy's stable sort (a timsort that merges runs) sorts
    those several times faster than its quicksort, which is a little faster (some
    15%) on shuffled keys. Counting where the high half steps down tells them apart."""
    if len(keys) < 2:
        return
    hi = keys >> np.uint64(32)
    down = int(np.count_nonzero(hi[1:] < hi[:-1]))
    del hi
    keys.sort(kind="stable" if down * 8 < len(keys) else None)


def support_masks(
    col: Collector,
    nested: tuple[np.ndarray, np.ndarray],
    member: tuple[np.ndarray, np.ndarray],
    group_id: np.ndarray,
    leaf_id: np.ndarray,
) -> tuple[list[tuple[bytes, bytes]], int]:
    """Support masks of the edges that are not fed by their set's first source alone,
    in key order, and how many distinct tuples they hold beyond one an edge (the bits
    of the masks beyond one each). ``nested`` are ``edges_of``'s nesting edges (the
    collector's ids), ``member`` are ``member_edges``' (final ids). Rows of one edge are
    OR-ed together with numpy: as many rows as tuples of the sources after the first."""
    if not col.extra_bits:
        return [], 0
    grp = concat([e[0] for e in col.extra_bits])
    is_nested = concat([e[1] for e in col.extra_bits], bool)
    oth = concat([e[2] for e in col.extra_bits])
    bit = concat([e[3] for e in col.extra_bits])
    if int(bit.max()) > 63:
        mask_value(1 << int(bit.max()))  # raises: a mask holds 64 sources
    gid = group_id[grp]
    final = np.empty(len(oth), dtype=np.int64)
    fed = np.empty(len(oth), dtype=bool)
    # whether a first source feeds the edge too (every row here is one of the edges)
    for kind, (keys, by_first) in ((True, nested), (False, member)):
        rows = np.flatnonzero(is_nested == kind)
        if not len(rows):
            continue
        if kind:
            final[rows] = group_id[oth[rows]]
            probe = (grp[rows].astype(np.uint64) << np.uint64(32)) | oth[rows].astype(np.uint64)
        else:
            final[rows] = leaf_id[oth[rows]]
            probe = (final[rows].astype(np.uint64) << np.uint64(32)) | gid[rows].astype(np.uint64)
        pos = np.searchsorted(keys, probe)
        fed[rows] = (pos < len(keys)) & by_first[np.minimum(pos, len(keys) - 1)]
    # key order: group id, then nested ("g") before leaf ("s"), then the other id
    order = np.lexsort((final, ~is_nested, gid))
    gid, is_nested, final, fed = gid[order], is_nested[order], final[order], fed[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (gid[1:] != gid[:-1]) | (is_nested[1:] != is_nested[:-1]) | (final[1:] != final[:-1])
    starts = np.flatnonzero(new)
    masks = np.bitwise_or.reduceat(np.uint64(1) << bit[order].astype(np.uint64), starts)
    masks |= fed[starts].astype(np.uint64)
    packed = np.empty(len(starts), dtype=[("g", ">u4"), ("k", "u1"), ("o", ">u4")])
    packed["g"], packed["o"] = gid[starts], final[starts]
    packed["k"] = np.where(is_nested[starts], ord("g"), ord("s"))
    keys_blob, values_blob = packed.tobytes(), masks.astype("<u8").tobytes()
    more = int(np.unpackbits(np.frombuffer(values_blob, np.uint8)).sum()) - len(starts)
    return [
        (keys_blob[9 * i : 9 * i + 9], values_blob[8 * i : 8 * i + 8]) for i in range(len(starts))
    ], more
