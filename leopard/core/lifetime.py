"""Child processes that must not outlive the process that started them.

A serving worker left behind would answer from an index nobody updates any more, and
a compaction left behind would swap in a base older than what its consumer applied
meanwhile. Both ask the kernel to kill them with their parent.
"""

from __future__ import annotations

import ctypes
import os
import signal

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1  # prctl(2)


def die_with_parent(parent: int | None = None) -> bool:
    """Be killed (SIGKILL) when the parent dies, however it dies (Linux; elsewhere the
    parent's own shutdown has to stop this process). With ``parent`` (its pid, passed
    down by it), False when it is gone already: it died before this call armed the
    signal, which then never comes."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    return parent is None or os.getppid() == parent
