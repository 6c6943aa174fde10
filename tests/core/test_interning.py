"""Group names interned part by part, folded on a worker thread as the build reads."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.schemas import FOLDERS

from leopard.core.batches import table_from_tuples
from leopard.core.collect import Collector, prefetch
from leopard.core.interning import GroupNames, dedupe
from leopard.model.config import schema_config
from leopard.model.names import parse_tuple

NAMES = st.sampled_from([f"group:g{i}#member" for i in range(12)] + ["doc:d#view", "é:ü#x"])


def first_appearance(parts: list[list[str]]) -> tuple[list[str], list[int]]:
    """The oracle: distinct names in order of first appearance, and each position's id."""
    ids: dict[str, int] = {}
    every = [ids.setdefault(name, len(ids)) for part in parts for name in part]
    return list(ids), every


@settings(max_examples=150, deadline=None)
@given(parts=st.lists(st.lists(NAMES, max_size=8), max_size=10), fold=st.integers(1, 12))
def test_positions_become_ids_in_order_of_first_appearance(
    parts: list[list[str]], fold: int
) -> None:
    names = GroupNames()
    names.FOLD, names.SPREAD = fold, 0  # folded on the worker after every few parts
    positions = []
    for part in parts:
        positions.append(names.add(pa.array(part, pa.string())))
        names.fold()
    distinct, ids = names.finish()
    want_names, want_ids = first_appearance(parts)
    assert distinct.to_pylist() == want_names
    assert ids.tolist() == want_ids
    # the positions handed out are the indexes into those ids, in order
    assert [p for part in positions for p in part.tolist()] == list(range(len(want_ids)))


def test_parts_appended_whole_take_the_next_positions() -> None:
    names = GroupNames()
    names.add(pa.array(["a", "b"]))
    names.extend([pa.array(["b", "c"]), pa.array(["a"])], 3)
    assert names.size == 5
    assert names.add(pa.array(["d"])).tolist() == [5]
    distinct, ids = names.finish()
    assert distinct.to_pylist() == ["a", "b", "c", "d"]
    assert ids.tolist() == [0, 1, 1, 2, 0, 3]


def test_a_failed_fold_is_raised_by_finish_and_only_waited_for_by_a_quiet_close() -> None:
    bad = pa.array([b"\xff"], pa.binary())  # not UTF-8: the fold's cast to string fails
    names = GroupNames()
    names.FOLD, names.SPREAD = 1, 0
    names.add(bad)
    names.fold()
    with pytest.raises(pa.ArrowInvalid):
        names.finish()
    quiet = GroupNames()
    quiet.FOLD, quiet.SPREAD = 1, 0
    quiet.add(bad)
    quiet.fold()
    quiet.close(check=False)  # after another error: waits, does not raise this one
    assert quiet._pool is None


def test_dedupe_of_nothing_is_empty() -> None:
    distinct, ids = dedupe([])
    assert distinct.to_pylist() == [] and ids.tolist() == []


# -- the reading pipeline: batches prepared by worker threads, yielded in order -----------


def slow_square(n: int) -> int:
    time.sleep(0.002 * (n % 3))  # later batches often finish first
    return n * n


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_prepared_batches_come_in_the_order_read(workers: int) -> None:
    got = list(prefetch(iter(range(40)), prepare=slow_square, workers=workers))  # type: ignore[arg-type]
    assert got == [n * n for n in range(40)]


def test_an_error_preparing_a_batch_is_raised_where_that_batch_would_come() -> None:
    def prepare(n: int) -> int:
        if n == 5:
            raise ValueError(f"batch {n} is bad")
        return n

    got = []
    with pytest.raises(ValueError, match="batch 5 is bad"):
        for item in prefetch(iter(range(10)), prepare=prepare):  # type: ignore[arg-type]
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_an_error_reading_is_raised_after_the_batches_before_it() -> None:
    def batches() -> Iterator[int]:
        yield from range(3)
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetch(batches(), prepare=slow_square):  # type: ignore[arg-type]
            got.append(item)
    assert got == [0, 1, 4]


def test_a_consumer_that_stops_early_stops_the_reading() -> None:
    read = []

    def batches() -> Iterator[int]:
        for n in range(1000):
            read.append(n)
            yield n

    stream = prefetch(batches(), prepare=slow_square)  # type: ignore[arg-type]
    assert next(stream) == 0
    stream.close()  # the generator's finally: stop, join the reader
    assert len(read) < 1000


def test_a_prepared_batch_is_freed_once_absorbed_while_the_cyclic_collector_is_off(
    tmp_path: Path,
) -> None:
    """The build holds the cyclic collector off: what ``prepare`` made of a batch must
    go with its last reference, or every batch's arrays would stay to the end."""
    (tmp_path / "s.zed").write_text(FOLDERS)
    col = Collector(schema_config(tmp_path / "s.zed"))
    lines = ["doc:d#parent@folder:f", "folder:f#viewer@group:eng#member", "doc:d#viewer@user:a"]
    table = table_from_tuples([parse_tuple(line) for line in lines])
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        part = col.prepare(table)
        gone = weakref.ref(part)
        col.absorb(part)
        del part
        assert gone() is None
    finally:
        if was_enabled:
            gc.enable()
    col.finish()
    assert "doc:d#view" in col.group_names.to_pylist()
