"""A Python client for the HTTP query service, shaped like ``Index``.

``Client(base_url)`` has the methods of ``leopard.Index`` (``check``,
``check_many``, ``groups_of``, ``members_of``, ``explain``, ``version``,
``position``, ``wait_for``) and raises the same exceptions, so code written against
a local index moves to a remote one by changing one line::

    from leopard.client import Client

    with Client("http://127.0.0.1:8080", token=None) as ix:
        ix.check("user:alice", "group:eng")
        ix.check("user:alice", "group:eng", at_least=token_from_publish, max_wait=2.0)

Every read also takes ``at_least`` (a version token) and ``max_wait`` (seconds, at
most 30), and remembers the token of its answer in ``last_token``.

Errors: the server answers each error of the index with the code that
``leopard.errors.HTTP_ERRORS`` gives its class, and the client raises that class
again (``error_for_code``): a malformed name raises ``InvalidTuple`` and any other
refused input ``InvalidInput``, as the index does; a version not reached in time
raises ``StaleIndex`` with ``current``; a failing store on the server raises
``StorageError`` (a missing index ``IndexNotFound``); a missing or wrong bearer
token raises ``Unauthorized``, which is both a ``LeopardError`` and a
``PermissionError``; anything else (no answer, a 500) raises ``ServiceError``.

Only the standard library is used (``http.client`` over one keep-alive
connection), so the client adds no dependency to an application.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from leopard.errors import (
    InvalidInput,
    ServiceError,
    ShardUnavailable,
    StaleIndex,
    Unauthorized,
    error_for_code,
)
from leopard.http.schemas import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT, MAX_PAGE
from leopard.model.routing import SHARD_HEADER

__all__ = ["Client", "MembersPage", "ServiceError", "Unauthorized"]


@dataclass
class MembersPage:
    """One page of ``GET /v1/members``: pass ``next`` as ``after`` for the following one."""

    members: list[str]
    next: str | None
    token: str


class Client:
    """A connection to ``leopard serve``; safe to share between threads.

    Requests of one client go one at a time over one keep-alive connection (a
    lock serializes them); use a client per thread to send them in parallel.
    ``timeout`` bounds each request, on top of any ``max_wait`` it asks for.
    ``batch_size`` is the most checks ``check_many`` sends in one request; it must
    not exceed the server's ``--max-batch``.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        batch_size: int = DEFAULT_MAX_BATCH,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(
                f"{base_url!r} is not an http(s) URL (expected e.g. http://127.0.0.1:8080)"
            )
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be positive, not {batch_size!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.batch_size = batch_size
        #: the token of the last answer: the version it reflects (at least)
        self.last_token: str | None = None
        #: what the server of the last answer said it is, when it is a shard server
        #: (``Leopard-Shard``: ``k/n/build``); None from any other
        self.last_shard: str | None = None
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Accept": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<leopard.client.Client {self.base_url}>"

    # -- the Index API --------------------------------------------------------------

    def check(
        self,
        subject: str,
        group: str,
        *,
        at_least: str | None = None,
        max_wait: float | None = None,
    ) -> bool:
        """Whether ``subject`` is in ``group``, directly or through nested groups."""
        data = self._get(
            "/v1/check",
            {"subject": subject, "group": group},
            at_least,
            max_wait,
        )
        return bool(data["member"])

    def check_many(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        at_least: str | None = None,
        max_wait: float | None = None,
    ) -> list[bool]:
        """``check`` for each ``(subject, group)`` pair, in order.

        Up to ``batch_size`` pairs are answered from one version of the index. A
        longer list goes in several requests, each demanding at least the version
        of the one before, so later answers are never older than earlier ones.
        """
        checks = [{"subject": s, "group": g} for s, g in pairs]
        results: list[bool] = []
        start = 0
        while True:
            chunk = checks[start : start + self.batch_size]
            body: dict[str, Any] = {"checks": chunk}
            if at_least is not None:
                body["at_least"] = at_least
            if max_wait is not None:
                body["max_wait"] = max_wait
            data = self._request("POST", "/v1/check", body=body, wait=_wait(at_least, max_wait))
            results.extend(data["results"])
            start += self.batch_size
            if start >= len(checks):
                return results
            at_least = data["token"]

    def groups_of(
        self,
        subject: str,
        *,
        type: str | None = None,
        permission: str | None = None,
        at_least: str | None = None,
        max_wait: float | None = None,
    ) -> list[str]:
        """Every group the subject is in, transitively, sorted by name (with ``type`` and
        ``permission``, only those sets)."""
        params = {"subject": subject, "type": type, "permission": permission}
        return list(self._get("/v1/groups", params, at_least, max_wait)["groups"])

    def members_of(
        self,
        group: str,
        limit: int | None = None,
        after: str | None = None,
        *,
        at_least: str | None = None,
        max_wait: float | None = None,
    ) -> list[str]:
        """Every leaf subject in the group, transitively, sorted by name.

        As ``Index.members_of``: at most ``limit`` (all when None), starting after
        the name ``after``. The service answers in pages of at most 10,000; this
        fetches as many as needed, each at least as fresh as the first.
        """
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise InvalidInput(f"limit must be a non-negative integer, not {limit!r}")
        members: list[str] = []
        while limit is None or len(members) < limit:
            want = MAX_PAGE if limit is None else min(MAX_PAGE, limit - len(members))
            page = self.members_page(
                group, limit=want, after=after, at_least=at_least, max_wait=max_wait
            )
            members.extend(page.members)
            if page.next is None:
                break
            after, at_least = page.next, page.token
        return members

    def members_page(
        self,
        group: str,
        *,
        limit: int | None = None,
        after: str | None = None,
        at_least: str | None = None,
        max_wait: float | None = None,
    ) -> MembersPage:
        """One page of members (the service's default size when ``limit`` is None)."""
        data = self._get(
            "/v1/members",
            {"group": group, "limit": limit, "after": after},
            at_least,
            max_wait,
        )
        return MembersPage(list(data["members"]), data["next"], data["token"])

    def explain(
        self,
        subject: str,
        group: str,
        *,
        at_least: str | None = None,
        max_wait: float | None = None,
    ) -> list[str] | None:
        """A shortest chain of groups from ``group`` down to one the subject is directly in.

        None when the subject is not a member.
        """
        data = self._get("/v1/explain", {"subject": subject, "group": group}, at_least, max_wait)
        chain = data["chain"]
        return None if chain is None else list(chain)

    @property
    def version(self) -> str:
        """An opaque token for the stream position the served index reflects."""
        return str(self._get("/v1/version", {}, None, None)["token"])

    @property
    def position(self) -> dict[str, int]:
        """Per ``topic:partition``, the next offset the served index will apply."""
        return dict(self._get("/v1/version", {}, None, None)["position"])

    def wait_for(self, token: str, timeout: float = DEFAULT_MAX_WAIT) -> str:
        """Return the version once the served index has applied ``token``; StaleIndex after
        ``timeout`` seconds (at most 30)."""
        return str(self._get("/v1/version", {}, token, timeout)["token"])

    # -- HTTP -----------------------------------------------------------------------

    def _get(
        self,
        path: str,
        params: dict[str, Any],
        at_least: str | None,
        max_wait: float | None,
    ) -> dict[str, Any]:
        query = {k: v for k, v in params.items() if v is not None}
        if at_least is not None:
            query["at_least"] = at_least
        if max_wait is not None:
            query["max_wait"] = repr(float(max_wait))
        # quote, not quote_plus: '+' is a character of subject ids and must go as %2B
        url = path + ("?" + urlencode(query, quote_via=quote, safe="") if query else "")
        return self._request("GET", url, wait=_wait(at_least, max_wait))

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = self._conn = cls(self._host, self._port, timeout=timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _request(
        self, method: str, url: str, *, body: Any = None, wait: float = 0.0
    ) -> dict[str, Any]:
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        target = self._prefix + url
        timeout = self.timeout + wait
        with self._lock:
            for attempt in range(2):
                reused = self._conn is not None and self._conn.sock is not None
                conn = self._connection(timeout)
                try:
                    conn.request(method, target, body=data, headers=headers)
                    resp = conn.getresponse()
                    raw = resp.read()
                except (ConnectionError, http.client.HTTPException, OSError) as exc:
                    conn.close()
                    self._conn = None
                    # The server may close an idle keep-alive connection just as a
                    # request goes out; every request here is a read, so resending
                    # it once on a new connection is safe.
                    stale = isinstance(
                        exc,
                        (
                            http.client.RemoteDisconnected,
                            ConnectionResetError,
                            BrokenPipeError,
                        ),
                    )
                    if attempt == 0 and reused and stale:
                        continue
                    if isinstance(exc, TimeoutError):
                        raise ServiceError(
                            f"{method} {self.base_url}{url}: no answer within {timeout:g} s"
                        ) from exc
                    raise ServiceError(f"cannot reach {self.base_url}: {exc}") from exc
                if resp.will_close:
                    conn.close()
                    self._conn = None
                self.last_shard = resp.getheader(SHARD_HEADER)
                break
        return self._answer(method, url, resp.status, raw)

    def _answer(self, method: str, url: str, status: int, raw: bytes) -> dict[str, Any]:
        try:
            data = json.loads(raw) if raw else {}
        except (ValueError, RecursionError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        if status == 200:
            if "token" in data:
                self.last_token = data["token"]
            return data
        code = data.get("error")
        detail = str(data.get("detail") or raw[:200].decode("utf-8", "replace") or "no detail")
        cls = error_for_code(code)
        if cls is StaleIndex:
            raise StaleIndex(detail, current=data.get("token"))
        if cls is not None and not issubclass(cls, ServiceError):
            raise cls(detail)
        if status == 401:
            raise Unauthorized(detail, status, code)
        if cls is ShardUnavailable:  # a router in front of shard servers lost one
            raise ShardUnavailable(f"{self.base_url}: {detail}", status, code)
        if status in (400, 413, 414):  # the request was refused as it is
            raise InvalidInput(detail)
        raise ServiceError(f"{method} {self.base_url}{url}: HTTP {status}: {detail}", status, code)


def _wait(at_least: str | None, max_wait: float | None) -> float:
    """How long the server may hold the request before answering."""
    if at_least is None:
        return 0.0
    return DEFAULT_MAX_WAIT if max_wait is None else max(0.0, float(max_wait))
