"""``leopard bridge``: SpiceDB's Watch published to a Kafka topic, for many replicas.

The bridge watches SpiceDB (the ``WatchSource`` of ``leopard follow``: reconnects,
backoff, checkpoints, gaps) and publishes each relationship change as a native change
record keyed by its tuple, so that all changes of one tuple land in one partition in
order, with SpiceDB's revision and ZedToken in headers (``ingest.upstream.headers``).
After the changes of each poll it writes a marker to every partition, so that a
consumer can tell which revision every partition has passed, and its tokens carry it.

Its own position is a checkpoint file: the ZedToken of the last revision whose records
(and markers) every broker acknowledged, replaced atomically (written beside, synced,
renamed) after each acknowledged poll. A crash between the acknowledgement and the
rename publishes that poll's records again on restart: consumers skip a record at or
below the revision they have, and applying a change again in order is harmless anyway.
So nothing is lost, and nothing applied twice changes an index.

When the brokers stop answering, the bridge waits for them rather than exiting: it
logs once that they are unavailable and goes on waiting for the poll's
acknowledgements (the producer retries its requests meanwhile, in order). Records the
producer gives up on (a delivery timeout, a retriable error) are not checkpointed:
the Watch is rewound to the checkpoint and the poll published again after a backoff,
every record in its order after whatever of the failed attempt reached a partition, so
a partition holds at worst a replay of a prefix, which consumers skip or apply again
harmlessly. When a poll is acknowledged again it logs that they are reachable. An
error that retrying cannot help (a record the brokers refuse) still stops the bridge.

Without a checkpoint the bridge starts at ``start_token`` if given (say, the revision
of an index built with ``leopard build --from``), else at SpiceDB's current revision
(``ReadSchema``'s ``read_at``). Every record says where its run started (``FROM``): a
consumer whose index (or partition) is behind that stops there, since the changes in
between are in no record (``ingest.upstream.headers``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.codecs import decode_message, encode_native, message_key
from ingest.kafka.client import KafkaError, KafkaProducer, KafkaTimeoutError
from ingest.upstream.headers import FROM, MARKER, REVISION, TOKEN
from ingest.upstream.spicedb import SpiceDBSource
from ingest.upstream.watch import WatchSource
from leopard.errors import BrokerError, InvalidInput, UpstreamError
from leopard.model.zedtoken import SPICEDB_KEY, decode_zedtoken, revision_number

__all__ = ["Bridge", "BridgeStats", "read_checkpoint"]

log = logging.getLogger("leopard.bridge")

#: seconds to wait for the brokers to acknowledge a poll's records before saying they
#: are unavailable (the wait goes on)
ACK_TIMEOUT = 30.0
#: how long the producer goes on sending a record before giving up on it (ms): a week,
#: so that the brokers being away never drops a batch while a later batch of the same
#: partition may still go through (a gap a replay from the checkpoint could not fill,
#: since consumers skip records at or below a revision every partition has passed)
DELIVERY_TIMEOUT_MS = 7 * 24 * 3600 * 1000


@dataclass
class BridgeStats:
    revisions: int = 0  # Watch responses with changes published
    changes: int = 0
    refused: int = 0  # updates that are not tuples (caveated, expiring), logged
    markers: int = 0
    revision: int = -1  # the last revision checkpointed
    broker_up: bool = True  # False from a poll the brokers did not acknowledge in time
    outages: int = 0  # times the brokers became unavailable
    errors: list[str] = field(default_factory=list)


def read_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint ``{"token", "revision", "source", "topic"}``, or None if there is
    none; InvalidInput for a file that is not one."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"the bridge checkpoint {str(p)!r} cannot be read: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("token"), str):
        raise InvalidInput(f"the bridge checkpoint {str(p)!r} holds no token: {doc!r}")
    return doc


class _Unacknowledged(BrokerError):
    """A poll the brokers did not acknowledge, for a reason retrying may cure."""


class Bridge:
    """Publishes a SpiceDB's changes to ``topic``; ``run`` loops until ``stop``."""

    def __init__(
        self,
        source: SpiceDBSource,
        brokers: str,
        topic: str,
        checkpoint: str | Path,
        *,
        start_token: str | None = None,
        backoff: tuple[float, float] = (0.2, 10.0),
        producer: Any = None,
    ) -> None:
        self.upstream = source
        self.topic = topic
        self.checkpoint = Path(checkpoint)
        self.backoff = backoff
        self.stats = BridgeStats()
        self._stop = threading.Event()
        saved = read_checkpoint(self.checkpoint)
        if saved is not None:
            if saved.get("topic") not in (None, topic):
                raise InvalidInput(
                    f"the bridge checkpoint {str(self.checkpoint)!r} is of topic "
                    f"{saved.get('topic')!r}, not {topic!r}"
                )
            token = saved["token"]
            if start_token is not None and start_token != token:
                raise InvalidInput(
                    f"--start-token {start_token!r} is not where the bridge's checkpoint "
                    f"{str(self.checkpoint)!r} stands ({token!r}): a bridge goes on from "
                    "its checkpoint; to start from the token instead, remove the checkpoint"
                )
        else:
            token = start_token or self._current_token()
        self._token = token
        self._revision = revision_number(decode_zedtoken(token).revision)
        self._from = str(self._revision).encode()  # where this run starts: on every record
        try:
            self.producer = producer or KafkaProducer(
                bootstrap_servers=brokers.split(","),
                acks="all",
                linger_ms=2,
                # one request in flight per broker: a retried request cannot overtake the
                # next, so each partition keeps the revision order
                max_in_flight_requests_per_connection=1,
                delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
                client_id="leopard-bridge",
            )
        except KafkaError as exc:
            raise BrokerError(f"cannot reach the brokers {brokers!r}: {exc}") from exc
        self.partitions = self._partition_count(brokers)
        self.watch = WatchSource(
            source,
            lambda: {"token": self._token},
            lambda: {SPICEDB_KEY: self._revision},
            backoff=backoff,
        )
        self.watch.remedy = (
            f"the bridge stops here, its checkpoint {str(self.checkpoint)!r} before it. "
            f"Rebuild the indexes that consume topic {topic!r} ('leopard build --from "
            f"{source.name}', which prints the ZedToken it read at), then start the bridge "
            "again from the earliest of those: remove the checkpoint and give "
            "--start-token that ZedToken"
        )

    def _current_token(self) -> str:
        return self.upstream.head_token()

    def _partition_count(self, brokers: str) -> int:
        try:
            partitions = self.producer.partitions_for(self.topic)
        except KafkaError as exc:
            raise BrokerError(f"the topic {self.topic!r} at {brokers!r}: {exc}") from exc
        if not partitions:
            raise InvalidInput(f"the topic {self.topic!r} does not exist at {brokers!r}")
        return len(partitions)

    def _partitions_now(self) -> int:
        """The topic's partitions as the producer knows them now (never fewer: Kafka
        cannot take partitions away, and a failed look keeps the count)."""
        try:
            found = self.producer.partitions_for(self.topic)
        except KafkaError as exc:
            log.warning("counting the partitions of %r failed (%s); keeping %d",
                        self.topic, exc, self.partitions)  # fmt: skip
            return self.partitions
        return max(self.partitions, len(found or ()))

    # -- the loop ---------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> BridgeStats:
        """Publish until ``stop()``; raise the upstream's error that stopped it (a gap,
        a refusal), or the brokers' that retrying cannot help."""
        backoff = self.backoff[0]
        try:
            while not self._stop.is_set():
                try:
                    batch = self.watch.poll()
                except UpstreamError as exc:
                    if self.watch.fatal is not None:
                        break
                    log.warning("%s; retrying", exc)
                    continue
                if self.watch.fatal is not None:
                    break
                if not batch.position:
                    continue
                try:
                    self._publish(batch)
                except _Unacknowledged as exc:
                    # not checkpointed, and the Watch is rewound: the poll is watched
                    # again from the checkpoint and published again, in order
                    self._outage(str(exc))
                    log.info("%s; publishing again from revision %d (the checkpoint)",
                             exc, self._revision)  # fmt: skip
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.backoff[1])
                    continue
                backoff = self.backoff[0]
        finally:
            self.close()
        if self.watch.fatal is not None:
            raise self.watch.fatal
        return self.stats

    def _publish(self, batch: Any) -> None:
        """Publish a poll's records and markers and checkpoint it once every one is
        acknowledged. The brokers' errors: ``_Unacknowledged`` (the Watch rewound) when
        retrying can help, BrokerError when it cannot; stopped while waiting for the
        acknowledgements, the poll is not checkpointed."""
        token = batch.state[SPICEDB_KEY]["token"]
        revision = batch.position[SPICEDB_KEY]
        try:
            acknowledged = self._acknowledged(self._send(batch, revision), revision)
            if acknowledged:
                # the markers only once every change is in the log: a producer that gave
                # up on a change could otherwise still write a marker after it, and the
                # consumers would pass the revision, skipping the change published again
                acknowledged = self._acknowledged(self._send_markers(revision), revision)
        except KafkaError as exc:
            self.watch.rewind()
            if exc.retriable:
                raise _Unacknowledged(
                    f"publishing revision {revision} to {self.topic!r} failed: {exc!r}"
                ) from exc
            raise BrokerError(f"publishing to {self.topic!r} failed: {exc}") from exc
        if not acknowledged:
            return
        self._save(token, revision)
        if not self.stats.broker_up:
            log.warning("brokers reachable again: revision %d published; resuming", revision)
            self.stats.broker_up = True

    def _send(self, batch: Any, revision: int) -> list[Any]:
        """Hand the poll's changes to the producer."""
        futures = []
        for m in batch.messages:
            decoded = decode_message("spicedb", m.value)
            headers = [
                (REVISION, str(m.offset).encode()),
                (TOKEN, (decoded.through or "").encode()),
                (FROM, self._from),
            ]
            for rejected in decoded.rejected:
                self.stats.refused += 1
                log.warning(
                    "%s revision %s update %s not published: %s",
                    self.upstream.name,
                    m.offset,
                    rejected.item,
                    rejected.reason,
                )
            for change in decoded.changes:
                futures.append(
                    self.producer.send(
                        self.topic,
                        key=message_key(change.tuple),
                        value=encode_native(change),
                        headers=headers,
                    )
                )
                self.stats.changes += 1
            self.stats.revisions += 1
        return futures

    def _send_markers(self, revision: int) -> list[Any]:
        """Hand the producer a marker of ``revision`` for every partition."""
        futures = []
        # Partitions added while the bridge runs get keyed changes (the producer routes
        # by its fresh metadata) and must get markers too: a marker that counted fewer
        # would let a consumer pass this revision before reading the new partition.
        self.partitions = self._partitions_now()
        marker = [
            (REVISION, str(revision).encode()),
            (MARKER, str(self.partitions).encode()),
            (FROM, self._from),
        ]
        for partition in range(self.partitions):
            futures.append(
                self.producer.send(self.topic, value=b"", partition=partition, headers=marker)
            )
            self.stats.markers += 1
        return futures

    def _acknowledged(self, futures: list[Any], revision: int) -> bool:
        """Wait for every record's acknowledgement, in order; False if stopped first.

        Past ``ACK_TIMEOUT`` the brokers are reported unavailable, and the wait goes on:
        the producer is still sending these records (a record it gives up on fails
        its future, raised here), and publishing them again meanwhile would only queue
        copies behind them.
        """
        deadline = time.monotonic() + ACK_TIMEOUT
        for fut in futures:
            while not fut.is_done:
                if self._stop.is_set():
                    return False
                if time.monotonic() >= deadline:
                    self._outage(f"revision {revision} not acknowledged within {ACK_TIMEOUT:g} s")
                try:
                    fut.get(timeout=0.5)
                except KafkaTimeoutError:
                    if fut.is_done:  # failed by the producer, not a wait that ran out
                        raise
            fut.get()  # raises the record's error, if it failed
        return True

    def _outage(self, why: str) -> None:
        if self.stats.broker_up:
            log.warning("brokers unavailable (%s); waiting for them, nothing is "
                        "checkpointed until they answer", why)  # fmt: skip
            self.stats.broker_up = False
            self.stats.outages += 1

    def _save(self, token: str, revision: int) -> None:
        doc = {
            "token": token,
            "revision": revision,
            "source": self.upstream.name,
            "topic": self.topic,
        }
        tmp = self.checkpoint.with_name(self.checkpoint.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.checkpoint)
        self._token, self._revision = token, revision
        self.stats.revision = revision

    def close(self) -> None:
        self.watch.close()
        try:
            self.producer.close(timeout=5)
        except KafkaError:  # pragma: no cover - closing anyway
            pass
