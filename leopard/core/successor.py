"""Switching generations: a newer one is opened beside the served one, then served.

Compaction and rebuilds publish a new generation whose position is the one its build
recorded, which can be behind what the served generation has applied (a compaction
folds the incremental layer as it was when it started, and the consumer goes on
meanwhile). Serving it at once would move the version back. So the newer generation
is opened beside the served one as a ``Successor`` and served once its position has
reached the served one's: an in-process consumer applies the stream to it until then,
a reader elsewhere re-reads it until then, or until a grace period has passed (a
rebuild that no consumer follows never catches up). ``Index.refresh`` and the
consumer both follow this one policy.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from leopard.core.layers import SetReader
from leopard.model.tokens import reached
from leopard.store.generations import IndexDir

__all__ = ["Successor", "live_generation"]


def live_generation(path: Path) -> Path:
    """The generation ``CURRENT`` names now."""
    return IndexDir(path).current()


class Successor:
    """A newer generation, opened beside the served one, until it has caught up."""

    def __init__(self, reader: SetReader, target: dict[str, int]) -> None:
        self.reader = reader
        self.target = dict(target)
        self.opened = time.monotonic()

    @classmethod
    def open(cls, path: Path, *, target: dict[str, int], lock: threading.RLock) -> Successor:
        """Open the live generation, to be served once it has reached ``target``."""
        return cls(SetReader.open(path, lock=lock), target)

    @property
    def generation(self) -> Path:
        return self.reader.generation

    def caught_up(self, *, grace: float | None = None) -> bool:
        """Whether it has applied everything the served generation had (or, with
        ``grace``, has been waited for that many seconds)."""
        if reached(self.reader.position, self.target):
            return True
        return grace is not None and time.monotonic() - self.opened >= grace

    def close(self) -> None:
        self.reader.close()
