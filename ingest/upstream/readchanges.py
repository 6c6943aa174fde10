"""Following an OpenFGA store's ReadChanges: a change source for the consumer loop.

``ReadChangesSource`` is to ``ingest.consumer.ChangeConsumer`` what ``KafkaSource`` and
``WatchSource`` are. It polls ``GET /stores/{id}/changes`` with the continuation token
the index stored with its last applied page: each page with changes is one message,
the ReadChanges response exactly as OpenFGA sent it, decoded by the same ``openfga``
codec as a page read from Kafka (one bad item is refused alone, the rest applied). The
page's continuation token is persisted in the write batch of its changes, so a crash
at any point neither loses nor doubles a change; the position (``OPENFGA_KEY``) moves
to the time of the page's last change, in microseconds, and always forward.

A full page is followed at once by the next; a short or empty one means caught up, and
the next poll comes ``interval`` seconds later. When caught up the source also asks for
the latest authorization model: a new one means the index may no longer read tuples as
OpenFGA does, which stops the follower as a gap does (with ``rebuild_on_gap`` it
rebuilds), as does a continuation token OpenFGA refuses. An OpenFGA that does not
answer is retried with exponential backoff and full jitter.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.consumer import ConsumerStats
from ingest.kafka.source import Batch
from ingest.upstream.follower import UpstreamFollower, UpstreamSource, empty_batch
from ingest.upstream.openfga import (
    CHANGES_PAGE,
    OPENFGA_KEY,
    OpenFGAError,
    OpenFGASource,
    bootstrap_openfga,
    change_time,
)
from leopard.core.index import Index
from leopard.errors import InvalidInput, UpstreamError, UpstreamGap

__all__ = ["OpenFGAFollower", "ReadChangesSource"]

log = logging.getLogger("leopard.upstream")

#: HTTP statuses after which polling again cannot help
_FATAL = (401, 403, 404)


class PageMessage:
    """One ReadChanges page as the consumer loop sees a message."""

    __slots__ = ("key", "offset", "partition", "topic", "value")

    def __init__(self, offset: int, value: bytes) -> None:
        self.topic = OPENFGA_KEY
        self.partition = 0
        self.offset = offset
        self.key: bytes | None = None
        self.value: bytes | None = value


class ReadChangesSource(UpstreamSource):
    """Pages of ReadChanges from the continuation token the index has stored."""

    def __init__(
        self,
        source: OpenFGASource,
        state_of: Callable[[], dict[str, Any]],
        position_of: Callable[[], dict[str, int]],
        *,
        interval: float = 1.0,
        page_size: int = CHANGES_PAGE,
        poll_timeout: float = 0.1,
        backoff: tuple[float, float] = (0.2, 10.0),
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            source, state_of, position_of, poll_timeout=poll_timeout, backoff=backoff, rng=rng
        )
        self.interval = interval
        self.page_size = page_size
        self.polls = 0
        self._behind = False

    key = OPENFGA_KEY
    unit, item = "page at", "item"

    # -- what the consumer loop asks --------------------------------------------------

    def poll(self) -> Batch:
        resting = self._resting()
        if resting is not None:
            return resting
        state = self.state_of()
        token = state.get("token")
        if not isinstance(token, str):
            raise InvalidInput(
                "the index records no OpenFGA continuation token to follow from; build it "
                f"with 'leopard build --from openfga:{self.upstream.url} --store-id "
                f"{self.upstream.store_id}'"
            )
        try:
            page = self.upstream.read_changes(token, self.page_size)
            self.polls += 1
            changes = page.get("changes") or []
            following = page.get("continuation_token") or token
            if not changes:
                self._check_model(state)
            elif following == token:
                # Applied, the page would be asked for and applied again after newer
                # ones; skipped, it would be lost. Neither: asked again, with backoff.
                said = "the same" if page.get("continuation_token") else "no"
                raise UpstreamError(
                    f"{self.upstream.name}: ReadChanges answered {len(changes)} changes with "
                    f"{said} continuation token; not applied, asked for again"
                )
        except UpstreamError as exc:
            self._failed(exc, token)
            if self.fatal is None:
                raise
            return empty_batch()
        self.connected = True
        self._failures = 0
        self._behind = len(changes) >= self.page_size
        self._next = time.monotonic() + (0 if self._behind else self.interval)
        if not changes:
            return empty_batch()
        stored = self.position_of().get(OPENFGA_KEY, 0)
        position = max([stored + 1, *(change_time(c) for c in changes)])
        message = PageMessage(position, json.dumps(page).encode())
        return Batch(
            [message],
            {OPENFGA_KEY: position},
            {},
            {OPENFGA_KEY: {**state, "token": following, "source": self.upstream.name}},
        )

    def lag(self) -> dict[str, int]:
        """Pages known to be waiting: 1 after a full page, else 0."""
        return {OPENFGA_KEY: int(self._behind)} if self.connected else {}

    def rewind(self) -> None:
        """Nothing is held between polls: the next one asks from the stored token."""

    def seek_to_stored(self) -> None:
        self._next = 0.0

    # -- failures ---------------------------------------------------------------------

    def _check_model(self, state: dict[str, Any]) -> None:
        recorded = state.get("model_id")
        if not recorded:
            return
        latest = str(self.upstream.latest_model().get("id", ""))
        if latest and latest != recorded:
            raise UpstreamGap(
                f"{self.upstream.name}: a new authorization model {latest!r} replaced "
                f"{recorded!r}, which the index was built with; the index no longer reads "
                "tuples as OpenFGA does: rebuild it ('leopard build --from openfga:"
                f"{self.upstream.url} --store-id {self.upstream.store_id}', or follow with "
                "--rebuild-on-gap)"
            )

    def _failed(self, exc: UpstreamError, token: str) -> None:
        self.connected = False
        if isinstance(exc, UpstreamGap):
            self._gap_now(str(exc))
            return
        if isinstance(exc, OpenFGAError):
            if exc.status == 400 and "continuation" in f"{exc.code} {exc}".lower():
                self._gap_now(
                    f"{self.upstream.name} refuses the index's continuation token "
                    f"{token!r} ({exc}); rebuild the index ('leopard build --from "
                    f"openfga:{self.upstream.url} --store-id {self.upstream.store_id}', or "
                    "follow with --rebuild-on-gap)"
                )
                return
            if exc.status in _FATAL or exc.status == 400:
                self.fatal = exc
                return
        # away or failing: try again later, with backoff and full jitter
        self._next = self._retry_later()

    def _gap_now(self, reason: str) -> None:
        self._gap(self.position_of().get(OPENFGA_KEY, 0), reason)


class OpenFGAFollower(UpstreamFollower):
    """Follows an OpenFGA store's ReadChanges into an index: the consumer loop over
    ``ReadChangesSource`` (compaction, generation switches and waiters as with Kafka)."""

    def __init__(
        self,
        index_path: str | Path,
        upstream: OpenFGASource,
        *,
        index: Index | None = None,
        on_batch: Callable[[ConsumerStats], None] | None = None,
        interval: float = 1.0,
        rebuild_on_gap: bool = False,
        compact_threshold: int = 500_000,
        linger_ms: int = 0,
        backoff: tuple[float, float] = (0.2, 10.0),
    ) -> None:
        super().__init__(
            index_path,
            upstream,
            OPENFGA_KEY,
            "openfga",
            index=index,
            on_batch=on_batch,
            rebuild_on_gap=rebuild_on_gap,
            compact_threshold=compact_threshold,
            linger_ms=linger_ms,
        )
        # duck-typed: the loop asks of it exactly what it asks of a KafkaSource
        self.source = ReadChangesSource(  # type: ignore[assignment]
            upstream,
            self._stored_state,
            self._stored_position,
            interval=interval,
            backoff=backoff,
        )

    @property
    def changes(self) -> ReadChangesSource:
        return self.source  # type: ignore[return-value]

    def bootstrap(self) -> str:
        report = bootstrap_openfga(self.path, self.upstream, max_shrink=None, wait=True)
        return f"model {report.model_id}, {report.tuples} tuples"

    def _reset_source(self) -> None:
        super()._reset_source()
        self.changes.seek_to_stored()
