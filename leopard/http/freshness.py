"""Freshness on the event loop: waiting for ``at_least``, and following another process.

``Waits.wait`` drives the core's one wait policy (``leopard.core.freshness.wait_steps``:
decode the token, answer once the position reaches it, ``StaleIndex`` after the wait)
with asyncio, so a waiting request never blocks the loop: between two looks it sleeps
on an event that ``wake`` sets, or for the pause the policy asks. What calls ``wake``
is whatever moves the index: the consumer's batch callback in this process (through
``wake_threadsafe``), or else the ``Refresher``, which calls ``Index.refresh`` in a
worker thread every ``interval`` seconds, and every ``POLL`` seconds while someone
waits, to pick up what another process applied or compacted.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from leopard.core.freshness import POLL, wait_steps
from leopard.core.index import Index

__all__ = ["Refresher", "Waits"]

log = logging.getLogger("leopard.http")


class Waits:
    """Requests waiting for a version, and the event that wakes them to look again."""

    def __init__(self, index: Index) -> None:
        self.index = index
        #: requests waiting right now; the refresher polls faster while there are any
        self.waiting = 0
        # Made on the loop once it runs (lifespan startup, or the first wait):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        #: set when a request starts waiting, so that a refresher looks at once
        self.poke: asyncio.Event | None = None

    def bind(self) -> None:
        """Attach to the running loop (idempotent)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._changed = asyncio.Event()
            self.poke = asyncio.Event()

    def wake(self) -> None:
        """Wake every waiter to look at the version again (on the loop thread)."""
        if self._changed is not None:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    def wake_threadsafe(self) -> None:
        """``wake`` from another thread, such as the consumer's."""
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self.wake)
            except RuntimeError:  # the loop has closed: shutting down
                pass

    async def wait(self, token: str, max_wait: float) -> None:
        """Return once the index has applied ``token``; StaleIndex after ``max_wait``."""
        ix = self.index
        steps = wait_steps(
            lambda: ix.position,
            lambda: ix.version,
            token,
            max_wait,
            gaps=lambda: ix.gaps,
            topics=ix.topics,
        )
        try:
            pause = next(steps)  # a bad token: InvalidInput here, a 400
        except StopIteration:
            return  # reached already, the common case
        self.bind()
        assert self.poke is not None
        self.waiting += 1
        self.poke.set()
        try:
            while True:
                changed = self._changed
                assert changed is not None
                try:
                    await asyncio.wait_for(changed.wait(), pause)
                except TimeoutError:
                    pass
                try:
                    pause = next(steps)
                except StopIteration:
                    return
        finally:
            self.waiting -= 1


class Refresher:
    """Calls ``Index.refresh`` periodically, when no consumer runs in this process."""

    def __init__(self, waits: Waits, interval: float) -> None:
        self.waits = waits
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None
        #: why the last refresh failed, until one succeeds (``/readyz`` reports it)
        self.error: str | None = None

    def start(self) -> None:
        """Start on the running loop."""
        self.waits.bind()
        # One worker thread: refreshes never run concurrently with each other.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="leopard-refresh")
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def _run(self) -> None:
        waits = self.waits
        poke = waits.poke
        assert poke is not None
        loop = asyncio.get_running_loop()
        while True:
            poke.clear()
            try:
                await asyncio.wait_for(poke.wait(), POLL if waits.waiting else self.interval)
                await asyncio.sleep(POLL)  # a poke: coalesce a burst of waiters
            except TimeoutError:
                pass
            try:
                await loop.run_in_executor(self._pool, waits.index.refresh)
                self.error = None
            except Exception as exc:
                if self.error is None:
                    log.exception("refreshing the index failed; retrying")
                self.error = f"{type(exc).__name__}: {exc}"
            waits.wake()
