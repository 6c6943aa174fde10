"""Unit tests of ``leopard.model.closure``: condensation, depth-first ids, closures, depths.

Every result is compared with a plain BFS over the edge list. The big graphs
(chains and cycles of 100,000 groups, a fan of 100,000 children) are there to
prove that nothing recurses per level: Python's recursion limit is 1,000.
"""

from __future__ import annotations

import random
import sys
from collections import deque

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap
from support.strategies import preload_failure_reporter

import leopard.model.closure as closure_module
from leopard.model.closure import (
    Condensation,
    Graph,
    closures,
    condense,
    depths,
    dfs_order,
    unique_u64,
)
from leopard.model.layered import serialized_closures

preload_failure_reporter()  # readable hypothesis failures under filterwarnings=error

BIG = 100_000


def graph(n: int, edges: list[tuple[int, int]]) -> Graph:
    parents = np.array([p for p, _ in edges], dtype=np.int64)
    children = np.array([c for _, c in edges], dtype=np.int64)
    return Graph.from_edges(n, parents, children)


def adjacency(n: int, edges: list[tuple[int, int]]) -> list[set[int]]:
    out: list[set[int]] = [set() for _ in range(n)]
    for p, c in edges:
        out[p].add(c)
    return out


def reachable(adj: list[set[int]], v: int) -> set[int]:
    seen = {v}
    queue = deque([v])
    while queue:
        u = queue.popleft()
        for w in adj[u]:
            if w not in seen:
                seen.add(w)
                queue.append(w)
    return seen


def check_condensation(n: int, edges: list[tuple[int, int]], cond: Condensation) -> None:
    """Components are exactly the mutual-reachability classes; edges go high -> low."""
    adj = adjacency(n, edges)
    reach = [reachable(adj, v) for v in range(n)]
    comp = cond.comp.tolist()
    assert len(comp) == n
    assert sorted(v for m in cond.members for v in m) == list(range(n))
    for c, members in enumerate(cond.members):
        assert members and all(comp[v] == c for v in members)
    for u in range(n):
        for v in range(n):
            same = v in reach[u] and u in reach[v]
            assert (comp[u] == comp[v]) == same, (u, v)
    expected_children: list[set[int]] = [set() for _ in cond.members]
    for p, c in edges:
        if comp[p] != comp[c]:
            assert comp[p] > comp[c], "Tarjan numbers children first"
            expected_children[comp[p]].add(comp[c])
    for c, kids in enumerate(cond.children):
        assert len(kids) == len(set(kids)), "children are distinct"
        assert set(kids) == expected_children[c]
    assert cond.cycles == sum(1 for m in cond.members if len(m) > 1)
    parents = cond.parents()
    for c, kids in enumerate(cond.children):
        for k in kids:
            assert c in parents[k]
    assert sum(len(p) for p in parents) == sum(len(k) for k in cond.children)


def check_dfs_order(cond: Condensation, new_id: np.ndarray) -> None:
    n = len(cond.comp)
    ids = new_id.tolist()
    assert sorted(ids) == list(range(n)), "dfs_order is a permutation of 0..n-1"
    for members in cond.members:
        got = sorted(ids[v] for v in members)
        assert got == list(range(got[0], got[0] + len(got))), "a component's ids are consecutive"
    first = [min(ids[v] for v in m) for m in cond.members]
    parents = cond.parents()
    for c, ps in enumerate(parents):
        if ps:  # preorder: reached from a parent that was numbered before it
            assert min(first[p] for p in ps) < first[c]


@st.composite
def edge_lists(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    """Small graphs, dense enough for cycles; self-loops and duplicate edges included."""
    n = draw(st.integers(0, 25))
    if n == 0:
        return 0, []
    node = st.integers(0, n - 1)
    edges = draw(st.lists(st.tuples(node, node), max_size=3 * n))
    if edges and draw(st.booleans()):
        edges += draw(st.lists(st.sampled_from(edges), max_size=5))  # duplicates
    if draw(st.booleans()):  # a chain through every node
        edges += [(v, v + 1) for v in range(n - 1)]
    return n, edges


# -- Graph --------------------------------------------------------------------------------


def test_from_edges_builds_csr_without_duplicates() -> None:
    g = graph(4, [(2, 1), (0, 3), (2, 1), (0, 1), (3, 3)])
    assert g.n == 4 and g.edge_count == 4
    assert g.indptr.tolist() == [0, 2, 2, 3, 4]
    assert g.indices.tolist() == [1, 3, 1, 3]
    r = g.reverse()
    kids = [sorted(r.indices[r.indptr[v] : r.indptr[v + 1]].tolist()) for v in range(4)]
    assert kids == [[], [0, 2], [], [0, 3]]


def test_empty_graph() -> None:
    cond = condense(graph(0, []))
    assert cond.count == 0 and cond.cycles == 0
    assert dfs_order(cond).tolist() == []
    assert closures(cond, np.zeros(0, dtype=np.int64)) == []
    assert depths(cond) == []


def test_isolated_nodes_are_their_own_components() -> None:
    cond = condense(graph(3, []))
    assert cond.count == 3 and cond.cycles == 0
    out = closures(cond, [7, 8, 9])
    assert [list(b) for b in out] == [[cond.members[c][0] + 7] for c in range(3)]


# -- condense -----------------------------------------------------------------------------


def test_self_loop_is_one_component_and_not_a_cycle() -> None:
    edges = [(0, 0), (0, 1)]
    cond = condense(graph(2, edges))
    check_condensation(2, edges, cond)
    assert cond.count == 2 and cond.cycles == 0
    assert cond.children[cond.comp[0]] == [cond.comp[1]]


def test_two_cycles_joined_by_an_edge() -> None:
    edges = [(0, 1), (1, 0), (1, 2), (2, 3), (3, 2), (4, 4)]
    cond = condense(graph(5, edges))
    check_condensation(5, edges, cond)
    assert cond.cycles == 2 and cond.count == 3


@settings(max_examples=300, deadline=None)
@given(edge_lists())
def test_condense_matches_mutual_reachability(case: tuple[int, list[tuple[int, int]]]) -> None:
    n, edges = case
    cond = condense(graph(n, edges))
    check_condensation(n, edges, cond)
    check_dfs_order(cond, dfs_order(cond))


@settings(max_examples=300, deadline=None)
@given(edge_lists(), st.integers(1, 4))
def test_condense_peeling_whole_layers_with_numpy(
    case: tuple[int, list[tuple[int, int]]], wide: int
) -> None:
    """The numpy layer-at-a-time peeling, which only layers of 256 or more components
    take in real use, made to run on small graphs."""
    n, edges = case
    saved = closure_module._WIDE
    closure_module._WIDE = wide
    try:
        cond = condense(graph(n, edges))
    finally:
        closure_module._WIDE = saved
    check_condensation(n, edges, cond)


def test_deep_chain_does_not_recurse() -> None:
    assert sys.getrecursionlimit() < BIG
    edges = [(v, v + 1) for v in range(BIG - 1)]
    g = graph(BIG, edges)
    cond = condense(g)
    assert cond.count == BIG and cond.cycles == 0
    # children first: the bottom of the chain is component 0
    assert cond.comp.tolist() == list(range(BIG - 1, -1, -1))
    new_id = dfs_order(cond)
    assert new_id.tolist() == list(range(BIG)), "preorder of a chain is the chain"
    assert depths(cond)[cond.comp[0]] == BIG


def test_deep_chain_in_reverse_input_order() -> None:
    """Edges pointing to lower numbers make the DFS start from the bottom."""
    edges = [(v + 1, v) for v in range(BIG - 1)]
    cond = condense(graph(BIG, edges))
    assert cond.count == BIG
    new_id = dfs_order(cond)
    assert new_id.tolist() == list(range(BIG - 1, -1, -1))
    assert max(depths(cond)) == BIG


def test_long_cycle_is_one_component() -> None:
    order = list(range(BIG))
    random.Random(7).shuffle(order)
    edges = [(order[i], order[(i + 1) % BIG]) for i in range(BIG)]
    cond = condense(graph(BIG, edges))
    assert cond.count == 1 and cond.cycles == 1
    assert sorted(cond.members[0]) == list(range(BIG))
    assert cond.children == [[]]
    new_id = dfs_order(cond)
    assert sorted(new_id.tolist()) == list(range(BIG))
    (whole,) = closures(cond, new_id)
    assert len(whole) == BIG
    assert depths(cond) == [1]


def test_chain_of_cycles_with_a_tail() -> None:
    """Deep nesting of two-group cycles: condense, then the closures of the top and bottom."""
    k = 20_000  # 40,000 groups in 20,000 two-cycles, each nested in the previous
    edges = []
    for i in range(k):
        a, b = 2 * i, 2 * i + 1
        edges += [(a, b), (b, a)]
        if i + 1 < k:
            edges.append((b, a + 2))
    n = 2 * k
    cond = condense(graph(n, edges))
    assert cond.count == k and cond.cycles == k
    new_id = dfs_order(cond)
    assert sorted(new_id.tolist()) == list(range(n))
    down = closures(cond, new_id)
    assert len(down[cond.comp[0]]) == n and len(down[cond.comp[n - 1]]) == 2
    assert depths(cond)[cond.comp[0]] == k


def test_wide_fan() -> None:
    edges = [(0, v) for v in range(1, BIG)] + [(v, 0) for v in range(1, BIG, 1000)]
    cond = condense(graph(BIG, edges))
    # 0 and every thousandth child form one cycle; the other children hang below it
    assert cond.cycles == 1
    assert len(cond.members[cond.comp[0]]) == 1 + len(range(1, BIG, 1000))
    new_id = dfs_order(cond)
    check_ids = new_id.tolist()
    assert sorted(check_ids) == list(range(BIG))
    down = closures(cond, new_id)
    assert len(down[cond.comp[0]]) == BIG
    assert list(down[cond.comp[2]]) == [check_ids[2]]


# -- closures and depths ------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(edge_lists(), st.sampled_from(["identity", "dfs", "shuffled"]), st.randoms())
def test_closures_match_bfs(
    case: tuple[int, list[tuple[int, int]]], ids_kind: str, rnd: random.Random
) -> None:
    n, edges = case
    cond = condense(graph(n, edges))
    if ids_kind == "dfs":
        ids = dfs_order(cond).tolist()
    else:
        ids = list(range(n))
        if ids_kind == "shuffled":
            rnd.shuffle(ids)
    ids_arg = np.asarray(ids, dtype=np.int64) if ids_kind == "dfs" else ids
    down = closures(cond, ids_arg)
    assert len(down) == cond.count
    adj = adjacency(n, edges)
    for v in range(n):
        c = cond.comp[v]
        assert set(down[c]) == {ids[u] for u in reachable(adj, v)}, v


@settings(max_examples=300, deadline=None)
@given(edge_lists(), st.randoms())
def test_serialized_closures_are_the_closures(
    case: tuple[int, list[tuple[int, int]]], rnd: random.Random
) -> None:
    """The build's streamed form holds the same sets, with and without a
    resource tier (components marked at random, then every ancestor of a marked one:
    no edge leads from the group tier into the resource tier)."""
    n, edges = case
    g = graph(n, edges)
    cond = condense(g)
    ids = dfs_order(cond)
    parents = cond.parents()
    marked = {c for c in range(cond.count) if rnd.random() < 0.3}
    todo = list(marked)
    while todo:
        for p in parents[todo.pop()]:
            if p not in marked:
                marked.add(p)
                todo.append(p)
    for resource in (None, [c in marked for c in range(cond.count)]):
        want = closures(cond, ids, resource=resource, graph=g)
        got, sizes = serialized_closures(cond, ids, resource=resource, graph=g)
        for c in range(cond.count):
            assert BitMap.deserialize(got[c]) == want[c], (c, resource)
            assert sizes[c] == len(want[c])


@settings(max_examples=200, deadline=None)
@given(edge_lists())
def test_depths_are_longest_chains_of_components(case: tuple[int, list[tuple[int, int]]]) -> None:
    n, edges = case
    cond = condense(graph(n, edges))
    got = depths(cond)

    def longest(c: int) -> int:  # plain recursion is fine: at most 25 components
        return 1 + max((longest(k) for k in cond.children[c]), default=0)

    assert got == [longest(c) for c in range(cond.count)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 5)))
def test_unique_u64_is_sorted_set(values: list[int]) -> None:
    got = unique_u64(np.array(values, dtype=np.uint64))
    assert got.dtype == np.uint64
    assert got.tolist() == sorted(set(values))
