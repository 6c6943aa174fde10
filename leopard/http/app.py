"""The HTTP query service: a raw ASGI app over the public ``Index`` API, run by uvicorn.

Why raw ASGI: a check costs the index a few microseconds, and measured on this
machine FastAPI's per-request overhead is about twenty times that (~7k req/s on one
core against ~35k for a bare ASGI callable). So the app is one callable with a route
table, and what a framework would add is done with the parts that matter here:
pydantic models (``leopard.http.schemas``) validate query strings and bodies and shape
every answer, and ``GET /openapi.json`` is generated from the same models plus the
route table by ``leopard.http.openapi``, so the document cannot drift from the
handlers.

The app holds no index logic (STYLE.md, item 6): handlers call ``Index.check``,
``check_many``, ``groups_of``, ``members_of``, ``explain``, ``version``,
``position``, ``wait_for``, ``refresh`` and ``stats``, and turn the library's errors
into status codes. Everything runs on the event loop: index calls take microseconds
and take the reader lock, so they are safe beside a consumer thread that applies
batches in place. Waiting for ``at_least`` never blocks the loop: a waiter sleeps on
an asyncio event that the consumer's batch callback (or, without a consumer in the
process, a periodic ``Index.refresh`` in a worker thread) sets.

Errors: anything a client can send gets a 4xx with ``{"error", "detail"}`` naming
the bad value; a 500 means a fault of the server and is logged with its traceback.

Security: no endpoint writes. With a bearer token configured, every route needs
``Authorization: Bearer <token>`` (compared with ``hmac.compare_digest``; 401 with
``WWW-Authenticate: Bearer`` otherwise), unknown routes included, except ``/healthz``
and ``/readyz``: probes of orchestrators rarely carry credentials, and those two
tell only whether the process is up and keeping up. Bodies are limited
(``max_body``, 413), batches too (``max_batch``, 413), query strings to 16 KiB
(414), and a wait for ``at_least`` to ``MAX_WAIT_CAP`` seconds.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import itertools
import json
import logging
import operator
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote_plus

import pydantic_core
from pydantic import BaseModel, ValidationError

from leopard.core.index import Index
from leopard.errors import InvalidInput, InvalidTuple, StaleIndex
from leopard.http import schemas as S
from leopard.http.metrics import Metrics, gauge, split_partition
from leopard.http.openapi import ROUTES, Route, openapi_document

if TYPE_CHECKING:
    from ingest.consumer import ConsumerSettings

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_READY_LAG",
    "ROUTES",
    "LeopardService",
    "Route",
    "openapi_document",
    "serve",
]

log = logging.getLogger("leopard.http.app")

#: largest request body accepted (bytes); a batch of 10,000 checks of ordinary names
#: is well under a megabyte
DEFAULT_MAX_BODY = 4 << 20
#: /readyz fails while the consumer is more than this many messages behind
DEFAULT_READY_LAG = 10_000
#: a query string longer than this is refused (414): two names of at most 1 KiB
#: each, percent-encoded, plus a token fit with room to spare
MAX_QUERY_BYTES = 16 << 10
#: how often a waiting request re-checks the version even without a wake-up
_WAIT_POLL = 0.05

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"})
_JSON = b"application/json"
_TEXT = b"text/plain; version=0.0.4; charset=utf-8"


class Consumer(Protocol):
    """What the service needs of ``ingest.consumer.ChangeConsumer`` (run in a thread)."""

    stats: Any
    on_batch: Callable[[Any], None] | None

    def run(self) -> Any: ...

    def stop(self) -> None: ...


class HttpError(Exception):
    """An answer other than 200, raised by a handler or the dispatcher."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        token: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.token = token
        self.headers = list(headers)


class _ClientGone(Exception):
    """The client disconnected before its request was read: nobody to answer."""


# -- the app -----------------------------------------------------------------------------


class LeopardService:
    """The ASGI app: ``LeopardService(index)`` is what uvicorn runs.

    ``consumer`` (a ``ChangeConsumer`` built on the same ``Index``) is run in a
    background thread between lifespan startup and shutdown. Without one,
    ``refresh_interval`` > 0 makes the app pick up what another process applies or
    compacts, by calling ``Index.refresh`` in a worker thread that often (and every
    ``_WAIT_POLL`` seconds while a request waits for ``at_least``).
    """

    def __init__(
        self,
        index: Index,
        *,
        consumer: Consumer | None = None,
        auth_token: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        max_batch: int = S.DEFAULT_MAX_BATCH,
        ready_max_lag: int = DEFAULT_READY_LAG,
        refresh_interval: float = 1.0,
    ) -> None:
        if auth_token is not None and not auth_token:
            raise InvalidInput("the bearer token is empty")
        if max_body < 1 or max_batch < 1:
            raise InvalidInput(f"max_body and max_batch must be positive ({max_body}, {max_batch})")
        self.index = index
        self.consumer = consumer
        self.max_body = max_body
        self.max_batch = max_batch
        self.ready_max_lag = ready_max_lag
        self.refresh_interval = refresh_interval
        self.metrics = Metrics()
        self._token = auth_token.encode() if auth_token is not None else None
        self._public = {r.path for r in ROUTES if r.public}
        self._table: dict[str, dict[str, tuple[Route, Callable[..., Awaitable[Any]]]]] = {}
        for r in ROUTES:
            self._table.setdefault(r.path, {})[r.method] = (r, getattr(self, r.handler))
        self._allow = {p: ", ".join(sorted(m)).encode() for p, m in self._table.items()}
        self.openapi = openapi_document(max_batch=max_batch, auth=auth_token is not None)
        self._openapi_json = json.dumps(self.openapi, separators=(",", ":")).encode()
        # Set once the event loop runs (lifespan startup, or the first wait):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._waiters = 0
        self._poke: asyncio.Event | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._refresh_pool: ThreadPoolExecutor | None = None
        self._consumer_thread: threading.Thread | None = None
        self.consumer_error: str | None = None
        self._last_position: dict[str, int] | None = None
        self._last_token = ""
        self._check_bodies: tuple[str | None, bytes, bytes] = (None, b"", b"")
        if consumer is not None:
            chained = consumer.on_batch

            def on_batch(stats: Any) -> None:
                if chained is not None:
                    chained(stats)
                self._wake_threadsafe()

            consumer.on_batch = on_batch

    # -- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
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
            if self._token is not None and path not in self._public:
                self._authorize(scope)
            ops = self._table.get(path)
            if ops is None:
                raise HttpError(
                    404, "not_found", f"no route {path!r}; the routes are listed at /openapi.json"
                )
            endpoint = path
            op = ops.get(method)
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
        except HttpError as exc:
            status, body, headers = exc.status, _error(exc.code, exc.detail, exc.token), exc.headers
        except InvalidTuple as exc:
            status, body = 400, _error("invalid_tuple", str(exc))
        except InvalidInput as exc:
            status, body = 400, _error("invalid_input", str(exc))
        except StaleIndex as exc:
            status, body = 503, _error("stale", str(exc), exc.current)
        except _ClientGone:
            return
        except Exception:
            # Everything a client can send is answered above; this is our fault.
            log.exception("internal error answering %s %s", method, path)
            status, body = 500, _error("internal", "internal server error (logged)")
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
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(
            endpoint,
            method if method in _METHODS else "other",  # any token is a method: bound the labels
            status,
            time.perf_counter() - started,
        )

    def _authorize(self, scope: Scope) -> None:
        assert self._token is not None
        given = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        if given is None:
            raise HttpError(
                401,
                "unauthorized",
                "this server needs a bearer token: send 'Authorization: Bearer <token>'",
                headers=[(b"www-authenticate", b'Bearer realm="leopard"')],
            )
        scheme, _, presented = given.partition(b" ")
        # compare_digest: the time taken must not tell how much of the token matched
        if scheme.lower() != b"bearer" or not hmac.compare_digest(presented.strip(), self._token):
            raise HttpError(
                401,
                "unauthorized",
                "the bearer token is not valid",
                headers=[(b"www-authenticate", b'Bearer realm="leopard", error="invalid_token"')],
            )

    # -- request parsing -----------------------------------------------------------------

    def _query(self, scope: Scope, model: type[BaseModel]) -> Any:
        return self._validate(self._params(scope), model)

    def _validate(self, params: dict[str, str], model: type[BaseModel]) -> Any:
        try:
            return model.model_validate(params)
        except ValidationError as exc:
            raise HttpError(400, "invalid_request", _describe(exc, model, "query")) from None

    def _params(self, scope: Scope) -> dict[str, str]:
        raw: bytes = scope.get("query_string", b"")
        if len(raw) > MAX_QUERY_BYTES:
            raise HttpError(
                414,
                "uri_too_long",
                f"the query string is {len(raw):,} bytes; at most {MAX_QUERY_BYTES:,} are accepted",
            )
        try:
            return _parse_query(raw)
        except UnicodeDecodeError as exc:
            raise HttpError(
                400, "invalid_request", f"the query string is not valid UTF-8 ({exc.reason})"
            ) from None

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_body:
                    raise HttpError(
                        413,
                        "body_too_large",
                        f"the body is {int(value):,} bytes; at most {self.max_body:,} are accepted",
                    )
                break
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise HttpError(413, "body_too_large", f"the body exceeds {self.max_body:,} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    # -- freshness -----------------------------------------------------------------------

    def _bind_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._changed = asyncio.Event()
            self._poke = asyncio.Event()

    def _wake(self) -> None:
        """Wake every waiter to re-check the version (on the loop thread)."""
        if self._changed is not None:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    def _wake_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop has closed: shutting down
                pass

    async def _fresh(self, q: S.Freshness) -> None:
        if q.at_least is not None:
            await self._await_version(q.at_least, q.max_wait)

    async def _await_version(self, token: str, max_wait: float) -> None:
        ix = self.index
        try:
            ix.wait_for(token, 0)  # a bad token raises InvalidInput here: a 400
            return
        except StaleIndex:
            pass
        self._bind_loop()
        assert self._loop is not None and self._poke is not None
        deadline = self._loop.time() + max_wait
        self._waiters += 1
        self._poke.set()  # a periodic refresher speeds up while someone waits
        try:
            while True:
                left = deadline - self._loop.time()
                if left <= 0:
                    current = ix.version
                    raise StaleIndex(
                        f"the index has not reached version {token} within {max_wait:g} s "
                        f"(it is at {current})",
                        current=current,
                    )
                changed = self._changed
                assert changed is not None
                try:
                    await asyncio.wait_for(changed.wait(), min(left, _WAIT_POLL))
                except TimeoutError:
                    pass
                try:
                    ix.wait_for(token, 0)
                    return
                except StaleIndex:
                    continue
        finally:
            self._waiters -= 1

    async def _refresh_loop(self) -> None:
        """Without a consumer here: pick up what another process applied or compacted."""
        assert self._loop is not None and self._poke is not None
        failing = False
        while True:
            interval = _WAIT_POLL if self._waiters else self.refresh_interval
            self._poke.clear()
            try:
                await asyncio.wait_for(self._poke.wait(), interval)
                await asyncio.sleep(_WAIT_POLL)  # a poke: coalesce a burst of waiters
            except TimeoutError:
                pass
            try:
                # One worker thread: refreshes never run concurrently with each other.
                await self._loop.run_in_executor(self._refresh_pool, self.index.refresh)
                failing = False
            except Exception:
                if not failing:
                    log.exception("refreshing the index failed; retrying")
                failing = True
            self._wake()

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
        """Start the consumer thread, or the periodic refresher."""
        self._bind_loop()
        if self.consumer is not None:
            self._consumer_thread = threading.Thread(
                target=self._run_consumer, name="leopard-consumer", daemon=True
            )
            self._consumer_thread.start()
        elif self.refresh_interval > 0:
            self._refresh_pool = ThreadPoolExecutor(1, thread_name_prefix="leopard-refresh")
            self._refresher = asyncio.create_task(self._refresh_loop())

    async def shutdown(self) -> None:
        """Stop the consumer after the batch in hand (it persists before returning)."""
        if self._refresher is not None:
            self._refresher.cancel()
            try:
                await self._refresher
            except asyncio.CancelledError:
                pass
            self._refresher = None
        if self._refresh_pool is not None:
            self._refresh_pool.shutdown(wait=True)
            self._refresh_pool = None
        if self.consumer is not None and self._consumer_thread is not None:
            self.consumer.stop()
            await asyncio.to_thread(self._consumer_thread.join, 60)
            if self._consumer_thread.is_alive():
                log.warning("the consumer did not stop within 60 s")

    def _run_consumer(self) -> None:
        assert self.consumer is not None
        try:
            self.consumer.run()
        except BaseException as exc:
            self.consumer_error = f"{type(exc).__name__}: {exc}"
            log.exception("the consumer stopped")
        finally:
            self._wake_threadsafe()

    @property
    def consumer_running(self) -> bool:
        thread = self._consumer_thread
        return thread is not None and thread.is_alive()

    # -- handlers: each returns (status, model or bytes) ---------------------------------

    def _check_body(self, token: str, member: bool) -> bytes:
        """The JSON of ``CheckResult(member=member, token=token)``."""
        cached = self._check_bodies
        if cached[0] != token:
            t = json.dumps(token).encode()
            cached = self._check_bodies = (
                token,
                b'{"member":false,"token":' + t + b"}",
                b'{"member":true,"token":' + t + b"}",
            )
        return cached[2] if member else cached[1]

    def _version(self) -> str:
        """``Index.version``, re-encoded only when the position has moved.

        Encoding a token costs more than a check; the position is cheap to read and
        compare. A token cached for the position read just now is never newer than
        the state the following query reads, which is what a token promises.
        """
        position = self.index.position
        if position != self._last_position:
            self._last_token = self.index.version
            self._last_position = position
        return self._last_token

    async def get_check(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        params = self._params(scope)
        if len(params) == 2 and params.get("subject") and params.get("group"):
            # The common shape, which CheckParams accepts as it is: no model to build
            # per request.
            subject, group = params["subject"], params["group"]
        else:
            q: S.CheckParams = self._validate(params, S.CheckParams)
            if q.at_least is not None:
                await self._await_version(q.at_least, q.max_wait)
            subject, group = q.subject, q.group
        # The token is read before the query: the answer reflects at least that version.
        token = self._version()
        return 200, self._check_body(token, self.index.check(subject, group))

    async def post_check(self, scope: Scope, receive: Receive) -> tuple[int, BaseModel]:
        raw = await self._body(scope, receive)
        parsed = _check_batch_fast(raw)
        if parsed is None:
            try:
                req = S.CheckBatchRequest.model_validate_json(raw)
            except ValidationError as exc:
                raise HttpError(
                    400, "invalid_request", _describe(exc, S.CheckBatchRequest, "body")
                ) from None
            parsed = [(c.subject, c.group) for c in req.checks], req
        pairs, fresh = parsed
        if len(pairs) > self.max_batch:
            raise HttpError(
                413,
                "batch_too_large",
                f"{len(pairs):,} checks in one request; at most {self.max_batch:,} "
                "are accepted (split the batch)",
            )
        await self._fresh(fresh)
        ix = self.index
        token = self._version()
        return 200, S.CheckBatchResult(results=ix.check_many(pairs), token=token)

    async def get_groups(self, scope: Scope, receive: Receive) -> tuple[int, BaseModel]:
        q: S.GroupsParams = self._query(scope, S.GroupsParams)
        await self._fresh(q)
        ix = self.index
        token = self._version()
        return 200, S.GroupsResult(groups=ix.groups_of(q.subject), token=token)

    async def get_members(self, scope: Scope, receive: Receive) -> tuple[int, BaseModel]:
        q: S.MembersParams = self._query(scope, S.MembersParams)
        await self._fresh(q)
        ix = self.index
        token = self._version()
        # One more than asked: whether it comes back says if there is a next page.
        page = ix.members_of(q.group, limit=q.limit + 1, after=q.after)
        more = len(page) > q.limit
        del page[q.limit :]
        return 200, S.MembersResult(members=page, next=page[-1] if more else None, token=token)

    async def get_explain(self, scope: Scope, receive: Receive) -> tuple[int, BaseModel]:
        q: S.ExplainParams = self._query(scope, S.ExplainParams)
        await self._fresh(q)
        ix = self.index
        token = self._version()
        chain = ix.explain(q.subject, q.group)
        return 200, S.ExplainResult(member=chain is not None, chain=chain, token=token)

    async def get_version(self, scope: Scope, receive: Receive) -> tuple[int, BaseModel]:
        q: S.VersionParams = self._query(scope, S.VersionParams)
        await self._fresh(q)
        ix = self.index
        return 200, S.VersionResult(token=ix.version, position=ix.position)

    async def get_health(self, scope: Scope, receive: Receive) -> tuple[int, BaseModel]:
        return 200, S.HealthResult()

    async def get_ready(self, scope: Scope, receive: Receive) -> tuple[int, BaseModel]:
        ready = self.readiness()
        return (200 if ready.ready else 503), ready

    def readiness(self) -> S.ReadyResult:
        reasons: list[str] = []
        token = None
        try:
            token = self.index.version
        except Exception as exc:  # a closed or broken index is exactly what this reports
            reasons.append(f"the index cannot be read: {exc}")
        lag = None
        consumer = self.consumer
        if consumer is not None:
            stats = consumer.stats
            if stats.lag:
                lag = sum(stats.lag.values())
            if not self.consumer_running:
                reasons.append(
                    f"the consumer has stopped: {self.consumer_error}"
                    if self.consumer_error
                    else "the consumer is not running"
                )
            elif not stats.broker_up:
                reasons.append("the broker is unreachable (the consumer is retrying)")
            elif lag is None:
                reasons.append(
                    "the consumer has not fetched from its partitions yet "
                    "(joining its group, or the broker is unreachable)"
                )
            elif lag > self.ready_max_lag:
                reasons.append(
                    f"the consumer is {lag:,} messages behind (bound {self.ready_max_lag:,})"
                )
        return S.ReadyResult(ready=not reasons, reasons=reasons, token=token, lag=lag)

    async def get_openapi(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        return 200, self._openapi_json

    async def get_metrics(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        return 200, self.render_metrics().encode()

    def render_metrics(self) -> str:
        out: list[str] = []
        self.metrics.render_requests(out)
        stats = self.index.stats()
        gauge(
            out,
            "leopard_index_applied_offset",
            "gauge",
            "Next change-stream offset to apply, per partition (everything before it is applied).",
            ((split_partition(k), v) for k, v in sorted(stats["position"].items())),
        )
        for key, help_text in (
            ("groups", "Groups in the index (both layers)."),
            ("subjects", "Leaf subjects in the index (both layers)."),
            ("base_groups", "Groups in the base layer."),
            ("base_subjects", "Leaf subjects in the base layer."),
            ("overlay_sets", "Sets held by the incremental layer (compaction folds them away)."),
            ("bytes_on_disk", "Bytes of the current generation on disk."),
        ):
            gauge(out, f"leopard_index_{key}", "gauge", help_text, [({}, stats[key])])
        gauge(
            out,
            "leopard_index_info",
            "gauge",
            "The generation being served.",
            [({"generation": stats["generation"]}, 1)],
        )
        consumer = self.consumer
        if consumer is not None:
            cs = consumer.stats
            gauge(
                out,
                "leopard_consumer_lag",
                "gauge",
                "Messages behind the high watermark, per partition.",
                ((split_partition(k), v) for k, v in sorted(dict(cs.lag).items())),
            )
            for name, kind, value, help_text in (
                ("running", "gauge", int(self.consumer_running), "1 while the consumer runs."),
                ("broker_up", "gauge", int(cs.broker_up), "0 while the broker is unreachable."),
                ("dead_letters_total", "counter", cs.dead_letters, "Messages sent to the DLQ."),
                ("messages_total", "counter", cs.messages, "Messages consumed."),
                ("changes_total", "counter", cs.changes, "Tuple changes applied."),
                ("batches_total", "counter", cs.batches, "Batches applied."),
                ("compactions_total", "counter", cs.compactions, "Compactions completed."),
                (
                    "last_batch_seconds",
                    "gauge",
                    float(cs.last_batch_seconds),
                    "Time to apply the last batch.",
                ),
            ):
                gauge(out, f"leopard_consumer_{name}", kind, help_text, [({}, value)])
        gauge(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch.",
            [({}, self.metrics.started)],
        )
        return "\n".join(out) + "\n"


def _parse_query(raw: bytes) -> dict[str, str]:
    """``a=1&b=x%3Ay`` as a dict; HttpError for a repeated name.

    Not ``urllib.parse.parse_qsl``: this is on the path of every check, and only
    decoding what is actually escaped takes a third of the time.
    """
    params: dict[str, str] = {}
    if not raw:
        return params
    for part in raw.decode().split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if "%" in key or "+" in key:
            key = unquote_plus(key, errors="strict")
        if "%" in value:
            # Names escape ':' and '#' (the other characters of a name need none); an
            # escape left after those is decoded in full, from the original.
            plain = value.replace("%3A", ":").replace("%23", "#").replace("%3a", ":")
            value = (
                plain
                if "%" not in plain and "+" not in plain
                else unquote_plus(value, errors="strict")
            )
        elif "+" in value:
            value = unquote_plus(value, errors="strict")
        if key in params:
            raise HttpError(400, "invalid_request", f"query parameter {key!r} is given twice")
        params[key] = value
    return params


def _error(code: str, detail: str, token: str | None = None) -> bytes:
    body = S.ErrorBody(error=code, detail=detail, token=token)
    return body.model_dump_json(exclude_none=True).encode()


_NO_FRESHNESS = S.Freshness.model_validate({})
_PAIR = operator.itemgetter("subject", "group")


def _check_batch_fast(raw: bytes) -> tuple[list[tuple[str, str]], S.Freshness] | None:
    """The pairs and freshness of a well-formed ``POST /v1/check`` body, or None.

    Building a pydantic object per check costs more than answering it, so the common
    shape (an object whose ``checks`` are objects of exactly two non-empty strings)
    is read here with C-level passes. Anything else returns None and goes through
    ``CheckBatchRequest``, the model the OpenAPI document is made from, which accepts
    it or names what is wrong; this path accepts nothing the model would refuse.
    """
    try:
        body = pydantic_core.from_json(raw)
        checks = body["checks"]
        if type(checks) is not list:
            return None
        pairs = list(map(_PAIR, checks))  # KeyError / TypeError: not the common shape
    except (ValueError, KeyError, TypeError):
        return None
    if checks:
        if set(map(len, checks)) != {2}:
            return None  # a check with a field besides subject and group
        names = list(itertools.chain.from_iterable(pairs))
        if set(map(type, names)) != {str} or min(map(len, names)) == 0:
            return None
    fresh = _NO_FRESHNESS
    if len(body) > 1:
        rest = {k: v for k, v in body.items() if k != "checks"}
        try:
            fresh = S.Freshness.model_validate(rest)
        except ValidationError:
            return None
    return pairs, fresh


def _describe(exc: ValidationError, model: type[BaseModel], where: str) -> str:
    """A validation error as one line naming each bad parameter or field and its value."""
    parts = []
    errors = exc.errors(include_url=False)
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err["loc"])
        kind = err["type"]
        if kind == "json_invalid":
            parts.append(f"the body is not valid JSON: {err['msg'].removeprefix('Invalid JSON: ')}")
        elif kind == "extra_forbidden":
            known = ", ".join(model.model_fields)
            parts.append(f"{where} has an unknown field {loc!r} (known: {known})")
        elif kind == "missing":
            parts.append(f"{where} field {loc!r} is missing")
        elif not loc:
            parts.append(f"{where}: {err['msg']}")
        else:
            shown = repr(err["input"])
            if len(shown) > 80:
                shown = shown[:77] + "..."
            parts.append(f"{where} field {loc!r} = {shown}: {err['msg']}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return "; ".join(parts)


# -- running it --------------------------------------------------------------------------


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket; InvalidInput naming the address when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening now, before the loop runs: a client connecting early is queued,
        # not refused, so the address can be announced right away.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(
    index_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    consumer_settings: ConsumerSettings | None = None,
    auth_token: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    max_batch: int = S.DEFAULT_MAX_BATCH,
    ready_max_lag: int = DEFAULT_READY_LAG,
    refresh_interval: float = 1.0,
    access_log: bool = False,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve the index at ``index_path`` until SIGINT/SIGTERM.

    With ``consumer_settings``, a ``ChangeConsumer`` on the served ``Index`` runs
    in a thread of this process, so answers follow the stream. ``on_listening``
    is called with the base URL once the port is bound (``port=0`` picks one).
    """
    import uvicorn

    from leopard.api import open_index

    index = open_index(index_path)
    if consumer_settings is None and refresh_interval > 0:
        # the first refresh opens the follower of another process's writes: here, not
        # in the middle of serving
        index.refresh()
    index.warm()  # every closure in memory before the first request
    # Millions of long-lived sets now sit in the heap: out of the collector's sight,
    # a full collection no longer walks them all in the middle of some request.
    gc.freeze()
    consumer = None
    app = None
    try:
        if consumer_settings is not None:
            from ingest.consumer import ChangeConsumer

            consumer = ChangeConsumer(index_path, consumer_settings, index=index)
        app = LeopardService(
            index,
            consumer=consumer,
            auth_token=auth_token,
            max_body=max_body,
            max_batch=max_batch,
            ready_max_lag=ready_max_lag,
            refresh_interval=refresh_interval,
        )
        sock = listen(host, port)
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
        config = uvicorn.Config(
            app,
            loop="auto",  # uvloop when installed
            http="auto",  # httptools when installed
            ws="none",
            lifespan="on",
            access_log=access_log,
            log_level="info" if access_log else "warning",
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        if on_listening is not None:
            on_listening(f"http://{shown}:{bound[1]}")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if consumer is not None and (app is None or app._consumer_thread is None):
            consumer.close()  # never ran: release its write handle on the index
        index.close()
