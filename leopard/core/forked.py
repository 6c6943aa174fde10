"""Work in a forked child process, and the pipe on which it says why it failed.

The build writes MEMBER2GROUP in a child while the parent writes the other
families: pyroaring holds the GIL, so threads would not help.
"""

from __future__ import annotations

import os
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from leopard.errors import StorageError
from leopard.store.space import no_space

__all__ = ["Child", "fork"]


@dataclass
class Child:
    """A forked writer and the pipe on which it says why it failed."""

    pid: int
    errors: int  # read end of the pipe

    def wait(self) -> None:
        try:
            _, status = os.waitpid(self.pid, 0)
            said = read_all(self.errors).decode("utf-8", "replace").strip()
        finally:
            os.close(self.errors)
        if os.waitstatus_to_exitcode(status) != 0:
            reason = said or f"exit status {os.waitstatus_to_exitcode(status)}"
            raise StorageError(f"writing the subjects failed in the child process: {reason}")

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - already gone (but not yet reaped)
            pass
        try:
            os.waitpid(self.pid, 0)
        finally:
            os.close(self.errors)


def fork(work: Callable[[], None]) -> Child | None:
    """Run ``work`` in a forked child; None where fork is unavailable.

    The child touches only numpy, pyroaring and its own SST writers (no RocksDB
    database, no Arrow thread pool), so forking a threaded parent is safe here. A
    failure comes back as one line on a pipe (and a traceback on stderr, unless the
    disk is full: that needs no traceback).
    """
    if not hasattr(os, "fork"):
        return None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.close(read_end)
            work()
        except BaseException as exc:
            if no_space(exc) is None:
                traceback.print_exc()
            line = " ".join(f"{type(exc).__name__}: {exc}".split())[:2000]
            try:
                os.write(write_end, line.encode("utf-8", "replace"))
            except OSError:
                pass
            code = 1
        os._exit(code)
    os.close(write_end)
    return Child(pid, read_end)


def read_all(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, 65536):
        parts.append(chunk)
    return b"".join(parts)
