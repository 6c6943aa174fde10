"""What ``leopard build`` refuses, and how two builds of one directory take turns.

Two builds at once run as real ``python -m leopard`` processes. The first reads its
snapshot from a named pipe that the test writes only when it chooses, so it holds
the directory's lock for exactly as long as the test needs, without sleeping and
hoping. Refusals (an empty snapshot, one that shrank too much) go through the
command line in process; the live index must answer as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from leopard import open_index
from leopard.cli import main
from leopard.core.compact import start_compaction
from leopard.core.incremental import DeltaWriter
from leopard.core.index import Index
from leopard.model.names import parse_tuple


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def built(*args: str | Path) -> dict:
    result = cli("build", *args, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def refused(*args: str | Path) -> str:
    result = cli("build", *args)
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    return result.stderr.removeprefix("Error: ").strip()


def snapshot(tmp_path: Path, name: str, n: int) -> Path:
    path = tmp_path / name
    path.write_text("".join(f"group:eng#member@user:u{i:05d}\n" for i in range(n)))
    return path


def members(index: Path) -> list[str]:
    with open_index(index) as ix:
        return ix.members_of("group:eng")


def live(index: Path) -> str:
    return os.readlink(index / "CURRENT")


# -- empty and shrunken snapshots ----------------------------------------------------------


@pytest.fixture
def index(tmp_path: Path) -> Path:
    path = tmp_path / "idx"
    built(snapshot(tmp_path, "hundred.txt", 100), "--index", path)
    return path


@pytest.mark.parametrize("content", ["", "# an export that wrote only its header\n\n  \n"])
def test_an_empty_snapshot_does_not_replace_the_live_index(
    tmp_path: Path, index: Path, content: str
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text(content)
    message = refused(empty, "--index", index)
    assert message == (
        f"refusing to replace the live index at {str(index)!r} with an empty one "
        "(it indexes 100 tuples): the snapshots hold no tuple to index (0 records read); "
        "pass --force (force=True) to build it anyway"
    )
    assert live(index) == "gen-000001" and len(members(index)) == 100

    assert built(empty, "--index", index, "--force")["tuples_indexed"] == 0
    assert live(index) == "gen-000002" and members(index) == []


def test_dev_null_does_not_replace_the_live_index(index: Path) -> None:
    assert "with an empty one" in refused("/dev/null", "--index", index)
    assert len(members(index)) == 100


def test_a_first_build_of_nothing_is_refused_too(tmp_path: Path) -> None:
    index = tmp_path / "new"
    message = refused("/dev/null", "--index", index)
    assert message.startswith(f"refusing to build an empty index at {str(index)!r}")
    assert not (index / "CURRENT").exists()
    assert built("/dev/null", "--index", index, "--force")["tuples_indexed"] == 0
    assert members(index) == []


def test_a_parquet_file_names_the_engine_that_reads_it(tmp_path: Path, index: Path) -> None:
    # its bytes were read as text: "t.parquet:1: 'PAR1\\x15...' contains the control
    # character", or, with --skip-invalid, an empty build
    path = tmp_path / "t.parquet"
    path.write_bytes(b"PAR1\x15\x04\x15\x10" + bytes(64) + b"PAR1")
    for extra in ((), ("--skip-invalid",)):
        message = refused(path, "--index", index, *extra)
        assert message == (
            f"{str(path)!r} is Parquet (by its name), which the local engine does not "
            "read: build it with --engine spark"
        )
    assert live(index) == "gen-000001" and len(members(index)) == 100


def test_a_change_log_is_not_a_snapshot(tmp_path: Path, index: Path) -> None:
    # ReadChanges items ('fga tuple changes | jq .changes[]'): the delete was indexed
    key = {"user": "user:u00000", "relation": "member", "object": "group:eng"}
    log = tmp_path / "changes.jsonl"
    log.write_text(
        json.dumps({"tuple_key": key, "operation": "TUPLE_OPERATION_WRITE"})
        + "\n"
        + json.dumps({"tuple_key": key, "operation": "TUPLE_OPERATION_DELETE"})
        + "\n"
    )
    for extra in ((), ("--skip-invalid",)):
        message = refused(log, "--index", index, *extra)
        assert message.startswith(
            f'{log}:2: the record\'s operation is "TUPLE_OPERATION_DELETE", not a write'
        )
    assert live(index) == "gen-000001" and len(members(index)) == 100


def test_a_snapshot_that_lost_60_percent_is_refused(tmp_path: Path, index: Path) -> None:
    message = refused(snapshot(tmp_path, "forty.txt", 40), "--index", index)
    assert message == (
        f"refusing to replace the live index at {str(index)!r}: 40 tuples indexed against "
        "100 in the live generation, 60% fewer, over the limit of 50% (--max-shrink); "
        "pass --force (force=True) to build it anyway"
    )
    assert len(members(index)) == 100
    assert built(snapshot(tmp_path, "forty.txt", 40), "--index", index, "--force")
    assert len(members(index)) == 40


def test_a_snapshot_that_lost_40_percent_is_accepted(tmp_path: Path, index: Path) -> None:
    built(snapshot(tmp_path, "sixty.txt", 60), "--index", index)
    assert len(members(index)) == 60


def test_max_shrink_70_accepts_a_60_percent_loss(tmp_path: Path, index: Path) -> None:
    built(snapshot(tmp_path, "forty.txt", 40), "--index", index, "--max-shrink", "70")
    assert len(members(index)) == 40
    # measured against the live generation: from 40, 10 is a 75% loss
    assert "75% fewer" in refused(snapshot(tmp_path, "ten.txt", 10), "--index", index)


@pytest.mark.parametrize("damage", ["missing", "garbled"])
def test_a_live_index_whose_report_is_lost_is_not_replaced_unasked(
    tmp_path: Path, index: Path, damage: str
) -> None:
    """The guard counts the live generation's build report: lost, no count would
    hold, so a build is refused until --force (it replaced 100 tuples with 1)."""
    report = (index / "CURRENT").resolve() / "build-report.json"
    if damage == "missing":
        report.unlink()
    else:
        report.write_text("{garbage")
    one = snapshot(tmp_path, "one.txt", 1)
    said = refused(one, "--index", index)
    assert "the build report of its live generation (build-report.json) is missing" in said
    assert "--force" in said and len(members(index)) == 100
    built(one, "--index", index, "--force")
    assert len(members(index)) == 1


def test_compaction_is_exempt(tmp_path: Path, index: Path) -> None:
    ix = Index(index)
    writer = DeltaWriter(ix.reader)
    writer.apply([("delete", parse_tuple(f"group:eng#member@user:u{i:05d}")) for i in range(100)])
    writer.close()
    ix.close()
    result = cli("compact", "--index", index, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tuples_indexed"] == 0
    assert members(index) == []


MULTI = """\
[[sets]]
namespace = "group"
relation = "member"
from = ["member", "manager"]
[[sets]]
namespace = "group"
relation = "admins"
from = ["manager"]
"""


def test_a_compaction_counts_a_relation_feeding_several_sets_once(tmp_path: Path) -> None:
    """``manager`` feeds two sets, so each of its tuples is an edge in each: compaction
    stands for the tuple once (before, twice, and a rebuild from the same snapshot was
    then refused as 50% fewer), and answers as before."""
    config = tmp_path / "multi.toml"
    config.write_text(MULTI)
    snap = tmp_path / "m.txt"
    snap.write_text("".join(f"group:g{i % 5}#manager@user:u{i}\n" for i in range(100)))
    index = tmp_path / "idx"
    assert built(snap, "--index", index, "--config", config)["tuples_indexed"] == 100
    result = cli("compact", "--index", index, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tuples_indexed"] == 100
    with open_index(index) as ix:
        assert ix.check("user:u7", "group:g2#admins") and ix.check("user:u7", "group:g2#member")
        assert len(ix.members_of("group:g2#admins")) == len(ix.members_of("group:g2#member")) == 20
    assert built(snap, "--index", index, "--config", config)["tuples_indexed"] == 100


# -- two builds at once ---------------------------------------------------------------------


def leopard(*args: str | Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "LEOPARD_INDEX"}
    return subprocess.Popen(
        [sys.executable, "-m", "leopard", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def holding_the_lock(tmp_path: Path, index: Path) -> tuple[subprocess.Popen[str], Path]:
    """A build that has taken the lock and waits for its snapshot on a named pipe."""
    fifo = tmp_path / "slow.pipe"
    os.mkfifo(fifo)
    first = leopard("build", fifo, "--index", index, "--json")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lock = index / "LOCK"
        if lock.exists() and lock.read_text().strip() == str(first.pid):
            return first, fifo
        assert first.poll() is None, first.communicate()
        time.sleep(0.02)
    raise AssertionError("the first build never took the lock")


def feed(fifo: Path, n: int) -> None:
    with open(fifo, "w") as f:
        f.write("".join(f"group:eng#member@user:first{i:05d}\n" for i in range(n)))


def test_a_second_build_fails_at_once_naming_the_first(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    first, fifo = holding_the_lock(tmp_path, index)
    second = leopard("build", snapshot(tmp_path, "b.txt", 50), "--index", index)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 1 and out == ""
    assert err == (
        f"Error: {str(index)!r} is locked by another build or compaction (pid {first.pid}); "
        "try again when it has finished, or wait for it with --wait\n"
    )
    feed(fifo, 50)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert json.loads(out)["tuples_indexed"] == 50
    assert sorted(os.listdir(index)) == ["CURRENT", "LOCK", "gen-000001"]
    assert members(index) == [f"user:first{i:05d}" for i in range(50)]


def test_with_wait_two_builds_run_one_after_the_other(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    first, fifo = holding_the_lock(tmp_path, index)
    second = leopard("build", snapshot(tmp_path, "b.txt", 50), "--index", index, "--wait")
    time.sleep(1.0)
    assert second.poll() is None  # waiting for the lock
    assert (index / "LOCK").read_text().strip() == str(first.pid)
    feed(fifo, 50)
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert (first.returncode, second.returncode) == (0, 0), (err1, err2)
    # each had a generation of its own, the second swapped in last
    assert sorted(os.listdir(index)) == ["CURRENT", "LOCK", "gen-000001", "gen-000002"]
    assert live(index) == "gen-000002"
    assert (index / "gen-000002" / "PREVIOUS").read_text() == "gen-000001\n"
    assert members(index) == [f"user:u{i:05d}" for i in range(50)]
    with open_index(index) as ix:
        assert ix.check("user:u00049", "group:eng")
        assert not ix.check("user:first00000", "group:eng")


def test_a_compaction_fails_while_a_build_runs(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    assert built(snapshot(tmp_path, "a.txt", 50), "--index", index)
    first, fifo = holding_the_lock(tmp_path, index)
    child = start_compaction(index)  # as the consumer starts it
    _, err = child.communicate(timeout=120)
    assert child.returncode == 1
    assert err.decode() == (
        f"compaction of {index} failed: {str(index)!r} is locked by another build or "
        f"compaction (pid {first.pid}); try again when it has finished, or wait for it with "
        "--wait\n"
    )
    feed(fifo, 50)
    assert first.wait(timeout=120) == 0
    first.communicate()
    assert live(index) == "gen-000002"


def _gone(pid: int, timeout: float = 30) -> bool:
    """Whether process ``pid`` has exited (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


# A caller that starts a compaction as the consumer does, says the child's pid, and
# waits to be killed.
_CALLER = """
import sys, time
from leopard.core.compact import start_compaction
child = start_compaction(sys.argv[1])
print(child.pid, flush=True)
time.sleep(300)
"""

# A child armed as a compaction child arms itself, then waiting to be killed with it.
_ARMED = """
import os, sys, time
from leopard.core.lifetime import die_with_parent
assert die_with_parent(os.getppid())
print(os.getpid(), flush=True)
time.sleep(300)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG)")
def test_a_compaction_dies_with_the_consumer_that_started_it(tmp_path: Path) -> None:
    """SIGKILL of the consumer must not leave its compaction to swap in, later, a base
    older than what a restarted consumer has applied meanwhile."""
    index = tmp_path / "idx"
    assert built(snapshot(tmp_path, "a.txt", 50), "--index", index)
    with Index(index) as ix:
        writer = DeltaWriter(ix.reader)
        writer.apply([("touch", parse_tuple("group:eng#member@user:late"))], {"t:0": 1})
        writer.close()
    caller = subprocess.Popen(
        [sys.executable, "-c", _CALLER, str(index)], stdout=subprocess.PIPE, text=True
    )
    assert caller.stdout is not None
    child = int(caller.stdout.readline())
    caller.kill()  # as SIGKILL would: no close() stops the child
    caller.communicate()
    assert _gone(child), f"compaction {child} outlived its caller"
    assert live(index) == "gen-000001"
    assert "user:late" in members(index)

    # the same once armed: the kernel kills the child when its caller dies
    caller = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys, time\n"
         f"p = subprocess.Popen([sys.executable, '-c', {_ARMED!r}], stdout=subprocess.PIPE)\n"
         "print(int(p.stdout.readline()), flush=True)\ntime.sleep(300)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert caller.stdout is not None
    armed = int(caller.stdout.readline())
    assert not _gone(armed, timeout=0.5)  # alive while its caller is
    caller.kill()
    caller.communicate()
    assert _gone(armed), f"armed child {armed} outlived its caller"
