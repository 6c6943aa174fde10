"""The resource tier's closures a layer at a time, against ``closures``' loop."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from leopard.model import layered
from leopard.model.closure import Graph, closures, condense
from leopard.model.layered import NARROW, resource_closures, serialized_closures


@st.composite
def tiered(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]], list[bool]]:
    """A graph of sets, each of the resource or the group tier, with no edge from
    the group tier into the resource tier (a schema never makes one): cycles, chains
    and fans in both tiers."""
    n = draw(st.integers(1, 40))
    res = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=90))
    chain = draw(st.integers(0, n - 1))
    pairs += [(i, i + 1) for i in range(chain)]  # a deep chain
    edges = [(p, c) for p, c in pairs if p != c and (res[p] or not res[c])]
    return n, edges, res


def graph_of(n: int, edges: list[tuple[int, int]]) -> Graph:
    p = np.array([e[0] for e in edges], dtype=np.int64)
    c = np.array([e[1] for e in edges], dtype=np.int64)
    return Graph.from_edges(n, p, c)


@given(tiered(), st.randoms(use_true_random=False))
@settings(max_examples=150, deadline=None)
def test_layers_equal_the_loop(case: tuple[int, list[tuple[int, int]], list[bool]], rnd) -> None:
    n, edges, res = case
    g = graph_of(n, edges)
    cond = condense(g)
    ids = np.array(rnd.sample(range(10 * n + 70_000), n), dtype=np.int64)  # any distinct ids
    resource = [res[m[0]] for m in cond.members]
    want = closures(cond, ids, resource=resource, graph=g)
    # every layer with numpy, the first ones only, none (one component at a time)
    for narrow in (1, 2, 10**9):
        layered.NARROW = narrow
        try:
            comps, ptr, values = resource_closures(cond, ids, resource, g)
            ser, sizes = serialized_closures(cond, ids, resource=resource, graph=g)
        finally:
            layered.NARROW = NARROW
        assert comps.tolist() == [i for i, r in enumerate(resource) if r]
        for i, comp in enumerate(comps.tolist()):
            assert values[ptr[i] : ptr[i + 1]].tolist() == list(want[comp])
        assert [BitMap.deserialize(s) for s in ser] == want
        assert sizes == [len(b) for b in want]


@given(tiered(), st.randoms(use_true_random=False))
@settings(max_examples=80, deadline=None)
def test_lists_of_some_components(case: tuple[int, list[tuple[int, int]], list[bool]], rnd) -> None:
    """The lists of a few components, made from the arrays alone, are the full lists'."""
    n, edges, _ = case
    lazy = condense(graph_of(n, edges))  # lists not made yet
    full = condense(graph_of(n, edges))
    comps = np.array(sorted(rnd.sample(range(full.count), rnd.randint(0, full.count))))
    comps = comps.astype(np.int64)
    for name in ("members", "children"):
        assert lazy.lists_of(name, comps) == {k: getattr(full, name)[k] for k in comps.tolist()}
    parents = full.parents()
    among = set(comps.tolist())
    want = {k: [q for q in parents[k] if q in among] for k in comps.tolist()}
    assert lazy.parents_among(comps) == want
    assert lazy.first_members().tolist() == [m[0] for m in full.members]
    assert lazy.cycles == sum(len(m) > 1 for m in full.members)
    assert lazy.in_cycles == sum(len(m) for m in full.members if len(m) > 1)


@given(tiered())
@settings(max_examples=150, deadline=None)
def test_a_resource_closure_is_what_its_paths_reach(
    case: tuple[int, list[tuple[int, int]], list[bool]],
) -> None:
    """By search, not by components: from a resource set, every set reached through
    resource sets alone, and the group sets those name (not the rest of a cycle such
    a group set is in, which a later change may break)."""
    n, edges, res = case
    g = graph_of(n, edges)
    cond = condense(g)
    resource = [res[m[0]] for m in cond.members]
    got = closures(cond, np.arange(n), resource=resource, graph=g)
    kids: dict[int, set[int]] = {}
    for p, c in edges:
        kids.setdefault(p, set()).add(c)
    for v in range(n):
        if not res[v]:
            continue
        seen, todo = {v}, [v]
        while todo:
            for k in kids.get(todo.pop(), ()):
                if k not in seen:
                    seen.add(k)
                    if res[k]:
                        todo.append(k)
        assert set(got[cond.comp[v]]) == seen, v
