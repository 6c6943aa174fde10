"""The index directory's generations under kills, crashes and concurrent writers.

Builds run as real ``python -m leopard`` processes; a crash is a process killed
(SIGKILL) at an exact point of the swap, between two of its system calls, by a
wrapper that patches ``os.symlink`` or ``os.replace`` before running the command
line. What is checked afterwards is the directory itself: what it holds, which
generation is live, and that the live index answers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from leopard import build_index, open_index
from leopard.core.compact import compact
from leopard.errors import StorageError
from leopard.store.generations import IndexDir

# Runs the command line with one system call of the swap made fatal: when it is
# about to act on a path named TARGET, the process kills itself (no cleanup runs).
CRASHING = """
import os, signal, sys
call, target = sys.argv[1], sys.argv[2]
real = getattr(os, call)
def crash(src, dst, *args, **kwargs):
    if os.path.basename(str(dst)).startswith(target):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kwargs)
setattr(os, call, crash)
from leopard.cli import main
main(args=sys.argv[3:], prog_name="leopard")
"""


def snapshot(tmp_path: Path, name: str, members: list[str], n: int = 20) -> Path:
    path = tmp_path / f"{name}.txt"
    lines = [f"group:eng#member@user:{m}" for m in members]
    lines += [f"group:pad#member@user:p{i}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def leopard(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LEOPARD_INDEX"}
    return subprocess.run(
        [sys.executable, "-m", "leopard", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def build(snap: Path, index: Path) -> None:
    proc = leopard("build", snap, "--index", index)
    assert proc.returncode == 0, proc.stderr


def crash_in(call: str, target: str, snap: Path, index: Path) -> int:
    """Build, killed as ``os.<call>`` is about to act on ``target``; the dead pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING, call, target, "build", str(snap), "--index", str(index)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    return proc.pid


def listing(index: Path) -> list[str]:
    return sorted(os.listdir(index))


def members(index: Path) -> list[str]:
    with open_index(index) as ix:
        return ix.members_of("group:eng")


def live(index: Path) -> str:
    return os.readlink(index / "CURRENT")


# -- crashes in the swap ------------------------------------------------------------------


def test_a_crash_between_the_symlink_and_the_rename_is_cleaned_by_the_next_build(
    tmp_path: Path,
) -> None:
    index = tmp_path / "idx"
    build(snapshot(tmp_path, "a", ["alice"]), index)
    pid = crash_in("replace", "CURRENT", snapshot(tmp_path, "b", ["bob"]), index)
    # killed after os.symlink, before os.replace: the old index is still live
    assert listing(index) == [f".CURRENT.{pid}.tmp", "CURRENT", "LOCK", "gen-000001", "gen-000002"]
    assert live(index) == "gen-000001"

    build(snapshot(tmp_path, "c", ["carol"]), index)
    # the link and the generation that never went live are gone; the one live
    # before the swap is kept
    assert listing(index) == ["CURRENT", "LOCK", "gen-000001", "gen-000003"]
    assert members(index) == ["user:carol"]


def test_a_crash_in_the_swap_is_cleaned_by_the_next_open(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    build(snapshot(tmp_path, "a", ["alice"]), index)
    pid = crash_in("replace", "CURRENT", snapshot(tmp_path, "b", ["bob"]), index)
    assert listing(index) == [f".CURRENT.{pid}.tmp", "CURRENT", "LOCK", "gen-000001", "gen-000002"]
    assert members(index) == ["user:alice"]  # the open answers from the live one, and tidies
    assert listing(index) == ["CURRENT", "LOCK", "gen-000001"]


def test_an_interrupted_first_build_can_be_built_again(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    pid = crash_in("replace", "CURRENT", snapshot(tmp_path, "a", ["alice"]), index)
    assert listing(index) == [f".CURRENT.{pid}.tmp", "LOCK", "gen-000001"]
    with pytest.raises(Exception, match="no CURRENT generation"):
        open_index(index)

    build(snapshot(tmp_path, "b", ["bob"]), index)
    assert listing(index) == ["CURRENT", "LOCK", "gen-000002"]
    assert members(index) == ["user:bob"]


def test_generations_that_never_went_live_go_and_the_one_live_before_stays(
    tmp_path: Path,
) -> None:
    index = tmp_path / "idx"
    build(snapshot(tmp_path, "a", ["alice"]), index)  # gen-000001
    build(snapshot(tmp_path, "b", ["bob"]), index)  # gen-000002, live
    # killed between the rename of the new generation and the symlink: gen-000003
    # is complete and was never live
    crash_in("symlink", ".CURRENT", snapshot(tmp_path, "c", ["carol"]), index)
    assert listing(index) == ["CURRENT", "LOCK", "gen-000001", "gen-000002", "gen-000003"]
    assert live(index) == "gen-000002"

    build(snapshot(tmp_path, "d", ["dave"]), index)  # gen-000004
    # kept: the generation live before this swap (gen-000002), not the one numbered
    # just below the new one (gen-000003, never live)
    assert listing(index) == ["CURRENT", "LOCK", "gen-000002", "gen-000004"]
    assert (index / "gen-000004" / "PREVIOUS").read_text() == "gen-000002\n"
    assert members(index) == ["user:dave"]


def test_temporary_generations_are_removed_under_the_lock_whatever_their_pid(
    tmp_path: Path,
) -> None:
    index = tmp_path / "idx"
    build(snapshot(tmp_path, "a", ["alice"]), index)
    # left by killed builds: one whose pid is now some live process's (this one's)
    left = [index / f".gen-000007.{os.getpid()}.tmp", index / ".gen-000008.1.tmp"]
    for d in left:
        (d / "base").mkdir(parents=True)
    os.symlink("gen-000001", index / f".CURRENT.{os.getpid()}.tmp")
    build(snapshot(tmp_path, "b", ["bob"]), index)
    assert listing(index) == ["CURRENT", "LOCK", "gen-000001", "gen-000002"]


def test_opening_tidies_only_when_no_writer_holds_the_lock(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    build(snapshot(tmp_path, "a", ["alice"]), index)
    pid = crash_in("replace", "CURRENT", snapshot(tmp_path, "b", ["bob"]), index)
    leftovers = [f".CURRENT.{pid}.tmp", "CURRENT", "LOCK", "gen-000001", "gen-000002"]

    writer = IndexDir(index)
    writer.acquire()  # a build at work: its entries may look dead, they are not touched
    IndexDir(index).tidy()
    assert listing(index) == leftovers
    writer.release()

    IndexDir(index).tidy()
    assert listing(index) == ["CURRENT", "LOCK", "gen-000001"]
    assert members(index) == ["user:alice"]


def test_publish_keeps_exactly_the_generation_live_before(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    for i, who in enumerate(["a", "b", "c", "d"], 1):
        build_index([[f"group:eng#member@user:{who}"]], index)
        expected = [f"gen-{i - 1:06d}"] if i > 1 else []
        assert listing(index) == ["CURRENT", "LOCK", *expected, f"gen-{i:06d}"]


# -- one writer at a time ------------------------------------------------------------------


def test_a_second_writer_in_another_process_is_turned_away_naming_the_holder(
    tmp_path: Path,
) -> None:
    index = tmp_path / "idx"
    build(snapshot(tmp_path, "a", ["alice"]), index)
    holder = IndexDir(index)
    holder.acquire()
    try:
        proc = leopard("build", snapshot(tmp_path, "b", ["bob"]), "--index", index)
        assert proc.returncode == 1
        assert proc.stderr == (
            f"Error: {str(index)!r} is locked by another build or compaction "
            f"(pid {os.getpid()}); try again when it has finished, or wait for it with --wait\n"
        )
        proc = leopard("compact", "--index", index)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1
        assert f"locked by another build or compaction (pid {os.getpid()})" in proc.stderr
    finally:
        holder.release()
    assert listing(index) == ["CURRENT", "LOCK", "gen-000001"]
    assert members(index) == ["user:alice"]


def test_a_build_waits_for_the_lock_with_a_timeout_or_without(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    build_index([["group:eng#member@user:a"]], index)
    holder = IndexDir(index)
    holder.acquire()
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"locked by .* \(waited 0.3 s\)"):
        build_index([["group:eng#member@user:b"]], index, wait=0.3)
    assert time.monotonic() - started >= 0.3

    done: list[object] = []
    waiter = threading.Thread(
        target=lambda: done.append(build_index([["group:eng#member@user:c"]], index, wait=True))
    )
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive() and not done  # still waiting
    holder.release()
    waiter.join(60)
    assert len(done) == 1
    assert members(index) == ["user:c"]


def test_compaction_takes_the_lock_before_reading(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    build_index([["group:eng#member@user:a"]], index)
    holder = IndexDir(index)
    holder.acquire()
    try:
        with pytest.raises(StorageError, match="locked by another build or compaction"):
            compact(index)
    finally:
        holder.release()
    report = compact(index)
    assert report.tuples_indexed == 1
    assert listing(index) == ["CURRENT", "LOCK", "gen-000001", "gen-000002"]


def test_a_failed_cleanup_never_hides_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = tmp_path / "idx"
    build_index([["group:eng#member@user:a"]], index)
    real_abandon = IndexDir.abandon

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the real failure")

    def abandon_and_fail(self: IndexDir, tmp: Path) -> None:
        real_abandon(self, tmp)
        raise PermissionError("cannot remove")

    monkeypatch.setattr("leopard.core.build._write_report", boom)
    monkeypatch.setattr(IndexDir, "abandon", abandon_and_fail)
    with pytest.raises(RuntimeError, match="the real failure") as caught:
        build_index([["group:eng#member@user:b"]], index)
    assert caught.value.__notes__ == [
        "removing the new generation failed too: PermissionError('cannot remove')"
    ]
    monkeypatch.undo()
    build_index([["group:eng#member@user:c"]], index)
    assert listing(index) == ["CURRENT", "LOCK", "gen-000001", "gen-000002"]
