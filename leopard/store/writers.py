"""Writing a new base: each family's keys in order, as SST files or one write batch.

Large families go to an SST file that is ingested whole; small ones stay in memory
and go in with one write batch, because ingesting a file costs a few fsyncs (tens of
milliseconds) whatever its size, which would dominate small builds. A forked child
process of the build writes its families as files only (``file_only``): what it
kept in memory would be lost with it.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import numpy as np

from leopard.store.layout import SET_FAMILIES
from leopard.store.rocks import RocksDB, SstFile

__all__ = ["BaseWriter", "FamilyWriter", "id_keys"]


def id_keys(ids: np.ndarray) -> list[bytes]:
    """The key of each id (``layout.gkey``: 4 bytes, big-endian), millions at once:
    numpy makes the bytes objects of a 4-byte void array itself (``V4``, which keeps
    zero bytes, unlike ``S4``), about three times faster than a loop slicing one
    buffer (``python bench/pack.py`` prints both)."""
    return np.asarray(ids).astype(">u4").view("V4").tolist()  # type: ignore[no-any-return]


class FamilyWriter:
    """One family's keys, in increasing order, for the new base."""

    SMALL = 20_000  # keys kept in memory before switching to a file

    def __init__(self, owner: BaseWriter, family: str, *, file_only: bool) -> None:
        self.owner = owner
        self.family = family
        self.path = owner.directory / f"{family}.sst"
        self.buffer: list[tuple[bytes, bytes]] | None = None if file_only else []
        self.file: SstFile | None = SstFile(self.path, family) if file_only else None
        self.count = 0

    def put_many(self, keys: list[bytes], values: list[bytes]) -> None:
        """Put each pair, keys in increasing order (and above those put before): one
        loop for a family's millions of keys, where a call per key would cost."""
        if self.buffer is not None and len(self.buffer) + len(keys) < self.SMALL:
            self.buffer.extend(zip(keys, values, strict=True))
            self.count += len(keys)
            return
        if self.buffer is not None:
            self._to_file()
        assert self.file is not None
        self.file.put_many(keys, values)
        self.count += len(keys)

    def _to_file(self) -> None:
        """Leave memory for the file: what was buffered goes first."""
        assert self.buffer is not None
        self.file = SstFile(self.path, self.family)
        self.file.put_many([k for k, _ in self.buffer], [v for _, v in self.buffer])
        self.buffer = None

    def __enter__(self) -> FamilyWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is not None:
            return
        if self.buffer is not None:
            self.owner.pending[self.family] = self.buffer
        elif self.count:
            assert self.file is not None
            self.file.finish()
        else:  # an SST file cannot be empty
            self.path.unlink(missing_ok=True)


class BaseWriter:
    """The families of one new base, gathered in ``directory`` until ``store``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pending: dict[str, list[tuple[bytes, bytes]]] = {}

    def family(self, name: str, *, file_only: bool = False) -> FamilyWriter:
        return FamilyWriter(self, name, file_only=file_only)

    def store(self, db: RocksDB) -> None:
        """Put every family into ``db``: files by ingestion, small ones by one batch."""
        batch = db.batch()
        for family in SET_FAMILIES:
            path = self.directory / f"{family}.sst"
            if path.exists():
                db.family(family).ingest(path)
            for key, value in self.pending.pop(family, ()):
                batch.put(family, key, value)
        self.pending.clear()
        db.write(batch)
