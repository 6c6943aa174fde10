"""A full disk under ``leopard build``, ``leopard compact`` and ``--rejects``.

Where this process may mount one (root), the index lives on a small tmpfs filled
almost to the brim, and the commands run as real processes: the disk is really
full, RocksDB and Python really get ENOSPC. Elsewhere the commands run in process
and the failure is injected where the build writes (an ``OSError`` with
``errno.ENOSPC``, or RocksDB's text for it), and the rejects go to ``/dev/full``,
which refuses every write with ENOSPC. Either way each command must end with one
line naming the path, exit status 1, and the previous index still serving.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from leopard.cli import main

SMALL = """\
group:eng#member@user:alice
group:eng#member@group:backend#member
group:backend#member@user:bob
"""


@dataclass
class Disk:
    """Where the index lives, and how a command is run on it."""

    root: Path
    mounted: bool  # a real small file system; else failures are injected
    monkeypatch: pytest.MonkeyPatch

    def run(self, *args: str | Path) -> tuple[int, str, str]:
        """Exit status, stdout and stderr of ``leopard ARGS``."""
        if self.mounted:
            env = {k: v for k, v in os.environ.items() if k != "LEOPARD_INDEX"}
            proc = subprocess.run(
                [sys.executable, "-m", "leopard", *map(str, args)],
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
                check=False,
            )
            return proc.returncode, proc.stdout, proc.stderr
        result = CliRunner().invoke(main, [str(a) for a in args])
        return result.exit_code, result.stdout, result.stderr

    def fill(self, leave: int = 64 << 10) -> None:
        """Leave about ``leave`` bytes free (mounted), or make writing the index fail."""
        if self.mounted:
            free = shutil.disk_usage(self.root).free
            with open(self.root / "filler", "wb") as f:
                f.write(b"\0" * max(0, free - leave))
            return

        def full(*args: object, **kwargs: object) -> None:
            where = self.root / "idx" / "gen-000002" / "base" / "000012.sst"
            raise Exception(  # what rocksdict raises: RocksDB's status text
                f"IO error: No space left on device: While appending to file: {where}: "
                "No space left on device"
            )

        self.monkeypatch.setattr("leopard.store.writers.BaseWriter.store", full)

    def rejects_path(self) -> Path:
        return self.root / "rejects.txt" if self.mounted else Path("/dev/full")

    def free(self) -> None:
        (self.root / "filler").unlink(missing_ok=True)
        self.monkeypatch.undo()


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    root = tmp_path / "small"
    root.mkdir()
    mounted = (
        os.geteuid() == 0
        and shutil.which("mount") is not None
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(root)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    try:
        yield Disk(root, mounted, monkeypatch)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(root)], check=False)


def snapshot(tmp_path: Path, n: int, *, bad: int = 0) -> Path:
    path = tmp_path / f"snap-{n}-{bad}.txt"
    lines = [f"group:g{i % 97}#member@user:someone-with-a-longish-name-{i}" for i in range(n)]
    lines += [f"group:bad#member@user:not valid {i}" for i in range(bad)]
    path.write_text("\n".join(lines) + "\n")
    return path


def one_line(status: int, stdout: str, stderr: str) -> str:
    assert status == 1, stderr
    assert stdout == "" and "Traceback" not in stderr, stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert stderr.startswith("Error: ")
    return stderr[len("Error: ") : -1]


def still_serving(disk: Disk, index: Path) -> None:
    assert sorted(os.listdir(index)) == ["CURRENT", "LOCK", "gen-000001"]
    assert disk.run("check", "user:bob", "group:eng", "--index", index)[:2] == (0, "true\n")


@pytest.fixture
def index(disk: Disk, tmp_path: Path) -> Path:
    small = tmp_path / "small.txt"
    small.write_text(SMALL)
    path = disk.root / "idx"
    status, _, err = disk.run("build", small, "--index", path)
    assert status == 0, err
    return path


def test_a_build_on_a_full_disk_says_so_in_one_line(
    disk: Disk, index: Path, tmp_path: Path
) -> None:
    snap = snapshot(tmp_path, 60_000)
    disk.fill()
    message = one_line(*disk.run("build", snap, "--index", index))
    assert re.fullmatch(
        rf"no space left on {re.escape(str(index))} \(writing the new generation gen-000002: "
        r"[\d.]+ (bytes|[KMGT]iB) free, the last build took [\d.]+ (bytes|[KMGT]iB)\)",
        message,
    ), message
    still_serving(disk, index)
    disk.free()
    status, _, err = disk.run("build", snap, "--index", index)
    assert status == 0, err


def test_a_compaction_on_a_full_disk_says_so_in_one_line(disk: Disk, index: Path) -> None:
    disk.fill(leave=4096)
    message = one_line(*disk.run("compact", "--index", index))
    assert message.startswith(f"no space left on {index} (writing the new generation gen-000002: ")
    still_serving(disk, index)


def test_rejects_on_a_full_disk_say_so_in_one_line(disk: Disk, index: Path, tmp_path: Path) -> None:
    snap = snapshot(tmp_path, 100, bad=5_000)
    rejects = disk.rejects_path()
    disk.fill()
    message = one_line(
        *disk.run("build", snap, "--index", index, "--skip-invalid", "--rejects", rejects)
    )
    assert message.startswith(f"no space left on {rejects} (writing the rejected records")
    still_serving(disk, index)


def test_a_build_spilling_on_a_full_disk_says_so_in_one_line(
    disk: Disk, index: Path, tmp_path: Path
) -> None:
    """``--memory``: the leaf memberships spilled under the new generation find no room."""
    snap = snapshot(tmp_path, 60_000)
    disk.fill()
    if not disk.mounted:  # the spill files written to /dev/full: ENOSPC on every write
        real_open = open
        disk.monkeypatch.setattr(
            "leopard.core.spill.open",
            lambda path, mode: real_open("/dev/full", mode.replace("a", "w")),
            raising=False,
        )
    message = one_line(*disk.run("build", snap, "--index", index, "--memory", "0.00001"))
    assert message.startswith(f"no space left on {index} (spilling leaf memberships: "), message
    still_serving(disk, index)
