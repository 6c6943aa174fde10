"""The HTTP query service: a raw ASGI app over the public ``Index`` API.

Why raw ASGI: a check costs the index a few microseconds, and measured on this
machine FastAPI's per-request overhead is about twenty times that (~7k req/s on one
core against ~35k for a bare ASGI callable). So the app is one callable that looks
the path up in a route table, and what a framework would add is done by small
modules beside it: pydantic models (``schemas``) validate query strings and bodies
(``parsing``) and shape every answer, ``GET /openapi.json`` is generated from the same
models and the route table (``openapi``), so it cannot drift from the ``handlers``;
``auth`` checks the bearer token, ``errors`` turns exceptions into answers through
the one table in ``leopard.errors``, ``freshness`` waits for ``at_least`` and
``metrics`` counts. ``server`` runs the app with uvicorn.

The app holds no index logic: the handlers call ``Index.check``, ``check_many``,
``groups_of``, ``members_of``, ``explain``, ``version`` and ``position``, the metrics
``stats``, and the freshness helpers ``position``, ``version`` and ``refresh``. Everything runs
on the event loop: index calls take microseconds and take the reader lock, so they
are safe beside a consumer thread that applies batches in place.

Errors: anything a client can send gets a 4xx with ``{"error", "detail"}`` naming
the bad value; a 503 says the index cannot answer now (a version not reached in
time, a failing store); a 500 means a fault of the server and is logged with its
traceback. A failing store (``StorageError``, ``IndexNotFound``) is also remembered:
``/readyz`` turns not ready, naming it (see ``Handlers.readiness``).

Security: no endpoint writes. With a bearer token configured, every route but the
probes needs it (``auth``); the header ``Authorization`` given twice is refused. Bodies
are limited (``max_body``, 413), batches too (``max_batch``, 413), query strings to
16 KiB (414), and a wait for ``at_least`` to ``MAX_WAIT_CAP`` seconds. What comes
before a request reaches the app (the size and pace of heads and bodies, the number of
connections) is bounded by the connection protocol ``server`` runs uvicorn with
(``connections``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import BaseModel

from leopard.core.index import Index
from leopard.core.sharded import ServedShard
from leopard.errors import IndexNotFound, InvalidInput, StorageError
from leopard.http import schemas as S
from leopard.http.auth import BearerAuth
from leopard.http.errors import ClientGone, HttpError, error_answer
from leopard.http.freshness import Refresher, Waits
from leopard.http.handlers import Handlers
from leopard.http.headlink import HeadTeller
from leopard.http.headwait import HeadOf, consumer_head
from leopard.http.metrics import Collector, Metrics, registry
from leopard.http.openapi import ROUTES, Route, allow_headers, openapi_document
from leopard.http.peers import PEER_PREFIXES, Peers
from leopard.http.types import Message, Receive, RunningConsumer, Scope, Send
from leopard.model.routing import SHARD_HEADER

__all__ = ["DEFAULT_MAX_BODY", "DEFAULT_READY_LAG", "ROUTES", "LeopardService"]

log = logging.getLogger("leopard.http")

#: largest request body accepted (bytes); a batch of 10,000 checks of ordinary names
#: is well under a megabyte
DEFAULT_MAX_BODY = 4 << 20
#: /readyz fails while the consumer is more than this many messages behind
DEFAULT_READY_LAG = 10_000

#: errors that say the index itself failed, not the request: /readyz reports them
_DAMAGE = (StorageError, IndexNotFound)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"})
_JSON = b"application/json"
_SHARD = SHARD_HEADER.lower().encode()

Handler = Callable[[Scope, Receive], Awaitable[tuple[int, Any]]]


class LeopardService:
    """The ASGI app: ``LeopardService(index)`` is what uvicorn runs.

    ``consumer`` (``leopard.http.server.ConsumerThread`` around a ``ChangeConsumer``
    on the same ``Index``) is started at lifespan startup and stopped at shutdown.
    Without one, ``refresh_interval`` > 0 makes the app pick up what another process
    applies or compacts, by calling ``Index.refresh`` in a worker thread that often
    (and faster while a request waits for ``at_least``).

    ``shard``: the index is a shard of a sharded index, served alone
    (``leopard.core.sharded.ServedShard``): every answer says which
    (``Leopard-Shard: k/n/build``, for a router to check), and so does ``/readyz``,
    not ready while the shard's build is not the one the manifest names.

    ``head``: for a worker of ``serve --workers`` beside the one that applies the
    stream, the way to that stream's head (``leopard.http.headlink.HeadLink``);
    ``tell_head``: for the worker that applies it, the sockets on which the others
    ask (see ``leopard.http.headlink``).
    """

    def __init__(
        self,
        index: Index,
        *,
        consumer: RunningConsumer | None = None,
        auth_token: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        max_batch: int = S.DEFAULT_MAX_BATCH,
        ready_max_lag: int = DEFAULT_READY_LAG,
        refresh_interval: float = 1.0,
        store_id: str | None = None,
        upstream_openfga: str | None = None,
        public_url: str | None = None,
        shard: ServedShard | None = None,
        head: HeadOf | None = None,
        tell_head: Sequence[int] = (),
    ) -> None:
        if max_body < 1 or max_batch < 1:
            raise InvalidInput(f"max_body and max_batch must be positive ({max_body}, {max_batch})")
        self._auth = (
            BearerAuth(auth_token, (r.path for r in ROUTES if r.public))
            if auth_token is not None
            else None
        )
        self.index = index
        self.consumer = consumer
        self.shard = shard
        self.metrics = Metrics()
        self.openapi = openapi_document(max_batch=max_batch, auth=auth_token is not None)
        self.waits = Waits(index)
        self.refresher = (
            Refresher(self.waits, refresh_interval)
            if consumer is None and refresh_interval > 0
            else None
        )
        self.handlers = Handlers(
            index,
            self.waits,
            consumer=consumer,
            refresher=self.refresher,
            metrics=registry(Collector(self.metrics, index, consumer)),
            openapi=self.openapi,
            max_body=max_body,
            max_batch=max_batch,
            ready_max_lag=ready_max_lag,
            shard=shard,
        )
        self._table: dict[str, dict[str, tuple[Route, Handler]]] = {}
        for r in ROUTES:
            if r.face == "leopard":
                self._table.setdefault(r.path, {})[r.method] = (
                    r,
                    getattr(self.handlers, r.handler),
                )
        # OpenFGA's and AuthZEN's routes, asked only for a path the table does not hold
        # the head of the stream: the consumer's here, else worker 0's (``head``)
        head = consumer_head(index, consumer) if consumer is not None else head
        self.peers = Peers(
            index,
            self.waits,
            [r for r in ROUTES if r.face != "leopard"],
            head=head,
            store_id=store_id,
            upstream_openfga=upstream_openfga,
            public_url=public_url,
            max_body=max_body,
            max_batch=max_batch,
            index_failed=self.handlers.index_failed,
        )
        self._allow = allow_headers(self._table)
        self._teller = HeadTeller(tell_head, head) if tell_head and head is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            shard = self.shard
            if shard is not None:
                send = _labelled(send, shard.label)
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # websocket: not served (uvicorn runs with ws="none")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        endpoint = "other"  # unknown paths share one label: no unbounded label values
        headers: list[tuple[bytes, bytes]] = []
        ctype = _JSON
        try:
            if self._auth is not None:
                self._auth(scope)
            ops = self._table.get(path)
            if ops is None and path.startswith(PEER_PREFIXES):
                await self._peer(scope, receive, send, started)
                return
            if ops is None:
                raise HttpError(
                    404, "not_found", f"no route {path!r}; the routes are listed at /openapi.json"
                )
            endpoint = path
            op = ops.get("GET" if method == "HEAD" else method)
            if op is None:
                raise HttpError(
                    405,
                    "method_not_allowed",
                    f"{method} is not allowed on {path} (allowed: {self._allow[path].decode()})",
                    headers=[(b"allow", self._allow[path])],
                )
            route, handler = op
            status, result = await handler(scope, receive)
            if isinstance(result, BaseModel):
                body = result.model_dump_json().encode()
            else:
                body = result
                if route.content_type != "application/json":
                    ctype = route.content_type.encode()
        except ClientGone:
            return
        except Exception as exc:
            if path.startswith(PEER_PREFIXES):  # refused before routing: in the face's dialect
                await self._peer(scope, receive, send, started, exc)
                return
            status, body, headers = error_answer(exc, method, path)
            if isinstance(exc, _DAMAGE):
                self.handlers.index_failed(exc)  # /readyz says so from now on
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        self.metrics.observe(
            endpoint,
            method if method in _METHODS else "other",  # any token is a method: bound the labels
            status,
            time.perf_counter() - started,
        )

    async def _peer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        started: float,
        refused: Exception | None = None,
    ) -> None:
        """Answer a path of the OpenFGA or AuthZEN face (``refused``: with that error)."""
        if refused is None:
            endpoint, status = await self.peers(scope, receive, send)
        else:
            endpoint, status = "other", await self.peers.refuse(refused, scope, send)
        method = scope["method"]
        self.metrics.observe(
            endpoint,
            method if method in _METHODS else "other",
            status,
            time.perf_counter() - started,
        )

    # -- lifespan ------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Start the consumer, or the periodic refresher."""
        self.waits.bind()
        if self.consumer is not None:
            self.consumer.start(self.waits.wake_threadsafe)
            if self._teller is not None:
                self._teller.start()
        elif self.refresher is not None:
            self.refresher.start()

    async def shutdown(self) -> None:
        """Stop the refresher, and the consumer after the batch in hand (it persists it)."""
        if self.refresher is not None:
            await self.refresher.stop()
        if self._teller is not None:
            self._teller.stop()
        if self.consumer is not None:
            await asyncio.to_thread(self.consumer.stop)


def _labelled(send: Send, label: Callable[[], str]) -> Send:
    """``send`` with ``Leopard-Shard: label()`` on the answer, read as it starts: the
    build that answered (a request that waited may be answered by a newer one than the
    build served when it came)."""

    async def labelled(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), (_SHARD, label().encode())]
        await send(message)

    return labelled
