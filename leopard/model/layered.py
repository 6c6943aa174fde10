"""GROUP2GROUP of a schema's resource tier, a whole layer of sets at a time.

A schema makes every object a handful of sets (a document's ``viewer``, ``edit``,
``view``...): millions of components, most holding a few ids. ``closure.py``'s
one-component-at-a-time loop costs a few microseconds of Python each; here the
components are peeled in layers instead (a layer: every component whose resource
children are all done), and one layer's closures are formed by numpy at once:

    closure(c) = ids of c ∪ ids of the group sets its edges name ∪ ⋃ closure(resource child)

(a resource closure stops at the first group sets it reaches: see ``Plan.group_tier``
and ``closure.closures``).
A long chain of narrow layers (folders nested thousands deep) would cost a numpy
pass per layer; once a layer is narrower than ``NARROW``, the rest is done one
component at a time, children first, as ``closure.py`` does. The result is a CSR
array: component ``c``'s sorted ids are ``values[ptr[i]:ptr[i+1]]`` for its place
``i`` in ``comps``. ``bench/schema.py`` times the build that uses it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyroaring import BitMap

from leopard.model.bitpack import serialize_rows
from leopard.model.closure import (
    Condensation,
    Graph,
    _rows,
    _split,
    group_edges,
    row_ptr,
    spans,
    unique_u64,
)

__all__ = ["resource_closures", "serialized_closures"]

#: a layer narrower than this ends the numpy passes (see the module's docstring)
NARROW = 64


class _Store:
    """The closures done so far: component -> (start, length) in one growing array."""

    def __init__(self, count: int) -> None:
        self.values = np.zeros(1 << 16, dtype=np.uint32)
        self.used = 0
        self.start = np.zeros(count, dtype=np.int64)
        self.length = np.zeros(count, dtype=np.int64)

    def add(self, comps: np.ndarray, lens: np.ndarray, values: np.ndarray) -> None:
        need = self.used + len(values)
        if need > len(self.values):
            grown = np.zeros(max(need, 2 * len(self.values)), dtype=np.uint32)
            grown[: self.used] = self.values[: self.used]
            self.values = grown
        self.values[self.used : need] = values
        self.start[comps] = self.used + np.cumsum(lens) - lens
        self.length[comps] = lens
        self.used = need


@dataclass
class _Tier:
    """What a resource closure is made of, as arrays: per component its own ids
    (``m_ptr``/``own``), its child components (``c_ptr``/``c_flat``) and the ids of the
    group sets its edges name (``g_ptr``/``g_ids``)."""

    is_res: np.ndarray
    m_ptr: np.ndarray
    own: np.ndarray
    c_ptr: np.ndarray
    c_flat: np.ndarray
    g_ptr: np.ndarray
    g_ids: np.ndarray


def resource_closures(
    cond: Condensation, ids: np.ndarray, resource: Sequence[bool], graph: Graph | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The resource components (ascending), and their closures as (ptr, values).
    ``graph`` is the graph that was condensed: a closure holds the group sets its
    component's edges name (``closure.closures``)."""
    ids = np.asarray(ids, dtype=np.int64)
    is_res = np.asarray(resource, dtype=bool)
    k = cond.count
    m_ptr, m_flat = cond.member_csr()
    c_ptr, c_flat = cond.child_csr()
    g_comp, g_ids = group_edges(cond, ids, resource, graph)
    tier = _Tier(
        is_res,
        m_ptr,
        ids[m_flat].astype(np.uint32),
        c_ptr,
        c_flat,
        row_ptr(g_comp, k),
        g_ids.astype(np.uint32),
    )
    parent = np.repeat(np.arange(k, dtype=np.int64), np.diff(c_ptr))
    inner = is_res[parent] & is_res[c_flat]  # resource -> resource edges
    pending = np.bincount(parent[inner], minlength=k)
    ups = parent[inner][np.argsort(c_flat[inner], kind="stable")]
    up_ptr = row_ptr(c_flat[inner], k)

    store = _Store(k)
    frontier = np.flatnonzero(is_res & (pending == 0))
    done = 0
    while len(frontier) >= NARROW:
        _layer(frontier, store, tier)
        done += len(frontier)
        at, _ = spans(up_ptr[frontier], np.diff(up_ptr)[frontier])
        hit = np.sort(ups[at])
        if len(hit) == 0:
            frontier = hit
            break
        first = np.flatnonzero(np.concatenate(([True], hit[1:] != hit[:-1])))
        seen = hit[first]
        pending[seen] -= np.diff(np.append(first, len(hit)))
        frontier = seen[pending[seen] == 0]
    comps = np.flatnonzero(is_res)
    if done < len(comps):
        # the narrow rest, children first: components are numbered so already
        _one_by_one(comps[store.length[comps] == 0], store, tier)
    at, _ = spans(store.start[comps], store.length[comps])
    ptr = np.zeros(len(comps) + 1, dtype=np.int64)
    np.cumsum(store.length[comps], out=ptr[1:])
    return comps, ptr, store.values[at]


def _layer(rows: np.ndarray, store: _Store, t: _Tier) -> None:
    """The closures of ``rows``, whose resource children are all in ``store``."""
    at, label = spans(t.m_ptr[rows], np.diff(t.m_ptr)[rows])
    parts = [(label, t.own[at])]
    at, label = spans(t.g_ptr[rows], np.diff(t.g_ptr)[rows])
    parts.append((label, t.g_ids[at]))
    at, label = spans(t.c_ptr[rows], np.diff(t.c_ptr)[rows])
    kids = t.c_flat[at]
    res_kid = t.is_res[kids]
    r_kids, r_label = kids[res_kid], label[res_kid]
    at, lab = spans(store.start[r_kids], store.length[r_kids])
    parts.append((r_label[lab], store.values[at]))
    keys = unique_u64(
        np.concatenate([lab.astype(np.uint64) << np.uint64(32) | v for lab, v in parts]),
        runs=True,  # each part is in row order, a closure's ids sorted
    )
    lens = np.bincount((keys >> np.uint64(32)).astype(np.int64), minlength=len(rows))
    store.add(rows, lens, (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32))


def _one_by_one(rows: np.ndarray, store: _Store, t: _Tier) -> None:
    """``_layer`` for components in increasing number (children first), one at a time."""
    for c in rows.tolist():
        bm = BitMap(t.own[t.m_ptr[c] : t.m_ptr[c + 1]])
        bm.update(t.g_ids[t.g_ptr[c] : t.g_ptr[c + 1]])
        for kid in t.c_flat[t.c_ptr[c] : t.c_ptr[c + 1]].tolist():
            if t.is_res[kid]:
                s = store.start[kid]
                bm.update(store.values[s : s + store.length[kid]])
        got = np.frombuffer(bm.to_array(), dtype=np.uint32)
        store.add(np.array([c]), np.array([len(got)]), got)


def serialized_closures(
    cond: Condensation,
    ids: Sequence[int] | np.ndarray,
    *,
    resource: Sequence[bool] | None = None,
    graph: Graph | None = None,
) -> tuple[list[bytes], list[int]]:
    """What ``closures`` computes, serialized, with the size of each: the offline
    build's form. A closure is kept as a bitmap only until the last component that
    unions it is done, so memory holds the serialized sets and a frontier of
    bitmaps, not a bitmap per component (millions with a schema's resources). With
    ``resource``, a resource component's closure is computed a layer at a time
    (``resource_closures``)."""
    ids = np.asarray(ids, dtype=np.int64)
    n = cond.count
    ser: list[bytes] = [b""] * n
    sizes = [0] * n
    c_ptr, c_flat = cond.child_csr()
    user = np.repeat(np.arange(n, dtype=np.int64), np.diff(c_ptr))  # `user` unions `fed`
    fed = c_flat
    if resource is None:
        steps = np.arange(n, dtype=np.int64)
    else:
        # the group tier alone: no edge leads from it into the resource tier, whose
        # closures are made a layer at a time
        is_res = np.asarray(resource, dtype=bool)
        steps = np.flatnonzero(~is_res)
        keep = ~is_res[user]
        user, fed = user[keep], fed[keep]
        comps, ptr, values = resource_closures(cond, ids, resource, graph)
        comp_list = comps.tolist()
        for c, raw in zip(comp_list, serialize_rows(ptr, values), strict=True):
            ser[c] = raw
        for c, size in zip(comp_list, np.diff(ptr).tolist(), strict=True):
            sizes[c] = size
    plan = _Unions(cond, ids, steps, user, fed, whole=resource is None)
    _union_all(plan, ser, sizes)
    return ser, sizes


class _Unions:
    """What ``_union_all`` does at each component, worked out with numpy beforehand:
    its own ids, the closures it unions (``feeds``, in component order), whether it
    takes over the first one's bitmap (it is that closure's last user), the closures
    released after it and whether its own closure is kept for a later one."""

    def __init__(
        self,
        cond: Condensation,
        ids: np.ndarray,
        steps: np.ndarray,
        user: np.ndarray,
        fed: np.ndarray,
        *,
        whole: bool,
    ) -> None:
        n = cond.count
        by_user = np.argsort(user, kind="stable")  # feeds in component order, as listed
        user, fed = user[by_user], fed[by_user]
        f_ptr = row_ptr(user, n)
        rank = np.zeros(n, dtype=np.int64)
        rank[steps] = np.arange(len(steps), dtype=np.int64)
        last = np.full(n, -1, dtype=np.int64)  # step of each closure's last user
        np.maximum.at(last, fed, rank[user])
        first = f_ptr[:-1][np.diff(f_ptr) > 0]  # each user's first feed
        take = np.zeros(n, dtype=bool)
        take[user[first]] = last[fed[first]] == rank[user[first]]
        done = last[fed] == rank[user]
        done[first[take[user[first]]]] = False  # a closure taken over is not released
        m_ptr, m_flat = cond.member_csr()
        rows = _split if whole else functools.partial(_rows, comps=steps)
        self.steps = steps.tolist()
        self.own = rows(m_ptr, ids[m_flat])
        self.feeds = rows(f_ptr, fed)
        self.release = rows(row_ptr(user[done], n), fed[done])
        self.take = take.tolist()
        self.kept = (last >= 0).tolist()


def _union_all(plan: _Unions, ser: list[bytes], sizes: list[int]) -> None:
    """The closures of ``plan.steps``, in order, each fed ones' done before it. The
    bitmaps go through the same operations in the same order as ever (a container's
    kind after ``run_optimize`` depends on them when run and array sizes tie, so the
    bytes stay the same); only the bookkeeping around them was moved out of the loop."""
    own, feeds, release, take, kept = plan.own, plan.feeds, plan.release, plan.take, plan.kept
    live: list[Any] = [None] * len(take)  # a closure's bitmap while one still needs it
    for c in plan.steps:
        kids = feeds[c]
        ids = own[c]
        # In-place unions into a bitmap of this component's own: BitMap.union of n
        # bitmaps costs about twice as much (it builds every intermediate result).
        # A kid's bitmap that no other component waits for is taken over, not copied.
        if take[c]:
            bm = live[kids[0]]
            live[kids[0]] = None
            bm.update(ids) if len(ids) > 1 else bm.add(ids[0])
            for k in kids[1:]:
                bm |= live[k]
        else:
            bm = BitMap(ids)
            for k in kids:
                bm |= live[k]
        for k in release[c]:
            live[k] = None
        if kept[c]:
            live[c] = bm
        # depth-first ids put much of a closure in runs of consecutive ids: run
        # containers store each run in 4 bytes (bench/sizes.py: g2g 18% smaller raw)
        bm.run_optimize()
        ser[c] = bm.serialize()
        sizes[c] = len(bm)
