"""Brokers that do not answer when a consumer starts, against a real broker started
later: the library's consumer (and ``serve``'s) retries as for an outage after the
start; ``leopard consume``'s (``stop_if_unreachable``) ends with one error."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ingest.codecs import Change
from ingest.consumer import ChangeConsumer
from ingest.kafka.local_broker import LocalBroker, create_topic, free_port
from ingest.kafka.publish import publish
from ingest.settings import ConsumerSettings
from leopard import build_index
from leopard.core.index import Index
from leopard.errors import BrokerError
from leopard.model.names import parse_tuple
from leopard.model.tokens import reached

pytestmark = pytest.mark.kafka


def settings(brokers: str) -> ConsumerSettings:
    return ConsumerSettings(brokers=brokers, topics=["changes"], linger_ms=0, group_id="g")


@pytest.fixture
def index(tmp_path: Path) -> Path:
    snapshot = tmp_path / "t.txt"
    snapshot.write_text("group:eng#member@user:alice\n")
    build_index([snapshot], tmp_path / "idx")
    return tmp_path / "idx"


def test_stop_if_unreachable_ends_run_with_the_error(index: Path) -> None:
    brokers = f"127.0.0.1:{free_port()}"
    consumer = ChangeConsumer(index, settings(brokers), stop_if_unreachable=True)
    try:
        with pytest.raises(BrokerError, match="cannot reach the brokers"):
            consumer.run()
    finally:
        consumer.index.close()


def test_a_broker_down_at_the_start_is_retried_until_it_answers(index: Path) -> None:
    broker = LocalBroker(port=free_port())
    consumer = ChangeConsumer(index, settings(broker.bootstrap))
    runner = threading.Thread(target=consumer.run)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while consumer.stats.broker_up and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not consumer.stats.broker_up  # an outage, reported, not an end
        assert runner.is_alive()
        with broker:
            create_topic(broker.bootstrap, "changes")
            change = Change("touch", parse_tuple("group:eng#member@user:bob"))
            done = publish([change], broker.bootstrap, "changes")
            deadline = time.monotonic() + 30
            while not reached(consumer.index.position, done.position):
                assert time.monotonic() < deadline, consumer.stats
                time.sleep(0.05)
            assert consumer.stats.broker_up
            consumer.stop()
            runner.join()
    finally:
        consumer.stop()
        runner.join()
        consumer.index.close()
    with Index(index) as ix:
        assert ix.check("user:bob", "group:eng")
