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

from leopard.store.layout import SET_FAMILIES
from leopard.store.rocks import RocksDB, SstFile

__all__ = ["BaseWriter", "FamilyWriter"]


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

    def put(self, key: bytes, value: bytes) -> None:
        self.count += 1
        if self.buffer is not None:
            self.buffer.append((key, value))
            if len(self.buffer) < self.SMALL:
                return
            self.file = SstFile(self.path, self.family)
            for k, v in self.buffer:
                self.file.put(k, v)
            self.buffer = None
            return
        assert self.file is not None
        self.file.put(key, value)

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
