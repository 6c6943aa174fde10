"""Transitive closure of nested groups: cycles collapsed, one pass over the DAG.

The input is the graph of direct nesting edges ``parent -> child`` over dense group
numbers ``0..n-1``. Strongly connected components collapse cycles: every group in a
cycle contains all the others. Components are numbered children first (sinks peeled
layer by layer), which is exactly the order in which ``GROUP2GROUP(c) = c ∪ ⋃
GROUP2GROUP(child)`` can be computed in one pass; the reverse order gives
``GROUP2ANCESTOR`` the same way. Nothing recurses, so deep chains are safe.

``dfs_order`` numbers groups in depth-first preorder from the roots of the condensed
DAG, so that a group's descendants get nearby ids and closures become few dense
roaring containers instead of many sparse ones.

The functions here are pure: the offline build and the incremental layer (which
re-derives the closures of the groups a change touches) share them.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pyroaring import BitMap

__all__ = [
    "Graph",
    "Condensation",
    "condense",
    "dfs_order",
    "closures",
    "group_edges",
    "depths",
    "row_ptr",
    "spans",
    "unique_u64",
    "walk_up",
]


def walk_up(
    starts: BitMap,
    parents_of: Callable[[BitMap], Iterable[BitMap]],
    keep: Callable[[BitMap], BitMap] | None = None,
) -> BitMap:
    """``starts`` and every node above them, level by level: ``parents_of`` gives the
    parent sets of a whole level at once (one multi-get, not a read a node), ``keep``
    narrows each level (to one tier, say). Cycles end the walk like anything seen."""
    found = BitMap(starts)
    frontier = starts
    while frontier:
        nxt = BitMap.union(BitMap(), *parents_of(frontier))
        if keep is not None:
            nxt = keep(nxt)
        nxt -= found
        found |= nxt
        frontier = nxt
    return found


def row_ptr(rows: np.ndarray, count: int) -> np.ndarray:
    """The ``ptr`` of a (ptr, flat) array of ``count`` rows whose entries, in order,
    belong to the (sorted) ``rows``."""
    ptr = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=count), out=ptr[1:])
    return ptr


def spans(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The positions ``starts[i] .. starts[i] + counts[i] - 1`` for every ``i``,
    concatenated, and the ``i`` of each: gathering rows of (ptr, flat) arrays."""
    counts = np.asarray(counts, dtype=np.int64)
    label = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    begin = np.cumsum(counts) - counts
    at = np.repeat(np.asarray(starts, dtype=np.int64) - begin, counts)
    return at + np.arange(int(counts.sum()), dtype=np.int64), label


def unique_u64(keys: np.ndarray, *, runs: bool = False) -> np.ndarray:
    """Sorted distinct values. A sort and a mask: numpy 2.3+'s hash-based
    ``np.unique`` is many times slower on large integer arrays. With ``runs`` (keys
    that are mostly sorted runs already) the sort is numpy's stable one, a timsort
    that merges the runs: ten times faster there, slower on shuffled keys."""
    out = np.sort(keys, kind="stable" if runs else None)
    if len(out) < 2:
        return out
    keep = np.empty(len(out), dtype=bool)
    keep[0] = True
    np.not_equal(out[1:], out[:-1], out=keep[1:])
    return out[keep]


@dataclass
class Graph:
    """Adjacency of ``n`` nodes in CSR form.

    The children of ``v`` are ``indices[indptr[v]:indptr[v+1]]``.
    """

    n: int
    indptr: np.ndarray
    indices: np.ndarray

    @classmethod
    def from_edges(cls, n: int, parents: np.ndarray, children: np.ndarray) -> Graph:
        """Build from edge arrays; duplicate edges are removed."""
        if len(parents):
            key = unique_u64(
                parents.astype(np.uint64) << np.uint64(32) | children.astype(np.uint64)
            )
            src = (key >> np.uint64(32)).astype(np.int64)
            dst = (key & np.uint64(0xFFFFFFFF)).astype(np.int64)
        else:
            src = dst = np.zeros(0, dtype=np.int64)
        return cls(n, row_ptr(src, n), dst)

    def reverse(self) -> Graph:
        src = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.indptr))
        return Graph.from_edges(self.n, self.indices, src)

    @property
    def edge_count(self) -> int:
        return int(len(self.indices))


class Condensation:
    """Strongly connected components of a graph.

    ``comp[v]`` is the component of node ``v``; components are numbered in Tarjan's
    emission order, so every edge between components goes from a higher number to a
    lower one (children first). ``members[c]`` lists the nodes of component ``c`` and
    ``children[c]`` the distinct child components.

    ``condense`` keeps both as (ptr, flat) arrays (``csr``) and makes the lists only
    when asked: a schema's millions of resource components need none, and
    ``lists_of`` gives them for the few components that do. ``depth[c]`` is what
    ``depths`` returns, found on the way.
    """

    def __init__(
        self, comp: np.ndarray, csr: dict[str, tuple[np.ndarray, np.ndarray]], depth: np.ndarray
    ) -> None:
        self.comp = comp
        self.csr = csr
        self.depth = depth
        self.count = len(depth)
        self._lists: dict[str, list[list[int]]] = {}

    @property
    def members(self) -> list[list[int]]:
        return self._list("members")

    @property
    def children(self) -> list[list[int]]:
        return self._list("children")

    def _list(self, name: str) -> list[list[int]]:
        if name not in self._lists:
            ptr, flat = self.csr[name]
            self._lists[name] = _split(ptr, flat)
        return self._lists[name]

    def lists_of(self, name: str, comps: np.ndarray) -> dict[int, list[int]]:
        """``members`` or ``children`` of the components ``comps`` alone."""
        if name in self._lists:
            lists = self._lists[name]
            return {c: lists[c] for c in comps.tolist()}
        return _rows(*self.csr[name], comps)

    def parents_among(self, comps: np.ndarray) -> dict[int, list[int]]:
        """The parents of each of ``comps`` that are among ``comps`` too."""
        ptr, flat = self.csr["children"]
        among = np.zeros(self.count, dtype=bool)
        among[comps] = True
        parent = np.repeat(np.arange(self.count, dtype=np.int64), np.diff(ptr))
        keep = among[parent] & among[flat]
        parent, child = parent[keep], flat[keep]
        by_child = np.argsort(child, kind="stable")
        return _rows(row_ptr(child, self.count), parent[by_child], comps)

    def member_csr(self) -> tuple[np.ndarray, np.ndarray]:
        return self.csr["members"]

    def child_csr(self) -> tuple[np.ndarray, np.ndarray]:
        return self.csr["children"]

    def parents(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in range(self.count)]
        for c, kids in enumerate(self.children):
            for k in kids:
                out[k].append(c)
        return out

    @property
    def cycles(self) -> int:
        """Components that are cycles of two or more groups."""
        return int((np.diff(self.member_csr()[0]) > 1).sum())

    @property
    def in_cycles(self) -> int:
        """Groups in the components that are cycles."""
        sizes = np.diff(self.member_csr()[0])
        return int(sizes[sizes > 1].sum())

    def first_members(self) -> np.ndarray:
        """Per component, its lowest node."""
        ptr, flat = self.member_csr()
        return flat[ptr[:-1]] if len(flat) else np.zeros(0, dtype=np.int64)


def _split(ptr: np.ndarray, flat: np.ndarray) -> list[list[int]]:
    """``flat[ptr[i]:ptr[i + 1]]`` as a list, for every ``i`` (rows of one value each,
    the members of an acyclic graph, at once)."""
    if len(flat) == len(ptr) - 1 and (len(flat) == 0 or bool((np.diff(ptr) == 1).all())):
        return flat.reshape(-1, 1).tolist()
    values = flat.tolist()
    bounds = ptr.tolist()
    return [values[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]


def _rows(ptr: np.ndarray, flat: np.ndarray, comps: np.ndarray) -> dict[int, list[int]]:
    """Rows ``comps`` of a (ptr, flat) array, as lists."""
    comps = np.asarray(comps, dtype=np.int64)
    counts = np.diff(ptr)[comps]
    at, _ = spans(ptr[comps], counts)
    parts = _split(np.concatenate(([0], np.cumsum(counts))), flat[at])
    return dict(zip(comps.tolist(), parts, strict=True))


def condense(g: Graph) -> Condensation:
    """Strongly connected components, numbered children first.

    The components come from SciPy's compiled strong-components routine; their
    numbering is a topological order found by peeling sinks (Kahn's algorithm from the
    leaves up): a whole layer of childless components at once with numpy while the
    layer is wide, one component at a time in Python once it is narrow (a deep chain
    has a layer of one per level). ``bench/build.py`` and ``bench/schema.py`` time it.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    n = g.n
    if n == 0:
        none = np.zeros(0, dtype=np.int64)
        ptr = np.zeros(1, dtype=np.int64)
        return Condensation(none, {"members": (ptr, none), "children": (ptr, none)}, none)
    m = csr_matrix((np.ones(len(g.indices), dtype=np.int8), g.indices, g.indptr), shape=(n, n))
    k, labels = connected_components(m, directed=True, connection="strong")
    labels = labels.astype(np.int64)
    src = np.repeat(labels, np.diff(g.indptr))
    dst = labels[g.indices]
    keep = src != dst
    pairs = unique_u64(src[keep].astype(np.uint64) << np.uint64(32) | dst[keep].astype(np.uint64))
    ps = (pairs >> np.uint64(32)).astype(np.int64)
    cs = (pairs & np.uint64(0xFFFFFFFF)).astype(np.int64)
    rank, height = _sinks_first(k, ps, cs)
    comp = rank[labels]
    depth = np.empty(k, dtype=np.int64)
    depth[rank] = height
    # members: nodes grouped by component (a component's nodes in ascending order)
    order = np.argsort(comp, kind="stable")
    cut = row_ptr(comp, k)
    # children: distinct child components per component, from the renumbered pairs
    rp, rc = rank[ps], rank[cs]
    by_parent = np.lexsort((rc, rp))
    rp, rc = rp[by_parent], rc[by_parent]
    csr = {"members": (cut, order), "children": (row_ptr(rp, k), rc)}
    return Condensation(comp, csr=csr, depth=depth)


#: a layer of sinks at least this wide is peeled with numpy; once one is narrower, the
#: rest is peeled in Python (a deep chain is a layer of one per level)
_WIDE = 256


def _sinks_first(
    k: int, parents: np.ndarray, children: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A number for each of ``k`` nodes of a DAG (edges ``parents -> children``) such
    that every edge goes from a higher number to a lower one; and each node's depth,
    the nodes on the longest path from it down to a sink (itself included).

    A node peeled in the ``L``-th whole layer of sinks has depth ``L + 1``: its
    parents are given ``L + 2`` as the layers go, the last (deepest) child's
    assignment standing. Peeled one at a time, a node passes its depth + 1 up."""
    outdeg = np.bincount(parents, minlength=k).astype(np.int64)
    by_child = np.argsort(children, kind="stable")
    up_ptr = np.concatenate(([0], np.cumsum(np.bincount(children, minlength=k))))
    up = parents[by_child]  # up[up_ptr[c]:up_ptr[c + 1]]: the parents of c
    rank = np.full(k, -1, dtype=np.int64)
    depth = np.ones(k, dtype=np.int64)
    frontier = np.flatnonzero(outdeg == 0)
    nxt = 0
    layer = 0
    while len(frontier) >= _WIDE:
        width = len(frontier)
        rank[frontier] = np.arange(nxt, nxt + width)
        nxt += width
        starts, counts = up_ptr[frontier], np.diff(up_ptr)[frontier]
        total = int(counts.sum())
        if total == 0:  # the roots: nothing above them
            frontier = frontier[:0]
            break
        offsets = np.repeat(starts - np.cumsum(counts) + counts, counts)
        hit = np.sort(up[offsets + np.arange(total)])
        first = np.flatnonzero(np.concatenate(([True], hit[1:] != hit[:-1])))
        seen = hit[first]
        depth[seen] = layer + 2
        layer += 1
        outdeg[seen] -= np.diff(np.append(first, total))
        frontier = seen[outdeg[seen] == 0]
    if len(frontier):
        out, ups, ptr = outdeg.tolist(), up.tolist(), up_ptr.tolist()
        ranks = rank.tolist()
        depths_ = depth.tolist()
        todo = frontier.tolist()
        while todo:
            v = todo.pop()
            ranks[v] = nxt
            nxt += 1
            d = depths_[v] + 1
            for p in ups[ptr[v] : ptr[v + 1]]:
                out[p] -= 1
                if depths_[p] < d:
                    depths_[p] = d
                if out[p] == 0:
                    todo.append(p)
        rank = np.asarray(ranks, dtype=np.int64)
        depth = np.asarray(depths_, dtype=np.int64)
    if nxt != k:  # a component graph is acyclic: this is a bug, never the data
        raise AssertionError(f"condensation not acyclic: {k - nxt} components unnumbered")
    return rank, depth


def dfs_order(cond: Condensation, skip: Sequence[bool] | None = None) -> np.ndarray:
    """New number for every node: depth-first preorder from the roots of the DAG.

    Members of one component get consecutive numbers; a component's descendants
    follow it closely. Returns ``new_id[node]``. Components marked in ``skip`` (a
    schema's resource tier, which no other component leads into) are left out: their
    nodes get -1 and the others are numbered from 0 as if they were not there.
    """
    n = len(cond.comp)
    new_id = np.full(n, -1, dtype=np.int64)
    c_ptr, c_flat = cond.child_csr()
    from_ = np.repeat(np.arange(cond.count, dtype=np.int64), np.diff(c_ptr))
    if skip is not None:
        c_flat = c_flat[~np.asarray(skip, dtype=bool)[from_]]
    marks = np.zeros(cond.count, dtype=bool)  # has a parent
    marks[c_flat] = True
    visited = [False] * cond.count if skip is None else list(skip)
    children: Sequence[list[int]] | dict[int, list[int]]
    if skip is None:
        children = cond.children
    else:  # the lists of the components visited alone
        children = cond.lists_of("children", np.flatnonzero(~np.asarray(skip, dtype=bool)))
    # Roots in descending component number: parents are numbered after children, so
    # this visits top-level groups first. The visit lists components; their members
    # are numbered afterwards, in that order (``condense`` lists a component's nodes in
    # ascending order).
    roots = np.flatnonzero(~marks)[::-1].tolist()
    order: list[int] = []
    visit = order.append
    for root in roots:
        if visited[root]:
            continue
        todo = [root]
        while todo:
            c = todo.pop()
            if visited[c]:
                continue
            visited[c] = True
            visit(c)
            # pushed in reverse so the first child is visited first (a child already
            # visited when it comes off the stack is passed over there)
            todo += children[c][::-1]
    m_ptr, m_flat = cond.member_csr()
    comps = np.asarray(order, dtype=np.int64)
    at, _ = spans(m_ptr[comps], np.diff(m_ptr)[comps])
    new_id[m_flat[at]] = np.arange(len(at), dtype=np.int64)
    return new_id


def closures(
    cond: Condensation,
    ids: Sequence[int] | np.ndarray,
    *,
    resource: Sequence[bool] | None = None,
    graph: Graph | None = None,
) -> list[BitMap]:
    """Per component: the ids of every group it reaches, itself included
    (GROUP2GROUP); ``ids[node]`` is the id to put in the bitmaps.

    ``resource`` marks components of the resource tier (see
    ``leopard.model.plan.Plan.group_tier``; no edge leads from the group tier to it).
    A resource component's descendants stop at the first group sets they reach: it
    holds the ids of the group sets its own edges name (``graph``, the graph that
    was condensed), not their closures, nor the rest of a cycle they are in (the
    cycle may break later, and the incremental layer keeps what the edges name).
    """
    ids_list = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    own = [BitMap(array("I", sorted(ids_list[v] for v in m))) for m in cond.members]
    out: list[BitMap] = [BitMap()] * cond.count
    named = group_targets(cond, ids, resource, graph) if resource is not None else {}
    for c in range(cond.count):  # children have lower numbers: already done
        kids = cond.children[c]
        if not kids:
            out[c] = own[c]
        elif resource is not None and resource[c]:
            parts = [out[k] for k in kids if resource[k]]
            out[c] = BitMap.union(own[c], named.get(c, BitMap()), *parts)
        else:
            out[c] = BitMap.union(own[c], *(out[k] for k in kids))
    return out


def group_targets(
    cond: Condensation,
    ids: Sequence[int] | np.ndarray,
    resource: Sequence[bool],
    graph: Graph | None,
) -> dict[int, BitMap]:
    """Per resource component with edges into the group tier: the ids of the group
    sets those edges name."""
    pairs = group_edges(cond, np.asarray(ids, dtype=np.int64), resource, graph)
    out: dict[int, BitMap] = {}
    for c, i in zip(*(a.tolist() for a in pairs), strict=True):
        out.setdefault(c, BitMap()).add(i)
    return out


def group_edges(
    cond: Condensation, ids: np.ndarray, resource: Sequence[bool], graph: Graph | None
) -> tuple[np.ndarray, np.ndarray]:
    """Every edge from a resource set to a group set: (component of its source, id of
    its target), sorted and distinct. ``graph`` is the graph that was condensed
    (required: the components alone do not say which of a cycle's sets an edge names)."""
    if graph is None:
        raise ValueError("the closures of a resource tier need the graph's edges")
    is_res = np.asarray(resource, dtype=bool)
    src = np.repeat(np.arange(graph.n, dtype=np.int64), np.diff(graph.indptr))
    dst = graph.indices
    keep = is_res[cond.comp[src]] & ~is_res[cond.comp[dst]]
    key = unique_u64(
        cond.comp[src[keep]].astype(np.uint64) << np.uint64(32) | ids[dst[keep]].astype(np.uint64)
    )
    return (key >> np.uint64(32)).astype(np.int64), (key & np.uint64(0xFFFFFFFF)).astype(np.int64)


def depths(cond: Condensation) -> list[int]:
    """Per component: the groups on the longest nesting chain below it, itself included
    (found by ``condense`` while it peels sinks)."""
    return cond.depth.tolist()
