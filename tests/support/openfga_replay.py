"""A test fixture: one OpenFGA store served over HTTP the way OpenFGA's API defines it.

No OpenFGA server runs here (its CLI's engine answers checks of a test file, but serves
no API), so this threaded ``http.server`` answers the calls a follower makes with
exchanges built from OpenFGA's published API definitions (openfga/api:
``openfga/v1/openfga_service.proto`` and ``docs/openapiv2/apidocs.swagger.json``):

* ``GET /stores/{store_id}/authorization-models?page_size&continuation_token``:
  ``{"authorization_models": [...], "continuation_token"}``, newest model first, the
  token empty after the last;
* ``POST /stores/{store_id}/read`` with ``{"tuple_key"?, "page_size",
  "continuation_token"}`` (page_size 1 to 100, default 50):
  ``{"tuples": [{"key": {"user", "relation", "object"}, "timestamp"}],
  "continuation_token"}``, the token empty after the last page;
* ``GET /stores/{store_id}/changes?type&page_size&continuation_token``:
  ``{"changes": [{"tuple_key", "operation", "timestamp"}], "continuation_token"}``, in
  ascending time; after the last change the token given comes back unchanged, and a
  store that never changed answers an empty one. A token is base64url of a JSON
  ``{"ulid", "ObjectType"}`` as OpenFGA's are (opaque to clients);
* errors as its ``ValidationErrorMessageResponse`` (400 ``validation_error``,
  ``invalid_continuation_token``) and ``PathUnknownErrorMessageResponse`` (404
  ``store_id_not_found``).

Timestamps are RFC 3339 with nanoseconds, as protojson writes them. With
``omit_zero_enums`` the writes of every other ReadChanges page carry no ``operation``,
as a gateway marshalling with protobuf's default JSON options sends
``TUPLE_OPERATION_WRITE`` (0). The store's data changes only through ``write``,
``delete`` and ``write_model``, called by the test (``before_read`` may make changes
while a bootstrap reads the tuples); ``pause``/``resume`` stop and restart the server
on its port.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from leopard.model.names import RelationTuple, parse_tuple
from leopard.model.schema.openfga import to_openfga_json
from leopard.model.schema.openfga_dsl import parse_openfga_dsl

__all__ = ["OpenFGAReplay", "openfga_key"]

STORE_ID = "01HZX3Q1A2B3C4D5E6F7G8H9JK"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def openfga_key(text: str) -> dict[str, str]:
    """OpenFGA's tuple key of ``doc:d1#viewer@user:anne``."""
    t: RelationTuple = parse_tuple(text)
    user = f"{t.subject_type}:{t.subject_id}"
    if t.subject_relation:
        user += f"#{t.subject_relation}"
    return {"user": user, "relation": t.relation, "object": f"{t.resource_type}:{t.resource_id}"}


def _ulid(n: int) -> str:
    """A 26-character Crockford id growing with ``n`` (ordered as OpenFGA's ULIDs)."""
    digits = []
    for _ in range(26):
        n, r = divmod(n, 32)
        digits.append(_CROCKFORD[r])
    return "".join(reversed(digits))


def _rfc3339(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def _token(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


def _untoken(token: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(base64.urlsafe_b64decode(token.encode()))
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


class _Error(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class OpenFGAReplay:
    """One store (``store_id``) of an OpenFGA-shaped HTTP API at ``url``."""

    def __init__(
        self, model_dsl: str, *, omit_zero_enums: bool = False, store_id: str = STORE_ID
    ) -> None:
        self.store_id = store_id
        self.omit_zero_enums = omit_zero_enums
        self.lock = threading.Lock()
        self.models: list[dict[str, Any]] = []  # oldest first
        self.tuples: dict[tuple[str, str, str], str] = {}  # (object, relation, user) -> time
        self.changes: list[dict[str, Any]] = []
        self.requests: list[str] = []  # "METHOD path" of every request, in order
        #: called once, before the first Read is answered
        self.before_read: Callable[[], None] | None = None
        self._seq = 0
        self._pages = 0
        self.write_model(model_dsl)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._serve(0)
        assert self._server is not None
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    # -- the test's side ---------------------------------------------------------------

    def write_model(self, model_dsl: str) -> str:
        """A new authorization model (OpenFGA's JSON of the DSL); its id."""
        with self.lock:
            self._seq += 1
            model = to_openfga_json(parse_openfga_dsl(model_dsl, "<model>"))
            model = {"id": _ulid(self._seq), **model}
            self.models.append(model)
            return str(model["id"])

    def write(self, tuples: Iterable[str]) -> None:
        """Write tuples in one request; OpenFGA refuses one present already, so do
        the callers (a present tuple is skipped here)."""
        with self.lock:
            for text in tuples:
                key = openfga_key(text)
                k = (key["object"], key["relation"], key["user"])
                if k in self.tuples:
                    continue
                self._change(key, "TUPLE_OPERATION_WRITE")
                self.tuples[k] = self.changes[-1]["timestamp"]

    def delete(self, tuples: Iterable[str]) -> None:
        with self.lock:
            for text in tuples:
                key = openfga_key(text)
                k = (key["object"], key["relation"], key["user"])
                if self.tuples.pop(k, None) is not None:
                    self._change(key, "TUPLE_OPERATION_DELETE")

    def present(self) -> list[str]:
        """Every tuple in the store, as text."""
        with self.lock:
            return sorted(f"{o}#{r}@{u}" for o, r, u in self.tuples)

    def _change(self, key: dict[str, str], operation: str) -> None:
        self._seq += 1
        self.changes.append(
            {
                "seq": self._seq,
                "tuple_key": key,
                "operation": operation,
                "timestamp": _rfc3339(time.time_ns()),
            }
        )

    def end_token(self) -> str:
        """The ReadChanges continuation token after the last change (no type filter)."""
        with self.lock:
            if not self.changes:
                return ""
            return _token({"ulid": _ulid(self.changes[-1]["seq"]), "ObjectType": ""})

    def pause(self) -> None:
        """Stop answering (connections refused) until ``resume``."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def resume(self) -> None:
        if self._server is None:
            self._serve(self.port)

    def close(self) -> None:
        self.pause()

    def __enter__(self) -> OpenFGAReplay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- serving ------------------------------------------------------------------------

    def _serve(self, port: int) -> None:
        replay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

            def _answer(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                replay.requests.append(f"{method} {parts.path}")
                try:
                    status, doc = 200, replay._route(method, parts.path, parts.query, body)
                except _Error as exc:
                    status, doc = exc.status, {"code": exc.code, "message": str(exc)}
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def _route(self, method: str, path: str, query: str, body: bytes) -> dict[str, Any]:
        segments = path.strip("/").split("/")
        if len(segments) != 3 or segments[0] != "stores":
            raise _Error(404, "undefined_endpoint", "Endpoint not enabled")
        if segments[1] != self.store_id:
            raise _Error(404, "store_id_not_found", "Store ID not found")
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        route = (method, segments[2])
        hook, self.before_read = (
            (self.before_read, None) if route == ("POST", "read") else (None, self.before_read)
        )
        if hook is not None:
            hook()  # changes made while the tuples are read (before the lock: it writes)
        with self.lock:
            if route == ("GET", "authorization-models"):
                return self._models(params)
            if route == ("GET", "changes"):
                return self._read_changes(params)
            if route == ("POST", "read"):
                try:
                    request = json.loads(body or b"{}")
                except ValueError:
                    raise _Error(400, "validation_error", "invalid JSON body") from None
                return self._read(request)
        raise _Error(404, "undefined_endpoint", "Endpoint not enabled")

    @staticmethod
    def _page_size(value: Any, default: int, most: int | None) -> int:
        if value in (None, ""):
            return default
        try:
            size = int(value)
        except (TypeError, ValueError):
            raise _Error(400, "validation_error", f"invalid page_size {value!r}") from None
        if size < 1 or (most is not None and size > most):
            raise _Error(
                400,
                "validation_error",
                f"invalid ReadRequest.PageSize: value must be inside range [1, {most}]",
            )
        return size

    def _offset(self, token: str) -> int:
        if not token:
            return 0
        doc = _untoken(token)
        if doc is None or not isinstance(doc.get("offset"), int):
            raise _Error(400, "invalid_continuation_token", "Invalid continuation token")
        return int(doc["offset"])

    def _models(self, params: dict[str, str]) -> dict[str, Any]:
        size = self._page_size(params.get("page_size"), 50, 100)
        start = self._offset(params.get("continuation_token", ""))
        newest = list(reversed(self.models))
        page = newest[start : start + size]
        more = start + size < len(newest)
        return {
            "authorization_models": page,
            "continuation_token": _token({"offset": start + size}) if more else "",
        }

    def _read(self, request: dict[str, Any]) -> dict[str, Any]:
        size = self._page_size(request.get("page_size"), 50, 100)
        start = self._offset(request.get("continuation_token") or "")
        wanted = request.get("tuple_key") or {}
        rows = [
            (k, ts)
            for k, ts in sorted(self.tuples.items())
            if all(
                not wanted.get(f) or wanted[f] == v
                for f, v in zip(("object", "relation", "user"), k, strict=True)
            )
        ]
        page = rows[start : start + size]
        more = start + size < len(rows)
        return {
            "tuples": [
                {"key": {"user": u, "relation": r, "object": o}, "timestamp": ts}
                for (o, r, u), ts in page
            ],
            "continuation_token": _token({"offset": start + size}) if more else "",
        }

    def _read_changes(self, params: dict[str, str]) -> dict[str, Any]:
        size = self._page_size(params.get("page_size"), 50, None)
        size = min(size, 100)  # the server's maximum page of changes
        kind = params.get("type", "")
        given = params.get("continuation_token", "")
        after = 0
        if given:
            doc = _untoken(given)
            if doc is None or not isinstance(doc.get("ulid"), str):
                raise _Error(400, "invalid_continuation_token", "Invalid continuation token")
            if doc.get("ObjectType", "") != kind:
                raise _Error(
                    400,
                    "invalid_continuation_token",
                    "the type in the request and the continuation token do not match",
                )
            after = _ulid_value(doc["ulid"])
        page = [
            c
            for c in self.changes
            if c["seq"] > after and (not kind or c["tuple_key"]["object"].startswith(kind + ":"))
        ][:size]
        if not page:
            return {"changes": [], "continuation_token": given}
        self._pages += 1
        omit = self.omit_zero_enums and self._pages % 2 == 0
        out = []
        for c in page:
            item = {
                "tuple_key": c["tuple_key"],
                "operation": c["operation"],
                "timestamp": c["timestamp"],
            }
            if omit and c["operation"] == "TUPLE_OPERATION_WRITE":
                del item["operation"]
            out.append(item)
        token = _token({"ulid": _ulid(page[-1]["seq"]), "ObjectType": kind})
        return {"changes": out, "continuation_token": token}


def _ulid_value(ulid: str) -> int:
    n = 0
    for ch in ulid:
        n = n * 32 + _CROCKFORD.index(ch)
    return n
