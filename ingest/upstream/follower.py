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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.consumer import ChangeConsumer, ConsumerStats
from ingest.settings import ConsumerSettings
from leopard.core.index import Index
from leopard.errors import UpstreamGap

__all__ = ["UpstreamFollower"]

log = logging.getLogger("leopard.upstream")


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
