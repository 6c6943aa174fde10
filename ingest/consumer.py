"""The streaming consumer: a loop of source -> decode -> apply -> persist.

Each batch the source (``ingest.kafka.source``) polls is decoded (``ingest.codecs``),
applied as one coalesced batch, and persisted together with the batch's position in
one RocksDB write batch (``DeltaWriter``). The position in the index is the truth:
the source seeks every partition to it, on start and after every rebalance. A crash
at any point therefore neither loses nor doubles a change: the batch and its position
land together or not at all, and replaying a change is harmless.

A message that cannot be decoded goes to a dead-letter topic with the reason and its
source in headers, and the consumer carries on; one bad item of a message of several
(a Watch response, a ReadChanges page) goes there alone, with its index in the
message, and the message's other items are applied. A broker that stops answering is
retried with backoff and logged once per outage; one that does not answer at the
start is retried the same way, or ends ``run`` with one error (``stop_if_unreachable``).

A topic fed by ``leopard bridge`` carries SpiceDB's revision in a header of each
record (``ingest.upstream.headers``): the index's position then holds the revision all
partitions have passed, so its tokens carry it and a ZedToken is waited for as with a
follower; a record at or below the revision the index has is not applied again.

When the incremental layer grows past a threshold, compaction runs in a child
process (``leopard.core.compact.start_compaction``); when a new generation appears
(from it or from ``leopard compact``), the consumer applies the stream to it from its
position, and the index serves it once it has caught up (``leopard.core.successor``).
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

from ingest.codecs import decode_message
from ingest.codecs.fields import Change, Op
from ingest.kafka.deadletters import ItemMessage
from ingest.kafka.sharing import Sharing
from ingest.kafka.source import Batch, Gap, KafkaSource, Message
from ingest.settings import ConsumerSettings
from ingest.upstream.headers import BridgedRevisions
from leopard.core.compact import start_compaction
from leopard.core.incremental import DeltaWriter, collector_paused
from leopard.core.index import Index
from leopard.core.layers import SetReader
from leopard.core.successor import Successor, live_generation
from leopard.errors import BrokerError, DecodeError, StreamGap, UpstreamError
from leopard.model.edges import schema_refusal
from leopard.model.names import RelationTuple, format_tuple

__all__ = ["ConsumerSettings", "ConsumerStats", "ChangeConsumer", "consume"]

log = logging.getLogger("leopard.consumer")

#: seconds before a failed compaction is tried again
COMPACT_RETRY = 30.0


@dataclass
class ConsumerStats:
    batches: int = 0
    messages: int = 0
    changes: int = 0
    member_changes: int = 0
    edge_changes: int = 0
    skipped: int = 0  # changes of relations that feed no indexed set
    refused: int = 0  # changes the schema refuses (dead-lettered, or logged: see _refused)
    dead_letters: int = 0
    compactions: int = 0
    last_batch_seconds: float = 0.0
    lag: dict[str, int] = field(default_factory=dict)
    broker_up: bool = True
    #: while the source is unreachable: why, as the last failure said it
    outage: str | None = None
    #: partitions stopped at a gap: "topic:partition" -> what the gap is
    gaps: dict[str, str] = field(default_factory=dict)
    #: partitions of the topics the consumer group gave another member (see
    #: ``ingest.kafka.sharing``): "topic:partition" -> why
    elsewhere: dict[str, str] = field(default_factory=dict)
    gap_events: int = 0  # gaps found, stopped at or gone on from

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
        stop_if_unreachable: bool = False,
    ) -> None:
        self.path = Path(index_path)
        #: brokers that do not answer at the start end ``run`` with the BrokerError
        #: (``leopard consume``); else they are retried, as an outage later always is
        self.stop_if_unreachable = stop_if_unreachable
        self.settings = settings
        self.index = index if index is not None else Index(self.path)
        self.index.expect_local_writer()
        self.writer = DeltaWriter(self.index.reader)
        self._refusals: dict[tuple[object, ...], str | None] = {}  # by the writer's schema
        self.stats = ConsumerStats()
        self.on_batch = on_batch
        self.source = KafkaSource(
            settings,
            lambda: self._target().position,
            lambda: self._target().source_state.get("anchors", {}),
            lambda: self._target().source_state.get("gaps", {}),
        )
        self._stop = threading.Event()
        self._compactor: subprocess.Popen[bytes] | None = None
        self._compact_after = 0.0  # no compaction before (after a failed one)
        # after a generation switch: the writer applies to it, queries do not see it
        # until it has caught up
        self._pending: Successor | None = None
        self._sharing: Sharing | None = None

    def _share(self) -> Sharing | None:
        """The watch over the group's split of the topics (a Kafka source's alone)."""
        if self._sharing is None and isinstance(self.source, KafkaSource):
            self._sharing = Sharing(self.source.held_elsewhere, self.settings.group_id)
        return self._sharing

    def upstream_head(self, timeout: float) -> dict[str, int] | None:
        """The head of a followed upstream as of now (SpiceDB's revision), or None
        when the source cannot be asked (a Kafka topic's head comes with fetches)."""
        head = getattr(self.source, "head", None)
        if head is None:
            return None
        stopped = getattr(self.source, "fatal", None)
        if stopped is not None:  # a gap, a refusal: it applies nothing more
            raise UpstreamError(f"the follower has stopped: {stopped}")
        return head(timeout)  # type: ignore[no-any-return]

    def _target(self) -> SetReader:
        """The reader the writer applies to: the pending generation, else the served."""
        return self._pending.reader if self._pending is not None else self.index.reader

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
        self.source.close()
        self.writer.close()
        if self._pending is not None:
            self._pending.close()
            self._pending = None

    # -- the loop ---------------------------------------------------------------------

    def run(self, *, idle_exit: float | None = None) -> ConsumerStats:
        """Consume until ``stop()``; with ``idle_exit``, also stop after that many idle seconds."""
        backoff = 0.2
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    self._follow_generation()
                    # a batch's records, as its changes, are freed with it: the cyclic
                    # collector waits until the batch is applied (see collector_paused)
                    with collector_paused():
                        got = self._poll_once()
                except BrokerError as exc:
                    if self.stop_if_unreachable and not getattr(self.source, "opened", True):
                        raise
                    self._outage(exc)
                    # what was fetched and not applied is fetched again, never skipped
                    self.source.rewind()
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.2
                if got and self.settings.linger_ms > 0 and not any(self.stats.lag.values()):
                    # Caught up on a trickle of changes: let more gather before the
                    # next poll (see ConsumerSettings.linger_ms). A backlog is read on
                    # without waiting.
                    self._stop.wait(self.settings.linger_ms / 1000)
                if got or (not self.source.assigned and not self.stats.elsewhere):
                    # Idle means nothing left to read, not still joining the group
                    # (a second here, three with Kafka's default rebalance delay); a
                    # member the group gives nothing for good is idle (and says so).
                    idle_since = time.monotonic()
                elif idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                    sharing = self._share()
                    if sharing is not None:  # at the end, a split of any age is said
                        self.stats.elsewhere = sharing.why(sharing.held())
                    break
                self._maybe_compact()
        finally:
            self.close()
        return self.stats

    def _outage(self, exc: Exception | str) -> None:
        said = str(exc)
        if self.stats.broker_up or said != self.stats.outage:  # once per distinct cause
            log.warning("change source unavailable (%s); retrying with backoff", said)
        self.stats.broker_up = False
        self.stats.outage = said

    def _up(self) -> None:
        if not self.stats.broker_up:
            log.warning("change source reachable again; resuming")
            self.stats.broker_up = True
            self.stats.outage = None

    def _poll_once(self) -> int:
        batch = self.source.poll()
        gaps = self.source.take_gaps()
        if gaps:
            self._record_gaps(gaps)
        if batch.messages:
            self._up()
            self._apply(batch)
        elif batch.position:
            # A followed upstream's checkpoint: no change, but its revision moved on.
            # Persisted, so that the token of a write that changed nothing (a touch of a
            # present relationship) is reached, and a restart resumes from there.
            self._up()
            self._advance(batch)
        else:
            answered = self.source.probe()
            if answered is True:
                self._up()
            elif answered is False:
                self._outage(
                    f"no answer to a metadata request within {self.settings.probe_timeout:g} s"
                )
        self.stats.lag = self.source.lag()
        sharing = self._share()
        if sharing is not None:
            self.stats.elsewhere = sharing.look()
        self.stats.gaps = dict(self.source.stopped)
        if batch.messages and self.on_batch is not None:
            self.on_batch(self.stats)
        return len(batch.messages)

    def _apply(self, batch: Batch) -> None:
        started = time.perf_counter()
        s = self.settings
        changes = []
        dead: list[tuple[Message, str]] = []
        bridged = BridgedRevisions(self._target())
        refusal = self._refusal if self.writer.config.plan is not None else None
        for m in batch.messages:
            if not bridged.take(m):
                continue  # a marker of the bridge, or a change the index already has
            try:
                decoded = decode_message(s.format, m.value, options=s.codec_options)
            except DecodeError as exc:
                dead.append((m, str(exc)))
                continue
            except StreamGap as exc:  # nothing of the batch is applied: stopped here again
                raise StreamGap(f"{m.topic}:{m.partition} offset {m.offset}: {exc}") from None
            if refusal is None:
                for c in decoded.changes:
                    changes.append((c.op, c.tuple))
            else:
                refused = self._refused(m, decoded.changes, changes, refusal)
                dead.extend(refused)
            for r in decoded.rejected:
                dead.append((ItemMessage.of(m, r.item, r.value), r.reason))
        if dead:
            self.source.dead_letter(dead)
            self.stats.dead_letters += len(dead)
        position, state = batch.position, {"anchors": batch.anchors, **batch.state}
        if bridged.seen:
            position, state = bridged.persist(position, state)
        report = self.writer.apply(changes, position, source_state=state)
        stats = self.stats
        stats.batches += 1
        stats.messages += len(batch.messages)
        stats.changes += report.changes
        stats.member_changes += report.member_changes
        stats.edge_changes += report.edge_changes
        stats.skipped += report.skipped
        stats.last_batch_seconds = time.perf_counter() - started
        self._maybe_switch()
        self.source.commit(batch.position)

    def _advance(self, batch: Batch) -> None:
        """Persist the position (and resume state) of a batch without changes."""
        self.writer.apply(
            [], batch.position, source_state={"anchors": batch.anchors, **batch.state}
        )
        self.source.commit(batch.position)

    def _refusal(self, t: RelationTuple) -> str | None:
        """Why the schema refuses ``t`` (remembered by the tuple's kind)."""
        wild = t.subject_id == "*"
        kind = (t.resource_type, t.relation, t.subject_type, t.subject_relation, wild)
        cache = self._refusals
        if kind not in cache:
            cache[kind] = schema_refusal(self.writer.config, t)
        return cache[kind]

    def _refused(
        self,
        m: Message,
        decoded: list[Change],
        changes: list[tuple[Op, RelationTuple]],
        refusal: Callable[[RelationTuple], str | None],
    ) -> list[tuple[Message, str]]:
        """Add the changes of ``m`` the schema takes to ``changes``; the dead letter of
        the one it refuses, if any. A message of several changes (a Watch response, a
        ReadChanges page) is not dead-lettered for a change the schema refuses: published
        again it would apply its other changes a second time, after later ones; each
        such change is logged (naming the message and why) and counted instead."""
        why = []
        for c in decoded:
            reason = refusal(c.tuple)
            if reason is None:
                changes.append((c.op, c.tuple))
            else:
                why.append(f"{format_tuple(c.tuple)}: {reason}")
        if not why:
            return []
        self.stats.refused += len(why)
        if len(decoded) > 1:
            for said in why:
                log.warning(
                    "%s:%d offset %d: a change refused by the index's schema, not applied "
                    "(the message's others are): %s",
                    m.topic, m.partition, m.offset, said,
                )  # fmt: skip
            return []
        return [(m, "refused by the index's schema: " + why[0])]

    def _record_gaps(self, gaps: list[Gap]) -> None:
        """Persist what the source found: a partition stopped at a gap (so readers
        elsewhere refuse versions of it too), or one going on from its log's start
        (its position reset at once, so no version of the new log reads as reached)."""
        position: dict[str, int] = {}
        state: dict[str, dict[str, object]] = {"gaps": {}, "anchors": {}}
        for gap in gaps:
            self.stats.gap_events += 1
            if gap.resumed_at is None:
                state["gaps"][gap.partition] = gap.describe()
            else:
                position[gap.partition] = gap.resumed_at
                state["gaps"][gap.partition] = None
                state["anchors"][gap.partition] = None
        self.writer.apply([], position, source_state=state)
        self.stats.gaps = dict(self.source.stopped)

    # -- generations ------------------------------------------------------------------

    def _follow_generation(self) -> None:
        """Apply to a generation that compaction (or a rebuild) swapped in."""
        live = live_generation(self.path)
        if live == self._target().generation:
            self._maybe_switch()  # one held back, without batches to bring it
            return
        log.info("new index generation %s; resuming from its position", live.name)
        self.writer.close()
        if self._pending is not None:
            self._pending.close()
        self._pending = Successor.open(
            self.path, target=self.index.reader.position, lock=self.index.lock
        )
        self.writer = DeltaWriter(self._pending.reader)
        self._refusals = {}  # a rebuild may have brought another schema
        self.source.seek_to_stored()
        self._maybe_switch()

    def _maybe_switch(self) -> None:
        pending = self._pending
        if pending is None or not pending.caught_up() or not self.index.may_serve(pending.reader):
            return  # (a shard's new build: once the sharded index's manifest names it)
        self._pending = None
        self.index.switch_to(pending.reader)
        log.info("queries now read generation %s", pending.generation.name)

    def _maybe_compact(self) -> None:
        if self._compactor is not None:
            if self._compactor.poll() is None:
                return
            # read and close its stderr pipe: left open it leaks a file descriptor
            # per compaction (a ResourceWarning), and it holds the reason of a failure
            _, err = self._compactor.communicate()
            if self._compactor.returncode != 0:
                # try again later, not at once (a build may hold the index's lock)
                self._compact_after = time.monotonic() + COMPACT_RETRY
                log.warning(
                    "compaction exited with status %d (retrying in %g s): %s",
                    self._compactor.returncode,
                    COMPACT_RETRY,
                    (err or b"").decode(errors="replace").strip()[-2000:],
                )
            else:
                self.stats.compactions += 1
            self._compactor = None
        reader = self._target()
        if time.monotonic() < self._compact_after:
            return
        if reader.overlay.size() >= self.settings.compact_threshold:
            log.info("incremental layer holds %d sets; compacting", reader.overlay.size())
            self._compactor = start_compaction(self.path)


def consume(
    index_path: str | Path, settings: ConsumerSettings, *, idle_exit: float | None = None
) -> ConsumerStats:
    """Run a consumer in the foreground until SIGTERM/SIGINT (or ``idle_exit`` seconds idle)."""
    consumer = ChangeConsumer(index_path, settings)
    consumer.install_signal_handlers()
    return consumer.run(idle_exit=idle_exit)
