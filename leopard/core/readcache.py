"""The sets an incremental writer keeps deserialized between batches.

Group-keyed sets as the writer last read or wrote them, shared read-only (callers copy
before changing one, except ``take``'s member sets). Consecutive batches read the same
upper hierarchy and popular groups again and again (on the 10M org, 8 batches of 500
edge changes made 786k reads of 186k distinct sets). Only the writer changes the sets
of its generation, so an entry stays right until one of its batches replaces it, which
the writer installs here too (``keep``); a reloaded overlay (``SetReader.refresh``)
empties the cache all the same.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from itertools import islice

from pyroaring import BitMap

from leopard.core.layers import SetReader
from leopard.model.setcodec import load
from leopard.store.layout import gkey

__all__ = ["ReadCache"]

# Sets kept at most (the oldest are dropped past it). Full of the 10M-tuple org's
# closures it takes ~170 MB (74 MB serialized).
LIMIT = 300_000


class ReadCache:
    """``reader``'s sets by ``(family, group id)``, read through one multi-get a call."""

    def __init__(self, reader: SetReader) -> None:
        self.reader = reader
        self.sets: dict[tuple[str, int], BitMap] = {}
        self._overlay = reader.overlay

    def follow(self) -> None:
        """Empty the cache if the reader's overlay was reloaded since the last batch."""
        if self.reader.overlay is not self._overlay:
            self.sets.clear()
            self._overlay = self.reader.overlay

    def read(self, family: str, gid: int) -> BitMap:
        """``reader.bitmap`` through the cache; never change the result."""
        key = (family, gid)
        bm = self.sets.get(key)
        if bm is None:
            self.room(1)
            bm = self.sets[key] = self.reader.bitmap(family, gid)
        return bm

    def read_many(self, family: str, gids: Iterable[int]) -> None:
        """Bring the sets of ``gids`` into the cache with one multi-get."""
        cache = self.sets
        wanted = list(gids)
        missing = [g for g in wanted if (family, g) not in cache]
        if not missing:
            return
        if self.room(len(missing)):  # what it dropped may be asked for here
            missing = [g for g in wanted if (family, g) not in cache]
        r = self.reader
        keys = [gkey(g) for g in missing]
        for gid, key, raw in zip(missing, keys, r.raw_many(family, keys), strict=True):
            try:
                bm = load(raw) if raw else r.set_value(family, key, raw)
            except Exception:  # ValueError; set_value says why
                bm = r.set_value(family, key, raw)
            cache[(family, gid)] = bm

    def take(self, family: str, gid: int) -> BitMap:
        """The cached set itself, for ``Work.bitmap`` to change in place; a failed
        batch empties the cache (see ``DeltaWriter.apply``)."""
        key = (family, gid)
        bm = self.sets.get(key)
        if not bm:  # not cached, or empty: perhaps the reader's shared empty set
            bm = BitMap(self.read(family, gid))
            self.sets[key] = bm
        return bm

    def keep(self, sets: dict[tuple[str, int], BitMap], keys: Collection[tuple[str, int]]) -> None:
        """Hold a persisted batch's sets ``keys`` of ``sets``: they are the new state."""
        cache = self.sets
        self.room(len(keys))
        for key in keys:
            cache[key] = sets[key]
        self._overlay = self.reader.overlay

    def room(self, n: int) -> bool:
        """Make room for ``n`` more sets; whether any were dropped.

        The oldest go, a quarter of the cache more than needed so that the next reads
        do not drop again; all of them only when ``n`` alone fills it. (Emptying it
        whenever it was full dropped, in the middle of re-deriving a large region, the
        sets just read for it, which were then read again one by one.)
        """
        cache = self.sets
        over = len(cache) + n - LIMIT
        if over < 0:
            return False
        drop = over + LIMIT // 4
        if drop >= len(cache):
            cache.clear()
        else:
            for key in list(islice(cache, drop)):
                del cache[key]
        return True
