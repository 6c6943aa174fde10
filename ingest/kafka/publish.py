"""Writing changes to a topic, and the token that lets a writer read its own write.

Input lines are ``+tuple`` (touch), ``-tuple`` (delete) or native JSON events
(``{"op": "touch", "tuple": "..."}``); blank lines and ``#`` comments are ignored.
Every message is keyed by its tuple, so all changes of one tuple stay in order on
one partition. After the last write is acknowledged, the token of the position just
past it is returned: ``Index.wait_for(token)`` returns once the consumer has applied
everything published here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ingest.codecs import Change, decode, encode_native, message_key
from ingest.kafka.client import KafkaError, KafkaProducer
from leopard.errors import DecodeError, InvalidInput, InvalidTuple
from leopard.model.names import parse_tuple
from leopard.model.tokens import encode_token

__all__ = ["parse_change_lines", "publish", "PublishResult"]


@dataclass
class PublishResult:
    messages: int
    token: str
    position: dict[str, int]


def parse_change_lines(lines: Iterable[str | bytes], source: str = "<stdin>") -> Iterator[Change]:
    """Changes from ``+tuple``/``-tuple``/JSON lines; InvalidInput naming the line.

    Lines read as bytes are decoded here, so that a byte that is not UTF-8 is named
    with its line and offset, as ``leopard build`` names it.
    """
    for number, raw in enumerate(lines, 1):
        if isinstance(raw, bytes):
            raw = _decoded(raw, source, number)
        line = raw.rstrip("\r\n")
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            if text[0] in "+-":
                if text[0] == "+":
                    yield Change("touch", parse_tuple(text[1:]))
                else:
                    yield Change("delete", parse_tuple(text[1:]))
            elif text[0] == "{":
                yield from decode("native", text.encode())
            else:
                raise InvalidInput(
                    f"{text[:80]!r} is not a change: start it with '+' (touch) or '-' "
                    "(delete), or give a native JSON event"
                )
        except (InvalidTuple, DecodeError, InvalidInput) as exc:
            raise InvalidInput(f"{source}:{number}: {exc}") from None


def _decoded(raw: bytes, source: str, number: int) -> str:
    """A line read as bytes, as text; InvalidInput naming the line and the bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        shown = raw.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
        shown = shown if len(shown) <= 120 else shown[:100] + "..."
        raise InvalidInput(
            f"{source}:{number}: {shown!r} is not valid UTF-8 "
            f"(byte {raw[exc.start]:#04x} at offset {exc.start})"
        ) from None


def publish(
    changes: Iterable[Change], brokers: str, topic: str, *, timeout: float = 30.0
) -> PublishResult:
    """Send changes keyed by tuple; wait for every acknowledgement; return the token."""
    try:
        producer = KafkaProducer(
            bootstrap_servers=brokers.split(","), acks="all", linger_ms=5, client_id="leopard"
        )
    except KafkaError as exc:
        raise InvalidInput(f"cannot reach the brokers {brokers!r}: {exc}") from exc
    position: dict[str, int] = {}
    futures = []
    try:
        for change in changes:
            futures.append(
                producer.send(topic, key=message_key(change.tuple), value=encode_native(change))
            )
        producer.flush(timeout=timeout)
        for fut in futures:
            meta = fut.get(timeout=timeout)
            key = f"{meta.topic}:{meta.partition}"
            position[key] = max(position.get(key, 0), meta.offset + 1)
    except KafkaError as exc:
        raise InvalidInput(f"publishing to {topic!r} at {brokers!r} failed: {exc}") from exc
    finally:
        producer.close(timeout=5)
    return PublishResult(len(futures), encode_token(position), position)


def result_json(result: PublishResult) -> str:
    return json.dumps(
        {"messages": result.messages, "token": result.token, "position": result.position}
    )
