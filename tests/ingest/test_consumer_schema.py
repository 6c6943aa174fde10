"""A schema's arrows and computed usersets through the real stream: a consumer applies
random changes (folders moved, documents created and emptied, viewers added and
removed) published to a real broker, and the index answers as the BFS oracle of the
tuples the stream leaves, before and after a compaction and a restart.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from support.oracle import NotASet, Oracle

import leopard
from ingest.codecs import Change
from ingest.consumer import ChangeConsumer
from ingest.kafka.local_broker import LocalBroker, create_topic
from ingest.kafka.publish import publish
from ingest.settings import ConsumerSettings
from leopard.core.compact import compact
from leopard.core.index import Index
from leopard.model.config import schema_config
from leopard.model.names import parse_tuple
from leopard.model.tokens import reached

pytestmark = pytest.mark.kafka

SCHEMA = """definition user {}
definition group {
  relation member: user | group#member
}
definition folder {
  relation parent: folder
  relation owner: user
  relation viewer: user | user:* | group#member
  permission edit = owner + parent->edit
  permission view = viewer + edit + parent->view
}
definition doc {
  relation parent: folder
  relation viewer: user | group#member
  permission view = viewer + parent->view
}
"""

USERS = [f"user:u{i}" for i in range(5)]
GROUPS = [f"group:g{i}" for i in range(3)]
FOLDERS = [f"folder:f{i}" for i in range(4)]
DOCS = [f"doc:d{i}" for i in range(5)]


def random_tuple(rng: random.Random) -> str:
    kind = rng.randrange(7)
    if kind == 0:
        return f"{rng.choice(GROUPS)}#member@{rng.choice(USERS + [g + '#member' for g in GROUPS])}"
    if kind == 1:
        return f"{rng.choice(FOLDERS)}#parent@{rng.choice(FOLDERS)}"  # cycles too
    if kind == 2:
        return f"{rng.choice(FOLDERS)}#owner@{rng.choice(USERS)}"
    if kind == 3:
        subjects = USERS + ["user:*"] + [g + "#member" for g in GROUPS]
        return f"{rng.choice(FOLDERS)}#viewer@{rng.choice(subjects)}"
    if kind == 4:
        return f"{rng.choice(DOCS)}#parent@{rng.choice(FOLDERS)}"
    if kind == 5:
        return f"{rng.choice(DOCS)}#viewer@{rng.choice(USERS + [g + '#member' for g in GROUPS])}"
    return f"{rng.choice(DOCS)}#viewer@{rng.choice(FOLDERS)}"  # not allowed: skipped


def consume_until(path: Path, s: ConsumerSettings, target: dict[str, int]) -> None:
    consumer = ChangeConsumer(path, s)

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not reached(consumer.index.position, target):
            time.sleep(0.05)
        consumer.stop()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        consumer.run()
    finally:
        watcher.join()
        consumer.index.close()


def compare(path: Path, tuples: set[str], config: object) -> None:
    oracle = Oracle(sorted(tuples), config)  # type: ignore[arg-type]
    sets = [f"{o}#{r}" for o in FOLDERS for r in ("parent", "owner", "viewer", "edit", "view")]
    sets += [f"{o}#{r}" for o in DOCS for r in ("parent", "viewer", "view")]
    sets += [f"{g}#member" for g in GROUPS]
    with Index(path) as ix:
        for subject in [*USERS, "user:x", "user:*", *(g + "#member" for g in GROUPS)]:
            for group in sets:
                try:
                    want = oracle.check(subject, group)
                except NotASet:  # pragma: no cover - every name above is a set
                    raise
                assert ix.check(subject, group) == want, (subject, group)
            assert ix.groups_of(subject) == oracle.groups_of(subject), subject
        for group in sets:
            assert ix.members_of(group) == oracle.members_of(group), group


def test_a_schema_index_follows_the_stream_exactly(broker: LocalBroker, tmp_path: Path) -> None:
    rng = random.Random(11)
    schema = tmp_path / "schema.zed"
    schema.write_text(SCHEMA)
    config = schema_config(schema)
    topic = f"schema-{time.monotonic_ns()}"
    create_topic(broker.bootstrap, topic)
    base = {random_tuple(rng) for _ in range(30)}
    path = tmp_path / "idx"
    leopard.build_index([sorted(base)], path, schema=schema)
    state = set(base)
    settings = ConsumerSettings(
        brokers=broker.bootstrap, topics=[topic], group_id=f"g-{topic}", linger_ms=0
    )
    for round_ in range(3):
        changes = []
        for _ in range(60):
            if state and rng.random() < 0.45:
                line = rng.choice(sorted(state))
                changes.append(Change("delete", parse_tuple(line)))
                state.discard(line)
            else:
                line = random_tuple(rng)
                changes.append(Change("touch", parse_tuple(line)))
                state.add(line)
        done = publish(changes, broker.bootstrap, topic)
        consume_until(path, settings, done.position)
        compare(path, state, config)
        if round_ == 1:
            compact(path)
            compare(path, state, config)
