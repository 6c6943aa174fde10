"""The dead-letter topic: undecodable change messages, kept with why and where from.

A dead letter carries the original key and value and, in headers, the reason and the
source topic, partition and offset, and for one bad item of a message of several its
index in the message (``leopard.source.item``; the value is then that item alone, as
a message of the same format). ``write`` returns only once every one is
acknowledged by the broker, so the consumer persists the batch's offsets after its
dead letters are durable. A value too large for the topic is replaced by its size,
digest and the reason (header ``leopard.value.replaced``), so that the message is in
one of the two places; any other failure raises ``BrokerError``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from ingest.kafka.client import KafkaError, KafkaProducer, MessageSizeTooLargeError
from leopard.errors import BrokerError

__all__ = ["DeadLetters", "ItemMessage", "Message"]

log = logging.getLogger("leopard.consumer")


class Message(Protocol):
    """One message as the loop sees it (kafka-python's ``ConsumerRecord`` is one)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class ItemMessage:
    """One bad item of a message: its source's place, its index, and its value alone."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    item: int

    @classmethod
    def of(cls, m: Message, item: int, value: bytes) -> ItemMessage:
        return cls(m.topic, m.partition, m.offset, m.key, value, item)


class DeadLetters:
    """Writes dead letters to ``topic`` (default: ``<source topic>.dlq``)."""

    def __init__(self, producer: KafkaProducer, topic: str | None) -> None:
        self.producer = producer
        self.topic = topic

    def write(self, dead: list[tuple[Message, str]]) -> None:
        """Write undecodable messages to the dead-letter topic; return once every one is
        acknowledged. ``BrokerError`` when one cannot be written."""
        producer = self.producer
        pending = []
        try:
            for m, reason in dead:
                pending.append((m, reason, self._send_dead(producer, m, reason)))
            producer.flush(timeout=30)
            for m, reason, future in pending:
                try:
                    future.get(timeout=30)
                except MessageSizeTooLargeError:
                    self._send_dead(producer, m, reason, shrink=True).get(timeout=30)
        except KafkaError as exc:
            raise BrokerError(f"writing to the dead-letter topic failed: {exc}") from exc
        for m, reason, _ in pending:
            item = getattr(m, "item", None)
            where = "" if item is None else f" item {item}"
            log.info("dead letter %s:%d@%d%s: %s", m.topic, m.partition, m.offset, where, reason)

    def _send_dead(
        self, producer: KafkaProducer, m: Message, reason: str, *, shrink: bool = False
    ) -> Any:
        value = m.value or b""
        headers = [
            ("leopard.reason", reason.encode()),
            ("leopard.source.topic", m.topic.encode()),
            ("leopard.source.partition", str(m.partition).encode()),
            ("leopard.source.offset", str(m.offset).encode()),
        ]
        item = getattr(m, "item", None)
        if item is not None:
            headers.append(("leopard.source.item", str(item).encode()))
        if shrink:
            headers.append(("leopard.value.replaced", b"too large for the dead-letter topic"))
            value = (
                f"value of {len(value):,} bytes replaced (too large for the dead-letter "
                f"topic); sha256 {hashlib.sha256(value).hexdigest()}; reason: {reason}"
            ).encode()
        topic = self.topic or f"{m.topic}.dlq"
        try:
            return producer.send(topic, key=m.key, value=value, headers=headers)
        except MessageSizeTooLargeError:
            if shrink:
                raise
            return self._send_dead(producer, m, reason, shrink=True)
