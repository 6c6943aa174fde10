"""The handlers of the routes in ``leopard.http.openapi.ROUTES``.

Each reads its request (``leopard.http.parsing``), waits for ``at_least`` if asked
(``leopard.http.freshness``), calls the public ``Index`` API once, and returns
``(status, model or bytes)``; errors propagate to the app, which answers them. No
index logic lives here. Every answer carries ``Index.version`` read before the
query, so the answer reflects at least that version.

``GET /v1/check`` and ``POST /v1/check`` are the hot paths, and are kept lean: the
common shapes are read without building a pydantic object per request or per check,
and the body of a single check is one of two byte strings cached per version.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from leopard.core.index import Index
from leopard.core.sharded import ServedShard
from leopard.errors import StaleIndex
from leopard.http import schemas as S
from leopard.http.freshness import Refresher, Waits
from leopard.http.metrics import CollectorRegistry, render
from leopard.http.parsing import (
    batch_within,
    check_batch,
    query,
    query_params,
    read_body,
    validate,
)
from leopard.http.types import Receive, RunningConsumer, Scope

__all__ = ["Handlers", "IndexFailure"]

Answer = tuple[int, BaseModel | bytes]  # (status, the model of the body, or its bytes)


@dataclass
class IndexFailure:
    """Storage failures met while answering, as ``/readyz`` reports them."""

    error: str  # the latest, with its class
    generation: Any  # the generation served when the first happened
    since: float  # when the first happened (``time.time()``)
    count: int = 1


class Handlers:
    """The route handlers over one index; ``getattr(handlers, route.handler)`` answers."""

    def __init__(
        self,
        index: Index,
        waits: Waits,
        *,
        consumer: RunningConsumer | None,
        refresher: Refresher | None = None,
        metrics: CollectorRegistry,  # what GET /metrics renders
        openapi: dict[str, Any],
        max_body: int,
        max_batch: int,
        ready_max_lag: int,
        shard: ServedShard | None = None,
    ) -> None:
        self.index = index
        #: the index is a shard served alone: ``readiness`` names it and checks its build
        self.shard = shard
        self.waits = waits
        self.consumer = consumer
        self.refresher = refresher
        #: the index failed while answering (a StorageError or IndexNotFound): see
        #: ``readiness``
        self.failure: IndexFailure | None = None
        self.metrics = metrics
        self.max_body = max_body
        self.max_batch = max_batch
        self.ready_max_lag = ready_max_lag
        self._openapi_json = json.dumps(openapi, separators=(",", ":")).encode()
        self._check_bodies: tuple[str | None, bytes, bytes] = (None, b"", b"")

    async def _fresh(self, q: S.Freshness) -> None:
        if q.at_least is not None:
            try:
                await self.waits.wait(q.at_least, q.max_wait)
            except StaleIndex as stale:
                consumer = self.consumer  # stopped: that, not the token, is what to mend
                if consumer is None or consumer.running or not consumer.error:
                    raise
                raise StaleIndex(
                    f"the change consumer has stopped ({consumer.error}): {stale}", stale.current
                ) from None

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

    # -- the queries ---------------------------------------------------------------------

    async def get_check(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        params = query_params(scope)
        if len(params) == 2 and params.get("subject") and params.get("group"):
            # The common shape, which CheckParams accepts as it is: no model to build
            # per request.
            subject, group = params["subject"], params["group"]
        else:
            q: S.CheckParams = validate(params, S.CheckParams)
            await self._fresh(q)
            subject, group = q.subject, q.group
        ix = self.index
        token = ix.version
        return 200, self._check_body(token, ix.check(subject, group))

    async def post_check(self, scope: Scope, receive: Receive) -> Answer:
        pairs, fresh = check_batch(await read_body(scope, receive, self.max_body))
        batch_within(pairs, self.max_batch)
        await self._fresh(fresh)
        ix = self.index
        token = ix.version
        return 200, S.CheckBatchResult(results=ix.check_many(pairs), token=token)

    async def get_groups(self, scope: Scope, receive: Receive) -> Answer:
        q: S.GroupsParams = query(scope, S.GroupsParams)
        await self._fresh(q)
        ix = self.index
        token = ix.version
        found = ix.groups_of(q.subject, type=q.type, permission=q.permission)
        return 200, S.GroupsResult(groups=found, token=token)

    async def get_members(self, scope: Scope, receive: Receive) -> Answer:
        q: S.MembersParams = query(scope, S.MembersParams)
        await self._fresh(q)
        ix = self.index
        token = ix.version
        # One more than asked: whether it comes back says if there is a next page.
        page = ix.members_of(q.group, limit=q.limit + 1, after=q.after)
        more = len(page) > q.limit
        del page[q.limit :]
        return 200, S.MembersResult(members=page, next=page[-1] if more else None, token=token)

    async def get_explain(self, scope: Scope, receive: Receive) -> Answer:
        q: S.ExplainParams = query(scope, S.ExplainParams)
        await self._fresh(q)
        ix = self.index
        token = ix.version
        chain = ix.explain(q.subject, q.group, steps=q.steps)
        result = S.ExplainResult(member=chain is not None, chain=None, token=token, steps=None)
        if chain is not None and q.steps:
            steps = [S.ExplainStep(set=s.set, via=s.via) for s in chain]  # type: ignore[union-attr]
            result.chain, result.steps = [s.set for s in steps[:-1]], steps
        elif chain is not None:
            result.chain = [str(x) for x in chain]
        # `steps` is in the answer only when asked for
        return 200, result.model_dump_json(exclude=None if q.steps else {"steps"}).encode()

    async def get_version(self, scope: Scope, receive: Receive) -> Answer:
        q: S.VersionParams = query(scope, S.VersionParams)
        await self._fresh(q)
        ix = self.index
        return 200, S.VersionResult(token=ix.version, position=ix.position)

    # -- the service itself --------------------------------------------------------------

    async def get_health(self, scope: Scope, receive: Receive) -> Answer:
        return 200, S.HealthResult()

    async def get_ready(self, scope: Scope, receive: Receive) -> Answer:
        ready = self.readiness()
        return (200 if ready.ready else 503), ready

    def readiness(self) -> S.ReadyResult:
        """Ready when the index can be read and has not failed, and any consumer runs,
        reaches its broker, keeps up and has no gap in its stream.

        A storage failure met while answering (``index_failed``) keeps the server not
        ready until another generation is served (a rebuild or a compaction swapped
        in, whose files are new) or the process restarts: a store that failed once
        seldom heals, and one that fails some queries and answers others should leave
        the rotation rather than flap in and out of it. A failing re-read of the index
        (without a consumer) is reported while it fails. A shard served alone is not
        ready while its build is not the one the sharded index's manifest names.
        """
        reasons: list[str] = []
        token = None
        try:
            token = self.index.version
        except Exception as exc:  # a closed or broken index is exactly what this reports
            reasons.append(f"the index cannot be read: {exc}")
        failure = self.failure
        if failure is not None:
            if self._generation() != failure.generation:
                self.failure = None  # another generation is served: its files are new
            else:
                since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(failure.since))
                times = "once" if failure.count == 1 else f"{failure.count:,} times"
                reasons.append(
                    f"the index failed while answering ({times} since {since}): "
                    f"{failure.error}; reported until another generation is served or "
                    "the server restarts"
                )
        refresher = self.refresher
        if refresher is not None and refresher.error is not None:
            reasons.append(f"re-reading the index fails (retrying): {refresher.error}")
        lag = None
        consumer = self.consumer
        if consumer is not None:
            stats = consumer.stats
            by_partition = getattr(stats, "lag", None)
            if by_partition:
                lag = sum(by_partition.values())
            if not consumer.running:
                reasons.append(
                    f"the consumer has stopped: {consumer.error}"
                    if consumer.error
                    else "the consumer is not running"
                )
            elif not getattr(stats, "broker_up", True):
                cause = getattr(stats, "outage", None)
                reasons.append(
                    "the change source (broker or upstream) is unreachable (the consumer is "
                    "retrying)" + (f": {cause}" if cause else "")
                )
            elif lag is None:
                reasons.append(
                    "the consumer has not fetched from its partitions yet "
                    "(joining its group, or the broker is unreachable)"
                )
            elif lag > self.ready_max_lag:
                reasons.append(
                    f"the consumer is {lag:,} messages behind (bound {self.ready_max_lag:,})"
                )
            for key, why in sorted(dict(getattr(stats, "elsewhere", None) or {}).items()):
                topic, _, partition = str(key).rpartition(":")
                reasons.append(
                    f"the consumer does not read topic {topic!r} partition {partition}, "
                    f"{why}: its changes are not applied here; give each index its own "
                    "--group-id"
                )
            for key, why in sorted(dict(getattr(stats, "gaps", None) or {}).items()):
                topic, _, partition = str(key).rpartition(":")
                reasons.append(
                    f"the consumer is stopped at a gap in topic {topic!r} partition "
                    f"{partition}: {why}"
                )
        label = None
        if self.shard is not None:
            label = self.shard.label()
            problem = self.shard.problem()
            if problem is not None:
                reasons.append(problem)
        return S.ReadyResult(ready=not reasons, reasons=reasons, token=token, lag=lag, shard=label)

    def index_failed(self, exc: BaseException) -> None:
        """Remember that the index failed while answering: ``readiness`` reports it."""
        error = f"{type(exc).__name__}: {exc}"
        generation = self._generation()
        failure = self.failure
        if failure is None or failure.generation != generation:
            self.failure = IndexFailure(error, generation, time.time())
        else:
            failure.error = error
            failure.count += 1

    def _generation(self) -> Any:
        """The generation the index serves (None when that cannot be read)."""
        try:
            return self.index.reader.generation
        except Exception:
            return None

    async def get_openapi(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        return 200, self._openapi_json

    async def get_metrics(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        return 200, render(self.metrics)
