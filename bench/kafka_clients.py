"""The Kafka client's share of a change: kafka-python beside confluent-kafka (librdkafka).

``bench/incremental.py`` times the consumer whole; this times only what the client
does, on the same broker and the same messages, so that the choice of client is made
by figures. Each client reads one topic of native member-change messages (as the
member scenario publishes them) from its start to its end, assigned its partitions
directly (no group join, which Tansu delays), in the batches the consumer asks for:

* **fetch**: records fetched and parsed into (key, value, offset), nothing else;
* **fetch + decode**: each value also decoded into changes (``ingest.codecs``), as the
  consumer does before it applies them.

The figure is µs per message over the whole topic after a first warm-up read; the
apply itself (``bench/incremental.py``'s "time in apply") comes on top either way.
confluent-kafka is optional (``pip install confluent-kafka``); without it only
kafka-python is measured, and the table says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ingest.codecs import decode_message

__all__ = ["measure_clients"]

#: records a poll asks for at most (the consumer's default batch limit)
MAX_BATCH = 20_000


def _per_message(consumer: Any, name: str, topic: str, got: int, want: int, t0: float) -> float:
    """µs per message of a read that started at ``t0``; closes ``consumer``."""
    seconds = time.perf_counter() - t0
    consumer.close()
    if got < want:
        raise RuntimeError(f"{name} read {got} of {want} messages of {topic!r} in 300 s")
    return seconds / want * 1e6


def _kafka_python(bootstrap: str, topic: str, end: dict[str, int], decode: bool) -> float:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=MAX_BATCH,
        fetch_max_wait_ms=10,
    )
    parts = [TopicPartition(topic, int(k.rsplit(":", 1)[1])) for k in end]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    want = sum(end.values())
    got = 0
    t0 = time.perf_counter()
    deadline = time.monotonic() + 300
    while got < want and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200, max_records=MAX_BATCH).values():
            for r in records:
                if decode:
                    decode_message("native", r.value)
            got += len(records)
    return _per_message(consumer, "kafka-python", topic, got, want, t0)


def _confluent(bootstrap: str, topic: str, end: dict[str, int], decode: bool) -> float:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{topic}",  # required by the client; never joined (assign)
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign([TopicPartition(topic, int(k.rsplit(":", 1)[1]), 0) for k in end])
    want = sum(end.values())
    got = 0
    t0 = time.perf_counter()
    deadline = time.monotonic() + 300
    while got < want and time.monotonic() < deadline:
        batch = consumer.consume(num_messages=MAX_BATCH, timeout=0.2)
        for m in batch:
            if m.error() is not None:
                raise RuntimeError(f"confluent-kafka: {m.error()}")
            value = m.value()
            if decode:
                decode_message("native", value)
        got += len(batch)
    return _per_message(consumer, "confluent-kafka", topic, got, want, t0)


def _confluent_version() -> str | None:
    try:
        import confluent_kafka
    except ImportError:
        return None
    version = confluent_kafka.version()
    version = version[0] if isinstance(version, tuple) else version
    return f"{version} (librdkafka {confluent_kafka.libversion()[0]})"


def measure_clients(bootstrap: str, topic: str, end: dict[str, int]) -> dict[str, Any]:
    """µs per message of each client over ``topic`` (read up to ``end``), fetch alone
    and fetch + decode, the better of two reads after a warm-up one."""
    import kafka

    clients: list[tuple[str, str | None, Callable[..., float]]] = [
        ("kafka-python", kafka.__version__, _kafka_python),
        ("confluent-kafka", _confluent_version(), _confluent),
    ]
    out: dict[str, Any] = {"messages": sum(end.values())}
    for name, version, read in clients:
        if version is None:
            out[name] = {"error": "not installed (pip install confluent-kafka)"}
            continue
        read(bootstrap, topic, end, False)  # warm-up: connections, the broker's cache
        fetch = min(read(bootstrap, topic, end, False) for _ in range(2))
        decoded = min(read(bootstrap, topic, end, True) for _ in range(2))
        out[name] = {
            "version": version,
            "fetch_us": round(fetch, 2),
            "fetch_decode_us": round(decoded, 2),
        }
    return out


def rows(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Table rows: each client's µs per message, and the ratio of the two."""
    out = []
    for name in ("kafka-python", "confluent-kafka"):
        side = res[name]
        if "error" in side:
            out.append((f"{name}: fetch / fetch + decode", "not measured", side["error"]))
            continue
        out.append(
            (
                f"{name} {side['version']}: fetch / fetch + decode",
                f"{side['fetch_us']:.2f} / {side['fetch_decode_us']:.2f} us a message",
                f"{res['messages']:,} messages, partitions assigned, best of 2",
            )
        )
    a, b = res["kafka-python"], res["confluent-kafka"]
    if "error" not in a and "error" not in b:
        out.append(
            (
                "  confluent-kafka saves",
                f"{a['fetch_decode_us'] - b['fetch_decode_us']:.2f} us a message",
                f"fetch {a['fetch_us'] / b['fetch_us']:.1f}x faster",
            )
        )
    return out
