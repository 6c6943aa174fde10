"""Edge keys of the build: numpy work on ``hi<<32|lo`` keys, sorted, split and renumbered.

The build holds every edge as a 64-bit key (a group id in the high half, a group or
subject id in the low half) so that deduplicating, sorting and grouping millions of
edges are numpy operations, not Python loops.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from leopard.core.collect import Collector, concat
from leopard.model.bitpack import serialize_chunks
from leopard.model.closure import spans
from leopard.model.config import Config
from leopard.model.names import SPLIT_NAME_PATTERN
from leopard.model.setcodec import load, pack
from leopard.store.layout import count_value, pair_key

__all__ = [
    "derived_edges",
    "derived_support",
    "feed_counts",
    "split_sorted",
    "distinct_heads",
    "transposed",
    "bitmaps_by_head",
    "remap",
    "largest_group",
    "largest_candidates",
    "leaves_below",
    "resource_nodes",
]


def derived_edges(col: Collector) -> tuple[np.ndarray, np.ndarray]:
    """Distinct derived edges ``parent<<32|child``, sorted, and how many feeds derive each
    (the same feed derives the same edge once, however often its tuple repeats)."""
    parents, children, bits = concat(col.d_parent), concat(col.d_child), concat(col.d_bit)
    col.d_parent = col.d_child = col.d_bit = []
    if not len(parents):
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    edge = (parents.astype(np.uint64) << np.uint64(32)) | children.astype(np.uint64)
    return feed_counts(edge, bits)


def feed_counts(edge: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``edge`` keys, sorted, and how many distinct feeds (``bits``, a
    feed's index in its set's plan) derive each: the support counts of derived edges,
    as the build stores them and ``leopard verify`` derives them again."""
    if not len(edge):
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    order = np.lexsort((bits, edge))
    edge, bits = edge[order], bits[order]
    new = np.empty(len(edge), dtype=bool)
    new[0] = True
    np.not_equal(edge[1:], edge[:-1], out=new[1:])
    distinct = new.copy()
    distinct[1:] |= bits[1:] != bits[:-1]  # a new (edge, feed) pair
    starts = np.flatnonzero(new)
    counts = np.add.reduceat(distinct.astype(np.int64), starts)
    return edge[starts], counts


def derived_support(
    derived: np.ndarray, counts: np.ndarray, new_id: np.ndarray
) -> list[tuple[bytes, bytes]]:
    """Support counts of the derived edges that two or more feeds derive, in key order."""
    many = np.flatnonzero(counts > 1)
    out = []
    for i in many.tolist():
        key = int(derived[i])
        parent, child = int(new_id[key >> 32]), int(new_id[key & 0xFFFFFFFF])
        out.append((pair_key(parent, child), count_value(int(counts[i]))))
    out.sort()
    return out


def split_sorted(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For uint64 ``hi<<32|lo`` keys, sorted: the distinct ``hi``, run bounds and the ``lo``s."""
    hi = (keys >> np.uint64(32)).astype(np.int64)
    lo = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    if len(hi) == 0:
        return hi, np.zeros(1, dtype=np.int64), lo
    starts = np.flatnonzero(np.diff(hi)) + 1
    bounds = np.concatenate(([0], starts, [len(hi)]))
    return hi[bounds[:-1]], bounds, lo


def distinct_heads(keys: np.ndarray) -> np.ndarray:
    """The distinct ``hi`` of sorted ``hi<<32|lo`` keys."""
    hi = keys >> np.uint64(32)
    new = np.empty(len(hi), dtype=bool)
    new[:1] = True
    np.not_equal(hi[1:], hi[:-1], out=new[1:])
    return hi[new].astype(np.int64)


Split = tuple[np.ndarray, np.ndarray, np.ndarray]  # what ``split_sorted`` returns


def transposed(keys: np.ndarray, rows: int, columns: int) -> Split:
    """``split_sorted`` of the keys with their halves swapped, for sorted distinct
    ``hi<<32|lo`` keys (``hi`` below ``rows``, ``lo`` below ``columns``): a counting
    sort, SciPy's compiled CSR to CSC conversion, where sorting the swapped keys costs
    several times more (ten million edges: about 0.2 s against 0.7 s)."""
    from scipy.sparse import csr_matrix

    heads, bounds, lows = split_sorted(keys)
    ptr = np.zeros(rows + 1, dtype=np.int64)
    ptr[heads + 1] = np.diff(bounds)
    np.cumsum(ptr, out=ptr)
    ones = np.ones(len(lows), dtype=np.int8)
    by_column = csr_matrix((ones, lows, ptr), shape=(rows, columns)).tocsc()
    # (a column's rows come out ascending: the conversion visits the rows in order)
    col_ptr = by_column.indptr.astype(np.int64)
    t_heads = np.flatnonzero(np.diff(col_ptr))
    t_bounds = np.append(col_ptr[t_heads], col_ptr[-1])
    return t_heads, t_bounds, by_column.indices.astype(np.uint32)


def bitmaps_by_head(keys: np.ndarray | Split) -> Iterator[tuple[np.ndarray, list[bytes]]]:
    """For sorted distinct ``hi<<32|lo`` keys (or their ``split_sorted``), chunk by
    chunk: the distinct ``hi`` and each one's ``lo`` values as a stored set (the
    build's edge families; ``setcodec.pack``: compact where smaller)."""
    heads, bounds, lows = split_sorted(keys) if isinstance(keys, np.ndarray) else keys
    for row, values in serialize_chunks(bounds, lows):
        yield heads[row : row + len(values)], list(map(pack, values))


def remap(keys: np.ndarray, hi_map: np.ndarray, lo_map: np.ndarray, swap: bool) -> np.ndarray:
    """Renumber ``hi<<32|lo`` keys (optionally swapping the halves) and sort them."""
    hi = hi_map[(keys >> np.uint64(32)).astype(np.int64)].astype(np.uint64)
    lo = lo_map[(keys & np.uint64(0xFFFFFFFF)).astype(np.int64)].astype(np.uint64)
    out = (lo << np.uint64(32)) | hi if swap else (hi << np.uint64(32)) | lo
    out.sort()
    return out


def largest_group(
    cond: Any,
    g2g: list[bytes],
    g2g_sizes: list[int],
    new_id: np.ndarray,
    comp_of: list[int],
    by_group: Split,
) -> tuple[int, int]:
    """The group with the most leaf members, transitively, among the likeliest candidates
    (``by_group``: the leaf memberships, ``split_sorted`` by group)."""
    heads, bounds, lows = by_group
    if not len(lows):
        return -1, 0
    most_direct = int(heads[int(np.argmax(np.diff(bounds)))])
    reach = largest_candidates(cond, g2g, g2g_sizes, new_id, comp_of, most_direct)
    below = {
        gid: len(BitMap(array("I", leaves_below(by_group, r).tobytes())))
        for gid, r in reach.items()
    }
    return max(below.items(), key=lambda item: (item[1], -item[0]))


def largest_candidates(
    cond: Any,
    g2g: list[bytes],
    g2g_sizes: list[int],
    new_id: np.ndarray,
    comp_of: list[int],
    most_direct: int,
) -> dict[int, np.ndarray]:
    """The groups likeliest to have the most leaf members below them (the three with the
    largest closures, and ``most_direct``, the one with the most direct members), each
    with its closure (group ids, sorted)."""
    reach_sizes = np.asarray(g2g_sizes, dtype=np.int64)
    by_reach = np.argsort(-reach_sizes, kind="stable")[:3].tolist()
    first = cond.first_members()
    candidates = {int(new_id[first[c]]) for c in by_reach}
    candidates.add(most_direct)
    out = {}
    for gid in sorted(candidates):
        reach = load(g2g[comp_of[gid]])
        out[gid] = np.frombuffer(reach.to_array(), dtype=np.uint32).astype(np.int64)
    return out


def leaves_below(by_group: Split, groups: np.ndarray) -> np.ndarray:
    """The leaves directly in any of ``groups`` (sorted ids), as ``by_group`` holds
    them (a ``split_sorted`` by group; with repeats when in several)."""
    heads, bounds, lows = by_group
    if not len(heads):
        return lows[:0]
    at = np.minimum(np.searchsorted(heads, groups), len(heads) - 1)
    hit = at[heads[at] == groups]
    pos, _ = spans(bounds[hit], np.diff(bounds)[hit])
    return lows[pos]


def resource_nodes(config: Config, names: pa.Array) -> np.ndarray | None:
    """Per group (by position in ``names``), whether its set is of a schema's resource
    tier; None without a schema (every set is a group)."""
    plan = config.plan
    if plan is None:
        return None
    keys = [f"{t}#{r}" for t, r in plan.sets if plan.is_resource(t, r)]
    parts = pc.extract_regex(names, SPLIT_NAME_PATTERN)
    kinds = pc.binary_join_element_wise(parts.field("ns"), parts.field("rel"), "#")
    found = pc.is_in(kinds, value_set=pa.array(keys, pa.string()))
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.int64)
