"""What every follower of an upstream shares: the consumer loop over its source.

A follower (of SpiceDB's Watch, of OpenFGA's ReadChanges) is the change consumer of
``ingest.consumer`` with the upstream's source in place of Kafka's: compaction,
generation switches, waiters and the one write batch of changes and position are the
same. What differs is the source, and how the index is rebuilt from the upstream when
its changes cannot be followed on (a gap: an expired revision, a new model or
datastore): ``bootstrap`` says how and what came of it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.consumer import ChangeConsumer, ConsumerStats
from ingest.kafka.source import Batch, Gap
from ingest.settings import ConsumerSettings
from leopard.core.index import Index
from leopard.errors import UpstreamError, UpstreamGap

__all__ = ["UpstreamFollower", "UpstreamSource", "empty_batch"]

log = logging.getLogger("leopard.upstream")


def empty_batch() -> Batch:
    return Batch([], {}, {})


class UpstreamSource:
    """What the consumer loop asks of a source, as an upstream answers it: the index
    holds the position (nothing is committed upstream), a gap stops the source with
    ``fatal`` set, and a failure to reach the upstream is retried after a backoff with
    full jitter. Subclasses poll (``poll``) and say where to resume (``seek_to_stored``,
    ``rewind``); ``key`` names the upstream in positions and gaps."""

    key: str
    #: what one message is, in a dead letter's log line ("revision", "page")
    unit: str
    item: str

    def __init__(
        self,
        upstream: Any,
        state_of: Callable[[], dict[str, Any]],
        position_of: Callable[[], dict[str, int]],
        *,
        poll_timeout: float = 0.1,
        backoff: tuple[float, float] = (0.2, 10.0),
        rng: random.Random | None = None,
    ) -> None:
        self.upstream = upstream
        self.state_of = state_of
        self.position_of = position_of
        self.poll_timeout = poll_timeout
        self.backoff = backoff
        self.rng = rng or random.Random()
        self.stopped: dict[str, str] = {}  # key -> the gap, once found
        self.fatal: UpstreamError | None = None
        self.connected = False
        self.reconnects = 0
        self._gaps: list[Gap] = []
        self._failures = 0
        self._next = 0.0  # monotonic time before which no request is made

    def _resting(self) -> Batch | None:
        """An empty batch (after at most ``poll_timeout``) while the source is stopped
        or waits for its next request; None when it may ask the upstream now."""
        if self.fatal is not None or self.stopped:
            time.sleep(self.poll_timeout)
            return empty_batch()
        wait = self._next - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, self.poll_timeout))
            return empty_batch()
        return None

    @property
    def assigned(self) -> bool:
        return self.connected

    def take_gaps(self) -> list[Gap]:
        gaps, self._gaps = self._gaps, []
        return gaps

    def probe(self) -> bool | None:
        if self.fatal is not None:
            return None
        return self.connected or None

    def dead_letter(self, dead: list[tuple[Any, str]]) -> None:
        """Items that cannot be applied: logged with their place (a follower has no
        dead-letter topic; the consumer counts them)."""
        for m, reason in dead:
            item = getattr(m, "item", None)
            where = "" if item is None else f" {self.item} {item}"
            log.warning(
                "%s %s %s%s not applied: %s", self.upstream.name, self.unit, m.offset, where,
                reason,
            )  # fmt: skip

    def commit(self, position: dict[str, int]) -> None:
        """Nothing to commit upstream: the index holds the position."""

    def close(self) -> None:
        self.upstream.close()

    def _retry_later(self) -> float:
        """The monotonic time to try again after one more failure in a row."""
        self._failures += 1
        self.reconnects += 1
        base, cap = self.backoff
        return time.monotonic() + self.rng.uniform(base, min(cap, base * 2**self._failures))

    def _gap(self, stored: int, reason: str) -> None:
        self._gaps.append(Gap(self.key, max(stored, 0), reason))
        self.stopped[self.key] = reason
        self.fatal = UpstreamGap(reason)


class UpstreamFollower(ChangeConsumer):
    """The consumer loop over ``source`` (an upstream's, duck-typed as a Kafka source:
    ``poll``, ``fatal``, ``stopped``); stops on the source's fatal error, or, with
    ``rebuild_on_gap``, rebuilds from the upstream and follows on."""

    def __init__(
        self,
        index_path: str | Path,
        upstream: Any,
        key: str,
        format: str,
        *,
        index: Index | None = None,
        on_batch: Callable[[ConsumerStats], None] | None = None,
        rebuild_on_gap: bool = False,
        compact_threshold: int = 500_000,
        linger_ms: int = 0,
    ) -> None:
        settings = ConsumerSettings(
            brokers=upstream.name,
            topics=[key],
            format=format,
            linger_ms=linger_ms,
            compact_threshold=compact_threshold,
        )
        super().__init__(index_path, settings, index=index, on_batch=on_batch)
        self.upstream = upstream
        self.key = key
        self.rebuild_on_gap = rebuild_on_gap
        self.rebuilds = 0

    def _stored_state(self) -> dict[str, Any]:
        """What the index holds of the upstream's position (for the source to resume)."""
        return self._target().source_state.get(self.key, {})

    def _stored_position(self) -> dict[str, int]:
        return self._target().position

    def bootstrap(self) -> str:
        """Rebuild the index from the upstream; what it was rebuilt from, for the log."""
        raise NotImplementedError

    def _reset_source(self) -> None:
        """Make the source follow on from the rebuilt index."""
        source = self.source
        source.fatal = None  # type: ignore[attr-defined]
        source.stopped.clear()  # type: ignore[attr-defined]

    def _poll_once(self) -> int:
        got = super()._poll_once()
        fatal = self.source.fatal  # type: ignore[attr-defined]
        if fatal is not None:
            if self.rebuild_on_gap and isinstance(fatal, UpstreamGap):
                self._rebuild(fatal)
            else:
                self.stop()
        return got

    def _rebuild(self, why: UpstreamGap) -> None:
        log.warning("%s; rebuilding the index from it", why)
        what = self.bootstrap()
        self.rebuilds += 1
        log.warning("rebuilt from %s (%s); following on", self.upstream.name, what)
        self._reset_source()
        self.stats.gaps = {}

    def run(self, *, idle_exit: float | None = None) -> ConsumerStats:
        """Follow until ``stop()``; raise the upstream's error (a gap, a refusal) that
        stopped it."""
        stats = super().run(idle_exit=idle_exit)
        fatal = self.source.fatal  # type: ignore[attr-defined]
        if fatal is not None:
            raise fatal
        return stats
