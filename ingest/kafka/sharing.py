"""Partitions of a followed topic that the consumer group assigned to another member.

An index must apply every partition of its topics: a change lands in one partition
only. Two consumers that share a group id (two shards of an index given one
``--group-id``, two servers each with its own copy of an index) split the partitions
between them, and each index misses the other's changes for good; nothing in Kafka
refuses that. So the consumer looks: ``held_elsewhere`` names the partitions of its
topics the group has not assigned to it (every one, for a member given none: a topic of
one partition and two members). Joining the group takes a moment, right after a restart
the group may still count the member that died until its session times out, and a
rebalance moves partitions for a moment, so ``Sharing`` reports a split only once it has
lasted ``GRACE`` seconds; ``consume --idle-exit`` asks once more as it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from ingest.kafka.client import TopicPartition

__all__ = ["GRACE", "LOOK", "Sharing", "held_elsewhere", "split"]

log = logging.getLogger("leopard.consumer")

#: how long a split must last before it is reported (seconds)
GRACE = 15.0
#: how often the assignment is looked at (seconds)
LOOK = 2.0


def held_elsewhere(consumer: Any, topics: Iterable[str]) -> list[str]:
    """``topic:partition`` of each partition of ``topics`` the group did not assign to
    ``consumer`` (a kafka-python consumer): all of them while it has none (joining the
    group, or given nothing: more members than partitions); none before the consumer
    exists or while it does not know a topic's partitions yet."""
    if consumer is None:
        return []
    assigned = consumer.assignment()
    out = []
    for topic in topics:
        for partition in sorted(consumer.partitions_for_topic(topic) or ()):
            if TopicPartition(topic, partition) not in assigned:
                out.append(f"{topic}:{partition}")
    return out


class Sharing:
    """Watches a source's assignment (``held``: ``KafkaSource.held_elsewhere``) and
    says which partitions another member of ``group`` has held for ``GRACE`` seconds."""

    def __init__(self, held: Callable[[], list[str]], group: str) -> None:
        self.held = held
        self.group = group
        self._since: float | None = None
        self._next = 0.0
        self.reported: dict[str, str] = {}

    def look(self, now: float | None = None) -> dict[str, str]:
        """The partitions reported as held elsewhere (``why`` for each), looked at again
        when ``LOOK`` seconds have passed."""
        now = time.monotonic() if now is None else now
        if now < self._next:
            return self.reported
        self._next = now + LOOK
        missing = self.held()
        if not missing:
            if self.reported:
                log.warning("the consumer reads every partition of its topics again")
            self._since, self.reported = None, {}
            return self.reported
        if self._since is None:
            self._since = now
        reported = self.why(missing) if now - self._since >= GRACE else {}
        if reported and reported != self.reported:
            log.error("%s", split(self.group, reported))
        self.reported = reported
        return reported

    def why(self, missing: list[str]) -> dict[str, str]:
        return {
            key: f"assigned to another member of consumer group {self.group!r}" for key in missing
        }


def split(group: str, partitions: Iterable[str]) -> str:
    """What a split of the topics' partitions means, in one line."""
    return (
        f"consumer group {group!r} gave partitions {', '.join(sorted(partitions))} to another "
        "member: their changes are not applied to this index; give each index (each shard) "
        "its own --group-id"
    )
