"""``leopard bridge``: SpiceDB's Watch published to a Kafka topic, consumed by replicas.

SpiceDB embedded is served over gRPC by the test fixture ``support.spicedb_front``; the
broker is the session's real Tansu process (``support.kafka``), the topic has three
partitions. Two indexes are bootstrapped from SpiceDB (``build --from``) and consume
the bridged topic: their versions carry SpiceDB's revision, a write's ZedToken is
waited for through each, and both answer every check as SpiceDB does. The bridge is
stopped and restarted from its checkpoint (and once restarted from an older
checkpoint, publishing revisions again, which the consumers do not apply twice);
records are keyed by tuple with the revision and ZedToken in headers.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.spicedb_front import SpiceDBFront, missing_reason
from world import SCHEMA, disagreements, random_relationship

from ingest.consumer import ChangeConsumer
from ingest.kafka.client import KafkaConsumer, TopicPartition
from ingest.kafka.local_broker import LocalBroker
from ingest.settings import ConsumerSettings
from ingest.upstream.bridge import Bridge, read_checkpoint
from ingest.upstream.headers import FROM, MARKER, REVISION, TOKEN
from ingest.upstream.spicedb import SpiceDBSource, bootstrap
from leopard.core.index import Index
from leopard.errors import InvalidInput, StreamGap, UpstreamGap
from leopard.model.tokens import decode_token
from leopard.model.zedtoken import SPICEDB_KEY, zedtoken_position

_MISSING = missing_reason()
pytestmark = [
    pytest.mark.spicedb,
    pytest.mark.kafka,
    pytest.mark.skipif(_MISSING is not None, reason=f"SpiceDB not installed: {_MISSING}"),
]


class Thread:
    def __init__(self, target: Callable[[], Any]) -> None:
        self.error: BaseException | None = None
        self._target = target
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as exc:
            self.error = exc

    def join(self) -> None:
        self.thread.join(30)
        assert not self.thread.is_alive()
        assert self.error is None, self.error


def churn(front: SpiceDBFront, rng: random.Random, rels: set[str], n: int) -> Any:
    token = None
    for _ in range(n):
        if rels and rng.random() < 0.4:
            gone = rng.sample(sorted(rels), min(len(rels), rng.randint(1, 3)))
            token = front.write(gone, operation="DELETE")
            rels.difference_update(gone)
        else:
            new = {random_relationship(rng) for _ in range(rng.randint(1, 3))}
            token = front.write(sorted(new))
            rels.update(new)
    return token


def records(broker: LocalBroker, topic: str) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list[Any] = []
        while True:
            got = consumer.poll(timeout_ms=1000)
            if not got:
                return out
            for batch in got.values():
                out.extend(batch)
    finally:
        consumer.close()


def test_bridge_to_consumers_carrying_spicedb_revisions(
    broker: LocalBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    rng = random.Random(61)
    topic = new_topic(partitions=3)
    with SpiceDBFront(SCHEMA) as front:
        rels = {random_relationship(rng) for _ in range(50)}
        front.write(sorted(rels))
        paths = [tmp_path / "a", tmp_path / "b"]
        for path in paths:
            bootstrap(path, SpiceDBSource(front.target))
        start = front.token.token
        checkpoint = tmp_path / "bridge.json"
        consumers = [
            ChangeConsumer(
                path,
                ConsumerSettings(
                    brokers=broker.bootstrap, topics=[topic], group_id=f"g-{i}", linger_ms=0
                ),
            )
            for i, path in enumerate(paths)
        ]
        running = [Thread(c.run) for c in consumers]
        try:
            bridge = Bridge(SpiceDBSource(front.target), broker.bootstrap, topic, checkpoint)
            bridged = Thread(bridge.run)
            for _ in range(3):
                token = churn(front, rng, rels, 15)
                for c in consumers:
                    c.index.wait_for(token.token, timeout=20)
                    assert disagreements(c.index, front) == []
                    version = decode_token(c.index.version)
                    assert version[SPICEDB_KEY] >= zedtoken_position(token.token)[SPICEDB_KEY]
            bridge.stop()
            bridged.join()
            saved = read_checkpoint(checkpoint)
            assert saved is not None and saved["topic"] == topic
            assert saved["revision"] == zedtoken_position(token.token)[SPICEDB_KEY]
            churn(front, rng, rels, 10)  # while no bridge runs
            # restarted from the checkpoint
            bridge = Bridge(SpiceDBSource(front.target), broker.bootstrap, topic, checkpoint)
            bridged = Thread(bridge.run)
            token = churn(front, rng, rels, 10)
            for c in consumers:
                c.index.wait_for(token.token, timeout=20)
                assert disagreements(c.index, front) == []
            bridge.stop()
            bridged.join()
            # restarted from an old checkpoint (a crash before the rename): revisions
            # are published again, and the consumers do not apply them again
            checkpoint.write_text(json.dumps({"token": start, "topic": topic}))
            changes = sum(c.stats.changes for c in consumers)
            bridge = Bridge(SpiceDBSource(front.target), broker.bootstrap, topic, checkpoint)
            bridged = Thread(bridge.run)
            token = churn(front, rng, rels, 5)
            for c in consumers:
                c.index.wait_for(token.token, timeout=20)
                assert disagreements(c.index, front) == []
            bridge.stop()
            bridged.join()
            assert bridge.stats.changes > 40  # the old revisions went out again
            assert sum(c.stats.changes for c in consumers) - changes < 2 * 5 * 3 + 1
        finally:
            for c in consumers:
                c.stop()
            for r in running:
                r.join()
    published = records(broker, topic)
    changes = [r for r in published if r.value]
    markers = [r for r in published if not r.value]
    assert changes and markers
    for r in changes:
        headers = dict(r.headers)
        assert r.key.decode() == json.loads(r.value)["tuple"]  # keyed by the tuple
        assert int(headers[REVISION]) == zedtoken_position(headers[TOKEN].decode())[SPICEDB_KEY]
    assert {int(dict(r.headers)[MARKER]) for r in markers} == {3}
    assert {r.partition for r in markers} == {0, 1, 2}
    assert all(FROM in dict(r.headers) for r in published)


def test_a_bridge_started_after_the_index_stops_its_consumer(
    broker: LocalBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """The README's order gone wrong: the index is built from SpiceDB, changes are
    written, and only then a bridge starts (no checkpoint, no --start-token: at
    SpiceDB's current revision). The changes in between are in no record; the consumer
    stops at the first record rather than apply later ones and answer without them.
    An index rebuilt from SpiceDB then goes on from the same records."""
    rng = random.Random(62)
    topic = new_topic(partitions=2)
    with SpiceDBFront(SCHEMA) as front:
        rels = {random_relationship(rng) for _ in range(30)}
        front.write(sorted(rels))
        path = tmp_path / "ix"
        bootstrap(path, SpiceDBSource(front.target))
        churn(front, rng, rels, 5)  # never published
        bridge = Bridge(SpiceDBSource(front.target), broker.bootstrap, topic, tmp_path / "b.json")
        bridged = Thread(bridge.run)
        try:
            token = churn(front, rng, rels, 5)
            settings = ConsumerSettings(
                brokers=broker.bootstrap, topics=[topic], group_id="g-gap", linger_ms=0
            )
            consumer = ChangeConsumer(path, settings)
            with pytest.raises(StreamGap, match="never published"):
                consumer.run(idle_exit=20)
            assert (
                decode_token(consumer.index.version).get(SPICEDB_KEY, 0)
                < zedtoken_position(token.token)[SPICEDB_KEY]
            )
            consumer.index.close()
            bootstrap(path, SpiceDBSource(front.target))  # rebuilt: at or past the bridge's start
            consumer = ChangeConsumer(path, settings)
            running = Thread(consumer.run)
            token = churn(front, rng, rels, 5)
            consumer.index.wait_for(token.token, timeout=20)
            assert disagreements(consumer.index, front) == []
            consumer.stop()
            running.join()
        finally:
            bridge.stop()
            bridged.join()


def test_bridge_command(broker: LocalBroker, topic: str, tmp_path: Path) -> None:
    rng = random.Random(62)
    with SpiceDBFront(SCHEMA) as front:
        rels = {random_relationship(rng) for _ in range(30)}
        front.write(sorted(rels))
        path = tmp_path / "ix"
        bootstrap(path, SpiceDBSource(front.target))
        checkpoint = tmp_path / "bridge.json"
        leopard = [sys.executable, "-m", "leopard"]
        proc = subprocess.Popen(
            [
                *leopard,
                *("bridge", "--source", f"spicedb:{front.target}"),
                *("--brokers", broker.bootstrap, "--topic", topic),
                *("--checkpoint", str(checkpoint), "--start-token", front.token.token),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        consumer = ChangeConsumer(
            path, ConsumerSettings(brokers=broker.bootstrap, topics=[topic], group_id="g")
        )
        running = Thread(consumer.run)
        try:
            token = churn(front, rng, rels, 20)
            consumer.index.wait_for(token.token, timeout=30)
            assert disagreements(consumer.index, front) == []
        finally:
            consumer.stop()
            running.join()
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert f"bridged spicedb:{front.target} to {topic}" in err
        with Index(path) as ix:
            assert ix.position[SPICEDB_KEY] == zedtoken_position(token.token)[SPICEDB_KEY]


def test_a_schema_change_stops_the_bridge_saying_what_to_do(
    broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    from authzed.api import v1

    with SpiceDBFront(SCHEMA) as front:
        front.write(["group:g0#member@user:u1"])
        checkpoint = tmp_path / "bridge.json"
        bridge = Bridge(SpiceDBSource(front.target), broker.bootstrap, topic, checkpoint)
        running = Thread(bridge.run)
        front.write(["group:g0#member@user:u2"])
        front.client().WriteSchema(v1.WriteSchemaRequest(schema=SCHEMA + "\ndefinition extra {}\n"))
        running.thread.join(30)
        assert isinstance(running.error, UpstreamGap)
        said = str(running.error)
        assert "the schema changed at revision" in said
        assert "the bridge stops here" in said and repr(str(checkpoint)) in said
        assert f"consume topic {topic!r}" in said and "--start-token" in said
        assert "--rebuild-on-gap" not in said  # the follower's advice, not the bridge's
        saved = read_checkpoint(checkpoint)
        assert saved is not None
        # a start token other than the checkpoint's is refused, not ignored
        other = front.write(["group:g0#member@user:u3"]).token
        with pytest.raises(InvalidInput, match=r"--start-token .* remove the checkpoint"):
            Bridge(
                SpiceDBSource(front.target), broker.bootstrap, topic, checkpoint, start_token=other
            )
