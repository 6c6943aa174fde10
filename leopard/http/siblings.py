"""What a worker of ``leopard serve --workers N`` adds to the app to serve beside its
siblings (see ``leopard.http.workers``).

- ``PromptRefresher``: a worker without the consumer follows the index as any other
  process does (``Index.refresh``), but re-reads at once when a request starts
  waiting for a version it has not applied, and whenever the consumer worker says it
  applied a batch while a request waits, instead of pausing to gather a burst of
  waiters: a token read from one worker is then answered by another as soon as that
  batch is on disk. Without waiters it re-reads every ``--refresh-interval``, as a
  single server without a consumer does.
- ``counted_protocol``: the connection protocol counting open connections in memory
  every worker shares, so ``--max-connections`` bounds the server as a whole.
- ``WorkerHeader``: every answer says which worker gave it (``Leopard-Worker: SLOT;
  pid=PID``), to tell workers apart in logs and tests (``/readyz`` and ``/metrics``
  are each worker's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from leopard.core.freshness import POLL
from leopard.http.connections import GuardedProtocol
from leopard.http.freshness import Refresher, Waits
from leopard.http.types import Message, Receive, Scope, Send
from leopard.http.workers import ConnectionCounts

__all__ = ["WORKER_HEADER", "PromptRefresher", "WorkerHeader", "counted_protocol"]

log = logging.getLogger("leopard.http")

WORKER_HEADER = b"leopard-worker"


class PromptRefresher(Refresher):
    """A ``Refresher`` that re-reads at once for a waiting request (see the module).

    ``wake_fd`` is the read end of the pipe the consumer worker writes a byte to after
    every batch (None when no worker of this server consumes).
    """

    def __init__(self, waits: Waits, interval: float, wake_fd: int | None = None) -> None:
        super().__init__(waits, interval)
        self.wake_fd = wake_fd
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        super().start()
        if self.wake_fd is not None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self.wake_fd, self._woken)

    async def stop(self) -> None:
        if self._loop is not None and self.wake_fd is not None:
            self._loop.remove_reader(self.wake_fd)
            self._loop = None
        await super().stop()

    def _woken(self) -> None:
        assert self.wake_fd is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.read(self.wake_fd, 4096)  # any number of batches: one look
        poke = self.waits.poke
        if self.waits.waiting and poke is not None:
            poke.set()

    async def _run(self) -> None:
        # Refresher._run without the pause after a poke: a refresh finding nothing new
        # is a catch-up of the secondary instance and one read, cheap enough to do for
        # every poke (pokes while one runs are one more refresh, not one each).
        waits = self.waits
        poke = waits.poke
        assert poke is not None
        loop = asyncio.get_running_loop()
        while True:
            if not poke.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(poke.wait(), POLL if waits.waiting else self.interval)
            poke.clear()
            try:
                await loop.run_in_executor(self._pool, waits.index.refresh)
                self.error = None
            except Exception as exc:
                if self.error is None:
                    log.exception("refreshing the index failed; retrying")
                self.error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(POLL)  # a failing store is not retried in a spin
            waits.wake()


class _CountedConnections:
    """uvicorn's set of this worker's connections, whose size is the server's."""

    def __init__(self, local: set[Any], counts: ConnectionCounts, slot: int) -> None:
        self._local = local
        self._counts = counts
        self._slot = slot

    def add(self, conn: Any) -> None:
        if conn not in self._local:
            self._local.add(conn)
            self._counts.add(self._slot, 1)

    def discard(self, conn: Any) -> None:
        if conn in self._local:
            self._local.discard(conn)
            self._counts.add(self._slot, -1)

    def __contains__(self, conn: object) -> bool:
        return conn in self._local

    def __iter__(self) -> Any:
        return iter(self._local)

    def __len__(self) -> int:
        return self._counts.total()


def counted_protocol(
    protocol: type[GuardedProtocol], counts: ConnectionCounts, slot: int
) -> type[GuardedProtocol]:
    """``protocol`` (``guarded_protocol(limits)``) bounding the connections of all the
    workers that share ``counts``, this one counting in ``slot``."""
    shared: dict[int, _CountedConnections] = {}

    class CountedProtocol(protocol):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            local: set[Any] = self.connections  # type: ignore[has-type]  # uvicorn's
            wrapped = shared.get(id(local))
            if wrapped is None:
                wrapped = shared[id(local)] = _CountedConnections(local, counts, slot)
            self.connections = wrapped

    CountedProtocol.__name__ = CountedProtocol.__qualname__ = f"Counted{protocol.__name__}"
    return CountedProtocol


class WorkerHeader:
    """The app, with ``Leopard-Worker: SLOT; pid=PID`` on every answer."""

    def __init__(self, app: Any, slot: int) -> None:
        self.app = app
        self.value = f"{slot}; pid={os.getpid()}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = self.value

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (WORKER_HEADER, value)]
            await send(message)

        await self.app(scope, receive, tagged)
