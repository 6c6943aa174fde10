"""A build within a memory budget (``leopard.core.spill``) writes what an in-memory build
writes, byte for byte, and answers as the plain BFS oracle does.

Compaction, which is a build of the base and the incremental layer, too. A budget of a
few bytes makes every batch spill and works every subject in a range of
its own (as many files as subjects); a budget of a few kilobytes, some subjects a
range. Random graphs (cycles, chains, fans, duplicates, wildcards, sets fed by several
relations, so support masks) and random schemas (computed usersets and arrows, so
derived edges) are built both ways; every family of the two bases is compared key by
key, and the spilled index is asked every question the property suites ask.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from support.oracle import Oracle
from support.strategies import Graph, graphs
from test_properties import SETTINGS, compare_everything
from test_schema_properties import compare, schema_case

import leopard
from leopard.cli.build import _PhaseLog
from leopard.core.batches import table_from_tuples
from leopard.core.build import build_from_batches
from leopard.core.compact import compact, start_compaction
from leopard.core.incremental import DeltaWriter
from leopard.core.shardbuild import build_shards
from leopard.core.spill import MEMORY_ENV, Spill
from leopard.errors import InvalidInput, StorageError
from leopard.model.config import Config
from leopard.model.names import parse_tuple
from leopard.store.generations import IndexDir, base_of, report_of
from leopard.store.layout import FAMILIES
from leopard.store.manifest import shard_dir_name
from leopard.store.rocks import RocksDB

#: report fields that differ between two builds of the same tuples
_TIMING = {"seconds", "phases", "bytes_on_disk", "peak_memory", "memory_budget"}
_SPILL = {"spilled_rows", "subject_ranges"}


def families(path: Path) -> dict[str, tuple[list[bytes], list[bytes]]]:
    """Every family of the live base but the header's, as sorted keys and values."""
    db = RocksDB(base_of(IndexDir(path).current()), read_only=True)
    try:
        return {name: db.family(name).columns() for name in FAMILIES if name != "default"}
    finally:
        db.close()


def tables(graph: Graph, batches: int) -> list[Any]:
    table = table_from_tuples([parse_tuple(line) for line in graph.lines])
    size = max(1, -(-table.num_rows // batches))
    return [table.slice(at, size) for at in range(0, table.num_rows, size)] or [table]


def same_report(a: leopard.BuildReport, b: leopard.BuildReport) -> None:
    left, right = a.to_dict(), b.to_dict()
    for key in _TIMING | _SPILL:
        left.pop(key), right.pop(key)
    assert left == right


@settings(max_examples=40, **SETTINGS)
@given(graph=graphs(), batches=st.integers(1, 4), budget=st.sampled_from([1, 1_000, 4_000]))
def test_a_spilled_build_is_the_in_memory_build(graph: Graph, batches: int, budget: int) -> None:
    oracle = Oracle(graph.lines, graph.config)
    with tempfile.TemporaryDirectory() as tmp:
        memory, spilled = Path(tmp) / "memory", Path(tmp) / "spilled"
        whole = build_from_batches(tables(graph, batches), memory, graph.config)
        report = build_from_batches(tables(graph, batches), spilled, graph.config, memory=budget)
        assert whole.spilled_rows == 0
        # with 1 byte, every leaf membership row read goes to disk at once; with more,
        # once the rows read would pass three quarters of it at 90 bytes a row
        if budget == 1 and whole.member_edges:
            assert report.spilled_rows >= whole.member_edges
            assert report.subject_ranges >= 1
        same_report(whole, report)
        assert families(spilled) == families(memory)
        assert not (IndexDir(spilled).current() / "spill").exists()
        with leopard.open_index(spilled) as ix:
            compare_everything(ix, oracle)


@settings(max_examples=25, **SETTINGS)
@given(data=st.data())
def test_a_spilled_schema_build_is_the_in_memory_build(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        types, lines, config = schema_case(data, Path(tmp))
        table = table_from_tuples([parse_tuple(line) for line in lines])
        memory, spilled = Path(tmp) / "memory", Path(tmp) / "spilled"
        whole = build_from_batches([table], memory, config)
        report = build_from_batches([table], spilled, config, memory=1)
        same_report(whole, report)
        assert families(spilled) == families(memory)
        with leopard.open_index(spilled) as ix:
            compare(ix, Oracle(lines, config), types)


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A generated org of 60,000 tuples and its set configuration."""
    out = tmp_path_factory.mktemp("org")
    snapshot, config = out / "org.txt", out / "org.toml"
    subprocess.run(
        [sys.executable, "-m", "leopard", "gen", "-n", "60000", "--seed", "3"]
        + ["--out", str(snapshot), "--config-out", str(config)],
        check=True,
        capture_output=True,
    )
    return snapshot, config


def test_a_generated_org_spilled_in_ranges(org: tuple[Path, Path], tmp_path: Path) -> None:
    """The leopard command with --memory: subjects in several ranges, the bytes of a
    build without it, and the report says what spilled."""
    snapshot, config = org
    out = {}
    for name, extra in (("memory", []), ("spilled", ["--memory", "0.0005"])):
        done = subprocess.run(
            [sys.executable, "-m", "leopard", "build", str(snapshot), "--config", str(config)]
            + ["--index", str(tmp_path / name), "--json", *extra],
            check=True,
            capture_output=True,
            text=True,
        )
        out[name] = json.loads(done.stdout)
    assert out["memory"]["spilled_rows"] == 0
    assert out["spilled"]["spilled_rows"] >= out["memory"]["member_edges"] > 50_000
    assert out["spilled"]["subject_ranges"] > 1
    assert out["spilled"]["memory_budget"] == int(0.0005 * (1 << 30))
    assert out["spilled"]["largest_group"] == out["memory"]["largest_group"]
    assert out["spilled"]["largest_group_members"] == out["memory"]["largest_group_members"]
    assert families(tmp_path / "spilled") == families(tmp_path / "memory")
    text = subprocess.run(
        [sys.executable, "-m", "leopard", "build", str(snapshot), "--config", str(config)]
        + ["--index", str(tmp_path / "again"), "--memory", "0.0005"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "rows spilled" in text and "of a 0.5 MiB budget" in text
    assert "over it: names, sets and closures" in text  # half a MiB: what grows with names


def test_the_phases_after_reading_are_shown(capsys: pytest.CaptureFixture[str]) -> None:
    """On a terminal, ``leopard build`` names each phase as it ends."""
    log = _PhaseLog()
    for name in ("read", "closure", "spilled sets"):
        log(name)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == ""  # the reading bar's line ends first
    assert [line.split(":")[0] for line in lines[1:]] == ["read", "closure", "spilled sets"]
    assert all(line.endswith(" s") for line in lines[1:])
    compaction = _PhaseLog(first="")  # no reading bar before it
    compaction("read")
    assert capsys.readouterr().err.startswith("read: ")


@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_a_budget_that_is_no_amount_is_refused(
    org: tuple[Path, Path], tmp_path: Path, value: str
) -> None:
    snapshot, config = org
    done = subprocess.run(
        [sys.executable, "-m", "leopard", "build", str(snapshot), "--config", str(config)]
        + ["--index", str(tmp_path / "ix"), f"--memory={value}"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "--memory" in done.stderr and value in done.stderr
    assert not (tmp_path / "ix").exists()


def test_the_api_refuses_a_budget_that_is_no_amount(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"memory: .* not -2"):
        leopard.build_index([["group:a#member@user:b"]], tmp_path / "ix", memory=-2)
    with pytest.raises(InvalidInput, match="not nan"):
        leopard.build_index([["group:a#member@user:b"]], tmp_path / "ix", memory=float("nan"))


def test_memory_is_refused_on_spark(org: tuple[Path, Path], tmp_path: Path) -> None:
    snapshot, config = org
    done = subprocess.run(
        [sys.executable, "-m", "leopard", "build", str(snapshot), "--config", str(config)]
        + ["--index", str(tmp_path / "ix"), "--engine", "spark", "--memory", "2"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "spark.executor.memory" in done.stderr


@settings(max_examples=8, **SETTINGS)
@given(graph=graphs(max_random=15), shards=st.integers(2, 3))
def test_every_shard_spills_within_the_budget(graph: Graph, shards: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        table = table_from_tuples([parse_tuple(line) for line in graph.lines])
        whole = build_shards([table], Path(tmp) / "memory", graph.config, shards)
        report = build_shards([table], Path(tmp) / "spilled", graph.config, shards, memory=1)
        assert report.spilled_rows >= whole.member_edges
        for k in range(shards):
            shard = shard_dir_name(k)
            assert families(Path(tmp) / "spilled" / shard) == families(Path(tmp) / "memory" / shard)


@settings(max_examples=10, **SETTINGS)
@given(graph=graphs(max_random=15), changes=st.lists(st.tuples(st.booleans(), st.integers(0, 99))))
def test_a_compaction_within_the_budget_is_the_one_without(
    graph: Graph, changes: list[tuple[bool, int]]
) -> None:
    """``leopard compact --memory``: the incremental layer folded by spilling."""
    assume(graph.lines)
    with tempfile.TemporaryDirectory() as tmp:
        first = Path(tmp) / "first"
        build_from_batches(tables(graph, 1), first, graph.config)
        with leopard.open_index(first) as ix:
            writer = DeltaWriter(ix.reader)
            lines = list(graph.lines)
            batch = [
                ("touch" if touch else "delete", parse_tuple(lines[at % len(lines)]))
                for touch, at in changes
            ]
            writer.apply(batch, {"t:0": len(batch)})
            writer.close()
        second = Path(tmp) / "second"
        shutil.copytree(first, second, symlinks=True)
        compact(first)
        report = compact(second, memory=1)
        assert report.spilled_rows >= report.member_edges
        assert families(second) == families(first)


def test_spilled_rows_that_changed_on_disk_fail_the_build(tmp_path: Path) -> None:
    """A spill file cut short under the build is an error naming it, not wrong sets."""
    lines = [f"group:g{i % 7}#member@user:u{i}" for i in range(200)]
    table = table_from_tuples([parse_tuple(line) for line in lines])
    real_read = Spill._read

    def cut_short(self: Spill, path: Path, n: int) -> Any:
        path.write_bytes(path.read_bytes()[:-1])
        return real_read(self, path, n)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Spill, "_read", cut_short)
        with pytest.raises(StorageError, match=r"spilled leaf memberships .* build again"):
            build_from_batches([table], tmp_path / "ix", Config(), memory=1)
    assert not (tmp_path / "ix" / "CURRENT").exists()  # nothing was swapped in
    assert not [p for p in (tmp_path / "ix").iterdir() if p.name.startswith(".gen")]


def test_the_budget_from_the_environment(
    org: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$LEOPARD_MEMORY`` is every build's budget where none is given: the command's,
    and a compaction that a consumer starts in a child process."""
    snapshot, config = org
    env = {**os.environ, MEMORY_ENV: "0.0005"}
    argv = [sys.executable, "-m", "leopard", "build", str(snapshot), "--config", str(config)]
    done = subprocess.run(
        [*argv, "--index", str(tmp_path / "ix"), "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert json.loads(done.stdout)["spilled_rows"] > 50_000
    monkeypatch.setenv(MEMORY_ENV, "0.0005")
    child = start_compaction(tmp_path / "ix")
    _, said = child.communicate(timeout=120)
    assert child.returncode == 0, said
    report = json.loads(report_of(IndexDir(tmp_path / "ix").current()).read_text())
    assert report["spilled_rows"] > 50_000 and report["memory_budget"] == int(0.0005 * (1 << 30))
    bad = subprocess.run(
        [*argv, "--index", str(tmp_path / "bad")],
        env={**os.environ, MEMORY_ENV: "lots"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert (
        bad.stderr
        == "Error: LEOPARD_MEMORY: a memory budget is a number of GiB above 0, not 'lots'\n"
    )
    assert not (tmp_path / "bad").exists()
