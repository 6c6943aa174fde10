"""SIGKILL of ``leopard follow`` at random points while writes stream into SpiceDB.

A thread of this test streams writes and deletes (nested groups, arrows, wildcards:
``world.py``) into SpiceDB embedded, served over gRPC by the test fixture
``support.spicedb_front``. A ``leopard follow`` child process is killed with SIGKILL
at a random moment (while it starts, catches up, applies a batch or compacts),
restarted, and killed again, a few times over; then it runs to the last write's ZedToken. The index
must answer every check of every user on every set exactly as SpiceDB does
(CheckBulkPermissions, fully consistent): the revision is stored in the write batch
of its changes, so no kill loses or doubles a change.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.spicedb_front import SpiceDBFront, missing_reason
from world import SCHEMA, disagreements, random_relationship

from ingest.upstream.spicedb import SpiceDBSource, bootstrap
from leopard.core.index import Index
from leopard.model.zedtoken import SPICEDB_KEY

_MISSING = missing_reason()
pytestmark = [
    pytest.mark.spicedb,
    pytest.mark.slow,
    pytest.mark.skipif(_MISSING is not None, reason=f"SpiceDB not installed: {_MISSING}"),
]

KILLS = 6


class Writer:
    """Writes and deletes into SpiceDB from a thread until stopped; one relationship
    or a few a request, each request a change."""

    def __init__(self, front: SpiceDBFront, rng: random.Random, rels: set[str]) -> None:
        self.front = front
        self.rng = rng
        self.rels = rels
        self.writes = 0
        self.token: Any = None
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._one()
                self._stop.wait(self.rng.uniform(0, 0.004))
        except BaseException as exc:
            self.error = exc

    def _one(self) -> None:
        rng = self.rng
        if self.rels and rng.random() < 0.4:
            gone = rng.sample(sorted(self.rels), min(len(self.rels), rng.randint(1, 3)))
            self.token = self.front.write(gone, operation="DELETE")
            self.rels.difference_update(gone)
        else:
            new = {random_relationship(rng) for _ in range(rng.randint(1, 4))}
            self.token = self.front.write(sorted(new))
            self.rels.update(new)
        self.writes += 1

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(30)
        assert self.error is None, self.error


def follow(path: Path, target: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            *("-m", "leopard", "follow", "--index", str(path), "--source", target),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def applied(path: Path) -> tuple[str, int]:
    """The generation served now and the revision it has stored."""
    with Index(path) as ix:
        stats = ix.stats()
    return stats["generation"], stats["position"].get(SPICEDB_KEY, -1)


def _until_past(path: Path, stored: tuple[str, int], proc: subprocess.Popen[bytes]) -> None:
    """Wait (up to a minute) until the follower ``proc`` has stored a revision other
    than ``stored``."""
    deadline = time.monotonic() + 60
    while applied(path) == stored and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)


def never_back(stored: list[tuple[str, int]]) -> bool:
    """Whether the stored revision only goes back where a compaction swapped in a
    generation: the new base holds the position its compaction read, which the
    killed consumer may have passed meanwhile (the next one re-applies from it)."""
    return all(b[1] >= a[1] or b[0] != a[0] for a, b in zip(stored, stored[1:], strict=False))


def test_sigkill_at_random_points_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rng = random.Random(31)
    with SpiceDBFront(SCHEMA) as front:
        rels = {random_relationship(rng) for _ in range(60)}
        front.write(sorted(rels))
        path = tmp_path / "ix"
        bootstrap(path, SpiceDBSource(front.target))
        target = f"spicedb:{front.target}"
        writer = Writer(front, random.Random(32), rels)
        revisions = [applied(path)]
        try:
            for i in range(KILLS):
                # every other run compacts often: kills fall beside a compaction too
                # (its child process dies with it; one that swapped in just before
                # the kill leaves the position its compaction read)
                proc = follow(path, target, *(("--compact-threshold", "40") if i % 2 else ()))
                if i % 3:  # once it has applied something (starting may be slow on a
                    # loaded machine), a random moment later
                    _until_past(path, revisions[-1], proc)
                    time.sleep(rng.uniform(0.0, 2.0))
                else:  # a second or more to start (imports), then it catches up, applies
                    time.sleep(rng.uniform(0.8, 3.5))
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                assert proc.stderr is not None
                err = proc.stderr.read().decode()
                proc.stderr.close()
                assert "Traceback" not in err, err
                revisions.append(applied(path))
        finally:
            writer.stop()
        assert writer.writes > 100, writer.writes
        # the stored revision never goes back within a generation
        assert never_back(revisions), revisions
        assert len({r for _, r in revisions}) > 2, revisions  # the kills fell while it applied
        print(f"{writer.writes} writes; revisions stored at each kill: {revisions}")
        proc = follow(path, target)
        try:
            with Index(path) as ix:
                ix.wait_for(writer.token.token, timeout=30)
                assert disagreements(ix, front) == []
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
