"""The streaming consumer: Kafka change events into the incremental layer.

Each poll batch is decoded, applied as one coalesced batch, and persisted together
with the next offsets in one RocksDB write batch (``DeltaWriter``). The offsets in
the index are the truth: on start, and after every rebalance, partitions are sought
to them, whatever the group's committed offsets say; those are committed too, after
persisting, only so that lag shows in the usual tools. A crash at any point
therefore neither loses nor doubles a change: the batch and its offsets land
together or not at all, and replaying a change is harmless.

A message that cannot be decoded goes to a dead-letter topic with the reason and
its source in headers, and the consumer carries on. A broker that stops answering
is retried with backoff and logged once per outage.

When the incremental layer grows past a threshold, compaction runs in a child
process; when a new generation appears (from it or from ``leopard compact``), the
consumer resumes from that generation's position and swaps the index over once it
has caught up with where it was.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.codecs import CODECS, decode
from ingest.kafka.client import (
    ConsumerRebalanceListener,
    KafkaConsumer,
    KafkaError,
    KafkaProducer,
    OffsetAndMetadata,
    TopicPartition,
)
from leopard.core.compact import start_compaction
from leopard.core.incremental import DeltaWriter
from leopard.core.index import Index
from leopard.core.layers import SetReader
from leopard.errors import DecodeError, InvalidInput, LeopardError
from leopard.model.tokens import reached
from leopard.store.generations import IndexDir

__all__ = ["ConsumerSettings", "ConsumerStats", "ChangeConsumer"]

log = logging.getLogger("leopard.consumer")


@dataclass
class ConsumerSettings:
    brokers: str
    topics: list[str]
    group_id: str = "leopard"
    format: str = "native"
    codec_options: dict[str, str] = field(default_factory=dict)
    dlq_topic: str | None = None  # default: "<topic>.dlq"
    max_batch: int = 20_000
    poll_ms: int = 100
    commit_interval: float = 1.0  # seconds between commits of offsets to the group
    # After a batch that caught up, wait this long before polling again. A trickle
    # of changes would otherwise be fetched and applied a few at a time, each
    # fetch and batch paying for a round trip, a write and a cache invalidation,
    # which costs queries in the same process more than the changes themselves.
    linger_ms: int = 50
    compact_threshold: int = 500_000  # sets in the incremental layer
    # With the local broker a group join answers only after about half the session
    # timeout (whole seconds): 2 s of session makes a (re)start join in ~1 s.
    max_poll_interval_ms: int = 10_000
    session_timeout_ms: int = 2_000
    heartbeat_interval_ms: int = 500

    def __post_init__(self) -> None:
        if self.format not in CODECS:
            raise InvalidInput(f"--format {self.format!r} is not one of {', '.join(CODECS)}")
        if not self.topics:
            raise InvalidInput("at least one --topic is needed")


@dataclass
class ConsumerStats:
    batches: int = 0
    messages: int = 0
    changes: int = 0
    member_changes: int = 0
    edge_changes: int = 0
    skipped: int = 0
    dead_letters: int = 0
    compactions: int = 0
    last_batch_seconds: float = 0.0
    lag: dict[str, int] = field(default_factory=dict)
    broker_up: bool = True

    def total_lag(self) -> int:
        return sum(self.lag.values())


class ChangeConsumer:
    """Consumes change topics into an index; ``run`` loops until ``stop`` is called."""

    def __init__(
        self,
        index_path: str | Path,
        settings: ConsumerSettings,
        *,
        index: Index | None = None,
        on_batch: Callable[[ConsumerStats], None] | None = None,
    ) -> None:
        self.path = Path(index_path)
        self.settings = settings
        self.index = index if index is not None else Index(self.path)
        self.index.live = True
        self.writer = DeltaWriter(self.index.reader)
        self.stats = ConsumerStats()
        self.on_batch = on_batch
        self._stop = threading.Event()
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._compactor: subprocess.Popen[bytes] | None = None
        # after a generation switch: the writer applies to a reader that queries
        # do not see yet, until it reaches `_catch_up_to`
        self._pending: SetReader | None = None
        self._catch_up_to: dict[str, int] = {}
        self._uncommitted: dict[str, int] = {}  # applied, not yet committed to the group
        self._committed_at = 0.0

    # -- lifecycle ------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the batch in hand and return from ``run``."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def close(self) -> None:
        if self._compactor is not None and self._compactor.poll() is None:
            # A compaction left running would swap in a base older than what this
            # consumer applied since it started; stop it (its half-built generation
            # is cleaned up by the next build or compaction).
            self._compactor.terminate()
            try:
                self._compactor.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self._compactor.kill()
                self._compactor.communicate()
        self._compactor = None
        if self._consumer is not None and self._uncommitted:
            try:
                self._commit_now(sync=True)
            except Exception as exc:  # informational only, and closing must go on
                log.debug("final offset commit failed (harmless): %s", exc)
        for client in (self._consumer, self._producer):
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing must not hide the real outcome
                    pass
        self._consumer = self._producer = None
        self.writer.close()
        if self._pending is not None:
            self._pending.close()
            self._pending = None

    # -- kafka ------------------------------------------------------------------------

    def _client_config(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.settings.brokers.split(","), "client_id": "leopard"}

    def _open_consumer(self) -> KafkaConsumer:
        s = self.settings
        consumer = KafkaConsumer(
            **self._client_config(),
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=s.max_poll_interval_ms,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_records=s.max_batch,
            fetch_max_wait_ms=max(10, s.poll_ms),
        )
        consumer.subscribe(topics=s.topics, listener=_Rebalance(self))
        return consumer

    def _producer_client(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(**self._client_config(), acks="all", linger_ms=5)
        return self._producer

    def seek_to_stored(self, partitions: list[TopicPartition]) -> None:
        """Position assigned partitions at the offsets stored in the index."""
        assert self._consumer is not None
        reader = self._pending or self.index.reader
        position = reader.position
        for tp in partitions:
            stored = position.get(f"{tp.topic}:{tp.partition}")
            if stored is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, stored)

    # -- the loop ---------------------------------------------------------------------

    def run(self, *, idle_exit: float | None = None) -> ConsumerStats:
        """Consume until ``stop()``; with ``idle_exit``, also stop after that many idle seconds."""
        backoff = 0.2
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    if self._consumer is None:
                        self._consumer = self._open_consumer()
                    self._follow_generation()
                    got = self._poll_once()
                except KafkaError as exc:
                    self._outage(exc)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.2
                if got and self.settings.linger_ms > 0 and not any(self.stats.lag.values()):
                    # Caught up on a trickle of changes: let more gather before the
                    # next poll (see ConsumerSettings.linger_ms). A backlog is read on
                    # without waiting.
                    self._stop.wait(self.settings.linger_ms / 1000)
                if got or not self._consumer.assignment():
                    # Idle means nothing left to read, not still joining the group
                    # (a second here, three with Kafka's default rebalance delay).
                    idle_since = time.monotonic()
                elif idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                    break
                self._maybe_compact()
        finally:
            self.close()
        return self.stats

    def _outage(self, exc: Exception) -> None:
        if self.stats.broker_up:
            log.warning("broker unavailable (%s); retrying with backoff", exc)
            self.stats.broker_up = False

    def _poll_once(self) -> int:
        assert self._consumer is not None
        s = self.settings
        records = self._consumer.poll(timeout_ms=s.poll_ms, max_records=s.max_batch)
        if not self.stats.broker_up and self._consumer.assignment():
            log.warning("broker reachable again; resuming")
            self.stats.broker_up = True
        if not records:
            self._update_lag()
            return 0
        started = time.perf_counter()
        changes = []
        dead: list[tuple[Any, str]] = []
        position: dict[str, int] = {}
        count = 0
        for tp, messages in records.items():
            for m in messages:
                count += 1
                try:
                    for c in decode(s.format, m.value, options=s.codec_options):
                        changes.append((c.op, c.tuple))
                except DecodeError as exc:
                    dead.append((m, str(exc)))
            position[f"{tp.topic}:{tp.partition}"] = messages[-1].offset + 1
        if dead:
            self._dead_letter(dead)
        report = self.writer.apply(changes, position)
        self.stats.batches += 1
        self.stats.messages += count
        self.stats.changes += report.changes
        self.stats.member_changes += report.member_changes
        self.stats.edge_changes += report.edge_changes
        self.stats.skipped += report.skipped
        self.stats.last_batch_seconds = time.perf_counter() - started
        self._maybe_swap()
        self._commit(position)
        self._update_lag()
        if self.on_batch is not None:
            self.on_batch(self.stats)
        return count

    def _dead_letter(self, dead: list[tuple[Any, str]]) -> None:
        """Send undecodable messages to the DLQ, flushed before their offsets persist."""
        producer = self._producer_client()
        for m, reason in dead:
            topic = self.settings.dlq_topic or f"{m.topic}.dlq"
            headers = [
                ("leopard.reason", reason.encode()),
                ("leopard.source.topic", m.topic.encode()),
                ("leopard.source.partition", str(m.partition).encode()),
                ("leopard.source.offset", str(m.offset).encode()),
            ]
            producer.send(topic, key=m.key, value=m.value or b"", headers=headers)
            log.info("dead letter %s:%d@%d: %s", m.topic, m.partition, m.offset, reason)
        producer.flush(timeout=30)
        self.stats.dead_letters += len(dead)

    def _commit(self, position: dict[str, int]) -> None:
        """Commit applied offsets to the group, at most once per ``commit_interval``.

        The committed offsets only inform the usual lag tools (the index's own win on
        a restart), so they are sent in the background, not once per batch: under a
        steady trickle of changes a round trip per batch costs queries in the same
        process more than the changes do. Closing commits what is left.
        """
        self._uncommitted.update(position)
        if time.monotonic() - self._committed_at >= self.settings.commit_interval:
            self._commit_now(sync=False)

    def _commit_now(self, *, sync: bool) -> None:
        assert self._consumer is not None
        offsets = {}
        for key, offset in self._uncommitted.items():
            topic, _, part = key.rpartition(":")
            offsets[TopicPartition(topic, int(part))] = OffsetAndMetadata(offset, "", -1)
        self._uncommitted = {}
        self._committed_at = time.monotonic()
        try:
            if sync:
                self._consumer.commit(offsets)
            else:
                self._consumer.commit_async(offsets, callback=_log_commit)
        except KafkaError as exc:  # informational only: the index holds the truth
            log.debug("offset commit failed (harmless): %s", exc)

    def _update_lag(self) -> None:
        """Lag per partition from the high watermark of the last fetch.

        ``end_offsets()`` is not used: the local broker answers it with the start of
        the last record batch, which under-reports lag.
        """
        assert self._consumer is not None
        position = (self._pending or self.index.reader).position
        lag = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is not None:
                key = f"{tp.topic}:{tp.partition}"
                lag[key] = max(0, high - position.get(key, 0))
        self.stats.lag = lag

    # -- generations ------------------------------------------------------------------

    def _follow_generation(self) -> None:
        """Switch to a generation that compaction (or a rebuild) swapped in."""
        current = IndexDir(self.path).current()
        live = (self._pending or self.index.reader).generation
        if current == live:
            return
        log.info("new index generation %s; resuming from its position", current.name)
        self.writer.close()
        if self._pending is not None:
            self._pending.close()
        fresh = SetReader.open(self.path)
        self._pending = fresh
        self._catch_up_to = dict(self.index.reader.position)
        self.writer = DeltaWriter(fresh)
        if self._consumer is not None and self._consumer.assignment():
            self.seek_to_stored(list(self._consumer.assignment()))
        self._maybe_swap()

    def _maybe_swap(self) -> None:
        if self._pending is None or not reached(self._pending.position, self._catch_up_to):
            return
        old = self.index.reader
        self.index.swap_reader(self._pending)
        self._pending = None
        old.close()
        log.info("queries now read generation %s", self.index.reader.generation.name)

    def _maybe_compact(self) -> None:
        if self._compactor is not None:
            if self._compactor.poll() is None:
                return
            # read and close its stderr pipe: left open it leaks a file descriptor
            # per compaction (a ResourceWarning), and it holds the reason of a failure
            _, err = self._compactor.communicate()
            if self._compactor.returncode != 0:
                log.warning(
                    "compaction exited with status %d: %s",
                    self._compactor.returncode,
                    (err or b"").decode(errors="replace").strip()[-2000:],
                )
            else:
                self.stats.compactions += 1
            self._compactor = None
        reader = self._pending or self.index.reader
        if reader.overlay.size() >= self.settings.compact_threshold:
            log.info("incremental layer holds %d sets; compacting", reader.overlay.size())
            self._compactor = start_compaction(self.path)


class _Rebalance(ConsumerRebalanceListener):
    """Seeks newly assigned partitions to the offsets stored in the index."""

    def __init__(self, owner: ChangeConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned:
            self.owner.seek_to_stored(list(assigned))


def consume(
    index_path: str | Path, settings: ConsumerSettings, *, idle_exit: float | None = None
) -> ConsumerStats:
    """Run a consumer in the foreground until SIGTERM/SIGINT (or ``idle_exit`` seconds idle)."""
    try:
        consumer = ChangeConsumer(index_path, settings)
    except LeopardError:
        raise
    consumer.install_signal_handlers()
    return consumer.run(idle_exit=idle_exit)


def _log_commit(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):  # informational only: the index holds the truth
        log.debug("offset commit failed (harmless): %s", response)
