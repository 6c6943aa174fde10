"""The revision headers of a bridged topic, read record by record (BridgedRevisions).

The bridge's own records are tested end to end in tests/follow/test_bridge.py; here the
headers any producer may write: a record whose headers are not the bridge's, or are
malformed, is decoded as any record, never a stop of the consumer.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ingest.kafka.client import KafkaError
from ingest.upstream.bridge import Bridge
from ingest.upstream.headers import FROM, MARKER, REVISION, BridgedRevisions
from leopard.errors import StreamGap


def record(partition: int, headers: list[tuple[str, bytes | None]]) -> SimpleNamespace:
    return SimpleNamespace(topic="changes", partition=partition, headers=headers, offset=7)


def run(start: int, revision: int, partition: int = 0, marker: bool = False) -> SimpleNamespace:
    """A record of a bridge run that started after revision ``start``."""
    headers = [(REVISION, str(revision).encode()), (FROM, str(start).encode())]
    return record(partition, headers + ([(MARKER, b"2")] if marker else []))


def revisions(applied: int = 100, placed: tuple[str, ...] = ()) -> BridgedRevisions:
    position = {"spicedb": applied} if applied >= 0 else {}
    reader = SimpleNamespace(source_state={}, position={**position, **dict.fromkeys(placed, 0)})
    return BridgedRevisions(reader)


@pytest.mark.parametrize("marker", [None, b"", b"two", b"9" * 5000])
def test_a_marker_without_a_count_is_not_taken_as_one(marker: bytes | None) -> None:
    seen = revisions()
    assert not seen.take(record(0, [(REVISION, b"101"), (MARKER, marker)]))  # a marker
    assert seen.partitions == {} and seen.through() is None  # no count: nothing passed


@pytest.mark.parametrize("revision", [None, b"x", b"9" * 5000])
def test_a_record_without_a_readable_revision_is_decoded_as_any(revision: bytes | None) -> None:
    seen = revisions()
    assert seen.take(record(0, [(REVISION, revision)]))
    assert not seen.seen


def test_a_change_is_taken_once_past_the_applied_revision() -> None:
    seen = revisions(applied=100)
    assert not seen.take(record(0, [(REVISION, b"100")]))  # the index has it
    assert seen.take(record(0, [(REVISION, b"101")]))
    assert not seen.take(record(0, [(REVISION, b"101"), (MARKER, b"2")]))
    assert seen.through() is None  # partition 1 has said nothing yet
    assert not seen.take(record(1, [(REVISION, b"101"), (MARKER, b"2")]))
    assert seen.through() == 101


def test_the_bridge_counts_partitions_added_while_it_runs() -> None:
    """Markers go to every partition the producer routes changes to (one added while
    the bridge runs included); Tansu cannot add partitions, so the producer's metadata
    is a stand-in here, as kafka-python's partitions_for reads it."""

    def failing(topic: str) -> set[int]:
        raise KafkaError("no metadata")

    bridge = Bridge.__new__(Bridge)  # its count alone, without an upstream or a broker
    bridge.topic, bridge.partitions = "changes", 1
    bridge.producer = SimpleNamespace(partitions_for=lambda topic: {0, 1})
    assert bridge._partitions_now() == 2
    bridge.partitions = 2
    for answer in (lambda topic: {0}, lambda topic: None, failing):
        bridge.producer = SimpleNamespace(partitions_for=answer)
        assert bridge._partitions_now() == 2  # never fewer


def test_a_run_starting_past_the_index_and_the_partition_stops_the_consumer() -> None:
    """Changes after both the index's revision and where the partition's records
    stopped, up to where a bridge run started, are in no record and no snapshot."""
    with pytest.raises(StreamGap, match="after revision 150, but the index is at revision 100"):
        revisions(applied=100).take(run(150, 160))  # the first records of a topic
    seen = revisions(applied=30)
    assert seen.take(run(5, 40)) and not seen.take(run(5, 40, marker=True))
    with pytest.raises(StreamGap, match="stopped at 40, the index is at revision 30"):
        seen.take(run(100, 110))  # a later run, its checkpoint lost


@pytest.mark.parametrize("applied", [100, 200])
def test_a_run_the_index_covers_goes_on(applied: int) -> None:
    """A gap between two runs of the bridge that the index's snapshot covers (the
    index built from SpiceDB after it) loses nothing: the records go on."""
    seen = revisions(applied=applied)
    assert not seen.take(run(5, 10)) and not seen.take(run(5, 40, marker=True))
    assert seen.take(run(100, 110)) == (110 > applied)


def test_an_index_built_from_files_takes_a_bridged_topic_only_where_it_was_placed() -> None:
    """An index without a SpiceDB revision cannot tell whether its snapshot holds the
    changes before a run's start: its first bridged records stop the consumer, but on
    a partition the build was given a position on (who built it vouches for it)."""
    with pytest.raises(StreamGap, match="holds no SpiceDB revision .* --position changes:0="):
        revisions(applied=-1).take(run(150, 160))
    seen = revisions(applied=-1, placed=("changes:0",))
    assert seen.take(run(150, 160))
    with pytest.raises(StreamGap, match="no position on this partition"):
        revisions(applied=-1, placed=("changes:0",)).take(run(150, 160, partition=1))


def test_a_run_is_not_checked_without_a_revision_to_hold_it_to() -> None:
    seen = revisions(applied=100)  # a partition added since the others' records
    assert not seen.take(run(100, 100, partition=0, marker=True))
    assert seen.take(run(150, 160, partition=1))
    assert seen.take(record(0, [(REVISION, b"170")]))  # a bridge that does not say


def test_a_change_sent_again_after_later_ones_is_not_applied_again() -> None:
    """The bridge publishes again from its checkpoint when a send is not confirmed: a
    partition may then carry a tuple's touch and delete, then the touch again (before
    every partition's marker moved the index's revision past it). Applied again, the
    touch would undo the delete that follows it in SpiceDB's order."""
    seen = revisions(applied=100)
    sent = [  # (revision, op) on partition 0, the second pass sent again
        (101, "touch"), (102, "delete"), (102, "marker"),
        (101, "touch"), (102, "delete"), (102, "marker"),
        (103, "touch"), (103, "touch-other"),
    ]  # fmt: skip
    taken = []
    for rev, op in sent:
        headers = [(REVISION, str(rev).encode())] + ([(MARKER, b"1")] if op == "marker" else [])
        if seen.take(record(0, headers)):
            taken.append((rev, op))
    # the second touch of 101 is not applied again; the latest revision's changes all are
    assert taken == [(101, "touch"), (102, "delete"), (102, "delete"), (103, "touch"),
                     (103, "touch-other")]  # fmt: skip
    assert seen.through() == 102  # more changes of 103 may come: its marker says when not
    assert not seen.take(record(0, [(REVISION, b"103"), (MARKER, b"1")]))
    assert seen.through() == 103


def test_a_revision_read_in_two_batches_is_applied_whole() -> None:
    """One SpiceDB transaction's changes on two partitions, read in two batches: after
    the first batch the index's revision stays below the transaction's, so its changes
    of the second batch are applied, not skipped as had (deletes were lost so, and the
    transaction's ZedToken was honoured without them)."""
    first = revisions(applied=100)
    assert first.take(record(0, [(REVISION, b"101")]))  # batch 1: a change of 101 on each
    assert first.take(record(1, [(REVISION, b"101")]))
    assert not first.take(record(0, [(REVISION, b"100"), (MARKER, b"2")]))
    assert not first.take(record(1, [(REVISION, b"100"), (MARKER, b"2")]))
    assert first.through() == 100  # not 101: either partition may hold more of it
    position, state = first.persist({"changes:0": 2, "changes:1": 2}, {})
    assert position.get("spicedb") is None  # the index stays at its 100
    reader = SimpleNamespace(source_state=state, position={"spicedb": 100, **position})
    second = BridgedRevisions(reader)  # batch 2: the rest of 101, then its markers
    assert second.take(record(0, [(REVISION, b"101")]))
    assert second.take(record(1, [(REVISION, b"101")]))
    assert second.through() == 100
    assert not second.take(record(0, [(REVISION, b"101"), (MARKER, b"2")]))
    assert not second.take(record(1, [(REVISION, b"101"), (MARKER, b"2")]))
    assert second.persist({}, {})[0]["spicedb"] == 101
