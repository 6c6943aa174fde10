"""The router's connections to the shard servers: one keep-alive pool per shard.

The router (``leopard.http.router``) forwards every query to one shard or to all of
them, on the event loop: a request waiting for a shard must not hold a thread, and a
fan-out asks the shards at once. ``aiohttp``'s client does that (its connector keeps
connections alive per host, up to ``POOL`` each) and is the asynchronous HTTP client
the installation already has (``openfga-sdk`` brings it; the ``[serve]`` extra names
it); the standard library's ``http.client`` would need a thread per request in flight.

A shard that cannot be reached, or does not answer in time, raises
``ShardUnavailable`` naming the shard and its URL: the router answers 503. A shard's
own answer, whatever its status, is returned as it came (with the shard its server says
it is: ``SHARD_HEADER``), for the router to check, and to pass on or to merge. Every
request is a read, so one that meets a connection the shard closed while it idled is
sent again once on a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from leopard.errors import InvalidInput, ShardUnavailable
from leopard.model.routing import SHARD_HEADER

try:
    import aiohttp
    from yarl import URL
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise ModuleNotFoundError(
        "routing to shard servers needs aiohttp: pip install 'leopard-index[serve]'",
        name=exc.name,
    ) from exc

__all__ = ["POOL", "ShardAnswer", "ShardLinks", "check_shard_url"]

#: connections kept open to each shard at most (requests beyond wait for one)
POOL = 64
#: how long an idle connection is kept: under the shard's own idle timeout (5 s by
#: default), so that the router, not the shard, closes it
KEEPALIVE = 4.0


@dataclass(frozen=True)
class ShardAnswer:
    """A shard's answer as it came: status and body (JSON), and the ``SHARD_HEADER``
    its server sent (``k/n/build``; None without one)."""

    shard: int
    status: int
    body: bytes
    label: str | None = None


def check_shard_url(url: str, k: int) -> str:
    """``url`` without a trailing slash; InvalidInput naming shard ``k`` when it is not an
    http(s) URL of a server."""
    parts = urlsplit(url)
    try:
        _ = parts.port
    except ValueError:
        raise InvalidInput(f"--shard-url {k}={url}: bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise InvalidInput(
            f"--shard-url {k}={url}: not an http:// URL of a shard server "
            "(e.g. http://127.0.0.1:8081)"
        )
    return url.rstrip("/")


class ShardLinks:
    """Keep-alive connections to the shard servers ``urls`` (shard K at ``urls[K]``).

    ``token``: the bearer token sent to the shards (the router's own, when the shards
    require the same). ``timeout``: the longest a shard may take to answer, on top of
    any ``max_wait`` the request asks for. ``start`` must run on the serving loop.
    """

    def __init__(self, urls: Sequence[str], token: str | None = None, timeout: float = 10.0):
        self.urls = [check_shard_url(u, k) for k, u in enumerate(urls)]
        self.n = len(self.urls)
        self.timeout = timeout
        self._headers = {"Accept": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=POOL, keepalive_timeout=KEEPALIVE, ttl_dns_cache=None
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )

    def _token_hint(self) -> str:
        sent = "Authorization" in self._headers
        return (
            "the router sends its --auth-token-file token to the shards, which take "
            "another; give the router and the shards one token"
            if sent
            else "the shards require a bearer token; give the router theirs with --auth-token-file"
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, k: int, target: str, wait: float = 0.0) -> ShardAnswer:
        """``GET target`` (a path with its query) on shard ``k``."""
        return await self._send(k, "GET", target, None, wait)

    async def post(self, k: int, target: str, body: bytes, wait: float = 0.0) -> ShardAnswer:
        """``POST target`` with a JSON ``body`` on shard ``k``."""
        return await self._send(k, "POST", target, body, wait)

    async def get_all(
        self, target: str, wait: float = 0.0, shards: Sequence[int] | None = None
    ) -> list[ShardAnswer]:
        """``GET target`` on every shard (or those of ``shards``) at once, in that order."""
        ks = range(self.n) if shards is None else shards
        return list(await asyncio.gather(*(self.get(k, target, wait) for k in ks)))

    async def _send(
        self, k: int, method: str, target: str, body: bytes | None, wait: float
    ) -> ShardAnswer:
        if self._session is None:
            await self.start()
        session = self._session
        assert session is not None
        url = URL(self.urls[k] + target, encoded=True)  # the query as the client escaped it
        timeout = aiohttp.ClientTimeout(total=self.timeout + wait)
        headers = {"Content-Type": "application/json"} if body is not None else None
        for attempt in (0, 1):
            try:
                async with session.request(
                    method, url, data=body, headers=headers, timeout=timeout
                ) as resp:
                    body = await resp.read()
                    if resp.status in (401, 403):  # the router's token, not the client's
                        raise ShardUnavailable(
                            f"shard {k} at {self.urls[k]} refused the router's request "
                            f"(HTTP {resp.status}): " + self._token_hint()
                        )
                    return ShardAnswer(k, resp.status, body, resp.headers.get(SHARD_HEADER))
            except aiohttp.ServerDisconnectedError:
                if attempt == 0:
                    continue  # closed while idle, as the request went out: once more
                raise ShardUnavailable(
                    f"shard {k} at {self.urls[k]} closed the connection without answering"
                ) from None
            except TimeoutError:
                raise ShardUnavailable(
                    f"shard {k} at {self.urls[k]} did not answer within {self.timeout + wait:g} s"
                ) from None
            except aiohttp.ClientError as exc:
                raise ShardUnavailable(
                    f"shard {k} at {self.urls[k]} cannot be reached: {exc}"
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover
