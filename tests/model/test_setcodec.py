"""The two forms of a stored set (``leopard.model.setcodec``): the compiled codec
against the same codec in Python, both against pyroaring."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from leopard.model import setcodec
from leopard.model.setcodec import TAG, _py_load, _py_pack, _py_unpack, compact_form


def test_the_compiled_codec_is_built() -> None:
    # setup.py builds leopard.model._sets where the package is installed; without it every
    # read of a set goes through Python (correct, several times slower)
    assert setcodec.COMPILED


@st.composite
def id_sets(draw: st.DrawFn) -> BitMap:
    """Sets of the shapes an index stores: a few ids spread wide, runs of consecutive
    ids (depth-first closures), dense blocks (bitmap containers), the top of the range."""
    parts = draw(
        st.lists(
            st.one_of(
                st.lists(st.integers(0, 2**32 - 1), max_size=20),
                st.tuples(st.integers(0, 2**32 - 10_000), st.integers(1, 9_000)).map(
                    lambda t: range(t[0], t[0] + t[1])
                ),
                st.tuples(st.integers(0, 2**32 - 200_000), st.integers(1, 7)).map(
                    lambda t: range(t[0], t[0] + 140_000, t[1])
                ),
                st.lists(st.integers(2**32 - 300, 2**32 - 1), max_size=40),
            ),
            max_size=4,
        )
    )
    bm = BitMap()
    for p in parts:
        bm.update(p)
    if draw(st.booleans()):
        bm.run_optimize()
    return bm


@settings(max_examples=300, deadline=None)
@given(id_sets())
def test_both_codecs_write_and_read_the_same(bm: BitMap) -> None:
    raw = bm.serialize()
    packed = setcodec.pack(raw)
    assert packed == _py_pack(raw)
    assert len(packed) <= len(raw)
    if packed is not raw:
        assert packed[0] == TAG and len(packed) < len(raw)
    for stored in (raw, packed):
        assert setcodec.load(stored) == bm == _py_load(stored)
        assert BitMap.deserialize(setcodec.unpack(stored)) == bm
        assert BitMap.deserialize(_py_unpack(stored)) == bm
        prefixed = b"\x00\x00\x00\x07" + stored  # a MEMBER2GROUP value: an id, then the set
        assert setcodec.load(prefixed, 4) == bm == _py_load(prefixed, 4)
        assert BitMap.deserialize(setcodec.unpack(prefixed, 4)) == bm


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), max_size=5_000, unique=True))
def test_the_compact_form_unpacks_to_what_pyroaring_writes(ids: list[int]) -> None:
    bm = BitMap(ids)  # no run containers, as unpack writes
    compact = compact_form(sorted(ids))
    assert setcodec.unpack(compact) == bm.serialize() == _py_unpack(compact)


def test_the_forms_at_their_edges() -> None:
    assert setcodec.load(bytes((TAG,))) == BitMap() == _py_load(bytes((TAG,)))
    top = compact_form([0, 2**32 - 1])
    assert setcodec.load(top) == BitMap([0, 2**32 - 1])
    # a few ids spread over many roaring containers: compact is far smaller
    spread = BitMap([i << 17 for i in range(10)]).serialize()
    assert len(setcodec.pack(spread)) * 3 < len(spread)
    # a long run: roaring's run container is smaller, kept as it was
    run = BitMap(range(100_000))
    run.run_optimize()
    raw = run.serialize()
    assert setcodec.pack(raw) is raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (bytes((TAG, 0x80)), "compact set ends inside an id (2 bytes)"),
        (bytes((TAG, 0x05, 0xFF)), "compact set ends inside an id (3 bytes)"),
        (bytes((TAG, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01)), "id longer than 5 bytes (7 bytes)"),
        (bytes((TAG, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F)), "id above 2**32 - 1 (6 bytes)"),
        (compact_form([2**32 - 1]) + b"\x00", "id above 2**32 - 1 (7 bytes)"),
    ],
)
def test_a_damaged_compact_set_is_refused_saying_why(raw: bytes, message: str) -> None:
    for load in (setcodec.load, _py_load):
        with pytest.raises(ValueError, match=re.escape(message)):
            load(raw)
        with pytest.raises(ValueError, match="compact set"):
            load(b"abcd" + raw, 4)


def test_no_set_past_the_end_and_no_roaring_garbage() -> None:
    for load in (setcodec.load, _py_load):
        with pytest.raises(ValueError, match="no set at byte 9 of 3"):
            load(b"abc", 9)
        with pytest.raises((ValueError, IndexError)):
            load(b"\x3a\x30\x00\x00garbage")
    with pytest.raises(ValueError, match="not a roaring bitmap"):
        setcodec.pack(b"\x3a\x30\x00\x00\x05\x00\x00\x00")  # five containers, none there
