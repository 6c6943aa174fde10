"""Waiting for the head of the change stream: OpenFGA's ``HIGHER_CONSISTENCY``.

An answer with higher consistency must reflect every change written before the
request came. The index applies changes from a stream; the consumer in this process
(``RunningConsumer``) records, after each fetch, how many messages each partition has
beyond what it applied (``stats.lag``, from the high watermarks the broker sent). So:

1. wait for three fetches to complete after the request came (``stats.lag`` is
   replaced after each): a fetch may be sent before it returns, so the third is the
   first whose request surely left after the request came, and its high watermarks
   are the stream's head as of then;
2. read the applied position and that lag together (twice, a moment apart, until
   neither moved), and wait, like ``at_least``, for position + lag.

A followed SpiceDB is asked its head revision instead (``ReadSchema``'s ``read_at``): its
Watch may not have sent the latest changes yet, so what was received says nothing of
them. A worker of ``serve --workers`` beside the one that applies the stream asks that
worker for the head (``leopard.http.headlink``) and waits for it here as the consumer's
worker does. Without either there is no head to wait for: the caller has decided
already what to do (``OpenFga._consistent``: an index built from files answers at
once, one following a stream applied elsewhere refuses). A consumer that stopped, or a
head not reached within the wait, is ``StaleIndex`` with the version reached: the
OpenFGA behind Leopard answers the request when there is one, else it is a 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from leopard.core.index import Index
from leopard.errors import StaleIndex, UpstreamError
from leopard.http.freshness import Waits
from leopard.http.types import RunningConsumer
from leopard.model.tokens import encode_token, reached

__all__ = [
    "HEAD_WAIT",
    "HeadOf",
    "consumer_head",
    "reach_head",
    "stream_head",
]

#: how long a request with higher consistency may wait for the head (seconds)
HEAD_WAIT = 3.0
_FETCHES = 3
_LOOK = 0.005


#: the head of a stream as of the call, asked within a timeout (seconds); StaleIndex
#: when it cannot be known
HeadOf = Callable[[float], Awaitable[dict[str, int]]]


def consumer_head(index: Index, consumer: RunningConsumer) -> HeadOf:
    """The head of the stream ``consumer`` applies to ``index`` (see ``stream_head``)."""
    return lambda timeout: stream_head(index, consumer, timeout)


async def reach_head(
    index: Index, waits: Waits, head_of: HeadOf, timeout: float = HEAD_WAIT
) -> None:
    """Return once ``index`` has applied the head ``head_of`` says, within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    head = await head_of(timeout)
    if not reached(index.position, head):
        await waits.wait(encode_token(head), max(0.0, deadline - loop.time()))


async def stream_head(index: Index, consumer: RunningConsumer, timeout: float) -> dict[str, int]:
    """The positions ``index`` must reach to have applied the head of the stream that
    ``consumer`` applies, as of the call (see the module)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    def check_time(what: str) -> None:
        if not consumer.running:
            why = f": {consumer.error}" if consumer.error else ""
            raise StaleIndex(
                f"the change consumer is not running{why}; the head of the stream is not known",
                index.version,
            )
        if loop.time() > deadline:
            raise StaleIndex(
                f"{what} within {timeout:g} s (the index is at {index.version})", index.version
            )

    check_time("the change consumer is not running")  # (a stopped one: said at once)
    try:  # a followed SpiceDB says its head; a Kafka topic's comes with fetches
        asked = getattr(consumer, "upstream_head", None)  # (a stand-in may have none)
        upstream = None if asked is None else await loop.run_in_executor(None, asked, timeout)
    except UpstreamError as exc:
        raise StaleIndex(f"the head of the stream is not known: {exc}", index.version) from None
    if upstream is not None:
        return upstream  # type: ignore[no-any-return]
    stats = consumer.stats
    seen = stats.lag
    fetched = 0
    while fetched < _FETCHES:
        check_time("the change consumer has not fetched from its broker")
        await asyncio.sleep(_LOOK)
        if stats.lag is not seen:
            seen = stats.lag
            fetched += 1
    while True:
        position, lag = index.position, stats.lag
        await asyncio.sleep(_LOOK / 2)
        if index.position == position and stats.lag is lag:
            break
        check_time("the change consumer kept applying")
    if not lag:
        check_time("the change consumer has no partition assigned")
        raise StaleIndex(
            "the change consumer has no partition assigned yet; the head of the stream "
            "is not known",
            index.version,
        )
    gaps = index.gaps  # stopped partitions: a version naming one is refused, not waited for
    return {p: position.get(p, 0) + n for p, n in lag.items() if p not in gaps}
