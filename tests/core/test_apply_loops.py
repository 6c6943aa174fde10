"""The compiled loops of applying member changes (leopard/core/_apply.c) against their
Python twins in leopard/core/batchwork.py.

The same random batches (members of known and new groups, new and known subjects,
nested edges, deletes of stored and absent tuples, a tuple touched and deleted in one
batch, both sources of a union rewrite) are applied to two copies of one base index, one
writer running the compiled loops and one the Python ones. After every batch both
incremental layers hold the same bytes under the same keys, and the reports agree.
The state machine of test_incremental.py checks the answers themselves (through the
compiled loops, as built).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap
from support.index_model import build, changes
from support.strategies import Graph, graphs, tuple_lines

from leopard.core import _apply, batchwork
from leopard.core.incremental import DeltaWriter
from leopard.core.index import Index
from leopard.model.names import RelationTuple, parse_tuple

SUBJECTS = ("user:a", "user:b", "user:new1", "user:new2", "user:*", "group:x#owner")


def _resource_set(t: RelationTuple) -> str:
    return f"{t.resource_type}:{t.resource_id}#{t.relation}"


@st.composite
def batches(draw: st.DrawFn, graph: Graph) -> list[list[str]]:
    """A few batches of ``+line``/``-line`` changes: stored tuples, random ones, members."""
    stored = list(graph.lines) or ["group:a#member@user:a"]
    groups = sorted({_resource_set(parse_tuple(line)) for line in stored})
    line = (
        st.sampled_from(stored)
        | tuple_lines(graph.config)
        | st.builds(lambda g, s: f"{g}@{s}", st.sampled_from(groups), st.sampled_from(SUBJECTS))
    )
    change = st.builds(lambda op, x: op + x, st.sampled_from("+-"), line)
    return draw(st.lists(st.lists(change, max_size=25), min_size=1, max_size=4))


def _writers(tmp: Path, graph: Graph) -> list[tuple[Index, DeltaWriter]]:
    build(tmp / "base", graph.config, graph.lines, {"t:0": 0})
    out = []
    for name in ("compiled", "python"):
        shutil.copytree(tmp / "base", tmp / name, symlinks=True)
        ix = Index(tmp / name)
        out.append((ix, DeltaWriter(ix.reader)))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), graph=graphs(max_random=12, config_name="union") | graphs(max_random=10))
def test_compiled_and_python_loops_write_the_same_layer(
    data: st.DataObject, graph: Graph, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("loops")
    (cix, cw), (pix, pw) = _writers(tmp, graph)
    try:
        for n, batch in enumerate(data.draw(batches(graph)), start=1):
            reports = []
            for w, loops in ((cw, _apply), (pw, None)):
                batchwork._apply = loops  # type: ignore[attr-defined]
                try:
                    reports.append(w.apply(changes(*batch), {"t:0": n}))
                finally:
                    batchwork._apply = _apply  # type: ignore[attr-defined]
            got, want = reports
            got.seconds = want.seconds = 0.0
            assert got == want, batch
            assert cix.reader.overlay.sets == pix.reader.overlay.sets, batch
            assert cix.reader.overlay.group_names == pix.reader.overlay.group_names
    finally:
        for ix, w in ((cix, cw), (pix, pw)):
            w.close()
            ix.close()


def test_a_support_mask_past_63_bits_moves_as_in_python() -> None:
    """A set fed by more than 63 relations: its masks are big ints (the slow branch)."""
    key = b"\0\0\0\1s\0\0\0\2"
    support = {key: (1 << 70) | 1}
    groups = BitMap([1])

    class E(tuple):  # the shape of an Edge: (group, subject, nested, bit)
        pass

    edge = E(("group:a#member", "user:a", False, 70))
    rows = [(edge, False, 1, 2, groups, key)]
    members: dict[tuple[str, int], BitMap] = {("g2m", 1): BitMap([2])}
    dirty: set[tuple[str, int]] = set()
    flipped = _apply.flip_rows(
        rows, support, lambda k, p: 0, members, lambda f, g: BitMap(), dirty, set()
    )
    assert support[key] == 1 and flipped == [] and 1 in groups  # bit 0 still feeds it
    edge0 = E(("group:a#member", "user:a", False, 0))
    flipped = _apply.flip_rows(
        [(edge0, False, 1, 2, groups, key)], support, lambda k, p: 0, members, None, dirty, set()
    )
    assert support[key] == 0 and len(flipped) == 1 and 1 not in groups
    assert members[("g2m", 1)] == BitMap() and dirty == {("g2m", 1)}


def test_a_malformed_row_is_refused_not_read() -> None:
    with pytest.raises(TypeError, match="6-tuple"):
        _apply.flip_rows([("not", "a", "row")], {}, None, {}, None, set(), set())
    with pytest.raises(TypeError, match="edge, touched"):
        _apply.member_rows([("x",)], {}, {}, {}, {}, None, {}, 0, BitMap)
