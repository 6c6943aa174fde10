"""The incremental layer against the plain BFS model, change batch by change batch.

A hypothesis state machine builds a small base index from a random
graph, opens ``Index`` and a ``DeltaWriter`` over its reader, and then applies random
batches of tuple changes to both the index and a plain set of tuples: edge and member
touches and deletes, cycles closed and broken, self-loops, wildcards, union rewrites
(``group#member`` fed by ``member`` and ``manager``), opaque usersets, tuples of
unindexed relations, deletes of absent tuples, touches of present ones, duplicates and
touch-then-delete of one tuple inside a batch. After every step every query is compared
with ``tests/oracle.py`` rebuilt from the set of tuples: ``check`` for every pair of a
small universe, ``groups_of``, ``members_of`` with paging, ``explain`` (valid and
shortest), the position and the version token. Compaction and reopening are steps too.

A group emptied by deletes keeps its id in the incremental layer until compaction, but
answers as unknown (``check(G, G)`` is false, as after a rebuild of the same tuples);
``Model.known`` is the groups of the current tuples, and
``test_an_emptied_group_answers_as_after_a_rebuild`` pins it.

Deterministic cases follow: a second path that keeps a membership, a cycle broken, the
last source of a union-rewrite edge (across a compaction), coalescing inside a batch,
positions and tokens, ``wait_for`` in this reader and in a reader of its own, and two
regressions of reading the delta while a writer creates or flushes it.

The helpers here (``Model``, ``compare_all``, ``build``) are shared with
``test_consumer.py``.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from rocksdict import Options, Rdict
from support.index_model import (
    REWRITE,
    TOPIC,
    Model,
    build,
    changes,
    compare_all,
    edges_of,
    sources_of,
)
from support.strategies import graphs, tuple_lines

from leopard.core import index as index_module
from leopard.core.compact import compact
from leopard.core.incremental import DeltaWriter
from leopard.core.index import Index
from leopard.core.layers import SetReader
from leopard.errors import InvalidInput, StaleIndex, StorageError
from leopard.model.config import Config
from leopard.model.names import format_tuple, parse_tuple
from leopard.model.tokens import decode_token, encode_token
from leopard.store.generations import IndexDir
from leopard.store.rocks import rocks_errors

LEAVES = ("user:a", "user:b", "user:new", "user:*", "service:a", "service:*", "acme/user:x")
# what a change is drawn from: a stored tuple (often deleted), any random tuple, a
# nested edge between known groups, a self-loop, a leaf member of a known group
KINDS = ("present", "present", "random", "edge", "self", "member")


class IncrementalMachine(RuleBasedStateMachine):
    """Random change batches applied to a real index and to a set of tuples."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="leopard-sm-"))
        self.path = self.tmp / "ix"
        self.ix: Index | None = None
        self.writer: DeltaWriter | None = None
        self.offsets = {f"{TOPIC}:0": 0, f"{TOPIC}:1": 0}
        self.batches_since_open = 0

    # -- setup and teardown ----------------------------------------------------------

    @initialize(
        graph=graphs(max_random=12, config_name="union") | graphs(max_random=10),
        start=st.integers(0, 1000),
    )
    def build_base(self, graph, start: int) -> None:  # type: ignore[no-untyped-def]
        self.config = graph.config
        self.offsets[f"{TOPIC}:0"] = start
        build(self.path, self.config, graph.lines, dict(self.offsets))
        self.model = Model(self.config, (parse_tuple(x) for x in graph.lines))
        self._open()

    def _open(self) -> None:
        self.ix = Index(self.path)
        self.writer = DeltaWriter(self.ix.reader)
        self.batches_since_open = 0

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.ix is not None:
            self.ix.close()
        self.ix = self.writer = None

    def teardown(self) -> None:
        self._close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- drawing changes ------------------------------------------------------------------

    def _groups(self) -> list[str]:
        return sorted(self.model.known) or ["group:a#member"]

    def _stored(self, data: st.DataObject, group: str, subject: str) -> str:
        rel = data.draw(st.sampled_from(sources_of(self.config, group)), label="relation")
        return f"{group.split('#', 1)[0]}#{rel}@{subject}"

    def _change(self, data: st.DataObject, kinds: Sequence[str] = KINDS) -> tuple[str, str]:
        present = sorted(format_tuple(t) for t in self.model.tuples)
        groups = self._groups()
        group = st.sampled_from(groups)
        kinds = [k for k in kinds if present or k != "present"]
        kind = data.draw(st.sampled_from(kinds), label="kind")
        if kind == "present":
            line = data.draw(st.sampled_from(present))
        elif kind == "random":
            line = data.draw(tuple_lines(self.config))
        elif kind == "edge":
            line = self._stored(data, data.draw(group), data.draw(group))
        elif kind == "self":
            g = data.draw(group)
            line = self._stored(data, g, g)
        else:
            leaf = data.draw(st.sampled_from(LEAVES) | st.just("group:x#owner"), label="leaf")
            line = self._stored(data, data.draw(group), leaf)
        if line.endswith(("user:a", "user:b")) and data.draw(st.booleans(), label="#..."):
            line += "#..."  # the same tuple, spelt differently
        op = data.draw(st.sampled_from(["touch", "delete"]), label="op")
        return op, line

    def _apply(self, batch: list[tuple[str, str]], partition: int = 0) -> None:
        assert self.writer is not None
        parsed = [(op, parse_tuple(line)) for op, line in batch]
        key = f"{TOPIC}:{partition}"
        self.offsets[key] += len(batch) + 1
        position = {key: self.offsets[key]}
        report = self.writer.apply(parsed, position)
        self.model.apply(parsed)
        self.batches_since_open += 1
        # what the batches exercised (pytest --hypothesis-show-statistics)
        for what, happened in (
            ("nested edges changed", report.edge_changes),
            ("members changed", report.member_changes),
            ("changes coalesced", report.coalesced),
            ("unindexed tuples skipped", report.skipped),
            ("groups created", report.new_groups),
        ):
            if happened:
                event(f"batch: {what}")

    # -- rules ----------------------------------------------------------------------------

    @rule(data=st.data(), partition=st.integers(0, 1))
    def apply_batch(self, data: st.DataObject, partition: int) -> None:
        batch = [self._change(data) for _ in range(data.draw(st.integers(0, 8), label="size"))]
        if batch and data.draw(st.booleans(), label="repeat"):
            # the same tuple again in the batch, maybe with the other op: the last wins
            for i in data.draw(st.lists(st.integers(0, len(batch) - 1), max_size=3)):
                op, line = batch[i]
                flip = data.draw(st.booleans(), label="flip")
                batch.append(({"touch": "delete", "delete": "touch"}[op] if flip else op, line))
        self._apply(batch, partition)

    @rule(data=st.data(), partition=st.integers(0, 1))
    def change_members(self, data: st.DataObject, partition: int) -> None:
        """Leaf members (wildcards, opaque usersets) of known groups come and go."""
        size = data.draw(st.integers(1, 6), label="size")
        self._apply(
            [self._change(data, ("member", "member", "present")) for _ in range(size)], partition
        )

    @rule(data=st.data())
    def change_edges(self, data: st.DataObject) -> None:
        """Nested edges between known groups come and go, often several in one batch."""
        size = data.draw(st.integers(1, 4), label="size")
        self._apply([self._change(data, ("edge", "edge", "self", "present")) for _ in range(size)])

    @rule(data=st.data())
    def close_a_cycle(self, data: st.DataObject) -> None:
        """Nest a group inside one of its own descendants (a ring, or a self-loop)."""
        oracle = self.model.oracle()
        pairs = [(g, d) for g in sorted(oracle.groups) for d in sorted(oracle.reach(g))]
        if not pairs:
            return
        top, below = data.draw(st.sampled_from(pairs), label="cycle")
        event("cycle closed" if top != below else "self-loop made")
        self._apply([("touch", self._stored(data, below, top))])

    @rule(data=st.data())
    def break_a_cycle(self, data: st.DataObject) -> None:
        """Delete one stored tuple behind an edge that lies on a cycle."""
        oracle = self.model.oracle()
        on_cycle = [
            t
            for t in sorted(self.model.tuples, key=format_tuple)
            if any(c and g in oracle.reach(c) for g, c in edges_of(self.config, t))
        ]
        if on_cycle:
            t = data.draw(st.sampled_from(on_cycle), label="cycle edge")
            event("cycle broken")
            self._apply([("delete", format_tuple(t))])

    @precondition(lambda self: self.batches_since_open >= 2)
    @rule()
    def compact_now(self) -> None:
        """Fold the delta into a new base while the index is open; then reopen."""
        assert self.ix is not None
        before = IndexDir(self.path).current().name
        compact(self.path)
        assert IndexDir(self.path).current().name != before
        # the open index still reads the replaced generation correctly
        compare_all(self.ix, self.model.oracle(), sample=6)
        self._close()
        self.model.rebased()
        self._open()

    @precondition(lambda self: self.batches_since_open >= 2)
    @rule()
    def reopen(self) -> None:
        """Close and reopen: the incremental layer persists."""
        self._close()
        self._open()

    @precondition(lambda self: self.ix is not None)
    @rule()
    def warm(self) -> None:
        """Hold the base in memory: later answers take the in-memory paths."""
        assert self.ix is not None
        self.ix.warm()

    # -- the comparison -------------------------------------------------------------------

    @invariant()
    def position_and_version(self) -> None:
        if self.ix is None:
            return
        assert self.ix.position == self.offsets
        assert decode_token(self.ix.version) == self.offsets
        assert self.ix.version == encode_token(self.offsets)

    @precondition(lambda self: self.ix is not None)
    @invariant()
    def every_query_matches_the_model(self) -> None:
        assert self.ix is not None
        compare_all(self.ix, self.model.oracle())


IncrementalMachine.TestCase.settings = settings(
    max_examples=45,
    stateful_step_count=14,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestIncrementalMachine = IncrementalMachine.TestCase


# -- deterministic cases ------------------------------------------------------------------


@pytest.fixture
def opened(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``opened(lines, config)`` builds a base; (Index, DeltaWriter, Model); closes both."""
    made: list[tuple[Index, DeltaWriter]] = []

    def make(lines: Sequence[str], config: Config = REWRITE, position: dict | None = None):  # type: ignore[no-untyped-def]
        path = tmp_path / f"ix{len(made)}"
        build(path, config, lines, position or {})
        ix = Index(path)
        writer = DeltaWriter(ix.reader)
        made.append((ix, writer))
        return ix, writer, Model(config, (parse_tuple(x) for x in lines))

    yield make
    for ix, writer in made:
        writer.close()
        ix.close()


def step(
    ix: Index, writer: DeltaWriter, model: Model, *lines: str, position: dict | None = None
) -> None:
    """Apply ``+``/``-`` lines to index and model, then compare every query."""
    batch = changes(*lines)
    writer.apply(batch, position)
    model.apply(batch)
    compare_all(ix, model.oracle())


def test_deleting_one_of_two_paths_keeps_the_membership(opened) -> None:  # type: ignore[no-untyped-def]
    ix, w, m = opened(
        [
            "group:top#member@group:left#member",
            "group:top#member@group:right#member",
            "group:left#member@group:bottom#member",
            "group:right#member@group:mid#member",
            "group:mid#member@group:bottom#member",
            "group:bottom#member@user:x",
        ]
    )
    assert ix.explain("user:x", "group:top") == [
        "group:top#member",
        "group:left#member",
        "group:bottom#member",
    ]
    step(ix, w, m, "-group:top#member@group:left#member")
    assert ix.check("user:x", "group:top")  # still through right and mid
    assert len(ix.explain("user:x", "group:top") or []) == 4
    step(ix, w, m, "-group:mid#member@group:bottom#member")
    assert not ix.check("user:x", "group:top")
    assert ix.groups_of("user:x") == ["group:bottom#member", "group:left#member"]


def test_breaking_a_cycle_splits_it(opened) -> None:  # type: ignore[no-untyped-def]
    ring = ["group:a#member@group:b#member", "group:b#member@group:c#member"]
    ix, w, m = opened([*ring, "group:c#member@group:a#member", "group:c#member@user:x"])
    assert ix.members_of("group:a") == ix.members_of("group:b") == ["user:x"]
    assert ix.check("group:a#member", "group:c")  # every group of a cycle holds the others
    step(ix, w, m, "-group:c#member@group:a#member")
    assert not ix.check("group:a#member", "group:c")
    assert ix.check("group:c#member", "group:a")
    # make it again and break it elsewhere in one batch: only the last state counts
    step(ix, w, m, "+group:c#member@group:a#member", "-group:a#member@group:b#member")
    assert ix.groups_of("group:a#member") == ["group:a#member", "group:b#member", "group:c#member"]
    # a self-loop changes nothing, and deleting it changes nothing either
    step(ix, w, m, "+group:c#member@group:c#member")
    step(ix, w, m, "-group:c#member@group:c#member", "-group:b#member@group:c#member")
    assert ix.groups_of("user:x") == ["group:c#member"]


def test_a_union_rewrite_edge_stays_while_any_source_feeds_it(opened, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ix, w, m = opened(
        [
            "group:a#member@group:b#member",
            "group:a#manager@group:b#member",
            "group:b#manager@user:x",  # only the second source feeds this one
            "group:b#member@user:y",
        ]
    )
    step(ix, w, m, "-group:a#member@group:b#member")
    assert ix.check("user:x", "group:a") and ix.check("user:y", "group:a")
    step(ix, w, m, "+group:b#member@user:x", "-group:b#manager@user:x")
    assert ix.check("user:x", "group:b")
    # compaction must carry the support masks: deleting the last source still drops it
    compact(ix.path)
    ix2 = Index(ix.path)
    w2 = DeltaWriter(ix2.reader)
    try:
        m.rebased()
        compare_all(ix2, m.oracle())
        step(ix2, w2, m, "-group:a#manager@group:b#member")
        assert not ix2.check("user:y", "group:a")
        step(ix2, w2, m, "-group:b#member@user:x", "+group:b#manager@user:x")
        assert ix2.check("user:x", "group:b")
        step(ix2, w2, m, "-group:b#manager@user:x")
        assert not ix2.check("user:x", "group:b")
    finally:
        w2.close()
        ix2.close()


def test_duplicates_and_touch_then_delete_in_one_batch(opened) -> None:  # type: ignore[no-untyped-def]
    ix, w, m = opened(["group:a#member@user:x"])
    step(
        ix,
        w,
        m,
        "+group:a#member@user:y",
        "+group:a#member@user:y#...",  # the same tuple
        "-group:a#member@user:y",
        "+group:a#member@user:z",
        "-group:a#member@user:z",
        "+group:a#member@user:z",
        "-group:a#member@user:nobody",  # absent: nothing happens
        "+group:a#member@user:x",  # present: nothing happens
        "+doc:d#viewer@user:x",  # not an indexed relation: skipped
    )
    assert ix.members_of("group:a") == ["user:x", "user:z"]


def test_a_reader_elsewhere_serves_a_new_generation_once_it_has_caught_up(
    opened, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Readers in other processes never see the version move back: a generation built
    behind the served position is served once a consumer has brought it level (or,
    with no consumer, after a grace period)."""
    base = ["group:a#member@user:x"]
    ix, w, _ = opened(base, position={f"{TOPIC}:0": 1})
    w.apply(changes("+group:a#member@user:y"), {f"{TOPIC}:0": 5})
    with Index(ix.path) as elsewhere:
        assert elsewhere.position == {f"{TOPIC}:0": 5}
        served = elsewhere.version
        # a new generation from the stream as it was at offset 3 (as a compaction that
        # started then, or a rebuild) is swapped in
        build(ix.path, REWRITE, base, {f"{TOPIC}:0": 3})
        elsewhere.refresh()
        assert elsewhere.version == served and elsewhere.check("user:y", "group:a")
        # the consumer follows it and re-applies from offset 3: level at 5, then past
        nw = DeltaWriter(SetReader.open(ix.path))
        try:
            nw.apply(changes("+group:a#member@user:z"), {f"{TOPIC}:0": 4})
            elsewhere.refresh()
            assert elsewhere.version == served and not elsewhere.check("user:z", "group:a")
            nw.apply(changes("+group:a#member@user:y"), {f"{TOPIC}:0": 6})
            assert elsewhere.refresh()
            assert elsewhere.position == {f"{TOPIC}:0": 6}
            assert elsewhere.check("user:y", "group:a") and elsewhere.check("user:z", "group:a")
        finally:
            nw.reader.close()
            nw.close()
        # a rebuild behind that no consumer follows is served after the grace period;
        # not by an index a consumer elsewhere follows (it switches once caught up)
        build(ix.path, REWRITE, base, {f"{TOPIC}:0": 2})
        monkeypatch.setattr(index_module, "SWAP_GRACE", 0.2)
        elsewhere.refresh()
        assert elsewhere.position == {f"{TOPIC}:0": 6}
        time.sleep(0.3)
        elsewhere.follows_consumer = True
        assert not elsewhere.refresh()
        assert elsewhere.position == {f"{TOPIC}:0": 6}
        assert elsewhere.check("user:y", "group:a")
        elsewhere.follows_consumer = False
        assert elsewhere.refresh()
        assert elsewhere.position == {f"{TOPIC}:0": 2}
        assert not elsewhere.check("user:y", "group:a")


def test_a_failed_write_leaves_nothing_behind(opened) -> None:  # type: ignore[no-untyped-def]
    """A batch whose write fails changes nothing, not even the writer's cached sets,
    which a batch changes in place: the next batch persists only its own changes."""
    ix, w, m = opened(["group:a#member@user:x", "group:b#member@group:a#member"])
    step(ix, w, m, "+group:a#member@user:y")  # the member set of group:a is cached now

    class Failing:
        """The writer's database, but every write fails as RocksDB's would."""

        def __init__(self, db: Any) -> None:
            self.db = db

        def __getattr__(self, name: str) -> Any:
            return getattr(self.db, name)

        def write(self, batch: Any) -> None:
            with rocks_errors("write to the incremental layer failed"):
                raise OSError("disk full")

    db, w.db = w.db, Failing(w.db)  # type: ignore[assignment]
    with pytest.raises(StorageError, match="disk full"):
        w.apply(changes("+group:a#member@user:lost", "-group:a#member@user:x"))
    w.db = db
    assert ix.members_of("group:a") == ["user:x", "user:y"]
    step(ix, w, m, "+group:a#member@user:z")
    assert ix.members_of("group:b") == ["user:x", "user:y", "user:z"]


def test_version_position_and_tokens_advance(opened) -> None:  # type: ignore[no-untyped-def]
    ix, w, m = opened(["group:a#member@user:x"], position={f"{TOPIC}:0": 7})
    first = ix.version
    assert ix.position == {f"{TOPIC}:0": 7}
    assert ix.wait_for(encode_token({f"{TOPIC}:0": 7}), timeout=0) == first
    report = w.apply(changes("+group:a#member@user:y"), {f"{TOPIC}:0": 9})
    assert report.member_changes == 1
    assert ix.position == {f"{TOPIC}:0": 9} and ix.version != first
    assert ix.wait_for(first, timeout=0) == ix.version  # an older token is reached too
    w.apply(changes("+group:a#member@user:y"), {f"{TOPIC}:1": 3})  # another partition
    assert ix.position == {f"{TOPIC}:0": 9, f"{TOPIC}:1": 3}
    w.apply([], None)  # a batch without a position keeps it
    assert ix.position == {f"{TOPIC}:0": 9, f"{TOPIC}:1": 3}
    ahead = encode_token({f"{TOPIC}:0": 10})
    started = time.monotonic()
    with pytest.raises(StaleIndex, match="has not reached version"):
        ix.wait_for(ahead, timeout=0.2)
    assert time.monotonic() - started >= 0.2
    with pytest.raises(InvalidInput):
        ix.wait_for("not a token")


def test_wait_for_wakes_when_a_batch_lands(opened) -> None:  # type: ignore[no-untyped-def]
    ix, w, _ = opened(["group:a#member@user:x"], position={f"{TOPIC}:0": 0})
    ix.expect_local_writer()  # as a consumer in this process does
    later = encode_token({f"{TOPIC}:0": 5})

    def apply_soon() -> None:
        time.sleep(0.2)
        w.apply(changes("+group:a#member@user:y"), {f"{TOPIC}:0": 5})

    thread = threading.Thread(target=apply_soon)
    thread.start()
    try:
        assert ix.wait_for(later, timeout=10, poll=5) == later
        assert ix.check("user:y", "group:a")
    finally:
        thread.join()


def test_wait_for_in_another_reader_polls_the_delta(opened) -> None:  # type: ignore[no-untyped-def]
    ix, w, _ = opened(["group:a#member@user:x"], position={f"{TOPIC}:0": 0})
    with Index(ix.path) as other:  # as another process would open it
        w.apply(changes("+group:a#member@user:y"), {f"{TOPIC}:0": 4})
        assert not other.check("user:y", "group:a")
        assert other.wait_for(ix.version, timeout=5) == ix.version
        assert other.check("user:y", "group:a")
        with pytest.raises(StaleIndex):
            other.wait_for(encode_token({f"{TOPIC}:0": 5}), timeout=0.1)


def test_an_emptied_group_answers_as_after_a_rebuild(opened) -> None:  # type: ignore[no-untyped-def]
    ix, w, _ = opened(["group:a#member@group:b#member"])
    w.apply(changes("-group:a#member@group:b#member"))
    # No tuple names group:a any more; a build of the same (empty) tuples says False.
    assert ix.check("group:a#member", "group:a") is False


def test_a_closed_writer_releases_the_incremental_layer(opened) -> None:  # type: ignore[no-untyped-def]
    """A consumer restarted in the same process opens the delta again after ``close``."""
    ix, w, m = opened(["group:a#member@user:x"])
    w.close()  # the object stays referenced, as a finished ChangeConsumer keeps it
    again = DeltaWriter(ix.reader)
    try:
        again.apply(changes("+group:a#member@user:y"))
        assert ix.check("user:y", "group:a")
    finally:
        again.close()


def test_a_delta_still_being_created_reads_as_empty(opened) -> None:  # type: ignore[no-untyped-def]
    """A reader racing a writer's first open of the delta sees no changes, not an error.

    RocksDB creates the database before its column families, so for a moment the delta
    has a CURRENT file and only the default family (seen in test_consumer.py: a reader
    polling ``wait_for`` while ``leopard consume`` started failed with "Column family not
    found"). Until every family exists the writer has written nothing.
    """
    ix, w, _ = opened(["group:a#member@user:x"], position={f"{TOPIC}:0": 3})
    w.close()
    half_made = ix.path.parent / "half"
    build(half_made, REWRITE, ["group:a#member@user:x"], {f"{TOPIC}:0": 3})
    # what a writer has made so far: the database, with only the default family
    Rdict(str(IndexDir(half_made).current() / "delta"), Options(raw_mode=True)).close()
    with Index(half_made) as other:
        assert other.position == {f"{TOPIC}:0": 3}
        assert other.check("user:x", "group:a")
        assert not other.refresh()
        assert other.wait_for(other.version, timeout=0) == other.version


def test_a_reader_elsewhere_survives_the_writers_flushes(opened) -> None:  # type: ignore[no-untyped-def]
    """``refresh``/``wait_for`` in a reader of its own while the writer flushes and compacts.

    A read-only RocksDB open lists the live files in the MANIFEST, and the writer may
    delete some of them meanwhile (it flushes and compacts as its memtable fills; here
    every batch is flushed to make that frequent). Without a retry about one open in
    ten failed with "Corruption: Can't access ...sst" (seen first in test_consumer.py,
    as ``wait_for`` in the test process while ``leopard consume`` ran).
    """
    ix, w, _ = opened(["group:a#member@user:x"], position={f"{TOPIC}:0": 0})
    done = threading.Event()

    def write() -> None:
        try:
            for i in range(1, 151):
                w.apply(changes(f"+group:a#member@user:u{i}"), {f"{TOPIC}:0": i})
                w.db.flush()  # what a full memtable does; every 4 flushes, a compaction
        finally:
            done.set()

    writer = threading.Thread(target=write)
    with Index(ix.path) as other:
        writer.start()
        try:
            while not done.is_set():
                other.refresh()
        finally:
            writer.join()
        other.wait_for(encode_token({f"{TOPIC}:0": 150}), timeout=5)
        assert len(other.members_of("group:a")) == 151
