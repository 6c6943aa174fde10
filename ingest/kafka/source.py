"""The Kafka source of change messages: polling, positions, dead letters, lag.

The loop that applies changes (``ingest.consumer``) knows nothing of Kafka: it asks
the source for the next batch of messages, hands undecodable ones back as dead
letters, and persists the batch's position (per ``topic:partition``, the next offset
to read) with the changes. The source positions every partition it is assigned at
the offsets the index holds (``position_of``), on start and after every rebalance,
whatever the group's committed offsets say; it commits offsets to the group only so
that lag shows in the usual tools.

Every kafka-python error is re-raised here as ``BrokerError``, the one boundary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ingest.kafka.client import (
    ConsumerRebalanceListener,
    KafkaConsumer,
    KafkaError,
    KafkaProducer,
    OffsetAndMetadata,
    TopicPartition,
)
from ingest.settings import KafkaSettings
from leopard.errors import BrokerError

__all__ = ["KafkaSettings", "KafkaSource", "Message", "Batch", "partition_key"]

log = logging.getLogger("leopard.consumer")


class Message(Protocol):
    """One message as the loop sees it (kafka-python's ``ConsumerRecord`` is one)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Batch:
    """Messages of one poll, in order per partition, and the position after them."""

    messages: list[Message]
    position: dict[str, int]


def partition_key(topic: str, partition: int) -> str:
    """The key of a partition in a position: ``topic:partition``."""
    return f"{topic}:{partition}"


class KafkaSource:
    """Batches of messages from Kafka topics, positioned where the index says."""

    def __init__(self, settings: KafkaSettings, position_of: Callable[[], dict[str, int]]) -> None:
        self.settings = settings
        self.position_of = position_of
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._uncommitted: dict[str, int] = {}  # applied, not yet committed to the group
        self._committed_at = 0.0

    # -- clients ------------------------------------------------------------------------

    def _client_config(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.settings.brokers.split(","), "client_id": "leopard"}

    def _open(self) -> KafkaConsumer:
        if self._consumer is None:
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
            self._consumer = consumer
        return self._consumer

    def _producer_client(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(**self._client_config(), acks="all", linger_ms=5)
        return self._producer

    def close(self) -> None:
        if self._consumer is not None and self._uncommitted:
            try:
                self._commit_now(sync=True)
            except BrokerError as exc:  # informational only, and closing must go on
                log.debug("final offset commit failed (harmless): %s", exc)
        for client in (self._consumer, self._producer):
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing must not hide the real outcome
                    pass
        self._consumer = self._producer = None

    # -- reading ------------------------------------------------------------------------

    @property
    def assigned(self) -> bool:
        """Whether partitions are assigned (false while joining the group)."""
        return self._consumer is not None and bool(self._consumer.assignment())

    def poll(self) -> Batch:
        """The next batch (empty when nothing came within ``poll_ms``)."""
        s = self.settings
        try:
            records = self._open().poll(timeout_ms=s.poll_ms, max_records=s.max_batch)
        except KafkaError as exc:
            topics = ", ".join(s.topics)
            raise BrokerError(f"polling {topics} at {s.brokers} failed: {exc}") from exc
        messages: list[Message] = []
        position: dict[str, int] = {}
        for tp, batch in records.items():
            messages.extend(batch)
            position[partition_key(tp.topic, tp.partition)] = batch[-1].offset + 1
        return Batch(messages, position)

    def seek_to_stored(self, partitions: list[TopicPartition] | None = None) -> None:
        """Position partitions (all assigned ones by default) at the index's offsets."""
        consumer = self._consumer
        if consumer is None:
            return
        if partitions is None:
            partitions = list(consumer.assignment())
        position = self.position_of()
        try:
            for tp in partitions:
                stored = position.get(partition_key(tp.topic, tp.partition))
                if stored is None:
                    consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, stored)
        except KafkaError as exc:
            raise BrokerError(f"seeking the stored offsets failed: {exc}") from exc

    def lag(self) -> dict[str, int]:
        """Messages behind the high watermark of the last fetch, per assigned partition.

        ``end_offsets()`` is not used: the local broker answers it with the start of
        the last record batch, which under-reports lag.
        """
        consumer = self._consumer
        if consumer is None:
            return {}
        position = self.position_of()
        lag = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None:
                key = partition_key(tp.topic, tp.partition)
                lag[key] = max(0, high - position.get(key, 0))
        return lag

    # -- writing ------------------------------------------------------------------------

    def dead_letter(self, dead: list[tuple[Message, str]]) -> None:
        """Send undecodable messages to the dead-letter topic, flushed before returning."""
        producer = self._producer_client()
        try:
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
        except KafkaError as exc:
            raise BrokerError(f"writing to the dead-letter topic failed: {exc}") from exc

    def commit(self, position: dict[str, int]) -> None:
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
        consumer = self._consumer
        if consumer is None:
            return
        offsets = {}
        for key, offset in self._uncommitted.items():
            topic, _, part = key.rpartition(":")
            offsets[TopicPartition(topic, int(part))] = OffsetAndMetadata(offset, "", -1)
        self._uncommitted = {}
        self._committed_at = time.monotonic()
        try:
            if sync:
                consumer.commit(offsets)
            else:
                consumer.commit_async(offsets, callback=_log_commit)
        except KafkaError as exc:  # informational only: the index holds the truth
            log.debug("offset commit failed (harmless): %s", exc)


class _Rebalance(ConsumerRebalanceListener):
    """Seeks newly assigned partitions to the offsets stored in the index."""

    def __init__(self, owner: KafkaSource) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned:
            self.owner.seek_to_stored(list(assigned))


def _log_commit(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):  # informational only: the index holds the truth
        log.debug("offset commit failed (harmless): %s", response)
