"""Settings of a change consumer: where the changes come from and how they are applied.

Kept apart from the consumer and the Kafka source so that building them (the CLI's
options, a server's configuration) needs no Kafka client installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ingest.codecs import CODECS, check_codec_options
from leopard.errors import InvalidInput

__all__ = ["KafkaSettings", "ConsumerSettings", "ON_GAP", "check_topic", "parse_codec_options"]

#: Kafka's rule for topic names (the local broker does not enforce it)
_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")


def check_topic(option: str, name: str) -> None:
    """InvalidInput naming ``option`` when ``name`` is no Kafka topic name."""
    if not _TOPIC_RE.fullmatch(name) or name in (".", ".."):
        raise InvalidInput(
            f"{option} {name!r} is no Kafka topic name (1 to 249 of A-Z a-z 0-9 . _ -)"
        )


#: what a consumer may do at a gap in a partition (see ``KafkaSettings.on_gap``)
ON_GAP = ("stop", "earliest")


@dataclass
class KafkaSettings:
    """Where the changes come from and how they are fetched."""

    brokers: str
    topics: list[str]
    group_id: str = "leopard"
    dlq_topic: str | None = None  # default: "<topic>.dlq"
    max_batch: int = 20_000
    poll_ms: int = 100
    commit_interval: float = 1.0  # seconds between commits of offsets to the group
    # With the local broker a group join answers only after about half the session
    # timeout (whole seconds): 2 s of session makes a (re)start join in ~1 s.
    max_poll_interval_ms: int = 10_000
    session_timeout_ms: int = 2_000
    heartbeat_interval_ms: int = 500
    # What to do when a partition's log no longer holds what the index applied up to
    # (the log was reset or recreated, or messages were deleted unread): "stop"
    # applying that partition, or go on from the log's "earliest" offset.
    on_gap: str = "stop"
    # A broker that answers no metadata request within this many seconds is down;
    # probed this often while no records come.
    probe_timeout: float = 3.0
    probe_interval: float = 2.0

    def __post_init__(self) -> None:
        if not self.topics:
            raise InvalidInput("at least one --topic is needed")
        for option, names in (("--topic", self.topics), ("--dlq-topic", [self.dlq_topic])):
            for name in names:
                if name is not None:
                    check_topic(option, name)
        # a dead letter written to a consumed topic is read again, fails again, and is
        # written again, without end
        dead = [self.dlq_topic] if self.dlq_topic else [f"{t}.dlq" for t in self.topics]
        for name in dead:
            if name in self.topics:
                said = "--dlq-topic" if self.dlq_topic else "the dead-letter topic (default)"
                raise InvalidInput(
                    f"{said} {name!r} is also consumed (--topic): dead letters would be "
                    "read back and dead-lettered again without end; name another"
                )
        if self.on_gap not in ON_GAP:
            raise InvalidInput(f"--on-gap {self.on_gap!r} is not one of {', '.join(ON_GAP)}")


@dataclass
class ConsumerSettings(KafkaSettings):
    """Where the changes come from (``KafkaSettings``) and how they are applied."""

    format: str = "native"
    codec_options: dict[str, str] = field(default_factory=dict)
    # After a batch that caught up, wait this long before polling again. A trickle
    # of changes would otherwise be fetched and applied a few at a time, each
    # fetch and batch paying for a round trip, a write and a cache invalidation,
    # which costs queries in the same process more than the changes themselves.
    linger_ms: int = 50
    compact_threshold: int = 500_000  # sets in the incremental layer

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format not in CODECS:
            raise InvalidInput(f"--format {self.format!r} is not one of {', '.join(CODECS)}")
        try:  # said at the start, not at the first message
            check_codec_options(self.format, self.codec_options)
        except InvalidInput as exc:
            raise InvalidInput(f"--codec-option: {exc}") from None


def parse_codec_options(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``KEY=VALUE`` codec options as a dict; InvalidInput naming one that is not."""
    options = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InvalidInput(f"--codec-option {item!r} is not KEY=VALUE")
        options[key] = value
    return options
