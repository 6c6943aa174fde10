"""The Kafka source of change messages: polling, positions, gaps, dead letters, liveness.

The loop that applies changes (``ingest.consumer``) knows nothing of Kafka: it asks the
source for the next batch, hands undecodable messages back as dead letters, and persists
the batch's position (per ``topic:partition``, the next offset to read). Each partition
assigned is positioned at the offset the index holds, on start and after every
rebalance; offsets are committed to the group only so that lag shows in the usual tools.

**Gaps are never skipped.** A partition's log may no longer hold what the index
applied up to: the broker restarted empty or the topic was recreated (the stored
offset lies beyond the log's end, or the record before it is another one), or
retention deleted messages before they were read (the stored offset lies before the
log's start). Kafka's own ``OFFSET_OUT_OF_RANGE`` says so too, but some brokers never
send it, so the source looks for itself, on every assignment and every fetch:

* the log's start (``beginning_offsets``) against the stored offset;
* the high watermark of each fetch against the stored offset;
* the *anchor*, the offset and digest of the last record applied: on assignment the
  partition is read from that record, which must come back unchanged.

At a gap the partition's records are held back and, by ``on_gap``, either the
partition stops (paused, reported, until an operator acts) or it goes on from the
log's start. Either way the loop hears of it (``take_gaps``).

**Nothing is lost around the dead-letter topic** (``ingest.kafka.deadletters``):
dead letters are acknowledged before the batch's offsets are persisted; on any
failure the loop rewinds to the stored offsets (``rewind``) instead of polling on
from where the fetch had got to.

**A silent broker is noticed**: while no records come, an ApiVersions request bounded
by ``probe_timeout`` is sent every ``probe_interval`` seconds (``probe``); **and so is
a group that splits the topics' partitions** with another index (``held_elsewhere``).

Every kafka-python error is re-raised here as ``BrokerError``, the one boundary.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ingest.kafka.client import (
    ConsumerRebalanceListener,
    CorruptRecordError,
    KafkaConsumer,
    KafkaError,
    KafkaProducer,
    OffsetAndMetadata,
    OffsetOutOfRangeError,
    TopicPartition,
)
from ingest.kafka.deadletters import DeadLetters, Message
from ingest.kafka.probe import broker_answers, require_brokers
from ingest.kafka.sharing import held_elsewhere
from ingest.settings import KafkaSettings
from leopard.errors import BrokerError

__all__ = ["Batch", "Gap", "KafkaSource", "Message", "anchor_of", "partition_key"]

log = logging.getLogger("leopard.consumer")


@dataclass
class Batch:
    """Messages of one poll, in order per partition, the position after them and the
    anchor (``anchor_of``) of each partition's last message."""

    messages: list[Message]
    position: dict[str, int]
    anchors: dict[str, list[int]]
    #: more resume state to persist with the batch, by section (a followed
    #: upstream's token: ``ingest.upstream``)
    state: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Gap:
    """A partition whose log no longer holds what the index applied up to."""

    partition: str  # "topic:partition"
    stored: int  # the next offset the index would apply
    reason: str
    log_start: int | None = None  # where the log now starts, when known
    resumed_at: int | None = None  # with on_gap="earliest": the offset read from now on

    def describe(self) -> str:
        text = f"gap in {self.partition}: {self.reason} (the index applied up to offset "
        text += f"{self.stored})"
        if self.resumed_at is not None:
            text += f"; going on from the log's start, offset {self.resumed_at}"
        return text


def partition_key(topic: str, partition: int) -> str:
    """The key of a partition in a position: ``topic:partition``."""
    return f"{topic}:{partition}"


def anchor_of(message: Message) -> list[int]:
    """``[offset, digest]`` of a message: what must be found there again on resume."""
    digest = zlib.crc32(message.key or b"")
    digest = zlib.crc32(b"\0", digest)
    digest = zlib.crc32(message.value or b"", digest)
    return [message.offset, digest]


class KafkaSource:
    """Batches of messages from Kafka topics, positioned where the index says: read
    from the index each time, ``position_of`` gives the stored position, ``anchors_of``
    the anchors (``[offset, digest]`` of the last record applied per partition) and
    ``gaps_of`` the gaps found earlier and not yet resolved (partition -> description)."""

    def __init__(
        self,
        settings: KafkaSettings,
        position_of: Callable[[], dict[str, int]],
        anchors_of: Callable[[], dict[str, list[int]]] = dict,
        gaps_of: Callable[[], dict[str, str]] = dict,
    ) -> None:
        self.settings = settings
        self.position_of = position_of
        self.anchors_of = anchors_of
        self.gaps_of = gaps_of
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._dead: DeadLetters | None = None
        self._uncommitted: dict[str, int] = {}  # applied, not yet committed to the group
        self._committed_at = 0.0
        self._verify: dict[TopicPartition, list[int]] = {}  # anchors to find again
        self._unchecked: set[TopicPartition] = set()  # positioned, log not checked yet
        self._told_elsewhere: set[str] = set()  # topics said to start where nothing named
        #: partitions stopped at a gap (``on_gap="stop"``): partition -> description
        self.stopped: dict[str, str] = {}
        self._gaps: list[Gap] = []  # found since the loop last asked
        self._probed_at = 0.0

    # -- clients ------------------------------------------------------------------------

    def _client_config(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.settings.brokers.split(","), "client_id": "leopard"}

    @property
    def opened(self) -> bool:
        """Whether the consumer client was made (the brokers answered once)."""
        return self._consumer is not None

    def _open(self) -> KafkaConsumer:
        if self._consumer is None:
            s = self.settings
            # asked first, within probe_timeout: kafka-python would try to bootstrap
            # for 30 s, logging each attempt, and leak the sockets of a dead broker
            require_brokers(s.brokers, s.probe_timeout)
            try:
                consumer = self._consumer_client()
            except KafkaError as exc:
                raise BrokerError(f"cannot reach the brokers {s.brokers!r}: {exc}") from exc
            self._consumer = consumer
        return self._consumer

    def _consumer_client(self) -> KafkaConsumer:
        s = self.settings
        consumer = KafkaConsumer(
            **self._client_config(),
            group_id=s.group_id,
            enable_auto_commit=False,
            # never reset silently: an offset out of range is a gap (see above)
            auto_offset_reset="none",
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

    def close(self) -> None:
        if self._consumer is not None and self._uncommitted:
            self._commit_now(sync=True)
        for client in (self._consumer, self._producer):
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing must not hide the real outcome
                    pass
        self._consumer = self._producer = None
        self._dead = None

    # -- reading ------------------------------------------------------------------------

    @property
    def assigned(self) -> bool:
        """Whether partitions are assigned (false while joining the group)."""
        return self._consumer is not None and bool(self._consumer.assignment())

    def poll(self) -> Batch:
        """The next batch (empty when nothing came within ``poll_ms``).

        Records of a partition found in a gap are held back; ``take_gaps`` says which.
        """
        s = self.settings
        consumer = self._open()
        self._check_logs()
        try:
            records = consumer.poll(timeout_ms=s.poll_ms, max_records=s.max_batch)
        except OffsetOutOfRangeError as exc:
            offsets = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
            for tp in offsets:
                self._gap(tp, "the broker says the offset is out of range for the log")
            return Batch([], {}, {})
        except CorruptRecordError as exc:
            # kafka-python cannot parse a record (a header key that is not UTF-8, which
            # the protocol allows, say) and does not say which: it is asked again, and
            # nothing after it is applied until it reads
            topics = ", ".join(s.topics)
            raise BrokerError(
                f"a record of {topics} at {s.brokers} cannot be read by the Kafka client "
                f"({exc}); nothing after it is applied until it can be"
            ) from exc
        except KafkaError as exc:
            topics = ", ".join(s.topics)
            raise BrokerError(f"polling {topics} at {s.brokers} failed: {exc}") from exc
        stored = self.position_of()
        messages: list[Message] = []
        position: dict[str, int] = {}
        anchors: dict[str, list[int]] = {}
        for tp, batch in records.items():
            key = partition_key(tp.topic, tp.partition)
            if tp in self._verify:
                batch = self._check_anchor(tp, batch)
            if not batch or key in self.stopped:
                continue
            messages.extend(batch)
            position[key] = batch[-1].offset + 1
            anchors[key] = anchor_of(batch[-1])
        self._check_ends(stored)
        self._check_logs()  # partitions assigned during this poll
        if messages:
            self._probed_at = time.monotonic()  # records came: the broker is up
        return Batch(messages, position, anchors)

    def _check_anchor(self, tp: TopicPartition, batch: list[Any]) -> list[Any]:
        """The records after the anchor, once it has come back as it was; else a gap."""
        offset, digest = self._verify.pop(tp)
        first = batch[0]
        if first.offset == offset:
            if anchor_of(first) == [offset, digest]:
                return batch[1:]  # the record applied last, found again: go on after it
            self._gap(tp, f"the record at offset {offset} is not the one applied there")
            return []
        if first.offset == offset + 1:
            return batch  # the anchor was deleted (retention), but nothing unread was
        self._gap(tp, f"the log holds offset {first.offset} where {offset} was expected")
        return []

    def _check_ends(self, stored: dict[str, int]) -> None:
        """A stored offset beyond a partition's high watermark: the log was reset."""
        consumer = self._consumer
        assert consumer is not None
        for tp in consumer.assignment():
            key = partition_key(tp.topic, tp.partition)
            at = stored.get(key)
            if at is None or key in self.stopped:
                continue
            high = consumer.highwater(tp)
            if high is not None and at > high:
                self._gap(tp, f"the log ends at offset {high}")

    def seek_to_stored(self, partitions: list[TopicPartition] | None = None) -> None:
        """Position partitions (all assigned ones by default) at the index's offsets.

        Only local work here, as the rebalance listener may do no more: each
        partition is paused until ``_check_logs`` (next poll, in the caller's thread)
        has asked the broker where its log starts now.
        """
        consumer = self._consumer
        if consumer is None:
            return
        if partitions is None:
            partitions = list(consumer.assignment())
        position = self.position_of()
        for tp in partitions:
            self._verify.pop(tp, None)
            key = partition_key(tp.topic, tp.partition)
            stored = position.get(key)
            if key in self.stopped:
                # paused, but given a position all the same: the client resets any
                # assigned partition without one, paused or not, and with no reset
                # policy every poll then fails (the other partitions stall with it)
                consumer.pause(tp)
                if stored is None:
                    consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, stored)
                continue
            if stored is None:  # nothing applied yet: the whole log is to be read
                self._tell_elsewhere(tp.topic, position)
                consumer.seek_to_beginning(tp)
                consumer.resume(tp)
            else:
                consumer.pause(tp)
                consumer.seek(tp, stored)
                self._unchecked.add(tp)

    def _tell_elsewhere(self, topic: str, position: dict[str, int]) -> None:
        """Warn, once a topic, when the index is positioned in other topics and not in
        ``topic`` (``build --position`` naming another, say): it is read from its start."""
        if topic in self._told_elsewhere:
            return
        others = sorted({k.rpartition(":")[0] for k in position if ":" in k})
        if others and topic not in others:
            self._told_elsewhere.add(topic)
            log.warning(
                "the index's position names topic(s) %s, not %r: reading %r from its "
                "beginning (a typo in 'leopard build --position'?)",
                ", ".join(map(repr, others)),
                topic,
                topic,
            )

    def _check_logs(self) -> None:
        """For partitions just positioned: does the log still hold the stored offset?
        Then read on from there, or from the anchor, to find it again (see above)."""
        consumer = self._consumer
        assert consumer is not None
        unchecked = [tp for tp in self._unchecked if tp in consumer.assignment()]
        self._unchecked.clear()
        if not unchecked:
            return
        position, anchors, known = self.position_of(), self.anchors_of(), self.gaps_of()
        try:
            starts = consumer.beginning_offsets(unchecked)
        except KafkaError as exc:
            self._unchecked.update(unchecked)  # asked again at the next poll
            raise BrokerError(f"asking where the logs start failed: {exc}") from exc
        for tp in unchecked:
            key = partition_key(tp.topic, tp.partition)
            stored = position.get(key, 0)
            start = starts.get(tp)
            if key in known:
                if self.settings.on_gap == "stop":
                    self.stopped[key] = known[key]
                    log.error("%s; still not applying this partition", known[key])
                else:
                    self._gap(tp, f"found earlier: {known[key]}")
                continue
            if start is not None and stored < start:
                self._gap(tp, f"the log now starts at offset {start}: messages were deleted")
                continue
            anchor = anchors.get(key)
            if anchor is not None and anchor[0] == stored - 1 and (start or 0) <= anchor[0]:
                self._verify[tp] = list(anchor)
                consumer.seek(tp, anchor[0])
            consumer.resume(tp)

    def rewind(self) -> None:
        """Back to the stored offsets: what was fetched but not applied is read again.

        Local only (no request to the broker), so it works while the broker is away.
        """
        consumer = self._consumer
        if consumer is None:
            return
        position = self.position_of()
        for tp in consumer.assignment():
            key = partition_key(tp.topic, tp.partition)
            if tp in self._verify or tp in self._unchecked or key in self.stopped:
                continue  # still to be checked or found again from its anchor, or stopped
            stored = position.get(key)
            if stored is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, stored)

    def _gap(self, tp: TopicPartition, reason: str) -> None:
        consumer = self._consumer
        assert consumer is not None
        key = partition_key(tp.topic, tp.partition)
        stored = self.position_of().get(key, 0)
        self._verify.pop(tp, None)
        try:
            start = consumer.beginning_offsets([tp]).get(tp)
        except KafkaError:
            start = None
        if self.settings.on_gap == "earliest":
            consumer.seek_to_beginning(tp)
            consumer.resume(tp)
            gap = Gap(key, stored, reason, start, resumed_at=start if start is not None else 0)
            log.error("%s", gap.describe())
        else:
            consumer.pause(tp)
            gap = Gap(key, stored, reason, start)
            self.stopped[key] = gap.describe()
            log.error(
                "%s; not applying this partition (restart with --on-gap earliest if going "
                "on from the log's start is safe, or rebuild the index)",
                gap.describe(),
            )
        self._gaps.append(gap)

    def take_gaps(self) -> list[Gap]:
        """Gaps found since the last call."""
        gaps, self._gaps = self._gaps, []
        return gaps

    def held_elsewhere(self) -> list[str]:  # partitions the group gave another member
        return held_elsewhere(self._consumer, self.settings.topics)

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

    def probe(self) -> bool | None:
        """Whether the broker answers within ``probe_timeout`` (``broker_answers``);
        None when it is not time to ask (records came, or the last probe was recent)."""
        now = time.monotonic()
        if now - self._probed_at < self.settings.probe_interval:
            return None
        self._probed_at = now
        return broker_answers(self.settings.brokers, self.settings.probe_timeout)

    # -- writing ------------------------------------------------------------------------

    def dead_letter(self, dead: list[tuple[Message, str]]) -> None:
        """Write undecodable messages to the dead-letter topic (see ``DeadLetters``)."""
        if self._dead is None:
            self._dead = DeadLetters(self._producer_client(), self.settings.dlq_topic)
        self._dead.write(dead)

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

    def on_partitions_revoked(self, revoked: Any) -> None:  # nothing to do
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned:
            self.owner.seek_to_stored(list(assigned))


def _log_commit(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):  # informational only: the index holds the truth
        log.debug("offset commit failed (harmless): %s", response)
