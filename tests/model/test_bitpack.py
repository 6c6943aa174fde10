"""``serialize_rows`` against pyroaring: the same bytes, row by row."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from leopard.model import bitpack
from leopard.model.bitpack import serialize_rows


def pyroaring_bytes(row: list[int]) -> bytes:
    bm = BitMap(row)
    bm.run_optimize()
    return bm.serialize()


def packed(rows: list[list[int]]) -> list[bytes]:
    ptr = np.concatenate(([0], np.cumsum([len(r) for r in rows]))).astype(np.int64)
    flat = np.array([v for r in rows for v in r], dtype=np.uint32)
    return serialize_rows(ptr, flat)


# values near container edges, runs of every length, several containers per row
value = st.one_of(
    st.integers(0, 300),
    st.integers(65_500, 65_600),
    st.integers(0, 2**32 - 1),
    st.integers(2**32 - 70, 2**32 - 1),
)
row = st.lists(value, max_size=40).map(lambda r: sorted(set(r)))
runs = st.lists(st.tuples(st.integers(0, 2**32 - 5_000), st.integers(1, 300)), max_size=6).map(
    lambda spans: sorted({v for s, n in spans for v in range(s, s + n)})
)


@given(st.lists(st.one_of(row, runs), max_size=30))
@settings(max_examples=300, deadline=None)
def test_rows_serialize_as_pyroaring_does(rows: list[list[int]]) -> None:
    got = packed(rows)
    assert got == [pyroaring_bytes(r) for r in rows]
    for r, raw in zip(rows, got, strict=True):
        assert list(BitMap.deserialize(raw)) == r


def test_every_container_count_and_flag_byte() -> None:
    # 1..20 containers (offsets appear with 4 or more run-holding ones; the run flags
    # span more than one byte past 8), mixing array and run containers
    rows = []
    for n in range(1, 21):
        rows.append([k << 16 | v for k in range(n) for v in ((1, 2, 3, 4, 9) if k % 3 else (7,))])
        rows.append([k << 16 | 5 for k in range(n)])
    assert packed(rows) == [pyroaring_bytes(r) for r in rows]


def test_bitmap_containers_and_empty_rows() -> None:
    dense = list(range(0, 20_000, 3))  # 4,096+ values in one container: a bitmap one
    full = list(range(70_000, 140_000))  # a run container
    rows = [[], dense, [1], full + [200_000], [], dense + [2**31]]
    assert packed(rows) == [pyroaring_bytes(r) for r in rows]


def test_rows_cut_into_chunks(monkeypatch) -> None:
    monkeypatch.setattr(bitpack, "_CHUNK", 7)
    rows = [list(range(i, i + (i % 11))) for i in range(200)] + [list(range(50))]
    assert packed(rows) == [pyroaring_bytes(r) for r in rows]
