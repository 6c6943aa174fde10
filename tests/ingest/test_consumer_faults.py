"""Faults around the change stream, against a real broker: nothing lost, nothing skipped.

Each test reproduces one fault an operator meets and asserts the exact outcome: every
change applied once (compared with the model and the BFS oracle), or a clear, named
refusal, never a silent skip.

* the broker restarts empty under a stored position, or the topic is recreated: a
  gap, which stops the partition (versions of it are refused) until ``--on-gap
  earliest`` says going on from the log's start is safe;
* a recreated topic that has already grown past the stored offset: caught by the
  anchor, the record applied last, which must come back unchanged;
* messages deleted before they were read (the log's start beyond the stored offset):
  the local broker cannot delete records (it refuses DeleteRecords), so the log's
  start it reports is injected, the rest is real;
* a dead letter too large for the dead-letter topic, and a dead-letter write that
  fails: the valid changes polled with them are applied exactly once;
* a broker killed under a running consumer: reported down within 10 s.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support.http import call, leopard_serve, parse_metrics, wait_until
from support.index_model import Model, build, compare_all
from support.oracle import Oracle

from ingest.codecs import Change, encode_native, message_key
from ingest.consumer import ChangeConsumer, ConsumerStats
from ingest.kafka.client import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from ingest.kafka.deadletters import DeadLetters
from ingest.kafka.local_broker import LocalBroker, create_topic, free_port
from ingest.kafka.publish import publish
from ingest.kafka.source import KafkaSource
from ingest.settings import ConsumerSettings
from leopard.core.index import Index
from leopard.errors import BrokerError, StaleIndex
from leopard.model.config import Config
from leopard.model.names import format_tuple, parse_tuple
from leopard.model.tokens import reached

pytestmark = pytest.mark.kafka

CONFIG = Config()
BASE = ["group:all#member@group:a#member", "group:a#member@user:base"]


def touches(prefix: str, n: int, group: str = "group:a#member") -> list[Change]:
    return [Change("touch", parse_tuple(f"{group}@user:{prefix}{i}")) for i in range(n)]


def settings(bootstrap: str, topic: str, **kw: Any) -> ConsumerSettings:
    kw.setdefault("group_id", f"g-{topic}-{time.monotonic_ns()}")
    return ConsumerSettings(brokers=bootstrap, topics=[topic], linger_ms=0, **kw)


def run_consumer(
    path: Path,
    s: ConsumerSettings,
    *,
    until: dict[str, int] | None = None,
    seconds: float = 6.0,
    until_gap: bool = False,
) -> ConsumerStats:
    """Run a consumer in this process for ``seconds``, or until the index reaches
    ``until`` (or, ``until_gap``, reports a partition stopped at a gap: reconnecting
    to a restarted broker, or joining the group at all, can take a busy machine
    seconds)."""
    consumer = ChangeConsumer(path, s)

    def watch() -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until is not None and reached(consumer.index.position, until):
                break
            if until_gap and consumer.stats.gaps:
                break
            time.sleep(0.05)
        consumer.stop()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        return consumer.run()
    finally:
        watcher.join()
        consumer.index.close()


def expect(path: Path, changes: Sequence[Change]) -> None:
    """The index answers exactly as the model of BASE plus ``changes``."""
    model = Model(CONFIG, (parse_tuple(x) for x in BASE))
    for c in changes:
        model.apply([(c.op, c.tuple)])
    oracle = Oracle(sorted(model.tuples, key=format_tuple), CONFIG)
    with Index(path) as ix:
        compare_all(ix, oracle, exclude=model.known - oracle.groups)


def recreate(bootstrap: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([topic])
    finally:
        admin.close()
    time.sleep(0.3)
    create_topic(bootstrap, topic)


@pytest.fixture
def own_broker() -> Iterator[LocalBroker]:
    """A broker of this test alone, on a fixed port, so that it can restart there."""
    broker = LocalBroker(port=free_port())
    with broker:
        yield broker


def test_a_broker_restarted_empty_is_a_gap_until_told_to_go_on(
    own_broker: LocalBroker, tmp_path: Path
) -> None:
    topic, path = "changes", tmp_path / "idx"
    create_topic(own_broker.bootstrap, topic)
    build(path, CONFIG, BASE, {})
    first = touches("old", 30)
    done = publish(first, own_broker.bootstrap, topic)
    run_consumer(path, settings(own_broker.bootstrap, topic), until=done.position)
    expect(path, first)

    own_broker.stop()  # memory-only: it comes back empty, on the same port
    own_broker.start()
    create_topic(own_broker.bootstrap, topic)
    second = touches("new", 10, "group:b#member")
    token = publish(second, own_broker.bootstrap, topic).token  # offsets 0-9, below 30

    stats = run_consumer(path, settings(own_broker.bootstrap, topic), seconds=20, until_gap=True)
    assert stats.gap_events >= 1 and list(stats.gaps) == [f"{topic}:0"]
    assert "ends at offset 10" in stats.gaps[f"{topic}:0"]
    expect(path, first)  # nothing of the new log applied, nothing of the old lost
    with Index(path) as ix:
        assert f"{topic}:0" not in ix.position  # no version of a stopped partition
        with pytest.raises(StaleIndex, match="gap"):
            ix.wait_for(token, timeout=0.3)

    # a restart remembers the gap: still stopped, still nothing applied
    stats = run_consumer(path, settings(own_broker.bootstrap, topic), seconds=20, until_gap=True)
    assert list(stats.gaps) == [f"{topic}:0"]
    expect(path, first)

    # the operator says the new log is safe to read from its start
    s = settings(own_broker.bootstrap, topic, on_gap="earliest")
    stats = run_consumer(path, s, until={f"{topic}:0": 10}, seconds=20)
    assert stats.gaps == {} and stats.gap_events >= 1
    expect(path, first + second)
    with Index(path) as ix:
        assert ix.wait_for(token, timeout=0) == ix.version


def test_a_recreated_topic_grown_past_the_stored_offset_is_caught_by_the_anchor(
    broker: LocalBroker, tmp_path: Path
) -> None:
    topic, path = f"recreated-{time.monotonic_ns()}", tmp_path / "idx"
    create_topic(broker.bootstrap, topic)
    build(path, CONFIG, BASE, {})
    first = touches("old", 20)
    done = publish(first, broker.bootstrap, topic)
    run_consumer(path, settings(broker.bootstrap, topic), until=done.position)

    recreate(broker.bootstrap, topic)
    second = touches("new", 50, "group:b#member")  # offsets 0-49: past the stored 20
    publish(second, broker.bootstrap, topic)
    stats = run_consumer(path, settings(broker.bootstrap, topic), seconds=20, until_gap=True)
    assert list(stats.gaps) == [f"{topic}:0"]
    assert "is not the one applied there" in stats.gaps[f"{topic}:0"]
    expect(path, first)  # offsets 20-49 of the new log were not taken for the old log's
    # a job that runs 'consume --idle-exit' is told: no exit status 0 with a stopped partition
    done = subprocess.run(
        [sys.executable, "-m", "leopard", "consume", "--index", str(path), "--brokers",
         broker.bootstrap, "--topic", topic, "--idle-exit", "2"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: partitions stopped at a gap, applied no further: {topic}:0: ")


def test_the_same_log_resumes_past_its_anchor(broker: LocalBroker, tmp_path: Path) -> None:
    topic, path = f"resume-{time.monotonic_ns()}", tmp_path / "idx"
    create_topic(broker.bootstrap, topic)
    build(path, CONFIG, BASE, {})
    first, second = touches("a", 15), touches("b", 15)
    done = publish(first, broker.bootstrap, topic)
    run_consumer(path, settings(broker.bootstrap, topic), until=done.position)
    done = publish(second, broker.bootstrap, topic)
    stats = run_consumer(path, settings(broker.bootstrap, topic), until=done.position)
    assert stats.gap_events == 0 and stats.changes == 15  # the anchor is not applied again
    expect(path, first + second)


def test_messages_deleted_unread_are_a_gap(
    broker: LocalBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic, path = f"retention-{time.monotonic_ns()}", tmp_path / "idx"
    create_topic(broker.bootstrap, topic)
    build(path, CONFIG, BASE, {})
    first = touches("a", 10)
    done = publish(first, broker.bootstrap, topic)
    run_consumer(path, settings(broker.bootstrap, topic), until=done.position)
    publish(touches("b", 20), broker.bootstrap, topic)  # offsets 10-29, never read
    real = KafkaConsumer.beginning_offsets

    def retention_deleted_up_to_25(self: Any, partitions: Any) -> Any:
        out = real(self, partitions)
        return {tp: 25 if tp.topic == topic else v for tp, v in out.items()}

    monkeypatch.setattr(KafkaConsumer, "beginning_offsets", retention_deleted_up_to_25)
    stats = run_consumer(path, settings(broker.bootstrap, topic), seconds=20, until_gap=True)
    assert "starts at offset 25" in stats.gaps[f"{topic}:0"]
    expect(path, first)


def test_a_dead_letter_too_large_for_its_topic_loses_nothing(
    broker: LocalBroker, tmp_path: Path
) -> None:
    topic, path = f"bigpoison-{time.monotonic_ns()}", tmp_path / "idx"
    create_topic(broker.bootstrap, topic)
    create_topic(broker.bootstrap, f"{topic}.dlq")
    build(path, CONFIG, BASE, {})
    valid = touches("v", 40)
    poison = b"{" + b"x" * 1_500_000  # undecodable, and over the producer's 1 MB limit
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=4 << 20)
    for i, c in enumerate(valid):
        producer.send(topic, key=message_key(c.tuple), value=encode_native(c))
        if i == 20:
            producer.send(topic, key=b"poison", value=poison)
    producer.flush()
    producer.close()
    stats = run_consumer(
        path, settings(broker.bootstrap, topic), until={f"{topic}:0": 41}, seconds=20
    )
    assert stats.dead_letters == 1 and stats.changes == 40
    expect(path, valid)
    dead = _read_all(broker.bootstrap, f"{topic}.dlq")
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers["leopard.source.offset"] == b"21"
    assert b"too large" in headers["leopard.value.replaced"]
    assert b"1,500,001 bytes" in dead[0].value and b"sha256" in dead[0].value


def test_a_failed_dead_letter_write_rewinds_and_loses_nothing(
    broker: LocalBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic, path = f"dlqfail-{time.monotonic_ns()}", tmp_path / "idx"
    create_topic(broker.bootstrap, topic)
    create_topic(broker.bootstrap, f"{topic}.dlq")
    build(path, CONFIG, BASE, {})
    valid = touches("v", 30)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i, c in enumerate(valid):
        producer.send(topic, key=message_key(c.tuple), value=encode_native(c))
        if i in (5, 25):
            producer.send(topic, key=b"poison", value=b"not json")
    producer.flush()
    producer.close()
    failures = {"left": 2}
    real = DeadLetters.write

    def flaky(self: DeadLetters, dead: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise BrokerError("writing to the dead-letter topic failed: injected")
        real(self, dead)

    monkeypatch.setattr(DeadLetters, "write", flaky)
    stats = run_consumer(
        path, settings(broker.bootstrap, topic), until={f"{topic}:0": 32}, seconds=30
    )
    assert failures["left"] == 0 and stats.changes == 30 and stats.dead_letters == 2
    expect(path, valid)
    assert len(_read_all(broker.bootstrap, f"{topic}.dlq")) == 2


def test_a_killed_broker_is_reported_down_within_10_s(
    own_broker: LocalBroker, tmp_path: Path
) -> None:
    topic, path = "changes", tmp_path / "idx"
    create_topic(own_broker.bootstrap, topic)
    build(path, CONFIG, BASE, {})
    consumer = ChangeConsumer(path, settings(own_broker.bootstrap, topic))
    thread = threading.Thread(target=consumer.run)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not consumer.source.assigned and time.monotonic() < deadline:
            time.sleep(0.05)
        assert consumer.stats.broker_up
        own_broker.stop()
        killed = time.monotonic()
        while consumer.stats.broker_up and time.monotonic() - killed < 15:
            time.sleep(0.1)
        assert not consumer.stats.broker_up
        assert time.monotonic() - killed < 10
        own_broker.start()
        back = time.monotonic()
        while not consumer.stats.broker_up and time.monotonic() - back < 20:
            time.sleep(0.1)
        assert consumer.stats.broker_up
    finally:
        consumer.stop()
        thread.join(30)
        consumer.index.close()


def _read_all(bootstrap: str, topic: str) -> list[Any]:
    client = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        client.assign([tp])
        client.seek_to_beginning(tp)
        out: list[Any] = []
        quiet = 0
        while quiet < 4:
            got = client.poll(timeout_ms=300)
            quiet = 0 if got else quiet + 1
            for batch in got.values():
                out.extend(batch)
        return out
    finally:
        client.close()


def test_a_killed_broker_under_serve_turns_readiness_off_within_10_s(
    own_broker: LocalBroker, tmp_path: Path
) -> None:
    topic, path = "changes", tmp_path / "idx"
    create_topic(own_broker.bootstrap, topic)
    build(path, CONFIG, BASE, {})
    args = ("--index", str(path), "--brokers", own_broker.bootstrap, "--topic", topic)
    with leopard_serve(*args) as (url, _proc):
        assert wait_until(lambda: call(url, "GET", "/readyz").status == 200)
        own_broker.stop()
        killed = time.monotonic()
        ready = wait_until(lambda: call(url, "GET", "/readyz").status == 503, timeout=15)
        assert ready and time.monotonic() - killed < 10
        answer = call(url, "GET", "/readyz")
        assert any("broker" in reason for reason in answer.json["reasons"])
        metrics = parse_metrics(call(url, "GET", "/metrics").body.decode())
        assert metrics["leopard_consumer_broker_up"] == [({}, 0.0)]


def test_a_partition_stopped_at_a_gap_does_not_stall_the_others_after_a_rebalance(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """A partition stopped at a gap is paused; when the group assigns it again (any
    rebalance), it must still be given a position, or the client fails every poll for
    it and the healthy partitions stall with it."""
    topic = f"gapped-{time.monotonic_ns()}"
    create_topic(broker.bootstrap, topic, partitions=2)
    # the index applied up to offset 5 of partition 0, whose log is empty: a gap
    source = KafkaSource(settings(broker.bootstrap, topic), lambda: {f"{topic}:0": 5})
    try:
        deadline = time.monotonic() + 30
        while f"{topic}:0" not in source.stopped and time.monotonic() < deadline:
            source.poll()
        assert f"{topic}:0" in source.stopped
        # the group assigns the partitions anew (as any rebalance does): the client
        # forgets their positions, the source's rebalance listener gives them again
        client = source._consumer
        assert client is not None
        listener = client._subscription.rebalance_listener
        client.unsubscribe()
        client.subscribe(topics=[topic], listener=listener)
        until = time.monotonic() + 30
        while not client.assignment() and time.monotonic() < until:
            source.poll()
        assert client.assignment()
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        value = encode_native(Change("touch", parse_tuple("group:a#member@user:p1")))
        producer.send(topic, value=value, partition=1).get(10)
        producer.close()
        got: list[Any] = []
        while not got and time.monotonic() < deadline + 20:
            got = source.poll().messages
        assert [(m.partition, m.offset) for m in got] == [(1, 0)]
    finally:
        source.close()
