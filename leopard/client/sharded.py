"""A client of the shard servers of a sharded index, answering as one index.

``ShardedClient({0: url0, 1: url1, ...})`` (or a list, in shard order) holds a
``Client`` per shard server (``leopard serve --index DIR --shard K``) and routes each
query as ``leopard.core.sharded.ShardedIndex`` does in one process and the router
(``leopard serve --route``) does over HTTP, with the rules of
``leopard.model.routing``:

* ``check``, ``groups_of``, ``explain`` of a plain subject: its shard alone, one round
  trip, the answer and its token as that shard gave them;
* of a userset subject (``group:eng#member``): every shard, in parallel, the answers
  joined (``check``: any; ``groups_of``: the union; ``explain``: the shortest chain,
  then by names);
* ``members_of``: every shard's page, merged by name without repeats;
* ``check_many``: the pairs split by shard, the shards asked in parallel, the answers
  put back in order;
* ``version``: what every shard has reached (per partition, the least offset);
  ``wait_for`` waits on every shard.

``at_least`` and ``max_wait`` go to every shard asked: every shard consumes every
partition of the change stream, so a token from ``leopard publish`` means the same to
each. ``last_token`` is the answering shard's token, or after a fan-out the least of
the shards' tokens. A shard that cannot be reached raises ``ShardUnavailable``
naming it and its URL; any other error is the shard's own, raised as ``Client``
raises it. Every answer is checked as the router checks it: a server that does not
say it is shard K of N at the URL given for shard K (``Leopard-Shard``), or answers
joined from shards of different builds, raise ``ShardUnavailable`` naming them
(``leopard.model.routing.shard_problems``) instead of answering.

Fan-outs run on a small thread pool (one thread per shard): each ``Client`` sends one
request at a time over its keep-alive connection, so the shards work in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from leopard.client.base import Client, MembersPage
from leopard.errors import InvalidInput, LeopardError, ServiceError, ShardUnavailable
from leopard.http.schemas import DEFAULT_MAX_BATCH, DEFAULT_PAGE, MAX_PAGE
from leopard.model.routing import (
    asks_every_shard,
    least_position,
    least_token,
    merge_pages,
    shard_of,
    shard_problems,
    shortest,
    split_by_shard,
)

__all__ = ["ShardedClient"]

T = TypeVar("T")


def shard_urls(urls: Mapping[int, str] | Sequence[str]) -> list[str]:
    """The shard URLs in shard order; InvalidInput unless shards 0 to N-1 are each given once."""
    if isinstance(urls, Mapping):
        n = len(urls)
        keys = sorted(urls)
        if keys != list(range(n)):
            raise InvalidInput(f"the shards must be numbered 0 to {n - 1}, each once; got {keys!r}")
        return [urls[k] for k in range(n)]
    listed = list(urls)
    if not listed:
        raise InvalidInput("no shard URL given")
    return listed


class ShardedClient:
    """Every shard server of a sharded index, queried as one ``Client``; thread-safe."""

    def __init__(
        self,
        urls: Mapping[int, str] | Sequence[str],
        token: str | None = None,
        timeout: float = 10.0,
        *,
        batch_size: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.urls = shard_urls(urls)
        self.n = len(self.urls)
        self.clients = [Client(u, token, timeout, batch_size=batch_size) for u in self.urls]
        self._pool = ThreadPoolExecutor(self.n, thread_name_prefix="leopard-shards")
        #: the token of the last answer: the version it reflects (at least)
        self.last_token: str | None = None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for c in self.clients:
            c.close()

    def __enter__(self) -> ShardedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<leopard.client.ShardedClient of {self.n} shards: {', '.join(self.urls)}>"

    # -- routing --------------------------------------------------------------------

    def shard_for(self, subject: str) -> int:
        """The shard holding ``subject``'s direct sets."""
        return shard_of(subject, self.n)

    def _one(self, k: int, call: Callable[[Client], T]) -> T:
        """``call`` on shard ``k``'s client; its token becomes ``last_token``."""
        client = self.clients[k]
        try:
            out = call(client)
        except ServiceError as exc:
            raise self._unreachable(k, exc) from exc
        except LeopardError:
            self._check([k])  # a refusal of a server that is not shard k: that first
            raise
        self._check([k])
        self.last_token = client.last_token
        return out

    def _all(self, call: Callable[[Client], T]) -> list[T]:
        """``call`` on every shard in parallel (see ``_fan``)."""
        return self._fan([(k, call) for k in range(self.n)])

    def _fan(self, calls: list[tuple[int, Callable[[Client], T]]]) -> list[T]:
        """Each ``(k, call)``: ``call`` on shard ``k``, all in parallel; the answers in
        the order given, and ``last_token`` the least of the shards' tokens. The first
        shard's error (in that order) is raised, as one index raises it."""
        futures = [self._pool.submit(call, self.clients[k]) for k, call in calls]
        out: list[T] = []
        error: BaseException | None = None
        refused: list[int] = []
        for (k, _), f in zip(calls, futures, strict=True):
            try:
                out.append(f.result())
            except ServiceError as exc:
                error = error or self._unreachable(k, exc)
            except BaseException as exc:
                refused += [k] if isinstance(exc, LeopardError) else []
                error = error or exc
        if error is not None:
            self._check(refused)  # refusals of servers that are not the shards asked: that first
            raise error
        self._check([k for k, _ in calls])
        tokens = [self.clients[k].last_token for k, _ in calls]
        if tokens and all(t is not None for t in tokens):
            self.last_token = least_token(t for t in tokens if t is not None)
        return out

    def _check(self, ks: list[int]) -> None:
        """ShardUnavailable unless the last answers of shards ``ks`` came from the shards
        expected at their URLs, all of one build."""
        problems = shard_problems(((k, self.clients[k].last_shard) for k in ks), self.urls)
        if problems:
            raise ShardUnavailable("; ".join(problems))

    def _unreachable(self, k: int, exc: ServiceError) -> ServiceError:
        if exc.status is None:  # no answer at all
            return ShardUnavailable(f"shard {k} at {self.urls[k]} cannot be reached: {exc}")
        return exc

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
        fresh: dict[str, Any] = {"at_least": at_least, "max_wait": max_wait}
        if asks_every_shard(subject):
            return any(self._all(lambda c: c.check(subject, group, **fresh)))
        return self._one(self.shard_for(subject), lambda c: c.check(subject, group, **fresh))

    def check_many(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        at_least: str | None = None,
        max_wait: float | None = None,
    ) -> list[bool]:
        """``check`` for each pair, in order: each shard asked once for its pairs."""
        pairs = list(pairs)
        per_shard = split_by_shard((subject for subject, _ in pairs), self.n)
        if not per_shard:
            per_shard[0] = []  # nothing to ask, but the version (and at_least) is still told

        def ask(k: int) -> Callable[[Client], list[bool]]:
            rows = [pairs[i] for i in per_shard[k]]
            return lambda c: c.check_many(rows, at_least=at_least, max_wait=max_wait)

        ks = sorted(per_shard)
        answers = self._fan([(k, ask(k)) for k in ks])
        out = [False] * len(pairs)
        for k, got in zip(ks, answers, strict=True):
            for i, a in zip(per_shard[k], got, strict=True):
                out[i] = out[i] or a
        return out

    def groups_of(
        self,
        subject: str,
        *,
        type: str | None = None,
        permission: str | None = None,
        at_least: str | None = None,
        max_wait: float | None = None,
    ) -> list[str]:
        """Every group the subject is in, transitively, sorted by name."""
        kw: dict[str, Any] = {
            "type": type,
            "permission": permission,
            "at_least": at_least,
            "max_wait": max_wait,
        }
        if asks_every_shard(subject):
            found: set[str] = set()
            for groups in self._all(lambda c: c.groups_of(subject, **kw)):
                found.update(groups)
            return sorted(found)
        return self._one(self.shard_for(subject), lambda c: c.groups_of(subject, **kw))

    def members_of(
        self,
        group: str,
        limit: int | None = None,
        after: str | None = None,
        *,
        at_least: str | None = None,
        max_wait: float | None = None,
    ) -> list[str]:
        """Every leaf subject in the group, transitively, sorted by name (at most
        ``limit``, after ``after``): each shard's first ``limit``, merged."""
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise InvalidInput(f"limit must be a non-negative integer, not {limit!r}")
        pages = self._all(
            lambda c: c.members_of(group, limit, after, at_least=at_least, max_wait=max_wait)
        )
        return merge_pages(pages, limit)

    def members_page(
        self,
        group: str,
        *,
        limit: int | None = None,
        after: str | None = None,
        at_least: str | None = None,
        max_wait: float | None = None,
    ) -> MembersPage:
        """One page of members, as one server's ``GET /v1/members`` gives it."""
        size = DEFAULT_PAGE if limit is None else limit
        ask = min(size + 1, MAX_PAGE)  # one more: whether it comes, says if there is more
        pages = self._all(
            lambda c: c.members_page(
                group, limit=ask, after=after, at_least=at_least, max_wait=max_wait
            )
        )
        merged = merge_pages([p.members for p in pages], size + 1)
        more = len(merged) > size or (ask <= size and any(p.next for p in pages))
        del merged[size:]
        token = self.last_token or pages[0].token
        return MembersPage(merged, merged[-1] if more and merged else None, token)

    def explain(
        self,
        subject: str,
        group: str,
        *,
        at_least: str | None = None,
        max_wait: float | None = None,
    ) -> list[str] | None:
        """A shortest chain of groups from ``group`` down to one the subject is directly in."""
        fresh: dict[str, Any] = {"at_least": at_least, "max_wait": max_wait}
        if not asks_every_shard(subject):
            return self._one(self.shard_for(subject), lambda c: c.explain(subject, group, **fresh))
        chains = self._all(lambda c: c.explain(subject, group, **fresh))
        return shortest((ch, ch) for ch in chains if ch)

    @property
    def version(self) -> str:
        """The version every shard has reached (per partition, the least offset)."""
        return least_token(self._all(lambda c: c.version))

    @property
    def position(self) -> dict[str, int]:
        """Per ``topic:partition``, the next offset every shard will apply."""
        return least_position(self._all(lambda c: c.position))

    def wait_for(self, token: str, timeout: float = 1.0) -> str:
        """Return the version once every shard has applied ``token``; StaleIndex after
        ``timeout`` seconds."""
        return least_token(self._all(lambda c: c.wait_for(token, timeout)))
