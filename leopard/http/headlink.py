"""The head of the change stream across the workers of ``serve --workers``.

Only worker 0 applies the stream, so only it can say where the stream's head is (see
``leopard.http.headwait``). A request with higher consistency (OpenFGA's
``HIGHER_CONSISTENCY``) answered by another worker asks worker 0 for the head through a
socket pair the supervisor made (``HeadLink``), then waits, like ``at_least``, until
its own view of the index has reached that head. Worker 0 answers each question with
the head as of when the question came (``HeadTeller``).

The messages are JSON objects, one a datagram (``SOCK_SEQPACKET``): a question
``{"id": ID, "timeout": SECONDS}``, an answer ``{"id": ID, "head": {PARTITION:
OFFSET}}`` or ``{"id": ID, "error": WHY}``. A question's id names the asking process,
so an answer meant for a worker that died and was started again is ignored, as are
answers to questions given up on. While worker 0 is being started again, questions wait
in the socket and are answered once it serves; a question not answered within its wait
is ``StaleIndex``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

from leopard.core.index import Index
from leopard.errors import StaleIndex
from leopard.http.headwait import HeadOf

__all__ = ["HeadLink", "HeadTeller", "head_pair"]

log = logging.getLogger(__name__)

#: how much longer than its own wait a question may take on the way (seconds)
_MARGIN = 0.5
#: the largest message (a head of many partitions fits many times over)
_MAX_MESSAGE = 1 << 20


def head_pair() -> tuple[int, int]:
    """A connected pair of datagram sockets, as raw descriptors (worker 0's end, the
    other worker's end), non-blocking and not inherited by programs executed later."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setblocking(False)
    return a.detach(), b.detach()


def _send(fd: int, message: dict[str, Any]) -> None:
    os.write(fd, json.dumps(message).encode())


def _received(fd: int) -> list[dict[str, Any]]:
    """Every message waiting on ``fd`` (those that are no JSON object are dropped)."""
    out: list[dict[str, Any]] = []
    while True:
        try:
            data = os.read(fd, _MAX_MESSAGE)
        except (BlockingIOError, InterruptedError):
            return out
        if not data:  # the other end is closed: nothing more comes
            return out
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        if isinstance(message, dict):
            out.append(message)
        else:
            log.warning("a message between workers that is no JSON object was dropped")


class HeadLink:
    """A worker's way to the head of the stream worker 0 applies: ``await link(timeout)``
    is the head as of the call (a ``HeadOf``), or StaleIndex saying why not."""

    def __init__(self, fd: int, index: Index) -> None:
        self.fd = fd
        self.index = index
        self._ids = itertools.count()
        self._asked: dict[str, asyncio.Future[dict[str, int]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, timeout: float) -> dict[str, int]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            loop.add_reader(self.fd, self._answered)
        qid = f"{os.getpid()}:{next(self._ids)}"
        answer: asyncio.Future[dict[str, int]] = loop.create_future()
        self._asked[qid] = answer
        try:
            try:
                _send(self.fd, {"id": qid, "timeout": timeout})
            except OSError as exc:
                raise self._stale(f"worker 0 could not be asked ({exc.strerror or exc})") from None
            try:
                return await asyncio.wait_for(answer, timeout + _MARGIN)
            except TimeoutError:
                raise self._stale(f"worker 0 did not answer within {timeout:g} s") from None
        finally:
            self._asked.pop(qid, None)

    def _stale(self, why: str) -> StaleIndex:
        return StaleIndex(
            f"the head of the stream is not known: {why} (it applies the stream)",
            self.index.version,
        )

    def _answered(self) -> None:
        for message in _received(self.fd):
            answer = self._asked.get(str(message.get("id")))
            if answer is None or answer.done():
                continue  # given up on, or meant for this worker's predecessor
            head = message.get("head")
            if isinstance(head, dict) and all(
                isinstance(k, str) and type(v) is int for k, v in head.items()
            ):
                answer.set_result(head)
            else:
                why = message.get("error")
                answer.set_exception(
                    StaleIndex(str(why) if why else "worker 0 answered no head", self.index.version)
                )

    def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.fd)
            self._loop = None


class HeadTeller:
    """Worker 0's side: answers the other workers' questions on ``fds`` with
    ``head_of``, each question on its own, each as of when it came."""

    def __init__(self, fds: Sequence[int], head_of: HeadOf) -> None:
        self.fds = list(fds)
        self.head_of = head_of
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for fd in self.fds:
            self._loop.add_reader(fd, self._asked, fd)

    def stop(self) -> None:
        if self._loop is not None:
            for fd in self.fds:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(fd)
            self._loop = None
        for task in self._tasks:
            task.cancel()

    def _asked(self, fd: int) -> None:
        assert self._loop is not None
        for message in _received(fd):
            timeout = message.get("timeout")
            if not isinstance(timeout, (int, float)) or not 0 <= timeout <= 3600:
                timeout = 0.0
            task = self._loop.create_task(self._answer(fd, message.get("id"), float(timeout)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, fd: int, qid: Any, timeout: float) -> None:
        try:
            reply: dict[str, Any] = {"id": qid, "head": await self.head_of(timeout)}
        except StaleIndex as exc:
            reply = {"id": qid, "error": str(exc)}
        except Exception as exc:  # the asking worker must hear, not wait out its time
            log.exception("finding the head of the stream for another worker failed")
            reply = {"id": qid, "error": f"{type(exc).__name__}: {exc}"}
        try:
            _send(fd, reply)
        except OSError as exc:  # a full socket: the asker gives up in time, and says so
            log.warning("could not answer a worker's question for the head: %s", exc)
