"""Many small roaring bitmaps serialized at once, with numpy.

The offline build writes a bitmap per set and per subject: millions of them with a
schema's resources (every document is a set), most of a few ids. Built one by one,
each costs a ``BitMap`` and a ``serialize`` call from Python; ``serialize_rows``
writes them all from one sorted array, in the portable format that
``BitMap.deserialize`` reads (the Roaring format specification: a cookie, a
descriptive header of container keys and cardinalities, container offsets, then
array or run containers). A row is written as ``BitMap.run_optimize`` then
``serialize`` would write it, byte for byte: a container becomes a run container
when that is smaller (``4 * runs + 2 < 2 * cardinality``). A row with a container of
more than 4,096 values (a bitmap container) is left to pyroaring.
``bench/pack.py`` measures both ways.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise

import numpy as np
from pyroaring import BitMap

__all__ = ["serialize_chunks", "serialize_rows"]

_NO_RUN = 12346  # cookie of a bitmap without run containers (then a 32-bit count)
_RUN = 12347  # cookie with run containers (the count - 1 in its high 16 bits)
_ARRAY_MAX = 4096  # an array container holds at most this many values
_CHUNK = 1 << 21  # values serialized per numpy pass (bounds the temporaries)


def serialize_rows(ptr: np.ndarray, values: np.ndarray) -> list[bytes]:
    """``BitMap(values[ptr[i]:ptr[i + 1]])``, run-optimized and serialized, per row.

    ``values`` are uint32, sorted and distinct within each row; ``ptr`` has one entry
    more than there are rows (an empty row gives the empty bitmap).
    """
    out: list[bytes] = []
    for _, part in serialize_chunks(ptr, values):
        out.extend(part)
    return out


def serialize_chunks(ptr: np.ndarray, values: np.ndarray) -> Iterator[tuple[int, list[bytes]]]:
    """``serialize_rows`` a chunk of rows at a time (about ``_CHUNK`` values): the
    first row of each chunk and its rows' bytes, so that a writer holds one chunk."""
    ptr = np.asarray(ptr, dtype=np.int64)
    values = np.asarray(values, dtype=np.uint32)
    n = len(ptr) - 1
    row = 0
    while row < n:
        # rows [row, end): about _CHUNK values, at least one row
        end = int(np.searchsorted(ptr, ptr[row] + _CHUNK, side="right")) - 1
        end = min(max(end, row + 1), n)
        part = ptr[row : end + 1]
        yield row, _chunk(part - part[0], values[part[0] : part[-1]])
        row = end


def _chunk(ptr: np.ndarray, values: np.ndarray) -> list[bytes]:
    # Arrays of one entry per value are the cost here (ten million of them for a
    # build's subjects): they stay 16 and 32 bits wide, and what is needed per run is
    # worked out only for run containers.
    n = len(ptr) - 1
    count = len(values)
    hi = values >> np.uint32(16)
    lo = values.astype(np.uint16)  # the low 16 bits

    # containers: a row's values with the same high 16 bits
    new_c = np.empty(count, dtype=bool)
    new_c[:1] = True
    np.not_equal(hi[1:], hi[:-1], out=new_c[1:])
    new_c[ptr[:-1][np.diff(ptr) > 0]] = True  # each row's first value
    c_start = np.flatnonzero(new_c)
    n_c = len(c_start)
    c_card = np.diff(c_start, append=count)
    c_row = np.searchsorted(ptr, c_start, side="right") - 1  # (past the empty rows)
    c_key = hi[c_start]
    # runs of consecutive values, never across containers
    new_r = np.empty(count, dtype=bool)
    new_r[:1] = True
    np.not_equal(np.diff(values), 1, out=new_r[1:])
    new_r |= new_c
    c_runs = np.add.reduceat(new_r, c_start, dtype=np.int64) if n_c else c_start
    is_run = 4 * c_runs + 2 < 2 * c_card
    c_bytes = np.where(is_run, 2 + 4 * c_runs, 2 * c_card)

    # rows: header sizes, then where each row starts in the buffer
    r_nc = np.bincount(c_row, minlength=n)
    has_run = np.bincount(c_row, weights=is_run, minlength=n) > 0
    with_offsets = ~has_run | (r_nc >= 4)
    desc_at = np.where(has_run, 4 + (r_nc + 7) // 8, 8)
    header = desc_at + 4 * r_nc + np.where(with_offsets, 4 * r_nc, 0)
    data = np.bincount(c_row, weights=c_bytes, minlength=n).astype(np.int64)
    row_at = np.concatenate(([0], np.cumsum(header + data)))
    buf = np.zeros(int(row_at[-1]), dtype=np.uint8)
    start = row_at[:-1]

    plain = np.flatnonzero(~has_run)
    _put32(buf, start[plain], np.full(len(plain), _NO_RUN))
    _put32(buf, start[plain] + 4, r_nc[plain])
    runny = np.flatnonzero(has_run)
    _put32(buf, start[runny], _RUN | ((r_nc[runny] - 1) << 16))

    # per container: its place in its row, the run flags, the descriptive header
    r_cfirst = np.concatenate(([0], np.cumsum(r_nc)[:-1]))
    idx = np.arange(n_c, dtype=np.int64) - r_cfirst[c_row]
    flagged = np.flatnonzero(is_run)
    if len(flagged):
        at = start[c_row[flagged]] + 4 + idx[flagged] // 8
        bits = np.left_shift(1, idx[flagged] % 8)
        first = np.flatnonzero(np.concatenate(([True], at[1:] != at[:-1])))
        buf[at[first]] = np.add.reduceat(bits, first)
    desc = start[c_row] + desc_at[c_row] + 4 * idx
    _put16(buf, desc, c_key)
    _put16(buf, desc + 2, c_card - 1)
    # offsets from the row's start to each container's data
    c_before = np.cumsum(c_bytes) - c_bytes
    rel = header[c_row] + c_before - c_before[r_cfirst[c_row]]
    offs = np.flatnonzero(with_offsets[c_row])
    _put32(buf, start[c_row[offs]] + desc_at[c_row[offs]] + 4 * r_nc[c_row[offs]] + 4 * idx[offs],
           rel[offs])  # fmt: skip
    at = start[c_row] + rel

    # array containers: the low 16 bits of each value, value i of container c at
    # at[c] + 2 * (i - c_start[c])
    pos = np.repeat(at - 2 * c_start, c_card)
    pos += np.arange(0, 2 * count, 2, dtype=np.int64)
    flagged_any = len(flagged) > 0
    if flagged_any:
        in_array = np.repeat(~is_run, c_card)
        _put16(buf, pos[in_array], lo[in_array])
    else:
        _put16(buf, pos, lo)
    del pos
    if flagged_any:
        # run containers: the number of runs, then (start, length - 1) per run
        _put16(buf, at[flagged], c_runs[flagged])
        r_start = np.flatnonzero(new_r)
        r_len = np.diff(r_start, append=count)
        mine = ~in_array[r_start]
        r_start, r_len = r_start[mine], r_len[mine]
        per = c_runs[flagged]
        rc = np.repeat(flagged, per)  # the container of each run, in order
        k = np.arange(len(rc), dtype=np.int64) - np.repeat(np.cumsum(per) - per, per)
        q = at[rc] + 2 + 4 * k
        _put16(buf, q, lo[r_start])
        _put16(buf, q + 2, r_len - 1)

    blob = buf.tobytes()
    bounds = row_at.tolist()
    out = [blob[a:b] for a, b in pairwise(bounds)]  # a tenth faster than indexing bounds
    big = np.flatnonzero(~is_run & (c_card > _ARRAY_MAX))
    for r in np.unique(c_row[big]).tolist():
        bm = BitMap(values[ptr[r] : ptr[r + 1]])
        bm.run_optimize()
        out[r] = bm.serialize()
    return out


def _put16(buf: np.ndarray, at: np.ndarray, value: np.ndarray) -> None:
    _view(buf, "<u2")[at] = value


def _put32(buf: np.ndarray, at: np.ndarray, value: np.ndarray) -> None:
    _view(buf, "<u4")[at] = value


def _view(buf: np.ndarray, dtype: str) -> np.ndarray:
    """``buf`` as little-endian integers starting at every byte (unaligned, overlapping):
    ``view[i]`` is the integer at byte ``i``."""
    size = np.dtype(dtype).itemsize
    return np.ndarray((max(len(buf) - size + 1, 0),), dtype=dtype, buffer=buf, strides=(1,))
