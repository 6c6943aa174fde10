"""Interning the build's names: each distinct name a dense id, in order of first appearance.

Names arrive as Arrow arrays, batch after batch, and an edge end is first a position
in their concatenation; deduplicating turns positions into ids. Hashing is Arrow's
(``dictionary_encode``), which releases the GIL, so group names are folded on a
thread of their own while the next batches are classified.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["GroupNames", "dedupe"]


def dedupe(parts: list[pa.Array]) -> tuple[pa.Array, np.ndarray]:
    """The distinct names of the parts, in order of first appearance, and the index of
    each entry among them."""
    if not parts:
        return pa.array([], pa.string()), np.zeros(0, dtype=np.int64)
    enc = pc.dictionary_encode(pa.concat_arrays([p.cast(pa.string()) for p in parts]))
    return enc.dictionary, enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)


class GroupNames:
    """Group names appended part by part, each position to become a dense id (in order
    of first appearance). A snapshot in subject order names most groups in every
    batch, so the parts repeat each other: deduplicated only at the end, they would
    be batches x groups names to hash after reading (40M tuples: 18M). Once enough
    names wait (``FOLD``, ``SPREAD``), they are folded into the distinct names so far
    (which keep their ids, being first) on a worker thread, one fold after another,
    while reading goes on."""

    # names waiting before a fold: at least FOLD...
    FOLD = 1 << 22
    # ...and at least SPREAD times the distinct names so far: a fold hashes those again
    # (1.9M of them on the 100M org, half a second a fold)
    SPREAD = 4

    def __init__(self) -> None:
        self.size = 0
        self.names: pa.Array = pa.array([], pa.string())  # distinct, folded so far
        self.ids: list[np.ndarray] = []  # the id of each folded position
        self.waiting: list[pa.Array] = []
        self.waiting_size = 0
        self._pool: ThreadPoolExecutor | None = None
        self._folds: list[Future[None]] = []

    def add(self, names: pa.Array) -> np.ndarray:
        """The positions of ``names``, appended."""
        start = self.size
        self.extend([names], len(names))
        return np.arange(start, self.size, dtype=np.int64)

    def extend(self, parts: list[pa.Array], size: int) -> None:
        """Append parts of ``size`` names in all."""
        self.size += size
        self.waiting.extend(parts)
        self.waiting_size += size

    def fold(self, force: bool = False) -> None:
        """Start folding the parts waiting, once there are enough (or ``force``)."""
        enough = max(self.FOLD, self.SPREAD * len(self.names))
        if not self.waiting or (self.waiting_size < enough and not force):
            return
        parts, self.waiting, self.waiting_size = self.waiting, [], 0
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="leopard-names")
        # one worker: folds run in the order they were started, each on the last's names
        self._folds.append(self._pool.submit(self._fold, parts))

    def _fold(self, parts: list[pa.Array]) -> None:
        # The names so far are looked up, not hashed in again with the parts: after
        # the first batches nearly every name is known (on the 40M org the folds
        # took 6.2-6.9 s of CPU so, 8.6-9.1 s deduplicating the concatenation)
        waiting = pa.chunked_array([p.cast(pa.string()) for p in parts], pa.string())
        known = pc.index_in(waiting, value_set=self.names)
        ids = pc.fill_null(known, -1).to_numpy().astype(np.int64)
        if known.null_count:  # names not seen before: ids after the others, in order
            new = pc.is_null(known)
            fresh = pc.dictionary_encode(pc.filter(waiting, new).combine_chunks())
            ids[np.flatnonzero(ids < 0)] = fresh.indices.to_numpy() + len(self.names)
            self.names = pa.concat_arrays([self.names, fresh.dictionary])
        self.ids.append(ids)

    def finish(self) -> tuple[pa.Array, np.ndarray]:
        """The distinct names, and the id of every position."""
        self.fold(force=True)
        self.close()
        ids = np.concatenate(self.ids) if self.ids else np.zeros(0, dtype=np.int64)
        self.ids = []
        return self.names, ids

    def close(self, check: bool = True) -> None:
        """Wait for the folds started and stop the worker; with ``check``, raise the
        first fold's error (without, after another error, the folds are only waited
        for)."""
        folds, self._folds = self._folds, []
        pool, self._pool = self._pool, None
        try:
            for f in folds:
                if check:
                    f.result()
                else:
                    f.exception()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
