"""Waiting until the index has applied a version: one policy, two drivers.

A caller hands back a version token (from ``leopard publish`` or an earlier answer),
or the ZedToken SpiceDB returned for a write when the index follows SpiceDB, and asks
for an answer at least that fresh, waiting a bounded time. The policy is the
same wherever it is asked: decode the token (a bad one is ``InvalidInput`` at once),
answer as soon as the applied position has reached it, and otherwise raise
``StaleIndex`` naming the token, the wait and the version reached. A token that no
wait can reach is ``InvalidInput`` at once, naming what it asks for and what the index
follows (``unreachable``): a SpiceDB ZedToken (or revision) when the index follows no
SpiceDB, or a topic (or source) the index does not follow while it follows some. The
streams an index follows are the keys of its position (with the partitions stopped at
a gap) and the topics its consumer is set to follow; a partition not seen yet of a
followed topic is waited for, as a partition added to the topic is read from its start
once assigned (it enters the position with its first batch), and an index whose
position is empty may be about to follow anything. ``wait_steps``
holds that policy as a generator of pauses; ``Index.wait_for`` drives it with a
blocking wait, the HTTP app with ``asyncio``, so neither writes it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Generator

from leopard.errors import InvalidInput, StaleIndex
from leopard.model.tokens import reached, wanted_position
from leopard.model.zedtoken import SPICEDB_KEY

__all__ = ["wait_steps", "unreachable", "POLL"]

#: the longest pause between two looks at the position, woken or not
POLL = 0.05


def wait_steps(
    position: Callable[[], dict[str, int]],
    version: Callable[[], str],
    token: str,
    timeout: float,
    *,
    poll: float = POLL,
    clock: Callable[[], float] = time.monotonic,
    gaps: Callable[[], dict[str, str]] = dict,
    topics: Collection[str] = (),
) -> Generator[float, None, str]:
    """Pauses to wait between looks at ``position()`` until it reaches ``token``.

    Yields how long to wait before looking again (the driver may be woken earlier);
    returns the version once reached; raises ``StaleIndex`` after ``timeout`` seconds
    and ``InvalidInput`` for a token that is not one, or that no wait can reach
    (``unreachable``; ``topics``: the topics a consumer is set to follow, besides those
    in the position). ``gaps`` names partitions stopped at a gap in their log (left out
    of ``position()``): the message of a refusal says so for every one the token names.
    """
    wanted = wanted_position(token)
    if not reached(position(), wanted):
        if why_not := unreachable(token, wanted, {*position(), *gaps()}, topics):
            raise InvalidInput(why_not)
    deadline = clock() + max(0.0, timeout)
    while True:
        if reached(position(), wanted):
            return version()
        left = deadline - clock()
        if left <= 0:
            current, now = version(), position()
            stopped = gaps()
            why = "".join(f"; {stopped[p]}" for p in sorted(wanted) if p in stopped)
            unseen = sorted(p for p in wanted if p not in now and p not in stopped)
            if unseen:
                why += (
                    f"; the index has applied nothing of {', '.join(unseen)} yet (a "
                    "partition the topic does not have is never reached)"
                )
            raise StaleIndex(
                f"the index has not reached version {token} within {timeout:g} s "
                f"(it is at {current}){why}",
                current=current,
            )
        yield min(left, poll)


def _stream(key: str) -> str:
    """The stream a position key belongs to: a partition's topic, or a source's name."""
    topic, sep, _ = key.rpartition(":")
    return topic if sep else key


def _named(stream: str) -> str:
    if stream == SPICEDB_KEY:
        return "SpiceDB"
    return "OpenFGA" if stream == "openfga" else f"topic {stream!r}"


def unreachable(
    token: str, wanted: dict[str, int], followed: Collection[str], topics: Collection[str] = ()
) -> str | None:
    """Why no wait can bring an index to ``wanted`` (the position ``token`` asks for),
    or None when one may: ``followed`` are the keys of the index's position (with the
    partitions stopped at a gap), ``topics`` the topics its consumer is set to follow."""
    streams = {_stream(k) for k in followed} | set(topics)
    follows = ", ".join(map(_named, sorted(streams))) or "no change stream yet"
    if SPICEDB_KEY in wanted and SPICEDB_KEY not in followed:
        # an index that follows SpiceDB holds the revision it was built at from the start
        what = (
            f"{token!r} is a SpiceDB ZedToken"
            if not token.startswith("v1.")
            else f"version {token} asks for a SpiceDB revision"
        )
        return (
            f"{what} and this index follows no SpiceDB (its version carries no revision; "
            f"it follows {follows}): no wait can reach it; pass a version token of this "
            "index, or ask an index built with --from spicedb:..."
        )
    if not streams:
        return None  # nothing followed yet: a consumer may be about to start
    foreign = sorted({_stream(k) for k in wanted} - streams)
    if not foreign:
        return None
    asked = ", ".join(sorted(k for k in wanted if _stream(k) in foreign))
    return (
        f"version {token} asks for {', '.join(map(_named, foreign))} ({asked}), which "
        f"this index does not follow (it follows {follows}): no wait can reach it"
    )
