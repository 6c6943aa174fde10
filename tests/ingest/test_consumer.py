"""The streaming consumer through a real broker: snapshot plus stream equals the model.

Every test here builds a real snapshot index, writes generated tuple changes to a real
Tansu broker (``tests/conftest.py``), runs the consumer (in this process, or as
``python -m leopard consume`` when it is to be killed) and compares the index with the
BFS oracle applied to the snapshot and the same changes (``tests/test_incremental.py``
has the model and the comparison).

Covered: resume from the offsets stored in the index (they win over the group's
committed offsets); a fresh index starting from its build position, or from the
beginning; the four change formats end to end; poison messages dead-lettered with their
reason and source; SIGKILL at random points while tens of thousands of changes stream
(after every kill the index equals the model at exactly its stored position, so a batch
and its offsets land together; at the end nothing is lost and the dead-letter topic
shows no message handled twice but for the batches in flight at a kill); a broker
frozen with SIGSTOP; ``leopard compact`` in another process while the consumer runs,
and queries in another thread during a compaction; compaction started by the consumer
itself past its threshold; SIGTERM; ``idle_exit`` counted from the partition assignment.

Changes of one tuple are keyed by the tuple (``ingest.codecs.message_key``), so they
stay in order on one partition; across partitions the order differs from the order of
publishing, which cannot change the final state because each tuple's last change wins.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.index_model import REWRITE, Model, build, compare_all
from support.oracle import Oracle

from ingest.codecs import Change, encode_native, message_key
from ingest.consumer import ChangeConsumer, ConsumerSettings, ConsumerStats
from ingest.kafka.client import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from ingest.kafka.local_broker import LocalBroker, create_topic
from leopard.core.compact import compact
from leopard.core.index import Index
from leopard.errors import StreamGap
from leopard.model.names import RelationTuple, format_tuple, parse_tuple
from leopard.model.tokens import encode_token, reached
from leopard.store.generations import IndexDir

pytestmark = pytest.mark.kafka

CONFIG = REWRITE  # group#member fed by member and manager; team#member by member

# -- generated changes ----------------------------------------------------------------

GROUPS = [f"group:g{i}" for i in range(16)] + [f"team:t{i}" for i in range(6)]
USERS = [f"user:u{i}" for i in range(80)] + ["user:*", "service:s0", "service:*"]
# never touched by the stream: a pair whose answer must not change, ever
STABLE = ["team:stable_top#member@team:stable_mid#member", "team:stable_mid#member@user:stable"]


def _stored(rng: random.Random, group: str) -> str:
    rel = rng.choice(["member", "manager"]) if group.startswith("group:") else "member"
    return f"{group}#{rel}"


def random_tuple(rng: random.Random) -> RelationTuple:
    """A tuple over a small universe: mostly leaf members, some nesting, some noise."""
    kind = rng.random()
    resource = _stored(rng, rng.choice(GROUPS))
    if kind < 0.72:
        subject = rng.choice(USERS)
    elif kind < 0.92:
        subject = rng.choice(GROUPS) + "#member"  # may close cycles and self-loops
    elif kind < 0.96:
        subject = rng.choice(GROUPS[:4]) + "#owner"  # an opaque userset
    else:
        resource = f"doc:d{rng.randrange(5)}#viewer"  # not indexed: skipped
        subject = rng.choice(USERS)
    return parse_tuple(f"{resource}@{subject}")


def snapshot_lines(rng: random.Random, n: int) -> list[str]:
    return STABLE + sorted({format_tuple(random_tuple(rng)) for _ in range(n)})


def generate(rng: random.Random, n: int, present: set[RelationTuple]) -> list[Change]:
    """``n`` changes; deletes mostly hit present tuples, touches mostly absent ones."""
    present = set(present) - {parse_tuple(x) for x in STABLE}
    pool = sorted(present, key=format_tuple)
    out = []
    for _ in range(n):
        if pool and rng.random() < 0.45:
            t = rng.choice(pool)
        else:
            t = random_tuple(rng)
            pool.append(t)
        if t in present:
            op = "delete" if rng.random() < 0.7 else "touch"
        else:
            op = "touch" if rng.random() < 0.85 else "delete"
        (present.add if op == "touch" else present.discard)(t)
        out.append(Change(op, t))  # type: ignore[arg-type]
    return out


# -- producing and reading ------------------------------------------------------------


@dataclass
class Published:
    """What was written to a topic: each message's partition and offset, and its changes."""

    topic: str
    entries: list[tuple[int, int, list[Change]]] = field(default_factory=list)

    def highwater(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for part, offset, _ in self.entries:
            key = f"{self.topic}:{part}"
            out[key] = max(out.get(key, 0), offset + 1)
        return out

    def changes_before(self, position: dict[str, int]) -> list[Change]:
        """The changes of every message below ``position``, in the order written."""
        return [
            c
            for part, offset, cs in self.entries
            if offset < position.get(f"{self.topic}:{part}", 0)
            for c in cs
        ]


def produce(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes | None, list[Change]]],
    published: Published | None = None,
) -> Published:
    """Send ``(key, value, changes)`` messages; record where each landed."""
    out = published or Published(topic)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v, _ in messages]
        producer.flush(timeout=60)
        for fut, (_, _, cs) in zip(futures, messages, strict=True):
            meta = fut.get(timeout=60)
            out.entries.append((meta.partition, meta.offset, cs))
    finally:
        producer.close(timeout=5)
    return out


def native(changes: Sequence[Change]) -> list[tuple[bytes | None, bytes | None, list[Change]]]:
    return [(message_key(c.tuple), encode_native(c), [c]) for c in changes]


def read_topic(bootstrap: str, topic: str, timeout: float = 10.0) -> list[Any]:
    """Every record of a one-partition topic, read without a consumer group."""
    client = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        client.assign([tp])
        client.seek_to_beginning(tp)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline and quiet < 3:
            got = client.poll(timeout_ms=300)
            quiet = 0 if got else quiet + 1
            for batch in got.values():
                records.extend(batch)
        return records
    finally:
        client.close()


# -- the consumer, in this process or another ----------------------------------------


def settings(broker: LocalBroker, topic: str, **kw: Any) -> ConsumerSettings:
    kw.setdefault("group_id", f"g-{topic}")
    return ConsumerSettings(brokers=broker.bootstrap, topics=[topic], **kw)


def consume_until(
    path: Path, s: ConsumerSettings, target: dict[str, int], timeout: float = 30.0
) -> ConsumerStats:
    """Run a consumer here until the index reaches ``target``; its stats."""
    holder: dict[str, ChangeConsumer] = {}

    def on_batch(_: ConsumerStats) -> None:
        if reached(holder["c"].index.position, target):
            holder["c"].stop()

    consumer = ChangeConsumer(path, s, on_batch=on_batch)
    holder["c"] = consumer
    timer = threading.Timer(timeout, consumer.stop)
    timer.start()
    try:
        if reached(consumer.index.position, target):
            consumer.stop()
        stats = consumer.run()
    finally:
        timer.cancel()
        consumer.index.close()
    return stats


@contextmanager
def consumer_process(
    path: Path, broker: LocalBroker, topic: str, log: Path, *extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m leopard consume`` in a child process; killed on the way out if alive."""
    cmd = [sys.executable, "-m", "leopard", "consume", "--index", str(path)]
    cmd += ["--brokers", broker.bootstrap, "--topic", topic, "--group-id", f"g-{topic}", *extra]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def position_of(path: Path) -> dict[str, int]:
    with Index(path) as ix:
        return ix.position


def wait_position(path: Path, target: dict[str, int], timeout: float) -> None:
    """Wait (from another process's view) until the index has applied ``target``."""
    with Index(path) as ix:
        ix.wait_for(encode_token(target), timeout=timeout, poll=0.1)


# -- comparing -------------------------------------------------------------------------


def model_of(snapshot: Sequence[str], changes: Sequence[Change]) -> Model:
    model = Model(CONFIG, (parse_tuple(x) for x in snapshot))
    for c in changes:  # one change per batch: every group a touch named is known
        model.apply([(c.op, c.tuple)])
    return model


def assert_matches(path: Path, model: Model, *, sample: int | None = None) -> None:
    """The index at ``path`` answers as the oracle of ``model``'s tuples.

    Subjects that are groups emptied by deletes are not asked about: whether the index
    still knows such a name depends on batch boundaries (see test_incremental.py).
    """
    strict = Oracle(sorted(model.tuples, key=format_tuple), CONFIG)
    with Index(path) as ix:
        compare_all(ix, strict, sample=sample, exclude=model.known - strict.groups)
        assert ix.check("user:stable", "team:stable_top")


# -- integration -------------------------------------------------------------------------


def test_snapshot_plus_stream_equals_the_model_and_resumes(
    broker: LocalBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    rng = random.Random(1)
    topic = new_topic(partitions=3)
    # Changes before the snapshot's position are already in it; these would show if read.
    junk = [Change("touch", parse_tuple(f"group:junk#member@user:j{i}")) for i in range(30)]
    before = produce(broker.bootstrap, topic, native(junk))
    snap = snapshot_lines(rng, 400)
    path = tmp_path / "ix"
    build(path, CONFIG, snap, before.highwater())
    stream = generate(rng, 3000, {parse_tuple(x) for x in snap})
    first = produce(broker.bootstrap, topic, native(stream[:2000]))
    stats = consume_until(path, settings(broker, topic), first.highwater())
    assert position_of(path) == {**before.highwater(), **first.highwater()}
    assert stats.messages == 2000 and stats.dead_letters == 0
    assert stats.member_changes > 0 and stats.edge_changes > 0 and stats.skipped > 0
    assert_matches(path, model_of(snap, stream[:2000]))

    # Resume: the group's committed offsets say "all read"; the index's offsets win.
    rest = produce(broker.bootstrap, topic, native(stream[2000:]))
    ahead = {
        TopicPartition(topic, int(k.rpartition(":")[2])): OffsetAndMetadata(v, "", -1)
        for k, v in rest.highwater().items()
    }
    committer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=f"g-{topic}")
    try:
        committer.commit(ahead)
    finally:
        committer.close()
    stats = consume_until(path, settings(broker, topic), rest.highwater())
    assert stats.messages == 1000  # exactly the new ones: nothing replayed, nothing skipped
    assert position_of(path) == rest.highwater()
    assert_matches(path, model_of(snap, stream))

    # A fresh index built without a position starts at the beginning: the junk too.
    fresh = tmp_path / "fresh"
    build(fresh, CONFIG, snap, {})
    stats = consume_until(fresh, settings(broker, topic, group_id="other"), rest.highwater())
    assert stats.messages == 30 + 3000
    assert_matches(fresh, model_of(snap, junk + stream))


def _openfga(c: Change) -> dict[str, Any]:
    t = c.tuple
    user = f"{t.subject_type}:{t.subject_id}" + (
        f"#{t.subject_relation}" if t.subject_relation else ""
    )
    op = "TUPLE_OPERATION_WRITE" if c.op == "touch" else "TUPLE_OPERATION_DELETE"
    key = {"user": user, "relation": t.relation, "object": f"{t.resource_type}:{t.resource_id}"}
    return {"tuple_key": key, "operation": op, "timestamp": "2024-05-01T10:00:00Z"}


def _spicedb(c: Change, rng: random.Random) -> dict[str, Any]:
    t = c.tuple
    subject: dict[str, Any] = {"object": {"objectType": t.subject_type, "objectId": t.subject_id}}
    if t.subject_relation:
        subject["optionalRelation"] = t.subject_relation
    op = (
        rng.choice(["OPERATION_CREATE", "OPERATION_TOUCH"])
        if c.op == "touch"
        else "OPERATION_DELETE"
    )
    rel = {
        "resource": {"objectType": t.resource_type, "objectId": t.resource_id},
        "relation": t.relation,
        "subject": subject,
    }
    return {"operation": op, "relationship": rel}


def _debezium_row(t: RelationTuple) -> dict[str, Any]:
    return {
        "id": 1,
        "resource_type": t.resource_type,
        "resource_id": t.resource_id,
        "relation": t.relation,
        "subject_type": t.subject_type,
        "member_id": t.subject_id,  # mapped with the codec option subject_id=member_id
        "subject_relation": t.subject_relation,
    }


def encode_stream(
    fmt: str, changes: list[Change], rng: random.Random
) -> list[tuple[bytes | None, bytes | None, list[Change]]]:
    """Messages in ``fmt``; where a format packs several changes, several per message."""
    out: list[tuple[bytes | None, bytes | None, list[Change]]] = []
    i = 0
    while i < len(changes):
        c = changes[i]
        key = message_key(c.tuple)
        if fmt == "native":
            out.append((key, encode_native(c), [c]))
        elif fmt == "openfga":
            if rng.random() < 0.2:  # a whole ReadChanges page
                page = changes[i : i + 3]
                doc = {"changes": [_openfga(x) for x in page], "continuation_token": "x"}
                out.append((key, json.dumps(doc).encode(), page))
                i += len(page)
                continue
            out.append((key, json.dumps(_openfga(c)).encode(), [c]))
        elif fmt == "spicedb":
            if rng.random() < 0.05:  # a checkpoint: a token, no updates
                out.append((None, json.dumps({"changesThrough": {"token": "t"}}).encode(), []))
            n = rng.randint(1, 4)
            group = changes[i : i + n]
            doc = {
                "updates": [_spicedb(x, rng) for x in group],
                "changesThrough": {"token": f"t{i}"},
            }
            out.append((key, json.dumps(doc).encode(), group))
            i += len(group)
            continue
        else:  # debezium
            nxt = changes[i + 1] if i + 1 < len(changes) else None
            if c.op == "delete" and nxt is not None and nxt.op == "touch":
                doc = {
                    "op": "u",
                    "before": _debezium_row(c.tuple),
                    "after": _debezium_row(nxt.tuple),
                    "ts_ms": 1714557600000,
                }
                out.append((key, json.dumps(doc).encode(), [c, nxt]))
                i += 2
                continue
            if c.op == "touch":
                doc = {"op": rng.choice("cr"), "before": None, "after": _debezium_row(c.tuple)}
            else:
                doc = {"op": "d", "before": _debezium_row(c.tuple), "after": None}
            if rng.random() < 0.3:
                doc = {"schema": {}, "payload": doc}  # the JSON converter with schemas
            out.append((key, json.dumps(doc).encode(), [c]))
            if c.op == "delete":
                out.append((key, None, []))  # the tombstone Debezium sends after a delete
        i += 1
    return out


@pytest.mark.parametrize("fmt", ["native", "openfga", "spicedb", "debezium"])
def test_each_format_end_to_end(fmt: str, broker: LocalBroker, topic: str, tmp_path: Path) -> None:
    rng = random.Random(fmt)
    snap = snapshot_lines(rng, 150)
    path = tmp_path / "ix"
    build(path, CONFIG, snap, {f"{topic}:0": 0})
    stream = generate(rng, 400, {parse_tuple(x) for x in snap})
    pub = produce(broker.bootstrap, topic, encode_stream(fmt, stream, rng))
    options = {"subject_id": "member_id"} if fmt == "debezium" else {}
    s = settings(broker, topic, format=fmt, codec_options=options)
    stats = consume_until(path, s, pub.highwater())
    assert stats.dead_letters == 0
    assert stats.changes == len(stream)
    assert position_of(path) == pub.highwater()
    assert_matches(path, model_of(snap, stream))


def test_a_spicedb_schema_change_stops_the_stream_at_it(
    broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    """A Watch response saying the schema changed, relayed to Kafka: the consumer stops
    there, naming the message (``leopard follow`` stops at it too), rather than read on
    under the old schema; again at every start, until the index is rebuilt."""
    path = tmp_path / "ix"
    build(path, CONFIG, ["group:g1#member@user:u1"], {f"{topic}:0": 0})
    rng = random.Random(3)
    before, after = (Change("touch", parse_tuple(f"group:g1#member@user:{u}")) for u in "ab")
    token = {"changesThrough": {"token": "GhUKEzE3MDAwMDAwMDAwMDAwMDAwMDA="}}
    docs = [
        {"updates": [_spicedb(before, rng)], **token},
        {"schemaUpdated": True, **token},
        {"updates": [_spicedb(after, rng)], **token},
    ]
    produce(broker.bootstrap, topic, [(b"k", json.dumps(d).encode(), []) for d in docs])
    for _ in range(2):
        consumer = ChangeConsumer(path, settings(broker, topic, format="spicedb"))
        with pytest.raises(StreamGap, match=rf"{topic}:0 offset 1: the schema changed"):
            consumer.run(idle_exit=20)
        with Index(path) as ix:
            assert not ix.check("user:b", "group:g1")
            assert ix.position[f"{topic}:0"] <= 1  # not past the schema change


# -- bad data --------------------------------------------------------------------------

POISON: list[tuple[bytes | None, str]] = [
    (b"not json at all", "not JSON"),
    (b'{"op": "\xff"}', "not UTF-8 (byte 0xff at position 8)"),
    (b"[1, 2]", "JSON list"),
    (b"", "empty"),
    (None, "empty"),
    (b'{"op": "upsert", "tuple": "group:g1#member@user:u1"}', "'op' is 'upsert'"),
    (b'{"op": "touch", "tuple": "group:g1#member@"}', "group:g1#member@"),
    (b'{"op": "touch", "tuple": "group:g1#member@user:*#member"}', "wildcard"),
    (b'{"op": "delete"}', "missing 'tuple'"),
]


def test_poison_messages_go_to_the_dead_letter_topic(
    broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    create_topic(broker.bootstrap, f"{topic}.dlq", 1)
    rng = random.Random(5)
    snap = snapshot_lines(rng, 100)
    path = tmp_path / "ix"
    build(path, CONFIG, snap, {})
    stream = generate(rng, 300, {parse_tuple(x) for x in snap})
    messages = native(stream)
    # poison interleaved with the good ones, so batches mix both
    for i, (value, _) in enumerate(POISON):
        messages.insert(30 * i + 7, (f"bad{i}".encode(), value, []))
    pub = produce(broker.bootstrap, topic, messages)
    stats = consume_until(path, settings(broker, topic), pub.highwater())
    assert stats.dead_letters == len(POISON)
    assert stats.changes == len(stream)
    assert position_of(path) == pub.highwater()  # the consumer carried on past them
    assert_matches(path, model_of(snap, stream))

    dead = read_topic(broker.bootstrap, f"{topic}.dlq")
    assert len(dead) == len(POISON)
    offsets = {off for part, off, cs in pub.entries if not cs}
    for record, (value, reason) in zip(dead, POISON, strict=True):
        headers = {k: v.decode() for k, v in record.headers}
        assert reason in headers["leopard.reason"], headers
        assert headers["leopard.source.topic"] == topic
        assert headers["leopard.source.partition"] == "0"
        assert int(headers["leopard.source.offset"]) in offsets
        assert record.value == (value or b"")
        assert record.key.startswith(b"bad")
    assert sorted(int(dict(r.headers)["leopard.source.offset"]) for r in dead) == sorted(offsets)


# -- faults -----------------------------------------------------------------------------


def test_sigkill_at_random_points_loses_and_doubles_nothing(
    broker: LocalBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """Kill ``leopard consume`` with SIGKILL while ~15k changes stream in; restart it.

    Each run is killed at a random moment after it has applied something, so kills
    land inside batches, between them, and while it catches up with a backlog. After
    every kill the index must equal the model at exactly its stored position: a batch
    and its offsets land together or not at all. At the end the position is the high
    watermark and the state the model's. Poison messages in the stream show, in the
    dead-letter topic, that no message was handled twice but for a batch in flight.
    """
    rng = random.Random(7)
    topic = new_topic(partitions=3)
    create_topic(broker.bootstrap, f"{topic}.dlq", 1)
    snap = snapshot_lines(rng, 1000)
    path = tmp_path / "ix"
    build(path, CONFIG, snap, {f"{topic}:{p}": 0 for p in range(3)})
    stream = generate(rng, 18_000, {parse_tuple(x) for x in snap})
    chunks = [native(stream[i : i + 600]) for i in range(0, len(stream), 600)]
    for i, chunk in enumerate(chunks[::4]):
        chunk.insert(len(chunk) // 2, (b"poison", f"poison {i}".encode(), []))
    # the writer streams 24 chunks; the other 6 are for runs that would find nothing
    # waiting (the writer done, everything applied), and for the final run
    reserve = chunks[24:]
    published = Published(topic)
    done = threading.Event()
    # Held while a chunk is sent and recorded: the consumer may apply a chunk before
    # ``published`` has recorded it, so the model is read only between chunks.
    recording = threading.Lock()

    def stream_in() -> None:  # some seconds of writes, the consumer down part of the time
        try:
            for chunk in chunks[:24]:
                with recording:
                    produce(broker.bootstrap, topic, chunk, published)
                time.sleep(0.1)
        finally:
            done.set()

    writer = threading.Thread(target=stream_in)
    writer.start()
    log = tmp_path / "consumer.log"
    kills = mid_stream = 0
    last: dict[str, int] = {}
    try:
        while kills < 3 or not done.is_set():
            if done.is_set() and reached(last, published.highwater()):
                produce(broker.bootstrap, topic, reserve.pop(0), published)
            with consumer_process(path, broker, topic, log) as proc, Index(path) as ix:
                deadline = time.monotonic() + 30
                while ix.position == last and time.monotonic() < deadline:
                    time.sleep(0.02)
                    ix.refresh()
                time.sleep(rng.uniform(0, 0.5))
                assert proc.poll() is None, log.read_text()[-3000:]
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            kills += 1
            position = position_of(path)
            assert position != last, "the consumer applied nothing in 30 s"
            assert all(position.get(k, 0) >= v for k, v in last.items()), (last, position)
            with recording:
                mid_stream += not reached(position, published.highwater())
                applied = published.changes_before(position)
            # at exactly the stored position: the model of every change below it
            assert_matches(path, model_of(snap, applied), sample=10)
            last = position
    finally:
        writer.join()
    # Most kills land with changes waiting; on a fast machine some may find it idle.
    assert mid_stream >= 1, "no kill landed while changes were waiting"

    with consumer_process(path, broker, topic, log) as proc:
        # written after the start, so that it is running (its SIGTERM handler too)
        # once this last chunk is applied
        produce(broker.bootstrap, topic, reserve[-1], published)
        wait_position(path, published.highwater(), timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    assert position_of(path) == published.highwater()
    everything = published.changes_before(published.highwater())  # in the order written
    assert_matches(path, model_of(snap, everything), sample=40)

    poison = {(part, off) for part, off, cs in published.entries if not cs}
    dead = []
    for record in read_topic(broker.bootstrap, f"{topic}.dlq"):
        headers = {k: v.decode() for k, v in record.headers}
        dead.append(
            (int(headers["leopard.source.partition"]), int(headers["leopard.source.offset"]))
        )
    assert set(dead) == poison  # every poison message, none lost
    assert len(dead) - len(set(dead)) <= kills  # repeats only for batches in flight


def test_a_paused_broker_is_survived(tmp_path: Path) -> None:
    """SIGSTOP the broker for 5 s while the consumer runs; after SIGCONT all arrives."""
    rng = random.Random(9)
    with LocalBroker() as own:
        topic = "paused"
        create_topic(own.bootstrap, topic, 2)
        snap = snapshot_lines(rng, 200)
        path = tmp_path / "ix"
        build(path, CONFIG, snap, {})
        stream = generate(rng, 3000, {parse_tuple(x) for x in snap})
        consumer = ChangeConsumer(path, settings(own, topic))
        failure: list[BaseException] = []

        def run() -> None:
            try:
                consumer.run()
            except BaseException as exc:  # pragma: no cover - reported below
                failure.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        try:
            first = produce(own.bootstrap, topic, native(stream[:1000]))
            consumer.index.wait_for(encode_token(first.highwater()), timeout=20)
            late: list[Published] = []
            own.pause()
            try:
                # written while the broker is frozen: delivered once it thaws
                sender = threading.Thread(
                    target=lambda: late.append(
                        produce(own.bootstrap, topic, native(stream[1000:2000]), first)
                    )
                )
                sender.start()
                time.sleep(5)
                assert thread.is_alive() and not failure
            finally:
                own.resume()
            sender.join(timeout=60)
            assert late, "the producer did not finish after the broker resumed"
            produce(own.bootstrap, topic, native(stream[2000:]), first)
            consumer.index.wait_for(encode_token(first.highwater()), timeout=30)
        finally:
            consumer.stop()
            thread.join(timeout=30)
            consumer.index.close()
        assert not failure, failure
        assert not thread.is_alive()
        assert consumer.stats.changes >= len(stream)
        assert position_of(path) == first.highwater()
        assert_matches(path, model_of(snap, stream))


def test_compaction_while_the_consumer_runs(
    broker: LocalBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """``leopard compact`` in another process, then ``compact()`` here under live queries.

    Changes stream in all the while; the consumer (another process) must follow each
    new generation, and the last changes, written after both compactions, must land
    in the newest one.
    """
    rng = random.Random(11)
    topic = new_topic(partitions=2)
    snap = snapshot_lines(rng, 500)
    path = tmp_path / "ix"
    build(path, CONFIG, snap, {})
    stream = generate(rng, 12_000, {parse_tuple(x) for x in snap})
    chunks = [native(stream[i : i + 500]) for i in range(0, 11_000, 500)]
    published = Published(topic)
    streaming = threading.Thread(
        target=lambda: [
            (produce(broker.bootstrap, topic, c, published), time.sleep(0.1)) for c in chunks
        ]
    )
    log = tmp_path / "consumer.log"
    first_gen = IndexDir(path).current().name
    ix = Index(path)
    answers: list[tuple[bool, bool]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            try:
                answers.append(
                    (
                        ix.check("user:stable", "team:stable_top"),
                        ix.check("user:u1", "team:stable_top"),
                    )
                )
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    asker = threading.Thread(target=ask)
    try:
        with consumer_process(path, broker, topic, log) as proc:
            streaming.start()
            deadline = time.monotonic() + 30
            while not ix.position and time.monotonic() < deadline:
                time.sleep(0.05)
                ix.refresh()
            subprocess.run(
                [sys.executable, "-m", "leopard", "compact", "--index", str(path)],
                check=True,
                capture_output=True,
                timeout=60,
            )
            assert IndexDir(path).current().name != first_gen
            # queries from another thread keep answering during a compaction here
            asker.start()
            before = len(answers)
            compact(path)
            during = len(answers) - before
            ix.refresh()  # and while the index switches to the new generation
            streaming.join()
            produce(broker.bootstrap, topic, native(stream[11_000:]), published)
            ix.wait_for(encode_token(published.highwater()), timeout=30, poll=0.1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        stop.set()
        if asker.is_alive():
            asker.join()
        if streaming.is_alive():
            streaming.join()
        ix.close()
    assert not errors, errors
    assert during > 0 and set(answers) == {(True, False)}
    assert int(IndexDir(path).current().name[4:]) == int(first_gen[4:]) + 2
    assert position_of(path) == published.highwater()
    assert_matches(path, model_of(snap, stream))


def test_the_consumer_compacts_by_itself_past_its_threshold(
    broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    rng = random.Random(19)
    snap = snapshot_lines(rng, 200)
    path = tmp_path / "ix"
    build(path, CONFIG, snap, {})
    first_gen = IndexDir(path).current()
    stream = generate(rng, 4000, {parse_tuple(x) for x in snap})
    consumer = ChangeConsumer(path, settings(broker, topic, compact_threshold=150))
    thread = threading.Thread(target=consumer.run)
    thread.start()
    published = Published(topic)
    try:
        for i in range(0, len(stream), 500):
            produce(broker.bootstrap, topic, native(stream[i : i + 500]), published)
            time.sleep(0.3)
        deadline = time.monotonic() + 30
        while consumer.stats.compactions < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert consumer.stats.compactions >= 1
        # No more compactions, and none in flight when it stops: one finishing after
        # the consumer has exited would swap in a generation behind what it applied
        # (reported; the consumer would catch up when restarted).
        consumer.settings.compact_threshold = 10**9
        while consumer._compactor is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        # after a compaction, the tail lands in the new generation, which queries read
        produce(broker.bootstrap, topic, native(stream[-1:]), published)
        consumer.index.wait_for(encode_token(published.highwater()), timeout=30)
        while (
            consumer.index.reader.generation != IndexDir(path).current()
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert consumer.index.reader.generation == IndexDir(path).current() != first_gen
        assert consumer.index.position == published.highwater()
    finally:
        consumer.stop()
        thread.join(timeout=30)
        # the compaction the consumer may have started last is its child: reap it
        compactor = consumer._compactor
        if compactor is not None:
            compactor.wait(timeout=60)
            compactor.stderr.close()  # type: ignore[union-attr]
        consumer.index.close()
    assert position_of(path) == published.highwater()
    assert_matches(path, model_of(snap, stream + stream[-1:]))


def test_sigterm_finishes_the_batch_and_exits_0(
    broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    rng = random.Random(13)
    snap = snapshot_lines(rng, 300)
    path = tmp_path / "ix"
    build(path, CONFIG, snap, {f"{topic}:0": 0})
    stream = generate(rng, 30_000, {parse_tuple(x) for x in snap})
    published = produce(broker.bootstrap, topic, native(stream))
    log = tmp_path / "consumer.log"
    with consumer_process(path, broker, topic, log) as proc, Index(path) as ix:
        deadline = time.monotonic() + 30
        while not ix.position.get(f"{topic}:0") and time.monotonic() < deadline:
            time.sleep(0.02)
            ix.refresh()
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert proc.wait(timeout=30) == 0, log.read_text()
        assert time.monotonic() - started < 10
    assert "consumed" in log.read_text()
    position = position_of(path)
    assert 0 < position[f"{topic}:0"] <= published.highwater()[f"{topic}:0"]
    # whole batches only: the index is the model at exactly its stored position
    assert_matches(path, model_of(snap, published.changes_before(position)))


def test_idle_exit_counts_from_the_partition_assignment(
    broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    """``run(idle_exit=…)`` (``leopard consume --idle-exit``) applies what is waiting first.

    Joining the group takes about a second here (three with Kafka's default initial
    rebalance delay); a consumer that counted that wait as idle exited with nothing read.
    """
    rng = random.Random(17)
    snap = snapshot_lines(rng, 50)
    path = tmp_path / "ix"
    build(path, CONFIG, snap, {})
    stream = generate(rng, 200, {parse_tuple(x) for x in snap})
    pub = produce(broker.bootstrap, topic, native(stream))
    consumer = ChangeConsumer(path, settings(broker, topic))
    try:
        stats = consumer.run(idle_exit=0.3)
    finally:
        consumer.index.close()
    assert stats.messages == 200
    assert position_of(path) == pub.highwater()
