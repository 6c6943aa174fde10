"""The types the modules of the HTTP face share: ASGI's, and what the app needs of a consumer.

Kept apart so that the app, the handlers, the metrics and the server name them the same
way without importing each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

__all__ = ["Message", "Receive", "RunningConsumer", "Scope", "Send"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RunningConsumer(Protocol):
    """A change consumer run beside the app (``leopard.http.server.ConsumerThread``).

    The app starts it at lifespan startup with a callback to run after every applied
    batch, stops it at shutdown, and reports its state in ``/readyz`` and ``/metrics``.
    """

    @property
    def stats(self) -> Any: ...  # ``ingest.consumer.ConsumerStats``

    @property
    def running(self) -> bool: ...

    @property
    def error(self) -> str | None: ...  # why it stopped, if it failed

    def upstream_head(self, timeout: float) -> dict[str, int] | None: ...  # a followed

    # upstream's head now (SpiceDB's revision), None for a Kafka topic

    def start(self, on_change: Callable[[], None]) -> None: ...

    def stop(self) -> None: ...  # blocks until the batch in hand is persisted
