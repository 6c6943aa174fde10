"""The watch over a consumer group that splits the topics' partitions with another
member (``ingest.kafka.sharing.Sharing``), on a clock of the test's own; the real
split, two consumers of one group on a real broker, is in ``tests/cli/test_stream_cli``."""

from __future__ import annotations

from ingest.kafka.client import TopicPartition
from ingest.kafka.sharing import GRACE, LOOK, Sharing, held_elsewhere, split


def test_a_split_is_reported_once_it_has_lasted_the_grace() -> None:
    held: list[str] = ["t:1"]
    asked: list[float] = []

    def look() -> list[str]:
        asked.append(0)
        return list(held)

    sharing = Sharing(look, "g")
    assert sharing.look(100.0) == {}  # a rebalance, a dead member not timed out yet
    assert sharing.look(100.0 + LOOK / 2) == {} and len(asked) == 1  # not asked again yet
    assert sharing.look(100.0 + GRACE - 0.1) == {}
    reported = sharing.look(100.0 + GRACE + LOOK)
    assert reported == {"t:1": "assigned to another member of consumer group 'g'"}
    held[:] = []  # the other member left: every partition is read here again
    assert sharing.look(100.0 + GRACE + 3 * LOOK) == {}
    held[:] = ["t:0"]  # a new split waits out the grace again
    assert sharing.look(100.0 + GRACE + 5 * LOOK) == {}


def test_the_split_is_said_in_one_line_naming_what_to_do() -> None:
    said = split("shared", ["t:3", "t:1"])
    assert said.startswith("consumer group 'shared' gave partitions t:1, t:3 to another member")
    assert said.endswith("give each index (each shard) its own --group-id")


class _Consumer:
    """kafka-python's consumer as held_elsewhere reads it: assignment and partitions."""

    def __init__(self, assigned: set[TopicPartition], partitions: dict[str, set[int]]) -> None:
        self.assigned = assigned
        self.partitions = partitions

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic)


def test_a_member_given_nothing_has_every_partition_held_elsewhere() -> None:
    """One partition and two members of one group: one member gets nothing, for good
    (it was taken for a member still joining, and never reported)."""
    topics = {"t": {0}, "u": {0, 1}}
    assert held_elsewhere(_Consumer(set(), topics), ["t"]) == ["t:0"]
    some = _Consumer({TopicPartition("u", 1), TopicPartition("t", 0)}, topics)
    assert held_elsewhere(some, ["t", "u"]) == ["u:0"]
    assert held_elsewhere(_Consumer(set(), {}), ["t"]) == []  # partitions not known yet
    assert held_elsewhere(None, ["t"]) == []
