"""The local Tansu broker, and kafka-python against it, behave as the consumer needs.

These run against the real broker (the session fixture, or one of their own where they
freeze or stop it). They check what the streaming consumer relies on: keys and headers
survive, manual assignment reads from a chosen offset, and a stalled broker delays
clients without making them fail or lose records.
"""

from __future__ import annotations

import contextlib
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from ingest.codecs import Change, decode, encode_native, message_key
from ingest.kafka.local_broker import BrokerError, LocalBroker, create_topic, free_port
from leopard.errors import InvalidInput
from leopard.model.names import parse_tuple


@contextlib.contextmanager
def producer(bootstrap: str) -> Iterator[KafkaProducer]:
    client = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def assigned_consumer(bootstrap: str, topic: str, offset: int = 0) -> Iterator[KafkaConsumer]:
    """A consumer of partition 0 from ``offset``, without a consumer group (no join wait)."""
    client = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    client.assign([tp])
    client.seek(tp, offset)
    try:
        yield client
    finally:
        client.close()


def read(consumer: KafkaConsumer, count: int, timeout: float = 10.0) -> list[ConsumerRecord]:
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    return records


# -- the broker itself -----------------------------------------------------------


@pytest.mark.kafka
def test_broker_answers_metadata(broker: LocalBroker) -> None:
    assert broker.running
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        cluster = admin.describe_cluster()
    finally:
        admin.close()
    assert [b["port"] for b in cluster["brokers"]] == [broker.port]


@pytest.mark.kafka
def test_topic_fixtures_create_topics(broker: LocalBroker, topic: str, new_topic) -> None:
    wide = new_topic(partitions=3)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        described = {t["name"]: t for t in admin.describe_topics([topic, wide])}
    finally:
        admin.close()
    assert len(described[topic]["partitions"]) == 1
    assert len(described[wide]["partitions"]) == 3
    assert topic != wide


@pytest.mark.kafka
def test_create_topic_twice(broker: LocalBroker, topic: str) -> None:
    with pytest.raises(BrokerError, match=f"topic '{topic}' already exists"):
        create_topic(broker.bootstrap, topic)
    create_topic(broker.bootstrap, topic, exist_ok=True)


@pytest.mark.parametrize(
    ("name", "partitions", "match"),
    [
        ("bad name!", 1, r"topic name 'bad name!' is not valid"),
        ("x" * 250, 1, r"is not valid \(expected 1 to 249"),
        ("", 1, r"topic name '' is not valid"),
        ("..", 1, r"topic name '..' is not valid"),
        ("ok", 0, r"topic 'ok': partitions must be a positive int, not 0"),
        ("ok", True, r"not True"),
    ],
)
def test_create_topic_refuses_what_tansu_would_accept(name: str, partitions, match: str) -> None:
    # Checked before any connection: the address is never dialled.
    with pytest.raises(InvalidInput, match=match):
        create_topic("127.0.0.1:1", name, partitions)


def test_free_port_can_be_bound() -> None:
    port = free_port()
    assert 0 < port < 65536


@pytest.mark.kafka
def test_port_in_use_is_refused(broker: LocalBroker) -> None:
    with pytest.raises(BrokerError, match=f"127.0.0.1:{broker.port}: Address already in use"):
        LocalBroker(broker.port).start()
    assert broker.running


def test_start_failure_shows_the_broker_output(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'tansu: cannot open storage' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(BrokerError, match=r"exited with status 3 .*\n.*cannot open storage"):
        LocalBroker(binary=str(fake), startup_timeout=5).start()


@pytest.mark.kafka
def test_stop_is_idempotent_and_works_while_paused() -> None:
    broker = LocalBroker().start()
    broker.pause()
    assert broker.paused
    broker.stop()
    assert not broker.running and not broker.paused
    broker.stop()
    with pytest.raises(BrokerError, match="not running"):
        broker.pause()


# -- clients against it ----------------------------------------------------------


@pytest.mark.kafka
def test_round_trip_with_keys_and_headers(broker: LocalBroker, topic: str) -> None:
    changes = [
        Change("touch", parse_tuple("group:eng#member@user:alice"), 1704067200.0),
        Change("touch", parse_tuple("group:eng#member@group:ops#member")),
        Change("delete", parse_tuple("group:eng#member@user:alice")),
    ]
    headers = [("leopard-error", b"native event: 'op' is 'upsert'"), ("empty", b"")]
    with producer(broker.bootstrap) as prod:
        for change in changes:
            prod.send(
                topic,
                key=message_key(change.tuple),
                value=encode_native(change),
                headers=headers,
            )
        prod.flush(timeout=10)
    with assigned_consumer(broker.bootstrap, topic) as cons:
        records = read(cons, len(changes))
    assert [r.offset for r in records] == [0, 1, 2]
    assert [r.key for r in records] == [message_key(c.tuple) for c in changes]
    assert [decode("native", r.value) for r in records] == [[c] for c in changes]
    assert all(r.headers == headers for r in records)


@pytest.mark.kafka
def test_assigned_consumer_starts_at_its_offset(broker: LocalBroker, topic: str) -> None:
    # Offsets persisted by the consumer itself are resumed with seek(), no group needed;
    # records before the offset are skipped even when they share a batch with it.
    with producer(broker.bootstrap) as prod:
        for i in range(10):
            prod.send(topic, value=str(i).encode())
        prod.flush(timeout=10)
    with assigned_consumer(broker.bootstrap, topic, offset=4) as cons:
        records = read(cons, 6)
        assert [r.offset for r in records] == list(range(4, 10))
        assert cons.highwater(TopicPartition(topic, 0)) == 10


@pytest.mark.kafka
def test_clients_survive_a_paused_broker() -> None:
    # A broker of its own: freezing the session broker would stall other tests.
    with LocalBroker() as broker:
        topic = "paused"
        create_topic(broker.bootstrap, topic)
        with producer(broker.bootstrap) as prod, assigned_consumer(broker.bootstrap, topic) as cons:
            prod.send(topic, value=b"before").get(timeout=10)
            assert [r.value for r in read(cons, 1)] == [b"before"]

            broker.pause()
            future = prod.send(topic, value=b"during")
            assert cons.poll(timeout_ms=500) == {}  # no error, just nothing
            assert not future.is_done
            broker.resume()

            assert future.get(timeout=10).offset == 1
            prod.send(topic, value=b"after").get(timeout=10)
            assert [r.value for r in read(cons, 2)] == [b"during", b"after"]
            assert read(cons, 1, timeout=0.5) == []  # nothing twice
