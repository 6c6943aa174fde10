"""A worker process of ``leopard serve --workers``: how it stops, and how its end is told.

Until uvicorn takes the stop signals over (and again after, when it re-raises the one
it stopped on), SIGTERM and SIGINT are handled by ``stop_worker``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

__all__ = ["flush", "how", "serving", "stop_worker"]


def serving() -> None:
    """This worker listens: from now on a stop signal unwinds it (see ``stop_worker``)."""
    global _serving
    _serving = True


def how(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:  # pragma: no cover - an unnamed signal
            return f"killed by signal {sig}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class _Stop(KeyboardInterrupt):
    """SIGTERM or SIGINT in a worker outside uvicorn's own handling: unwind and exit."""


#: whether this process is a worker that has said it listens (see ``stop_worker``)
_serving = False


def stop_worker(signum: int, frame: object) -> None:
    if _serving:
        raise _Stop(signum)
    # Not serving yet, it has nothing to finish; and an exception raised here could land
    # anywhere (a weakref callback swallows it, and the worker goes on): exit at once.
    flush()
    os._exit(0)


def flush() -> None:
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
