"""A sharded index against the plain BFS oracle and against one index of the same tuples.

A sharded index (``leopard.model.shards``, ``leopard.core.sharded``) must answer every
query exactly as one index does: the properties of ``test_properties.py`` (random
graphs with cycles, deep chains, wide fans, wildcards and opaque usersets), of
``test_schema_properties.py`` (schemas with arrows and computed usersets, whose
tupleset tuples are replicated though their subjects are plain), and of the
incremental state machine of ``test_incremental.py`` (change batches applied to every
shard, each skipping the changes of other shards' subjects; compaction of a shard
keeps it a shard) are run here on sharded builds of 1 to 4 shards.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, precondition, rule
from support.index_model import TOPIC, Model, compare_all
from support.killswap import killed_between_swaps
from support.oracle import Oracle
from support.strategies import Graph, graphs
from test_incremental import IncrementalMachine
from test_properties import SETTINGS, compare_everything
from test_schema_properties import compare, schema_case

import leopard
from leopard.core import sharded as sharded_module
from leopard.core.batches import table_from_tuples
from leopard.core.compact import compact
from leopard.core.incremental import ApplyReport, DeltaWriter
from leopard.core.index import Index
from leopard.core.shardbuild import build_shards
from leopard.core.sharded import ShardedIndex, least_position, merge_pages
from leopard.errors import IndexNotFound, InvalidInput, StorageError
from leopard.model.names import parse_tuple
from leopard.model.shards import EVERY, ShardRule, shard_of
from leopard.store.generations import DirLock, IndexDir
from leopard.store.manifest import MANIFEST, read_manifest


def build_sharded(graph: Graph, path: Path, shards: int, **kw: Any) -> leopard.BuildReport:
    parsed = [parse_tuple(line) for line in graph.lines]
    return build_shards([table_from_tuples(parsed)], path, graph.config, shards, **kw)


# -- queries ------------------------------------------------------------------------------


@settings(max_examples=20, **SETTINGS)
@given(graph=graphs(), shards=st.integers(1, 4))
def test_every_query_of_a_sharded_index_matches_the_model(graph: Graph, shards: int) -> None:
    oracle = Oracle(graph.lines, graph.config)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ix"
        report = build_sharded(graph, path, shards)
        assert report.tuples_read == len(graph.lines)
        assert report.shards == shards
        assert report.groups <= len(oracle.groups)
        leaf_edges = sum(len(m) for m in oracle.leaves.values())
        assert report.member_edges + report.replicated >= leaf_edges
        with leopard.open_index(path) as ix:
            assert isinstance(ix, ShardedIndex)
            compare_everything(ix, oracle)  # type: ignore[arg-type]


@settings(max_examples=20, deadline=None, suppress_health_check=SETTINGS["suppress_health_check"])
@given(data=st.data(), shards=st.integers(2, 4))
def test_a_sharded_schema_index_answers_as_the_oracle(data: st.DataObject, shards: int) -> None:
    """Arrows read tuples with plain subjects (``doc:1#parent@folder:x``): those are
    edges between sets, on every shard, not a leaf membership on one."""
    with tempfile.TemporaryDirectory() as tmp:
        types, lines, config = schema_case(data, Path(tmp))
        # force: a drawn case may index no tuple, which a build refuses (as one index's)
        leopard.build_index([lines], Path(tmp) / "ix", config, shards=shards, force=True)
        oracle = Oracle(lines, config)
        with leopard.open_index(Path(tmp) / "ix") as ix:
            compare(ix, oracle, types)  # type: ignore[arg-type]


# -- changes ------------------------------------------------------------------------------


class _ShardWriters:
    """One ``DeltaWriter`` per shard, each given every change (as each shard's consumer
    reads every partition)."""

    def __init__(self, ix: ShardedIndex) -> None:
        self.writers = [DeltaWriter(s.reader) for s in ix.shards]
        self.rule = ShardRule(ix.config, ix.n)

    def apply(self, changes: list[Any], position: dict[str, int]) -> ApplyReport:
        reports = [w.apply(changes, position) for w in self.writers]
        # each change is applied where it is held, and skipped on every other shard
        for op_t in changes:
            place = self.rule.place(op_t[1])
            assert place == EVERY or 0 <= place < len(self.writers)
        elsewhere = sum(1 for _, t in changes if self.rule.place(t) != EVERY)
        assert sum(r.other_shard for r in reports) == elsewhere * (len(self.writers) - 1)
        out = ApplyReport()
        for r in reports:
            for field in ("edge_changes", "member_changes", "coalesced", "skipped", "new_groups"):
                setattr(out, field, max(getattr(out, field), getattr(r, field)))
        return out

    def close(self) -> None:
        for w in self.writers:
            w.close()


class ShardedMachine(IncrementalMachine):
    """The incremental state machine on a sharded index of 1 to 4 shards."""

    @initialize(
        graph=graphs(max_random=12, config_name="union") | graphs(max_random=10),
        start=st.integers(0, 1000),
        shards=st.integers(1, 4),
    )
    def build_base(self, graph, start: int, shards: int) -> None:  # type: ignore[no-untyped-def,override]
        self.config = graph.config
        self.offsets[f"{TOPIC}:0"] = start
        build_sharded(graph, self.path, shards, position=dict(self.offsets))
        self.model = Model(self.config, (parse_tuple(x) for x in graph.lines))
        self._open()

    def _open(self) -> None:
        self.ix = ShardedIndex(self.path)  # type: ignore[assignment]
        self.writer = _ShardWriters(self.ix)  # type: ignore[arg-type,assignment]
        self.batches_since_open = 0

    @precondition(lambda self: self.batches_since_open >= 2)
    @rule(data=st.data())
    def compact_now(self, data: st.DataObject) -> None:  # type: ignore[override]
        """Fold one shard's delta into a new base; it stays a shard of the index."""
        assert self.ix is not None
        k = data.draw(st.integers(0, self.ix.n - 1), label="shard")  # type: ignore[attr-defined]
        shard = self.path / f"shard-{k}"
        before = IndexDir(shard).current().name
        compact(shard)
        assert IndexDir(shard).current().name != before
        compare_all(self.ix, self.model.oracle(), sample=6)  # type: ignore[arg-type]
        self._close()
        self._open()


ShardedMachine.TestCase.settings = settings(
    max_examples=10,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=SETTINGS["suppress_health_check"],
)
TestShardedMachine = ShardedMachine.TestCase


# -- deterministic cases ------------------------------------------------------------------


ORG = [
    "group:all#member@group:eng#member",
    "group:eng#member@group:backend#member",
    "group:backend#member@user:alice",
    "group:eng#member@user:bob",
    "group:sales#member@user:carol",
    "group:all#member@user:*",
    *(f"group:backend#member@user:u{i}" for i in range(40)),
]


def test_leaf_memberships_go_to_their_subjects_shard_and_the_rest_everywhere(
    tmp_path: Path,
) -> None:
    leopard.build_index([ORG], tmp_path / "ix", shards=3)
    manifest = read_manifest(tmp_path / "ix")
    assert manifest is not None and manifest.shards == 3
    subjects: list[set[str]] = []
    for k in range(3):
        # the low-level Index, as ShardedIndex opens its shards: a shard's part of the
        # members (open_index refuses that question of a shard alone)
        with Index(tmp_path / "ix" / f"shard-{k}") as shard:
            members = set(shard.members_of("group:all"))
            subjects.append(members)
            # the graph is on every shard
            assert shard.check("group:backend#member", "group:all")
            assert "user:*" in members
            for m in members - {"user:*"}:
                assert shard_of(m, 3) == k
    # every subject is on exactly one shard, and all of them together
    plain = [s - {"user:*"} for s in subjects]
    assert sum(len(s) for s in plain) == len(set().union(*plain)) == 42
    with leopard.open_index(tmp_path / "ix") as ix:
        assert ix.members_of("group:all", limit=5) == sorted(set().union(*subjects))[:5]


def test_a_shard_compacted_stays_a_shard_and_skips_other_shards_changes(tmp_path: Path) -> None:
    leopard.build_index([ORG], tmp_path / "ix", shards=2)
    k = shard_of("user:zed", 2)
    other = tmp_path / "ix" / f"shard-{1 - k}"
    compact(other)
    with leopard.open_index(other) as shard:
        w = DeltaWriter(shard.reader)
        report = w.apply([("touch", parse_tuple("group:sales#member@user:zed"))], {"t:0": 1})
        w.close()
        assert report.other_shard == 1 and report.member_changes == 0
        with pytest.raises(InvalidInput, match=f"user:zed is placed on shard {k} of 2"):
            shard.check("user:zed", "group:sales")  # opened alone: not a silent "no"
        with pytest.raises(InvalidInput, match="needs every shard of this sharded index"):
            shard.members_of("group:sales")  # each shard holds a part of them
        assert shard.position == {"t:0": 1}  # the position advances all the same
    with leopard.open_index(tmp_path / "ix" / f"shard-{k}") as shard:
        w = DeltaWriter(shard.reader)
        report = w.apply([("touch", parse_tuple("group:sales#member@user:zed"))], {"t:0": 1})
        w.close()
        assert report.other_shard == 0 and report.member_changes == 1
    with leopard.open_index(tmp_path / "ix") as ix:
        assert ix.check("user:zed", "group:sales")
        assert ix.position == {"t:0": 1}


def test_versions_are_what_every_shard_has_reached() -> None:
    assert least_position([{"a:0": 5, "a:1": 2}, {"a:0": 3, "a:1": 9, "b:0": 1}]) == {
        "a:0": 3,
        "a:1": 2,
    }
    assert least_position([]) == {}
    assert merge_pages([["a", "c", "e"], ["b", "c", "z"]], 4) == ["a", "b", "c", "e"]
    assert merge_pages([["a"], []], None) == ["a"]


def test_wrong_targets_and_damaged_manifests_are_named(tmp_path: Path) -> None:
    leopard.build_index([ORG], tmp_path / "one")
    with pytest.raises(InvalidInput, match="not a sharded index"):
        leopard.build_index([ORG], tmp_path / "one", shards=2)
    leopard.build_index([ORG], tmp_path / "ix", shards=2)
    with pytest.raises(InvalidInput, match="holds 2 shards, not 3"):
        leopard.build_index([ORG], tmp_path / "ix", shards=3)
    leopard.build_index([ORG[:3]], tmp_path / "ix", shards=2, force=True)  # rebuilt in place
    with leopard.open_index(tmp_path / "ix") as ix:
        assert not ix.check("user:carol", "group:sales")
    with pytest.raises(InvalidInput, match="shards must be a whole number"):
        leopard.build_index([ORG], tmp_path / "zero", shards=0)
    manifest = tmp_path / "ix" / MANIFEST
    doc = json.loads(manifest.read_text())
    for damage, message in (
        ("{", "is not JSON"),
        (json.dumps({**doc, "format_version": 9}), "manifest format 9"),
        (json.dumps({**doc, "dirs": ["shard-0"]}), "must name 2 shard directories"),
        (json.dumps({**doc, "kind": "x"}), "not the manifest"),
    ):
        manifest.write_text(damage)
        with pytest.raises(StorageError, match=message):
            leopard.open_index(tmp_path / "ix")
    manifest.write_text(json.dumps({**doc, "dirs": ["shard-0", "gone"]}))
    with pytest.raises(IndexNotFound):
        leopard.open_index(tmp_path / "ix")


# -- one build at a time, all shards or none -----------------------------------------------

CHANGED = [*ORG, "group:newgrp#member@group:backend#member"]


def generations(root: Path, shards: int = 2) -> list[str]:
    return [IndexDir(root / f"shard-{k}").current().name for k in range(shards)]


def test_a_shard_that_cannot_be_built_swaps_in_no_shard(tmp_path: Path) -> None:
    """Shard 1 busy (a consumer compacting it): the rebuild fails before anything is
    built; shard 0 stays on the old snapshot, so the index never mixes two."""
    root = tmp_path / "ix"
    leopard.build_index([ORG], root, shards=2)
    holder = IndexDir(root / "shard-1")
    holder.acquire()
    try:
        with pytest.raises(StorageError, match="shard-1' is locked by another build"):
            leopard.build_index([CHANGED], root, shards=2)
    finally:
        holder.release()
    assert generations(root) == ["gen-000001", "gen-000001"]
    with leopard.open_index(root) as ix:
        assert not ix.check("user:alice", "group:newgrp")
        assert ix.members_of("group:newgrp") == []


def test_a_shard_build_that_fails_after_another_was_built_abandons_both(tmp_path: Path) -> None:
    """Shard 0 built (unpublished), then shard 1's build fails: neither is swapped in,
    and no new generation is left behind."""
    root = tmp_path / "ix"
    leopard.build_index([ORG], root, shards=2)

    def fail_on_shard_1(k: int, report: leopard.BuildReport) -> None:
        assert IndexDir(root / "shard-0").current().name == "gen-000001"  # not swapped in
        if k == 1:
            raise RuntimeError("shard 1 failed")

    table = table_from_tuples([parse_tuple(t) for t in CHANGED])
    with pytest.raises(RuntimeError, match="shard 1 failed"):
        build_shards([table], root, leopard.Config(), 2, on_shard=fail_on_shard_1)
    assert generations(root) == ["gen-000001", "gen-000001"]
    for k in range(2):
        assert sorted(p.name for p in (root / f"shard-{k}").iterdir()) == [
            "CURRENT",
            "LOCK",
            "gen-000001",
        ]
    build_shards([table], root, leopard.Config(), 2)  # the locks were let go
    assert generations(root) == ["gen-000002", "gen-000002"]
    with leopard.open_index(root) as ix:
        assert ix.check("user:alice", "group:newgrp") and ix.check("user:u3", "group:newgrp")


def test_the_root_of_a_sharded_build_is_locked_and_wait_waits_for_it(tmp_path: Path) -> None:
    """Two builds of one sharded root would split into one ``.split``: the second is
    turned away at once, or waits with ``wait``."""
    root = tmp_path / "ix"
    leopard.build_index([ORG], root, shards=2)
    holder = DirLock(root)
    holder.acquire()
    try:
        with pytest.raises(StorageError, match=r"'.*/ix' is locked by another build .*\(pid "):
            leopard.build_index([CHANGED], root, shards=2)
        with pytest.raises(StorageError, match=r"\(waited 0.2 s\)"):
            leopard.build_index([CHANGED], root, shards=2, wait=0.2)
        assert not (root / ".split").exists()
        threading.Timer(0.5, holder.release).start()
        started = time.monotonic()
        leopard.build_index([CHANGED], root, shards=2, wait=True)
        assert time.monotonic() - started >= 0.4
    finally:
        holder.release()
    assert generations(root) == ["gen-000002", "gen-000002"]
    with leopard.open_index(root) as ix:
        assert ix.check("user:alice", "group:newgrp")


def test_a_failed_first_build_leaves_a_directory_a_retry_builds_in(tmp_path: Path) -> None:
    root = tmp_path / "new"
    (root / "shard-1").mkdir(parents=True)
    holder = IndexDir(root / "shard-1")
    holder.acquire()
    try:
        with pytest.raises(StorageError, match="locked"):
            leopard.build_index([ORG], root, shards=2)
    finally:
        holder.release()
    assert read_manifest(root) is None
    leopard.build_index([ORG], root, shards=2)
    with leopard.open_index(root) as ix:
        assert ix.check("user:alice", "group:all")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "shard-0").mkdir()
    (tmp_path / "other" / "shard-0" / "notes.txt").write_text("not an index")
    with pytest.raises(InvalidInput, match="not empty and is not a sharded index"):
        leopard.build_index([ORG], tmp_path / "other", shards=2)


def test_max_shrink_and_nothing_indexed_are_counted_over_every_shard(tmp_path: Path) -> None:
    root = tmp_path / "ix"
    leopard.build_index([ORG], root, shards=2)
    shrunk = r"5 tuples indexed against 49 in the live shards .*, 90% fewer, over the limit of 50%"
    with pytest.raises(InvalidInput, match=shrunk):
        leopard.build_index([ORG[:3]], root, shards=2)
    with pytest.raises(InvalidInput, match="with an empty one"):
        leopard.build_index([["group:eng#owner@user:alice"]], root, shards=2)  # skipped
    with pytest.raises(InvalidInput, match="build an empty index"):
        leopard.build_index([["group:eng#owner@user:alice"]], tmp_path / "new", shards=2)
    assert generations(root) == ["gen-000001", "gen-000001"]
    leopard.build_index([ORG[:-10]], root, shards=2)  # 10 of 46 fewer: within 50%
    leopard.build_index([ORG[:3]], root, shards=2, max_shrink=0.9)
    leopard.build_index([["group:eng#owner@user:alice"]], root, shards=2, force=True)
    with leopard.open_index(root) as ix:
        assert not ix.check("user:alice", "group:all")


def test_shards_of_two_builds_are_refused_and_a_retry_mends_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shards are swapped in one after another and the manifest written last, each
    shard's header naming its build: a build killed between two swaps leaves shard 0
    of the new build and shard 1 of the old, which no reader may answer from; the next
    build mends it. The same for a first build, which leaves no manifest."""
    monkeypatch.setattr(sharded_module, "SWAP_WAIT", 0.3)
    old, new = tmp_path / "old.txt", tmp_path / "new.txt"
    old.write_text("".join(f"group:a#member@user:u{i}\n" for i in range(40)))
    new.write_text("".join(f"group:b#member@user:u{i}\n" for i in range(40)))
    root = tmp_path / "ix"
    leopard.build_index([old], root, shards=2)
    killed_between_swaps(root, new)
    with pytest.raises(StorageError, match="are of two builds .*stopped while doing so"):
        leopard.open_index(root)
    leopard.build_index([new], root, shards=2)
    with leopard.open_index(root) as ix:
        assert all(ix.check(f"user:u{i}", "group:b#member") for i in range(40))
        assert not any(ix.check(f"user:u{i}", "group:a#member") for i in range(40))
    first = tmp_path / "first"
    killed_between_swaps(first, new)
    assert read_manifest(first) is None
    leopard.build_index([new], first, shards=2)  # over what the killed one left
    with leopard.open_index(first) as ix:
        assert ix.check("user:u3", "group:b#member")


def test_an_opening_during_a_swap_waits_for_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that opens the shards while a build swaps them in (shard 0 of the new
    build, shard 1 still of the old) waits for the manifest, and answers from one."""
    root = tmp_path / "ix"
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_text("".join(f"group:a#member@user:u{i}\n" for i in range(40)))
    two.write_text("".join(f"group:b#member@user:u{i}\n" for i in range(40)))
    leopard.build_index([one], root, shards=2)
    real = IndexDir.publish
    opened: list[tuple[bool, bool]] = []
    readers: list[threading.Thread] = []

    def publish(self: IndexDir, tmp: Path) -> Path:
        out = real(self, tmp)
        if self.path.name == "shard-0":
            reader = threading.Thread(target=lambda: opened.append(_answers(root)))
            reader.start()
            readers.append(reader)
            time.sleep(0.3)  # the reader opens shard 0 of the new build, 1 of the old
        return out

    monkeypatch.setattr(IndexDir, "publish", publish)
    leopard.build_index([two], root, shards=2)
    readers[0].join(10)
    assert opened == [(False, True)]


def _answers(root: Path) -> tuple[bool, bool]:
    with leopard.open_index(root) as ix:
        a = {ix.check(f"user:u{i}", "group:a#member") for i in range(40)}
        b = {ix.check(f"user:u{i}", "group:b#member") for i in range(40)}
    assert len(a) == len(b) == 1, (a, b)  # every user alike: one build's answers
    return a.pop(), b.pop()


def test_an_open_index_refreshed_during_a_swap_answers_from_one_build(tmp_path: Path) -> None:
    """A sharded index kept open across a rebuild: a refresh while the build has swapped
    in shard 0 and not shard 1 (its manifest not yet written) keeps every shard on the
    old build, so a query asking every shard never mixes the two; once the build is
    whole, the next refresh serves it on every shard."""
    old, new = tmp_path / "old.txt", tmp_path / "new.txt"
    old.write_text("".join(f"group:a#member@user:u{i}\n" for i in range(40)))
    new.write_text("".join(f"group:b#member@user:u{i}\n" for i in range(40)))
    root = tmp_path / "ix"
    leopard.build_index([old], root, shards=2)
    everyone = [f"user:u{i}" for i in range(40)]
    with leopard.open_index(root) as ix:
        assert sorted(ix.members_of("group:a#member")) == sorted(everyone)
        killed_between_swaps(root, new)  # shard 0 of the new build, shard 1 of the old
        ix.refresh()
        assert sorted(ix.members_of("group:a#member")) == sorted(everyone)
        assert ix.members_of("group:b#member") == []
        leopard.build_index([new], root, shards=2)
        assert ix.refresh()
        assert ix.members_of("group:a#member") == []
        assert sorted(ix.members_of("group:b#member")) == sorted(everyone)
