"""The watch over a consumer group that splits the topics' partitions with another
member (``ingest.kafka.sharing.Sharing``), on a clock of the test's own; the real
split, two consumers of one group on a real broker, is in ``tests/cli/test_stream_cli``."""

from __future__ import annotations

from ingest.kafka.sharing import GRACE, LOOK, Sharing, split


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
