"""Waiting until the index has applied a version: one policy, two drivers.

A caller hands back a version token (from ``leopard publish`` or an earlier answer),
or the ZedToken SpiceDB returned for a write when the index follows SpiceDB, and asks
for an answer at least that fresh, waiting a bounded time. The policy is the
same wherever it is asked: decode the token (a bad one is ``InvalidInput`` at once),
answer as soon as the applied position has reached it, and otherwise raise
``StaleIndex`` naming the token, the wait and the version reached, and, where the
token asks for a stream the index has applied nothing of (a SpiceDB revision, a topic),
saying so (``unreachable``). Such a token is still waited for: a stream enters the
position only with its first batch (a consumer of several topics applies one first, a
bridged topic brings SpiceDB's revision with its first markers), so refusing it at
once would refuse tokens a moment from being reached. ``wait_steps``
holds that policy as a generator of pauses; ``Index.wait_for`` drives it with a
blocking wait, the HTTP app with ``asyncio``, so neither writes it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Generator

from leopard.errors import StaleIndex
from leopard.model.tokens import reached, wanted_position
from leopard.model.zedtoken import SPICEDB_KEY

__all__ = ["wait_steps", "unreachable", "followed_elsewhere", "POLL"]

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
    and ``InvalidInput`` for a token that is not one (``topics``: the topics a consumer
    is set to follow, besides those in the position, for the time-out's message).
    ``gaps`` names partitions stopped at a gap in their log (left out of
    ``position()``): the time-out's message says so for every one the token names.
    """
    wanted = wanted_position(token)
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
            if hint := unreachable(token, wanted, {*now, *stopped}, topics):
                why += f"; {hint}"
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
    """Why a wait may never bring an index to ``wanted`` (the position ``token`` asks
    for), or None when nothing says so: ``followed`` are the keys of the index's
    position (with the partitions stopped at a gap), ``topics`` the topics its consumer
    is set to follow. Only a hint, told when a wait times out: a stream may yet enter
    the position (a bridged topic brings SpiceDB's revision with its first markers, a
    consumer of several topics applies one first), so no token is refused for it."""
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
            f"{what} and this index holds no SpiceDB revision (yet: it follows {follows}); "
            "unless it consumes a bridged topic whose first markers have not come, pass "
            "a version token of this index, or ask an index built with --from spicedb:..."
        )
    if not streams:
        return None  # nothing followed yet: a consumer may be about to start
    foreign = sorted({_stream(k) for k in wanted} - streams)
    if not foreign:
        return None
    asked = ", ".join(sorted(k for k in wanted if _stream(k) in foreign))
    return (
        f"version {token} asks for {', '.join(map(_named, foreign))} ({asked}), which "
        f"this index has applied nothing of (it follows {follows})"
    )


def followed_elsewhere(position: Collection[str], gaps: Collection[str]) -> str | None:
    """Why a fully consistent read (gRPC ``fully_consistent``, OpenFGA's
    ``HIGHER_CONSISTENCY``) cannot be answered by a server that applies no change stream
    itself, or None when it can: an index whose position names a stream (``position``
    and ``gaps`` are its keys) is kept fresh by some other process, or by none, and its
    current version says nothing of what that stream holds beyond it. An index built
    from files, followed by nothing, is its own head."""
    streams = sorted({_stream(k) for k in (*position, *gaps)})
    if not streams:
        return None
    return (
        f"the index follows {', '.join(map(_named, streams))}, and this server does not "
        "apply that stream itself (a separate leopard follow or consume does, or none), "
        "so it cannot know the stream's head; serve the index with the follower in the "
        "same process (--source, or --brokers and --topic)"
    )
