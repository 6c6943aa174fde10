"""The router: the HTTP API of one index, answered by the shard servers of a sharded one.

``leopard serve --route --shard-url 0=URL0 --shard-url 1=URL1 ...`` runs
``RouterService``, which holds no index: every ``/v1`` query is forwarded over HTTP
(``leopard.http.shardlinks``: keep-alive pools, on the event loop) to the shard
servers it needs (``leopard serve --index DIR --shard K``) and their answers are joined
by the rules of ``leopard.model.routing``, the rules ``ShardedIndex`` follows in one
process (``docs/scale.md``):

* ``GET /v1/check``, ``/v1/groups``, ``/v1/explain`` of a plain subject go to the
  subject's shard with the query string as the client sent it, and its answer comes
  back byte for byte (token included): one hop, no parsing beyond finding the subject;
* of a userset subject, to every shard at once: ``check`` any, ``groups`` the union,
  ``explain`` the shortest chain then by names;
* ``GET /v1/members`` asks every shard for a page one longer than asked and merges the
  pages by name without repeats, so that ``next`` is exact;
* ``POST /v1/check`` splits the batch by shard, asks the shards at once and puts the
  answers back in order; ``GET /v1/version`` asks every shard.

Freshness: ``at_least`` and ``max_wait`` go to every shard asked (every shard consumes
every partition, so a write's token means the same to each). An answer from one
shard carries that shard's token; a joined answer the least position of the shards'
tokens (``least_token``), which every shard asked has reached.

Shards checked: every shard server says which shard it serves, of which build
(``Leopard-Shard: k/n/build`` on every answer). An answer from a server that is not
shard K of N at the URL given for shard K (a wrong or mis-ordered ``--shard-url``
list, an unsharded server), or answers to be joined from shards of different builds
(a sharded build swapping them in, or stopped while doing so), are never passed on
or joined: the router answers 503 ``shard_unavailable`` naming the URLs and what they
said (``leopard.model.routing.shard_problems``), and ``/readyz`` says so.

Errors are those of a shard server: what the router refuses itself (a bad query
string, a body or batch too large, an unknown path, the bearer token) it refuses with
the same parsing and the same answers; a shard's answer other than 200 (a 400 naming a
bad name, a 503 ``stale`` with its token) is passed on as it came (after a fan-out, the
first shard's, in shard order); a shard that cannot be reached is a 503
``shard_unavailable`` naming it and its URL. ``/healthz`` is the router's own;
``/readyz`` is ready when every shard is ready, with each shard's reasons named;
``/metrics`` counts the router's requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlencode

import uvicorn

from leopard.errors import ShardUnavailable
from leopard.http import schemas as S
from leopard.http.auth import BearerAuth
from leopard.http.connections import ConnectionLimits
from leopard.http.errors import ClientGone, HttpError, error_answer
from leopard.http.metrics import Collector, Metrics, registry, render
from leopard.http.openapi import ROUTES, allow_headers, openapi_document
from leopard.http.parsing import batch_within, check_batch, query, query_params, read_body
from leopard.http.server import fit_connections, listen, uvicorn_config
from leopard.http.shardlinks import ShardAnswer, ShardLinks
from leopard.http.types import Receive, Scope, Send
from leopard.model.routing import (
    MIXED_BUILDS,
    asks_every_shard,
    least_position,
    least_token,
    merge_pages,
    shard_of,
    shard_problems,
    shortest,
    split_by_shard,
)

__all__ = ["RouterService", "serve_router"]

log = logging.getLogger("leopard.http")

#: how long a join of shards' answers of two builds (each shard switches build at its
#: own next refresh after a rebuild) is asked again before it is refused (seconds)
JOIN_WAIT = 2.0

Answer = tuple[int, bytes]
_JSON = b"application/json"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"})
#: the router's handler of each route of the Leopard face
_HANDLERS = {
    ("GET", "/v1/check"): "get_check",
    ("POST", "/v1/check"): "post_check",
    ("GET", "/v1/groups"): "get_groups",
    ("GET", "/v1/members"): "get_members",
    ("GET", "/v1/explain"): "get_explain",
    ("GET", "/v1/version"): "get_version",
    ("GET", "/healthz"): "get_health",
    ("GET", "/readyz"): "get_ready",
    ("GET", "/metrics"): "get_metrics",
    ("GET", "/openapi.json"): "get_openapi",
}


class _Requests(Collector):
    """The router's request counts and latencies (it has no index to report on)."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(metrics, None)  # type: ignore[arg-type]

    def collect(self) -> Any:
        yield from self._requests()


def _wait(params: dict[str, str]) -> float:
    """How long a shard may hold a request with these parameters (its ``max_wait``)."""
    if "at_least" not in params:
        return 0.0
    try:
        return min(max(float(params.get("max_wait", S.DEFAULT_MAX_WAIT)), 0.0), S.MAX_WAIT_CAP)
    except ValueError:
        return 0.0  # refused by the shard at once


def _dump(data: dict[str, Any]) -> bytes:
    """JSON as the shard servers write it (pydantic's compact form)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _first_refusal(answers: Sequence[ShardAnswer]) -> ShardAnswer | None:
    """The first answer (in shard order) other than 200: what a fan-out passes on."""
    for a in answers:
        if a.status != 200:
            return a
    return None


class RouterService:
    """The ASGI app of ``leopard serve --route``: shard ``K`` answers at ``urls[K]``.

    ``auth_token`` is required of clients (as ``LeopardService``'s) and sent to the
    shards, which are expected to require the same one, or none.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        auth_token: str | None = None,
        max_body: int = 4 << 20,
        max_batch: int = S.DEFAULT_MAX_BATCH,
        timeout: float = 10.0,
    ) -> None:
        self.links = ShardLinks(urls, auth_token, timeout)
        self.n = self.links.n
        self.max_body = max_body
        self.max_batch = max_batch
        routes = [r for r in ROUTES if r.face == "leopard"]
        self._auth = (
            BearerAuth(auth_token, (r.path for r in routes if r.public))
            if auth_token is not None
            else None
        )
        self.metrics = Metrics()
        self._registry = registry(_Requests(self.metrics))
        document = openapi_document(routes, max_batch=max_batch, auth=auth_token is not None)
        self._openapi = json.dumps(document, separators=(",", ":")).encode()
        self._table: dict[str, dict[str, Callable[[Scope, Receive], Awaitable[Answer]]]] = {}
        for (method, path), name in _HANDLERS.items():
            self._table.setdefault(path, {})[method] = getattr(self, name)
        self._allow = allow_headers(self._table)

    # -- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.links.start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.links.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        endpoint = "other"
        headers: list[tuple[bytes, bytes]] = []
        ctype = _JSON
        try:
            if self._auth is not None:
                self._auth(scope)
            ops = self._table.get(path)
            if ops is None:
                raise HttpError(
                    404,
                    "not_found",
                    f"no route {path!r} on this router of {self.n} shards; the routes are "
                    "listed at /openapi.json",
                )
            endpoint = path
            handler = ops.get("GET" if method == "HEAD" else method)
            if handler is None:
                raise HttpError(
                    405,
                    "method_not_allowed",
                    f"{method} is not allowed on {path} (allowed: {self._allow[path].decode()})",
                    headers=[(b"allow", self._allow[path])],
                )
            status, body = await handler(scope, receive)
            if path == "/metrics":
                ctype = b"text/plain; version=0.0.4; charset=utf-8"
        except ClientGone:
            return
        except Exception as exc:
            status, body, headers = error_answer(exc, method, path)
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
            method if method in _METHODS else "other",
            status,
            time.perf_counter() - started,
        )

    # -- one shard, or all of them ---------------------------------------------------------

    async def _joined(
        self, ask: Callable[[], Awaitable[Sequence[ShardAnswer]]]
    ) -> Sequence[ShardAnswer]:
        """Every shard's answer (``ask``), once of one build: after a rebuild each shard
        switches at its next refresh, so a join of two builds is asked again for up to
        ``JOIN_WAIT`` s before it is refused (as ``_checked``)."""
        deadline = time.monotonic() + JOIN_WAIT
        while True:
            answers = await ask()
            problems = shard_problems(((a.shard, a.label) for a in answers), self.links.urls)
            mixed = len(problems) == 1 and problems[0].startswith(MIXED_BUILDS)
            if not mixed or time.monotonic() > deadline:
                return self._checked(answers)  # (a wrong shard at a URL: refused at once)
            await asyncio.sleep(0.05)

    def _checked(self, answers: Sequence[ShardAnswer]) -> Sequence[ShardAnswer]:
        """``answers``, once each came from the shard asked, all of one build;
        ShardUnavailable naming every one that did not."""
        problems = shard_problems(((a.shard, a.label) for a in answers), self.links.urls)
        if problems:
            raise ShardUnavailable("; ".join(problems))
        return answers

    def _owner(self, params: dict[str, str]) -> int | None:
        """The one shard to ask about the subject of ``params``; None: every shard."""
        subject = params.get("subject")
        if subject is None:
            return 0  # refused by any shard, as by one index
        return None if asks_every_shard(subject) else shard_of(subject, self.n)

    @staticmethod
    def _target(scope: Scope) -> str:
        """The path and query string as the client sent them."""
        raw: bytes = scope.get("query_string", b"")
        return scope["path"] + ("?" + raw.decode("latin-1") if raw else "")

    async def _routed(self, scope: Scope) -> tuple[Answer | None, list[dict[str, Any]]]:
        """Ask the subject's shard (its answer, to pass on), or every shard (their JSON
        answers, to join; or the first refusal, to pass on)."""
        params = query_params(scope)
        k = self._owner(params)
        if k is not None:
            a = await self.links.get(k, self._target(scope), _wait(params))
            self._checked([a])
            return (a.status, a.body), []
        target = self._target(scope)
        answers = await self._joined(lambda: self.links.get_all(target, _wait(params)))
        refused = _first_refusal(answers)
        if refused is not None:
            return (refused.status, refused.body), []
        return None, [json.loads(a.body) for a in answers]

    # -- the queries ---------------------------------------------------------------------

    async def get_check(self, scope: Scope, receive: Receive) -> Answer:
        passed, answers = await self._routed(scope)
        if passed is not None:
            return passed
        token = least_token(a["token"] for a in answers)
        member = any(a["member"] for a in answers)
        return 200, S.CheckResult(member=member, token=token).model_dump_json().encode()

    async def get_groups(self, scope: Scope, receive: Receive) -> Answer:
        passed, answers = await self._routed(scope)
        if passed is not None:
            return passed
        found = sorted({g for a in answers for g in a["groups"]})
        token = least_token(a["token"] for a in answers)
        return 200, S.GroupsResult(groups=found, token=token).model_dump_json().encode()

    async def get_explain(self, scope: Scope, receive: Receive) -> Answer:
        passed, answers = await self._routed(scope)
        if passed is not None:
            return passed
        token = least_token(a["token"] for a in answers)
        members = (
            ([s["set"] for s in a["steps"]] if a.get("steps") else list(a["chain"]), a)
            for a in answers
            if a["member"]
        )
        chosen = shortest(members) or answers[0]
        return 200, _dump({**chosen, "token": token})

    async def get_members(self, scope: Scope, receive: Receive) -> Answer:
        params = query_params(scope)
        q: S.MembersParams = query(scope, S.MembersParams)  # refused here as by a shard
        # one more than asked (within the page bound): whether it comes says if there is more
        ask = min(q.limit + 1, S.MAX_PAGE)
        sent = {"group": q.group, "limit": str(ask)}
        for key in ("after", "at_least", "max_wait"):
            if key in params:
                sent[key] = params[key]
        target = "/v1/members?" + urlencode(sent, quote_via=quote, safe="")
        answers = await self._joined(lambda: self.links.get_all(target, _wait(params)))
        refused = _first_refusal(answers)
        if refused is not None:
            return refused.status, refused.body
        data = [json.loads(a.body) for a in answers]
        merged = merge_pages([d["members"] for d in data], q.limit + 1)
        more = len(merged) > q.limit or (ask <= q.limit and any(d["next"] for d in data))
        del merged[q.limit :]
        token = least_token(d["token"] for d in data)
        result = S.MembersResult(members=merged, next=merged[-1] if more else None, token=token)
        return 200, result.model_dump_json().encode()

    async def get_version(self, scope: Scope, receive: Receive) -> Answer:
        params = query_params(scope)
        target = self._target(scope)
        answers = await self._joined(lambda: self.links.get_all(target, _wait(params)))
        refused = _first_refusal(answers)
        if refused is not None:
            return refused.status, refused.body
        data = [json.loads(a.body) for a in answers]
        result = S.VersionResult(
            token=least_token(d["token"] for d in data),
            position=least_position([d["position"] for d in data]),
        )
        return 200, result.model_dump_json().encode()

    async def post_check(self, scope: Scope, receive: Receive) -> Answer:
        pairs, fresh = check_batch(await read_body(scope, receive, self.max_body))
        batch_within(pairs, self.max_batch)
        per_shard = split_by_shard((subject for subject, _ in pairs), self.n)
        if not per_shard:
            per_shard[0] = []  # nothing to check: the version (and at_least) all the same
        extra: dict[str, Any] = {}
        wait = 0.0
        if fresh.at_least is not None:
            extra = {"at_least": fresh.at_least, "max_wait": fresh.max_wait}
            wait = fresh.max_wait
        ks = sorted(per_shard)
        bodies = [
            _dump(
                {
                    "checks": [
                        {"subject": pairs[i][0], "group": pairs[i][1]} for i in per_shard[k]
                    ],
                    **extra,
                }
            )
            for k in ks
        ]
        answers = await self._joined(
            lambda: asyncio.gather(
                *(self.links.post(k, "/v1/check", b, wait) for k, b in zip(ks, bodies, strict=True))
            )
        )
        refused = _first_refusal(answers)
        if refused is not None:
            return refused.status, refused.body
        results = [False] * len(pairs)
        tokens = []
        for k, a in zip(ks, answers, strict=True):
            data = json.loads(a.body)
            tokens.append(data["token"])
            for i, member in zip(per_shard[k], data["results"], strict=True):
                results[i] = results[i] or member
        result = S.CheckBatchResult(results=results, token=least_token(tokens))
        return 200, result.model_dump_json().encode()

    # -- the service itself --------------------------------------------------------------

    async def get_health(self, scope: Scope, receive: Receive) -> Answer:
        return 200, S.HealthResult().model_dump_json().encode()

    async def get_ready(self, scope: Scope, receive: Receive) -> Answer:
        """Ready when every shard is, and each is the shard expected at its URL, all of
        one build: each shard's reasons, named by shard and URL."""
        found = await asyncio.gather(
            *(self.links.get(k, "/readyz") for k in range(self.n)), return_exceptions=True
        )
        # /readyz is open on the shards; a route that is not says whether they take
        # the router's token (a refusal is ShardUnavailable, said below)
        asked = await asyncio.gather(
            *(self.links.get(k, "/v1/version") for k in range(self.n)), return_exceptions=True
        )
        found = [
            b if isinstance(b, ShardUnavailable) and not isinstance(a, BaseException) else a
            for a, b in zip(found, asked, strict=True)
        ]
        reasons: list[str] = []
        tokens: list[str] = []
        lags: list[int] = []
        labels: list[tuple[int, str | None]] = []
        for k, a in enumerate(found):
            where = f"shard {k} at {self.links.urls[k]}"
            if isinstance(a, BaseException):
                reasons.append(str(a) if isinstance(a, Exception) else f"{where}: {a!r}")
                continue
            labels.append((k, a.label))
            try:
                data = json.loads(a.body)
                reasons += [f"{where}: {r}" for r in data.get("reasons", [])]
                if not data.get("ready") and not data.get("reasons"):
                    reasons.append(f"{where}: not ready (HTTP {a.status})")
                if data.get("token"):
                    tokens.append(data["token"])
                if data.get("lag") is not None:
                    lags.append(int(data["lag"]))
            except (ValueError, TypeError, AttributeError):
                reasons.append(f"{where}: answered HTTP {a.status} without a readiness report")
        reasons += shard_problems(labels, self.links.urls)
        token = least_token(tokens) if len(tokens) == self.n else None
        ready = S.ReadyResult(
            ready=not reasons, reasons=reasons, token=token, lag=sum(lags) if lags else None
        )
        return (200 if ready.ready else 503), ready.model_dump_json().encode()

    async def get_metrics(self, scope: Scope, receive: Receive) -> Answer:
        return 200, render(self._registry)

    async def get_openapi(self, scope: Scope, receive: Receive) -> Answer:
        return 200, self._openapi


def serve_router(
    urls: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    auth_token: str | None = None,
    max_body: int = 4 << 20,
    max_batch: int = S.DEFAULT_MAX_BATCH,
    timeout: float = 10.0,
    limits: ConnectionLimits | None = None,
    access_log: bool = False,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve ``RouterService(urls)`` until SIGINT/SIGTERM, in this process, with the
    connection protocol and limits of ``leopard serve`` (``leopard.http.server``)."""
    app = RouterService(
        urls, auth_token=auth_token, max_body=max_body, max_batch=max_batch, timeout=timeout
    )
    limits = limits if limits is not None else ConnectionLimits()
    sock = listen(host, port)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    fit, warning = fit_connections(limits.max_connections)
    if fit != limits.max_connections:
        limits = replace(limits, max_connections=fit)
    config = uvicorn_config(
        app,
        limits,
        loop="auto",  # uvloop when installed
        lifespan="on",
        access_log=access_log,
        log_level="info" if access_log else "warning",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    if on_listening is not None:
        on_listening(f"http://{shown}:{bound[1]}")
    if warning is not None:
        log.warning("%s", warning)
    uvicorn.Server(config).run(sockets=[sock])
