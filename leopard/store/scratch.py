"""Scratch directories of processes that may be killed: made locked, swept when dead.

A reader that follows another process's writes opens the database as a RocksDB
secondary instance, which keeps its own files in a scratch directory (in the system's
temporary directory), removed when the reader closes. A process killed (SIGKILL, the
kernel's OOM killer, a crash) never closes, and a server that restarts its workers
would leave one directory per death. So each directory holds a file the process keeps
an exclusive ``flock`` on while it lives (the kernel releases it however the process
ends, and across PID namespaces sharing the directory); making a new one first removes
those of the same prefix whose lock can be taken: their owner is gone.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["Scratch"]

_LOCK = "owner.lock"


class Scratch:
    """A scratch directory held by this process until ``remove``."""

    def __init__(self, prefix: str) -> None:
        sweep(prefix)
        self.path = tempfile.mkdtemp(prefix=prefix)
        # locked under another name, then renamed: a sweep never sees it unlocked
        making = os.path.join(self.path, _LOCK + ".new")
        self._fd: int | None = os.open(making, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(making, os.path.join(self.path, _LOCK))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def sweep(prefix: str) -> int:
    """Remove the scratch directories of ``prefix`` whose owners have ended; how many.
    One without a lock file is left alone (made by something else, or being made)."""
    removed = 0
    for path in Path(tempfile.gettempdir()).glob(prefix + "*"):
        try:
            fd = os.open(path / _LOCK, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # held: its owner lives
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        finally:
            os.close(fd)
    return removed
