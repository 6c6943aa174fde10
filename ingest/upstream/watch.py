"""Following SpiceDB's Watch: a change source for the consumer loop, and the follower.

``WatchSource`` is to ``ingest.consumer.ChangeConsumer`` what ``KafkaSource`` is: it
hands out batches of messages and the position after them. Each message is one Watch
response written as protobuf JSON, decoded by the same ``spicedb`` codec as a Watch
response read from Kafka; the position is the revision of the last response
(``changesThrough``) under ``SPICEDB_KEY``, and the batch's state holds its ZedToken,
so the changes, the revision and the token to resume from land in one write batch.
A crash at any point therefore neither loses nor doubles a change: the Watch resumes
from the token stored with the last applied batch. SpiceDB sends one response per
revision (its ``Watch`` service writes each revision's changes as one message), so a
stored revision is never half applied.

The Watch asks for relationship updates, checkpoints and schema changes. A checkpoint
carries no change but moves the revision on, so that the ZedToken of a write that
changed nothing (a touch of a present relationship) is honoured too. A schema change
means the index no longer interprets tuples as SpiceDB does: it stops the follower
like a gap. When SpiceDB is away the source reconnects with exponential backoff and
full jitter; when the stored revision is older than SpiceDB's watch window (its
answer ``OUT_OF_RANGE``), it is a gap: stored as such, so readers refuse tokens past
it, and the follower stops with one line saying so, or with ``rebuild_on_gap``
bootstraps a fresh index from SpiceDB and goes on from there.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from authzed.api.v1 import core_pb2, watch_service_pb2, watch_service_pb2_grpc
from google.protobuf import json_format

from ingest.consumer import ChangeConsumer, ConsumerStats
from ingest.kafka.source import Batch, Gap
from ingest.settings import ConsumerSettings
from ingest.upstream.spicedb import SpiceDBSource, bootstrap, upstream_error
from leopard.core.index import Index
from leopard.errors import InvalidInput, UpstreamError, UpstreamGap
from leopard.model.zedtoken import SPICEDB_KEY, decode_zedtoken, revision_number

__all__ = ["SpiceDBFollower", "WatchMessage", "WatchSource"]

log = logging.getLogger("leopard.upstream")

_KINDS = [
    watch_service_pb2.WATCH_KIND_INCLUDE_RELATIONSHIP_UPDATES,
    watch_service_pb2.WATCH_KIND_INCLUDE_SCHEMA_UPDATES,
    watch_service_pb2.WATCH_KIND_INCLUDE_CHECKPOINTS,
]
#: statuses after which reconnecting cannot help
_FATAL = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED,
)
_ENDED = object()  # the server closed the stream without an error


class WatchMessage:
    """One Watch response as the consumer loop sees a message."""

    __slots__ = ("key", "offset", "partition", "topic", "value")

    def __init__(self, offset: int, value: bytes) -> None:
        self.topic = SPICEDB_KEY
        self.partition = 0
        self.offset = offset  # the response's revision
        self.key: bytes | None = None
        self.value: bytes | None = value


class WatchSource:
    """Batches of Watch responses from the revision the index has stored.

    ``state_of`` gives the stored source state (its ``SPICEDB_KEY`` section holds the
    token to resume from) and ``position_of`` the stored position; both are read from
    the index at every (re)connection.
    """

    def __init__(
        self,
        source: SpiceDBSource,
        state_of: Callable[[], dict[str, Any]],
        position_of: Callable[[], dict[str, int]],
        *,
        max_batch: int = 5000,
        poll_timeout: float = 0.1,
        backoff: tuple[float, float] = (0.2, 10.0),
        rng: random.Random | None = None,
    ) -> None:
        self.upstream = source
        self.state_of = state_of
        self.position_of = position_of
        self.max_batch = max_batch
        self.poll_timeout = poll_timeout
        self.backoff = backoff
        self.rng = rng or random.Random()
        self.stopped: dict[str, str] = {}  # SPICEDB_KEY -> the gap, once found
        self.fatal: UpstreamError | None = None
        self.connected = False
        self.reconnects = 0
        self._gaps: list[Gap] = []
        self._call: Any = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=100_000)
        self._failures = 0
        self._retry_at = 0.0
        self._stub = watch_service_pb2_grpc.WatchServiceStub(source.channel())

    # -- what the consumer loop asks --------------------------------------------------

    @property
    def assigned(self) -> bool:
        return self.connected

    def poll(self) -> Batch:
        if self.fatal is not None or self.stopped:
            time.sleep(self.poll_timeout)
            return _empty()
        if self._call is None:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, self.poll_timeout))
                return _empty()
            self._connect()
        try:
            first = self._queue.get(timeout=self.poll_timeout)
        except queue.Empty:
            return _empty()
        items = [first]
        while len(items) < self.max_batch:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return self._batch(items)

    def take_gaps(self) -> list[Gap]:
        gaps, self._gaps = self._gaps, []
        return gaps

    def probe(self) -> bool | None:
        if self.fatal is not None:
            return None
        return self.connected or None

    def lag(self) -> dict[str, int]:
        return {SPICEDB_KEY: self._queue.qsize()} if self.connected else {}

    def dead_letter(self, dead: list[tuple[Any, str]]) -> None:
        """Updates that cannot be applied: logged with the revision and their index
        (a follower has no dead-letter topic; the consumer counts them)."""
        for m, reason in dead:
            item = getattr(m, "item", None)
            where = "" if item is None else f" update {item}"
            log.warning(
                "%s revision %s%s not applied: %s", self.upstream.name, m.offset, where, reason
            )

    def commit(self, position: dict[str, int]) -> None:
        """Nothing to commit upstream: the index holds the position."""

    def rewind(self) -> None:
        """Drop what was received and not applied; the Watch restarts from the stored
        token at the next poll."""
        self._disconnect()

    def seek_to_stored(self) -> None:
        self._disconnect()

    def close(self) -> None:
        self._disconnect()
        self.upstream.close()

    # -- the stream -------------------------------------------------------------------

    def _connect(self) -> None:
        token = self.state_of().get("token")
        if not isinstance(token, str) or not token:
            raise InvalidInput(
                "the index records no SpiceDB revision to watch from; build it with "
                f"'leopard build --from {self.upstream.name}'"
            )
        request = watch_service_pb2.WatchRequest(
            optional_start_cursor=core_pb2.ZedToken(token=token), optional_update_kinds=_KINDS
        )
        self._queue = queue.Queue(maxsize=self._queue.maxsize)
        call = self._stub.Watch(request, metadata=self.upstream.metadata())
        self._call = call
        self.connected = True  # until the stream says otherwise
        thread = threading.Thread(
            target=self._read, args=(call, self._queue), name="leopard-watch", daemon=True
        )
        thread.start()

    @staticmethod
    def _read(call: Any, into: queue.Queue[Any]) -> None:
        try:
            for response in call:
                into.put(response)
            into.put(_ENDED)
        except grpc.RpcError as exc:
            into.put(exc)
        except BaseException as exc:  # a bug here must not look like an idle stream
            into.put(exc)

    def _disconnect(self) -> None:
        call, self._call = self._call, None
        self.connected = False
        if call is not None:
            call.cancel()

    def _batch(self, items: list[Any]) -> Batch:
        messages: list[Any] = []
        stored = self.position_of().get(SPICEDB_KEY, -1)
        last_token: str | None = None
        last_revision = stored
        failure: Any = None
        for item in items:
            if item is _ENDED or isinstance(item, BaseException):
                failure = item
                break
            self.connected = True
            self._failures = 0
            token = item.changes_through.token
            revision = revision_number(decode_zedtoken(token).revision)
            if item.schema_updated:
                failure = UpstreamGap(
                    f"{self.upstream.name}: the schema changed at revision {token!r}; the "
                    "index no longer reads relationships as SpiceDB does: rebuild it "
                    f"('leopard build --from {self.upstream.name}', or follow with "
                    "--rebuild-on-gap)"
                )
                break
            if item.updates:
                doc = json_format.MessageToDict(item)
                messages.append(WatchMessage(revision, json.dumps(doc).encode()))
            if revision > last_revision:
                last_revision, last_token = revision, token
        if failure is not None:
            self._failed(failure, stored)
            if not messages and last_token is None and self.fatal is None:
                raise (
                    failure
                    if isinstance(failure, UpstreamError)
                    else UpstreamError(
                        f"{self.upstream.name}: the Watch stream ended; reconnecting"
                    )
                )
        if last_token is None:
            return Batch(messages, {}, {})
        return Batch(
            messages,
            {SPICEDB_KEY: last_revision},
            {},
            {SPICEDB_KEY: {"token": last_token, "source": self.upstream.name}},
        )

    def _failed(self, failure: Any, stored: int) -> None:
        self._disconnect()
        if isinstance(failure, UpstreamGap):
            self._gap(stored, str(failure))
            return
        if isinstance(failure, grpc.RpcError):
            code = failure.code()  # type: ignore[attr-defined]
            if code == grpc.StatusCode.OUT_OF_RANGE:
                token = self.state_of().get("token")
                self._gap(
                    stored,
                    f"{self.upstream.name} no longer has the changes after the index's "
                    f"revision {token!r} ({failure.details()}): it is older than "  # type: ignore[attr-defined]
                    "SpiceDB's watch window; rebuild the index ('leopard build --from "
                    f"{self.upstream.name}', or follow with --rebuild-on-gap)",
                )
                return
            if code in _FATAL:
                self.fatal = upstream_error(self.upstream, "Watch", failure)
                return
        elif failure is not _ENDED and not isinstance(failure, UpstreamError):
            self.fatal = UpstreamError(f"{self.upstream.name}: the Watch failed: {failure!r}")
            return
        # away or restarting: try again later, with backoff and full jitter
        self._failures += 1
        self.reconnects += 1
        base, cap = self.backoff
        self._retry_at = time.monotonic() + self.rng.uniform(
            base, min(cap, base * 2**self._failures)
        )

    def _gap(self, stored: int, reason: str) -> None:
        gap = Gap(SPICEDB_KEY, max(stored, 0), reason)
        self._gaps.append(gap)
        self.stopped[SPICEDB_KEY] = reason
        self.fatal = UpstreamGap(reason)


def _empty() -> Batch:
    return Batch([], {}, {})


class SpiceDBFollower(ChangeConsumer):
    """Follows a SpiceDB's Watch into an index: the consumer loop over ``WatchSource``
    (compaction, generation switches and waiters exactly as with Kafka)."""

    def __init__(
        self,
        index_path: str | Path,
        upstream: SpiceDBSource,
        *,
        index: Index | None = None,
        on_batch: Callable[[ConsumerStats], None] | None = None,
        rebuild_on_gap: bool = False,
        compact_threshold: int = 500_000,
        linger_ms: int = 0,
        backoff: tuple[float, float] = (0.2, 10.0),
    ) -> None:
        settings = ConsumerSettings(
            brokers=upstream.name,
            topics=[SPICEDB_KEY],
            format="spicedb",
            linger_ms=linger_ms,
            compact_threshold=compact_threshold,
        )
        super().__init__(index_path, settings, index=index, on_batch=on_batch)
        self.upstream = upstream
        self.rebuild_on_gap = rebuild_on_gap
        self.rebuilds = 0
        # duck-typed: the loop asks of it exactly what it asks of a KafkaSource
        self.source = WatchSource(  # type: ignore[assignment]
            upstream,
            lambda: self._target().source_state.get(SPICEDB_KEY, {}),
            lambda: self._target().position,
            backoff=backoff,
        )

    @property
    def watch(self) -> WatchSource:
        return self.source  # type: ignore[return-value]

    def _poll_once(self) -> int:
        got = super()._poll_once()
        fatal = self.watch.fatal
        if fatal is not None:
            if self.rebuild_on_gap and isinstance(fatal, UpstreamGap):
                self._rebuild(fatal)
            else:
                self.stop()
        return got

    def _rebuild(self, why: UpstreamGap) -> None:
        log.warning("%s; rebuilding the index from it", why)
        report = bootstrap(self.path, self.upstream, max_shrink=None, wait=True)
        self.rebuilds += 1
        log.warning(
            "rebuilt from %s at revision %s (%d relationships); following on",
            self.upstream.name,
            report.revision,
            report.relationships,
        )
        watch = self.watch
        watch.fatal = None
        watch.stopped.clear()
        self.stats.gaps = {}

    def run(self, *, idle_exit: float | None = None) -> ConsumerStats:
        """Follow until ``stop()``; raise the upstream's error (a gap, a refusal) that
        stopped it."""
        stats = super().run(idle_exit=idle_exit)
        if self.watch.fatal is not None:
            raise self.watch.fatal
        return stats
