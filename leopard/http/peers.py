"""The peer faces, mounted behind the raw dispatch: OpenFGA's HTTP API
(``leopard.http.openfga``) and the AuthZEN Authorization API (``leopard.http.authzen``),
routed by Starlette.

Why a framework here and not for ``/v1``: ``bench/http_stack.py`` serves the one check
handler bare and under Starlette; Starlette's routing costs a few microseconds a
request (see ``bench/README.md``), which the dozen routes with path parameters here can
afford and the hot ``GET /v1/check`` need not pay. So ``LeopardService`` looks a path up
in its own table first, and hands only a path it does not know that starts with one of
``PEER_PREFIXES`` to ``Peers``: the raw routes cost exactly what they did.

Starlette's ``Router`` matches the path templates of ``peer_routes`` and sets the path
parameters; each route's endpoint (``_Endpoint``) checks the method, calls the face's
handler and sends its ``Reply`` (streamed when its body is an iterator), or the face's
error answer. The routes whose path has no parameter (AuthZEN's) or is
``/stores/{store_id}/<name>`` (OpenFGA's queries, its check among them) are looked up in
two dicts before the router, to the same endpoints: trying the routes' regular
expressions one by one cost the hot ones as much as their handlers (``bench/README.md``).
Starlette is part of the ``[serve]`` extra: without it the peer paths are a 404 that
says so, and the rest of the service is unchanged.

The rest of OpenFGA's API (``Write``, ``Read``, ``ReadChanges``, assertions,
``CreateStore``, ``WriteAuthorizationModel``: a path under ``/stores`` that no route
answers, or a method its route does not answer) goes to ``--upstream-openfga`` when
given, unchanged, so that an application keeps all of its OpenFGA SDK; without one it
is OpenFGA's ``undefined_endpoint`` (404, 405), saying so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from leopard.core.index import Index
from leopard.errors import IndexNotFound, StorageError
from leopard.http.authzen import AuthZen
from leopard.http.errors import ClientGone, HttpError
from leopard.http.freshness import Waits
from leopard.http.headwait import HeadOf
from leopard.http.openfga import OpenFga
from leopard.http.peer_routes import AUTHZEN_PREFIXES, OPENFGA_PREFIX, PEER_PREFIXES
from leopard.http.reply import PeerRequest, Reply
from leopard.http.route import Route
from leopard.http.types import Receive, Scope, Send
from leopard.http.upstream import Upstream

try:
    from starlette.routing import Route as StarletteRoute
    from starlette.routing import Router
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    _MISSING: ModuleNotFoundError | None = exc
else:
    _MISSING = None

__all__ = ["PEER_PREFIXES", "Peers"]

Face = OpenFga | AuthZen
Handler = Callable[[PeerRequest], Awaitable[Reply]]
Failed = Callable[[BaseException], None] | None
#: errors that say the index itself failed (``LeopardService`` reports them in /readyz)
_DAMAGE = (StorageError, IndexNotFound)
_REQUEST_ID = b"x-request-id"
_STORE = OPENFGA_PREFIX + "/{store_id}/"  # the template of OpenFGA's store routes
_STORES = OPENFGA_PREFIX + "/"


class _Endpoint:
    """The ASGI app of one route: the method, the handler, the reply or the error."""

    def __init__(
        self,
        route: Route,
        handler: Handler,
        face: Face,
        max_body: int,
        failed: Failed,
        rest: Handler | None = None,
    ) -> None:
        self.route = route
        self.handler = handler
        self.face = face
        self.max_body = max_body
        self.failed = failed
        self.rest = rest  # what answers another method on this path (the upstream)
        self._allow = (route.method + (", HEAD" if route.method == "GET" else "")).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.route
        scope["leopard.endpoint"] = route.path
        request = PeerRequest(scope, receive, scope.get("path_params", {}), self.max_body)
        handler = self.handler
        try:
            method = scope["method"]
            if method == "HEAD" and route.method == "GET":  # as GET, without its body
                method = "GET"
            if method != route.method and self.rest is not None:
                handler = self.rest
            elif method != route.method:
                raise HttpError(
                    405,
                    "method_not_allowed",
                    f"{method} is not allowed on {route.path} (allowed: {self._allow.decode()})",
                    headers=[(b"allow", self._allow)],
                )
            reply = await handler(request)
        except ClientGone:
            raise
        except Exception as exc:
            reply = self.face.error_reply(exc, scope)
            if isinstance(exc, _DAMAGE) and self.failed is not None:
                self.failed(exc)  # /readyz says so from now on
        await send_reply(reply, scope, send)


async def send_reply(reply: Reply, scope: Scope, send: Send) -> None:
    """Send ``reply`` (AuthZEN's: echoing the request's ``X-Request-ID``)."""
    headers = [(b"content-type", reply.content_type.encode()), *reply.headers]
    if scope["path"].startswith(AUTHZEN_PREFIXES):
        for name, value in scope["headers"]:
            if name == _REQUEST_ID:
                headers.append((_REQUEST_ID, value))
                break
    body = reply.body
    if isinstance(body, bytes):
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
        return
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    async for chunk in body:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


class Peers:
    """The OpenFGA and AuthZEN faces over one index, and the router in front of them.

    ``await peers(scope, receive, send)`` answers a request and returns the route (its
    template, for the metrics' bounded labels; ``other`` when none matched) and the
    status sent.
    """

    def __init__(
        self,
        index: Index,
        waits: Waits,
        routes: Iterable[Route],
        *,
        head: HeadOf | None = None,
        store_id: str | None = None,
        upstream_openfga: str | None = None,
        public_url: str | None = None,
        max_body: int,
        max_batch: int,
        index_failed: Failed = None,
    ) -> None:
        upstream = Upstream(upstream_openfga) if upstream_openfga else None
        self.openfga = OpenFga(
            index,
            waits,
            head=head,
            store_id=store_id,
            upstream=upstream,
            max_batch=max_batch,
        )
        self.authzen = AuthZen(index, max_batch=max_batch, public_url=public_url)
        self.max_body = max_body
        # the rest of OpenFGA's API, when there is an upstream to answer it
        rest = self.openfga.upstream_reply if upstream is not None else None
        self._rest: Handler | None = rest
        self._router: Any = None
        # The hot routes, found without the router: a path without parameters
        # (AuthZEN's), and /stores/{store_id}/<tail> (OpenFGA's queries) by its tail.
        self._static: dict[str, _Endpoint] = {}
        self._store_tail: dict[str, _Endpoint] = {}
        if _MISSING is None:
            faces: dict[str, Face] = {"openfga": self.openfga, "authzen": self.authzen}
            endpoints = [
                _Endpoint(
                    r,
                    getattr(faces[r.face], r.handler),
                    faces[r.face],
                    max_body,
                    index_failed,
                    rest if r.face == "openfga" else None,
                )
                for r in routes
            ]
            for e in endpoints:
                path = e.route.path
                if not e.route.path_params:
                    self._static[path] = e
                elif path.startswith(_STORE) and "/" not in path[len(_STORE) :]:
                    self._store_tail[path[len(_STORE) :]] = e
            self._router = Router(
                [StarletteRoute(e.route.path, e) for e in endpoints],
                redirect_slashes=False,
                default=self._not_found,  # type: ignore[arg-type]  # Scope is Starlette's
            )

    def face(self, path: str) -> Face:
        """The face whose dialect answers ``path`` (a peer path)."""
        return self.openfga if path.startswith(OPENFGA_PREFIX) else self.authzen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> tuple[str, int]:
        sent = [500]

        async def watched(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                sent[0] = message["status"]
            await send(message)

        if self._router is None:
            await self._not_found(scope, receive, watched)
        elif (hot := self._hot(scope)) is not None:
            await hot(scope, receive, watched)
        else:
            await self._router(scope, receive, watched)
        return scope.get("leopard.endpoint", "other"), sent[0]

    def _hot(self, scope: Scope) -> _Endpoint | None:
        """The endpoint of a hot route, as the router would match it (a parameter is one
        non-empty path segment), its parameters set; None for any other path.

        Why: Starlette's router tries each route's regular expression in turn, which
        cost OpenFGA's check and AuthZEN's evaluation as much as their handlers (32 and
        29 µs a request in process, 14 and 16 µs with this); these few lines find the
        same routes at once."""
        path: str = scope["path"]
        found = self._static.get(path)
        if found is not None:
            return found
        if path.startswith(_STORES):
            store, _, tail = path[len(_STORES) :].partition("/")
            found = self._store_tail.get(tail) if store else None
            if found is not None:
                scope["path_params"] = {"store_id": store}
        return found

    async def refuse(self, exc: Exception, scope: Scope, send: Send) -> int:
        """Answer ``exc`` (raised before routing, e.g. a missing token) in the dialect of
        the face of ``scope``'s path; return the status sent."""
        reply = self.face(scope["path"]).error_reply(exc, scope)
        await send_reply(reply, scope, send)
        return reply.status

    async def _forward(self, rest: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        """Send a path no route answers to the upstream (its metrics label: ``other``)."""
        request = PeerRequest(scope, receive, {}, self.max_body)
        try:
            reply = await rest(request)
        except ClientGone:
            raise
        except Exception as exc:
            reply = self.openfga.error_reply(exc, scope)
        await send_reply(reply, scope, send)

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if self._rest is not None and path.startswith(OPENFGA_PREFIX):
            await self._forward(self._rest, scope, receive, send)
            return
        detail = f"no route {path!r}; the routes are listed at /openapi.json"
        if path.startswith(OPENFGA_PREFIX):
            detail += (
                "; the rest of OpenFGA's API is forwarded to --upstream-openfga URL when "
                "leopard serve is given one"
            )
        if _MISSING is not None:
            detail = (
                f"the OpenFGA and AuthZEN routes need Starlette ({_MISSING}): "
                "pip install 'leopard-index[serve]'"
            )
        error = HttpError(404, "not_found", detail)
        await send_reply(self.face(path).error_reply(error, scope), scope, send)
