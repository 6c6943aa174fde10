"""``leopard bridge`` and brokers that stop answering: it waits, and loses nothing.

A private Tansu process (``LocalBroker``) is frozen with SIGSTOP while the bridge
publishes SpiceDB's changes (SpiceDB embedded, ``support.spicedb_front``) and a
consumer applies them. The bridge exited when a poll was not acknowledged within
``ACK_TIMEOUT``; now it reports the brokers unavailable, goes on, and says when they
are back. Once with the bridge's own producer, which goes on sending the poll (it is
acknowledged late and checkpointed); once with a producer that gives up on records
after 3 s (as the bridge's own does only after a week), so that the bridge rewinds
the Watch to its checkpoint and publishes the poll again with backoff. Either way the
consumer's index then answers every check as SpiceDB does, through a write made while
the brokers were away.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.spicedb_front import SpiceDBFront, missing_reason
from world import SCHEMA, disagreements, random_relationship

from ingest.consumer import ChangeConsumer
from ingest.kafka.client import KafkaProducer
from ingest.kafka.local_broker import LocalBroker, create_topic
from ingest.settings import ConsumerSettings
from ingest.upstream import bridge as bridge_module
from ingest.upstream.bridge import Bridge, read_checkpoint
from ingest.upstream.spicedb import SpiceDBSource, bootstrap
from leopard.model.zedtoken import SPICEDB_KEY, zedtoken_position

_MISSING = missing_reason()
pytestmark = [
    pytest.mark.spicedb,
    pytest.mark.kafka,
    pytest.mark.skipif(_MISSING is not None, reason=f"SpiceDB not installed: {_MISSING}"),
]


def started(target: Any) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize("gives_up", [False, True], ids=["acknowledged-late", "published-again"])
def test_the_bridge_waits_out_frozen_brokers(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    gives_up: bool,
) -> None:
    monkeypatch.setattr(bridge_module, "ACK_TIMEOUT", 1.0)
    caplog.set_level(logging.INFO, logger="leopard.bridge")
    rng = random.Random(71)
    with LocalBroker() as own, SpiceDBFront(SCHEMA) as front:
        create_topic(own.bootstrap, "changes", partitions=2)
        rels = sorted({random_relationship(rng) for _ in range(30)})
        front.write(rels)
        path = tmp_path / "ix"
        bootstrap(path, SpiceDBSource(front.target))
        checkpoint = tmp_path / "bridge.json"
        producer = None
        if gives_up:
            # gives up on a record after 3 s; not idempotent, since kafka-python's
            # idempotent producer sends nothing more once it has expired a batch
            producer = KafkaProducer(
                bootstrap_servers=[own.bootstrap],
                acks="all",
                linger_ms=2,
                max_in_flight_requests_per_connection=1,
                request_timeout_ms=1000,
                delivery_timeout_ms=3000,
                enable_idempotence=False,
            )
        bridge = Bridge(
            SpiceDBSource(front.target),
            own.bootstrap,
            "changes",
            checkpoint,
            start_token=front.token.token,
            backoff=(0.2, 1.0),
            producer=producer,
        )
        bridging, bridge_errors = started(bridge.run)
        consumer = ChangeConsumer(
            path, ConsumerSettings(brokers=own.bootstrap, topics=["changes"], group_id="g")
        )
        consuming, consumer_errors = started(consumer.run)
        try:
            token = front.write([random_relationship(rng) for _ in range(3)])
            consumer.index.wait_for(token.token, timeout=30)
            before = zedtoken_position(token.token)[SPICEDB_KEY]
            wait_until(lambda: bridge.stats.revision >= before, 10, "checkpointed")
            own.pause()
            try:
                # a delete and writes while the brokers are away
                front.write(rels[:5], operation="DELETE")
                late = front.write([random_relationship(rng) for _ in range(3)])
                time.sleep(8)  # past ACK_TIMEOUT, and past the 3 s a producer gives up after
                assert not bridge_errors, bridge_errors  # was: BrokerError, publishing failed
                assert bridging.is_alive()
                assert not bridge.stats.broker_up and bridge.stats.outages == 1
                saved = read_checkpoint(checkpoint)
                assert saved is not None and saved["revision"] == bridge.stats.revision
                assert bridge.stats.revision < zedtoken_position(late.token)[SPICEDB_KEY]
            finally:
                own.resume()
            token = front.write([random_relationship(rng) for _ in range(3)])
            consumer.index.wait_for(late.token, timeout=60)
            consumer.index.wait_for(token.token, timeout=60)
            assert disagreements(consumer.index, front) == []
            wait_until(lambda: bridge.stats.broker_up, 10, "reported reachable again")
        finally:
            bridge.stop()
            consumer.stop()
            bridging.join(30)
            consuming.join(30)
        assert not bridge_errors and not consumer_errors, (bridge_errors, consumer_errors)
        assert bridge.stats.outages == 1
        text = caplog.text
        assert "brokers unavailable (" in text
        assert "nothing is checkpointed until they answer" in text
        assert "brokers reachable again: revision" in text
        assert ("publishing again from revision" in text) == gives_up
