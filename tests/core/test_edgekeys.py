"""The build's numpy work on edge keys."""

from __future__ import annotations

import numpy as np
import pytest
from pyroaring import BitMap

from leopard.core.edgekeys import bitmaps_by_head
from leopard.model import bitpack
from leopard.model.setcodec import pack


@pytest.mark.parametrize("chunk", [1, 5, 1 << 21])  # a head per chunk, a few, one chunk
def test_bitmaps_by_head_group_each_heads_values(monkeypatch, chunk: int) -> None:
    pairs = sorted({(h, v) for h in (0, 3, 2**31) for v in (1, 2, 3, 65_536, 2**32 - 1)})
    keys = np.array([h << 32 | v for h, v in pairs], dtype=np.uint64)
    monkeypatch.setattr(bitpack, "_CHUNK", chunk)
    parts = list(bitmaps_by_head(keys))
    heads = [h for hs, _ in parts for h in hs.tolist()]
    values = [v for _, vs in parts for v in vs]
    assert heads == [0, 3, 2**31]
    for h, raw in zip(heads, values, strict=True):
        want = BitMap([v for hh, v in pairs if hh == h])
        want.run_optimize()
        assert raw == pack(want.serialize())  # compact where smaller, as stored
    assert list(bitmaps_by_head(np.zeros(0, dtype=np.uint64))) == []
