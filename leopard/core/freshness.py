"""Waiting until the index has applied a version: one policy, two drivers.

A caller hands back a version token (from ``leopard publish`` or an earlier answer),
or the ZedToken SpiceDB returned for a write when the index follows SpiceDB, and asks
for an answer at least that fresh, waiting a bounded time. The policy is the
same wherever it is asked: decode the token (a bad one is ``InvalidInput`` at once),
answer as soon as the applied position has reached it, and otherwise raise
``StaleIndex`` naming the token, the wait and the version reached. ``wait_steps``
holds that policy as a generator of pauses; ``Index.wait_for`` drives it with a
blocking wait, the HTTP app with ``asyncio``, so neither writes it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator

from leopard.errors import StaleIndex
from leopard.model.tokens import reached, wanted_position
from leopard.model.zedtoken import SPICEDB_KEY

__all__ = ["wait_steps", "POLL"]

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
) -> Generator[float, None, str]:
    """Pauses to wait between looks at ``position()`` until it reaches ``token``.

    Yields how long to wait before looking again (the driver may be woken earlier);
    returns the version once reached; raises ``StaleIndex`` after ``timeout`` seconds
    and ``InvalidInput`` for a token that is not one. ``gaps`` names partitions
    stopped at a gap in their log (left out of ``position()``): the message of a
    refusal says so for every one the token names.
    """
    wanted = wanted_position(token)
    deadline = clock() + max(0.0, timeout)
    while True:
        if reached(position(), wanted):
            return version()
        left = deadline - clock()
        if left <= 0:
            current = version()
            stopped = gaps()
            why = "".join(f"; {stopped[p]}" for p in sorted(wanted) if p in stopped)
            if SPICEDB_KEY in wanted and SPICEDB_KEY not in position():
                why += "; the index follows no SpiceDB (its version carries no revision)"
            raise StaleIndex(
                f"the index has not reached version {token} within {timeout:g} s "
                f"(it is at {current}){why}",
                current=current,
            )
        yield min(left, poll)
