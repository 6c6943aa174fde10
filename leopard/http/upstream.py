"""Forwarding to an OpenFGA server what the index cannot answer (``--upstream-openfga``).

A request with contextual tuples or a ``context`` for conditions, about a relation the
index does not hold, or naming another authorization model is sent on unchanged: the
same method, path (with its store id) and query, the same body byte for byte, and the
client's headers but those of one hop (``Host``, ``Connection``, ``Content-Length`` and
the like); so the upstream store must have the id this server answers for (give it
with ``--store-id``), and the client's ``Authorization`` reaches it. Its answer comes
back as it came (status, content type, body), marked ``X-Leopard-Answered-By:
upstream``. An upstream that cannot be reached is a 503 ``unavailable`` naming it.

The call runs in a worker thread (``http.client``), one connection per request, so the
event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import http.client
from urllib.parse import urlsplit

from leopard.errors import InvalidInput
from leopard.http.reply import PeerRequest, Reply

__all__ = ["ANSWERED_BY", "Upstream", "UpstreamUnreachable"]

#: the header marking an answer that came from the upstream
ANSWERED_BY = (b"x-leopard-answered-by", b"upstream")
_HOP = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"content-length",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"expect",
        b"proxy-authorization",
        b"proxy-connection",
    }
)


class UpstreamUnreachable(Exception):
    """The upstream did not answer; the message says where and why."""


class Upstream:
    """An OpenFGA server to forward to: ``http://host:port`` (or https, with a path prefix)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(
                f"--upstream-openfga {url!r} is not an http:// or https:// URL of a server"
            )
        if parts.query or parts.fragment:
            raise InvalidInput(f"--upstream-openfga {url!r}: no query or fragment, please")
        try:
            port = parts.port
        except ValueError:
            raise InvalidInput(f"--upstream-openfga {url!r} has a bad port") from None
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port
        self._prefix = parts.path.rstrip("/")
        self.timeout = timeout

    async def forward(self, request: PeerRequest) -> Reply:
        """Send ``request`` on unchanged and return the answer as it came."""
        scope = request.scope
        target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name not in _HOP:
                key = name.decode("latin-1")
                text = value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
        body = await request.body() if request.method not in ("GET", "HEAD") else None
        status, ctype, data, encoding = await asyncio.to_thread(
            self._call, request.method, self._prefix + target, headers, body
        )
        # the client's Accept-Encoding went on: a body the upstream (or a proxy before
        # it) compressed comes back saying so
        said = [(b"content-encoding", encoding.encode("latin-1"))] if encoding else []
        return Reply(status, data, ctype, headers=[ANSWERED_BY, *said])

    def _call(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, str, bytes, str | None]:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.timeout)
        try:
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            ctype = resp.getheader("content-type") or "application/json"
            return resp.status, ctype, data, resp.getheader("content-encoding")
        except TimeoutError:
            raise UpstreamUnreachable(
                f"the upstream OpenFGA at {self.url} did not answer within {self.timeout:g} s"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise UpstreamUnreachable(
                f"the upstream OpenFGA at {self.url} cannot be reached: {exc}"
            ) from None
        finally:
            conn.close()
