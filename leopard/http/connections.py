"""Hostile connections, refused before the app sees a request: uvicorn's httptools
protocol with bounds on the size and the time of what a client sends.

The app checks the bearer token, the body size and every parameter, but only once
uvicorn hands it a request, and uvicorn with httptools takes whatever comes until
then: headers of any size (an unfinished header of 200 MB is held in memory), as
slowly as the client likes (a few hundred stalled connections use up the process's
file descriptors), and a body at any pace. ``GuardedProtocol`` is uvicorn's
``HttpToolsProtocol`` with those bounds, enforced as bytes arrive and so before any
authentication (``ConnectionLimits`` holds them; ``guarded_protocol`` makes the class
uvicorn is given as ``http=``):

- **header size**: the request line and headers of one request may take at most
  ``max_header_bytes``; beyond that the client gets 431 and the connection closes.
  Bytes are counted as they are read, before the parser buffers them, so a
  connection holds at most about that (plus one read of the socket).
- **header time**: a request's head must be complete within ``header_timeout``
  seconds of the moment the connection was ready for it (opened, or the previous
  answer sent); then 408 if part of it came, else a plain close.
- **idle time**: a connection ready for a request that sends no byte for
  ``idle_timeout`` seconds is closed (uvicorn's keep-alive timer, armed from the
  moment the connection opens, not only between requests).
- **body time**: a body must arrive whole within ``body_timeout`` seconds of the end
  of its head; then 408 (unless an answer was already under way) and close.
- **connections**: beyond ``max_connections`` open connections, a new one is read up
  to the end of its request's head (under the same deadlines) and answered 503 with
  ``Connection: close``, not served; beyond an eighth more (``hard_limit``) it is
  answered at once, unread, and closed, so that refused connections cannot use up
  the file descriptors either. Connections opened under the bound are served as
  before.

Time spent by the app on an answer is not bounded here (a wait for ``at_least`` is
capped by the app itself). A refusal is written and followed by a half close; the
connection then reads and drops what the client still sends for a moment
(``LINGER_SECONDS``, at most ``LINGER_BYTES``) so that a client still writing reads
the answer instead of a reset. Every answer is JSON ``{"error", "detail"}``, as is the
400 for what does not parse as HTTP.

The hot path pays a comparison per read and two clock reads per request: one timer
per connection carries whichever deadline applies now, and moves lazily when it
fires, instead of a timer made and cancelled per phase.
"""

from __future__ import annotations

import asyncio
import http
import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from leopard.errors import InvalidInput
from leopard.http.errors import error_body
from leopard.http.types import Receive, Scope, Send

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise ModuleNotFoundError(
        "serving over HTTP needs uvicorn and httptools: pip install 'leopard-index[serve]'",
        name=exc.name,
    ) from exc

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_HEADER_BYTES",
    "MAX_TIMEOUT",
    "ConnectionLimits",
    "GuardedProtocol",
    "guarded_protocol",
    "hard_limit",
]

log = logging.getLogger("leopard.http")

#: request line and headers of one request, in all (431 beyond)
DEFAULT_MAX_HEADER_BYTES = 64 << 10
#: seconds from "ready for a request" until its head is complete (408 / close beyond)
DEFAULT_HEADER_TIMEOUT = 10.0
#: seconds from the end of a head until its body is complete (408 beyond)
DEFAULT_BODY_TIMEOUT = 30.0
#: seconds a connection ready for a request may stay without a byte
DEFAULT_IDLE_TIMEOUT = 5.0
#: open connections served; beyond, new ones are answered 503
DEFAULT_MAX_CONNECTIONS = 1000

#: the longest any of the timeouts may be (a day)
MAX_TIMEOUT = 86400.0

#: after a refusal, how long the connection reads and drops what still comes
LINGER_SECONDS = 2.0
#: ... and at most how many bytes of it
LINGER_BYTES = 1 << 20


@dataclass(frozen=True)
class ConnectionLimits:
    """The bounds ``GuardedProtocol`` enforces; see the module docstring."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        if self.max_header_bytes < 1024:
            raise InvalidInput(f"max_header_bytes must be at least 1024 ({self.max_header_bytes})")
        if self.max_connections < 1:
            raise InvalidInput(f"max_connections must be positive ({self.max_connections})")
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            value = getattr(self, name)
            if not 0 < value <= MAX_TIMEOUT:  # NaN too
                raise InvalidInput(
                    f"{name} must be a positive number of seconds, at most {MAX_TIMEOUT:g} "
                    f"({value})"
                )


def hard_limit(max_connections: int) -> int:
    """Open connections beyond which a new one is answered 503 at once, unread, and closed."""
    return max_connections + max(8, max_connections // 8)


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """A ``GuardedProtocol`` class enforcing ``limits``: uvicorn's ``Config(http=...)``."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits, "_refusing": False})


def _answer(status: int, code: str, detail: str, extra: str = "") -> bytes:
    """A whole HTTP/1.1 answer closing the connection, with a JSON error body."""
    body = error_body(code, detail)
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"connection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol bounded by ``limits`` (see the module docstring).

    uvicorn makes one per connection. What uvicorn does is left as it is; the
    overrides count bytes and move a deadline, and call it.
    """

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    _refusing: ClassVar[bool] = False  # per class: whether new connections are refused

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = self.limits
        self.timeout_keep_alive = limits.idle_timeout  # type: ignore[assignment]
        # Reading a head (or waiting for one) rather than a body; header bytes still
        # allowed for it (-1 once refused: every read then takes the slow path).
        self._reading_head = True
        self._budget = self._max_header_bytes = limits.max_header_bytes
        self._header_timeout = limits.header_timeout
        self._body_timeout = limits.body_timeout
        self._clock = self.loop.time
        self._deadline = 0.0  # of whichever phase applies: a head, or a body
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf  # when it fires (inf: no timer)
        self._draining = False
        self._drained = 0

    # -- the connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cls = type(self)
        limits = self.limits
        open_now = len(self.connections)
        if open_now > limits.max_connections:
            if not cls._refusing:
                cls._refusing = True
                log.warning(
                    "%d connections open (bound %d): new ones are answered 503",
                    open_now,
                    limits.max_connections,
                )
            if open_now > hard_limit(limits.max_connections):
                # Too many even to read their requests: answered at once, unread (a
                # client may then see the connection reset rather than the answer).
                transport.write(_TOO_MANY_AT_ONCE)
                transport.close()
                return
            self.app = _too_many_connections
        elif cls._refusing:
            cls._refusing = False
            log.warning("%d connections open: serving new ones again", open_now)
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )
        self._expect(limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = -math.inf  # never armed again
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            size = len(data)
            if size > self._budget:
                self._over_budget(data)
                return
            self._budget -= size
        _data_received(self, data)

    def _over_budget(self, data: bytes) -> None:
        """More than the head may take has come (or the connection is being refused)."""
        if self._draining:
            self._drained += len(data)
            if self._drained > LINGER_BYTES:
                self.transport.close()
            return
        budget = self._budget
        self._budget = 0
        if budget > 0:
            super().data_received(data[:budget])  # the head may end in it
            if self._draining or self.transport.is_closing():  # refused meanwhile
                return
        if self._reading_head and self._budget == 0:  # the same head, still unfinished
            limit = self.limits.max_header_bytes
            self._refuse(
                431,
                "header_too_large",
                f"the request line and headers exceed {limit:,} bytes (the bound of this server)",
            )
            return
        self.data_received(data[budget:])  # a body, perhaps the next request: counted afresh

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to what does not parse, in JSON like every other answer
        self._refuse(400, "invalid_request", "the request is not valid HTTP/1.1")

    # -- the parser's callbacks ----------------------------------------------------------

    # (The base methods are called directly, not through super(): these run for every
    # request, and a lookup less each is measurable.)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        at = self._deadline = self._clock() + self._body_timeout  # _expect, inlined
        if at < self._timer_at:
            self._arm(at)
        _on_headers_complete(self)

    def on_message_complete(self) -> None:
        self._reading_head = True
        self._budget = self._max_header_bytes
        _on_message_complete(self)
        if self.cycle.response_complete:  # answered before the body ended
            self._expect(self._header_timeout)

    def on_response_complete(self) -> None:
        _on_response_complete(self)
        if self._reading_head and not self.pipeline and self.cycle.response_complete:
            # ready for the next request: _expect, inlined
            at = self._deadline = self._clock() + self._header_timeout
            if at < self._timer_at:
                self._arm(at)

    # -- deadlines -----------------------------------------------------------------------

    def _expect(self, seconds: float) -> None:
        """The phase starting now must end within ``seconds``."""
        at = self._deadline = self._clock() + seconds
        if at < self._timer_at:  # sooner than the timer fires (or no timer: at < inf)
            self._arm(at)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        if self.transport.is_closing():
            return
        if self._clock() < self._deadline:  # the connection moved on meanwhile
            self._timer_at = self._deadline
            self._timer = self.loop.call_at(self._deadline, self._on_timer)
            return
        if not self._reading_head:
            self._refuse(
                408,
                "request_timeout",
                f"the request body did not arrive within {self.limits.body_timeout:g} s",
            )
        elif (self.cycle is None or self.cycle.response_complete) and not self.pipeline:
            if self._budget < self.limits.max_header_bytes:  # part of a head came
                self._refuse(
                    408,
                    "request_timeout",
                    "the request line and headers did not arrive within "
                    f"{self.limits.header_timeout:g} s",
                )
            else:
                self.transport.close()
        # else an answer is under way: on_response_complete sets the next deadline

    def _refuse(self, status: int, code: str, detail: str) -> None:
        """Answer ``status`` if no other answer is under way, then close."""
        cycle = self.cycle
        if self._reading_head:
            answer = cycle is None or cycle.response_complete
        else:
            answer = not cycle.response_started
        if cycle is not None and not cycle.response_complete:
            # the app, if it still runs, sees the client gone and answers nothing
            cycle.disconnected = True
            cycle.message_event.set()
        self.pipeline.clear()
        self._unset_keepalive_if_required()
        transport = self.transport
        if answer:
            transport.write(_answer(status, code, detail))
        log.info("%s: %d %s", _peer(self.client), status, detail)
        # Read and drop what the client still sends for a moment, so that it reads the
        # answer rather than a reset; then close.
        self._reading_head = True
        self._budget = -1
        self._draining = True
        self.flow.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(LINGER_SECONDS, transport.close)
        self._timer_at = -math.inf  # no deadline moves it now


_data_received = HttpToolsProtocol.data_received
_on_headers_complete = HttpToolsProtocol.on_headers_complete
_on_message_complete = HttpToolsProtocol.on_message_complete
_on_response_complete = HttpToolsProtocol.on_response_complete


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"


_TOO_MANY = (
    "too_many_connections",
    "this server has as many connections open as it serves; retry shortly",
)
_TOO_MANY_BODY = error_body(*_TOO_MANY)
_TOO_MANY_AT_ONCE = _answer(503, *_TOO_MANY, extra="retry-after: 1\r\n")
_TOO_MANY_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_TOO_MANY_BODY)).encode()),
    (b"connection", b"close"),
    (b"retry-after", b"1"),
]


async def _too_many_connections(scope: Scope, receive: Receive, send: Send) -> None:
    """What a connection opened beyond ``max_connections`` runs instead of the app."""
    await send({"type": "http.response.start", "status": 503, "headers": _TOO_MANY_HEADERS})
    await send({"type": "http.response.body", "body": _TOO_MANY_BODY})
