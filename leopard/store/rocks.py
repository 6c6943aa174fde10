"""RocksDB through rocksdict: the one module that imports it, and maps its errors once.

rocksdict raises plain ``Exception`` subclasses with RocksDB's status text; every call
into it goes through ``rocks_errors``, which re-raises them as ``StorageError`` naming
what was being done, so no rocksdict type ever reaches a caller.

rocksdict must be opened with ``column_families=`` naming every family, default
included: otherwise each family silently falls back to default options (no block
cache, no bloom filter) on reopen and point reads get ~100x slower.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import cast

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    DBRecoveryMode,
    IngestExternalFileOptions,
    Options,
    Rdict,
    SstFileWriter,
    WriteBatch,
)

from leopard.errors import LeopardError, StorageError
from leopard.store.layout import FAMILIES, key_text
from leopard.store.space import describe_os_error

__all__ = [
    "RocksDB",
    "Family",
    "Batch",
    "SstFile",
    "rocks_errors",
    "list_families",
    "log_files",
    "open_shared",
]


@contextlib.contextmanager
def rocks_errors(what: str) -> Iterator[None]:
    """Re-raise what rocksdict raises inside the block as ``StorageError: what: reason``."""
    try:
        yield
    except LeopardError:
        raise
    except Exception as exc:  # rocksdict raises plain Exception subclasses
        raise describe_os_error(exc, None, what) or StorageError(f"{what}: {exc}") from exc


def _refuse_if_held(path: Path) -> None:
    """StorageError naming the process that writes the RocksDB at ``path``, if one
    does: RocksDB takes one writer, and says only that its LOCK file is held. Never
    called by a process that may hold that lock (closing the file would drop it)."""
    lock = path / "LOCK"
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return  # no LOCK yet (a new database), or unreadable: RocksDB says what is wrong
    try:
        # F_GETLK: who holds a write lock on the whole file (struct flock: type, whence,
        # start, len, pid); the type comes back F_UNLCK when nobody does
        asked = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        kind, _, _, _, pid = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, asked))
    except OSError:
        return
    finally:
        os.close(fd)
    if kind != fcntl.F_UNLCK:
        raise StorageError(
            f"{str(path)!r} is being written by another process (pid {pid}): an index takes "
            "one writer at a time (one consumer, follower or serving consumer); stop that "
            "one first, or read the index without writing"
        )


# How each family of a base is compressed, and its data block size (whether written
# as an SST file or by a write batch and a flush), chosen by measure (bench/sizes.py).
# zstd and larger blocks compress better, but a cold point read decompresses a whole
# block (the block cache then keeps it uncompressed). ``Index.warm()`` loads m2g and
# g2g in full, after which a check reads no RocksDB; before it, each check reads one
# m2g and one g2g value, so those two stay lz4 in 16 KiB blocks: zstd there saved 1.4
# bytes per tuple on the 10M org but doubled a cold check (p50 25 -> 45 us, p99 80 ->
# 185 us). The others are read by groups_of, members_of, the incremental layer and
# verify.
_TABLES: dict[str, tuple[str, int]] = {
    "default": ("zstd", 4 << 10),  # the header: a few values, one of them long
    "m2g": ("lz4", 16 << 10),
    "sname": ("zstd", 16 << 10),
    "g2g": ("lz4", 16 << 10),
}
_BULK_TABLE = ("zstd", 64 << 10)


def _table(family: str) -> tuple[DBCompressionType, int]:
    """The compression and block size of ``family`` in a base."""
    name, block = _TABLES.get(family, _BULK_TABLE)
    return getattr(DBCompressionType, name)(), block


def _options(
    cache: Cache | None, *, bulk: bool = False, strict: bool = False, family: str = "default"
) -> Options:
    opt = Options(raw_mode=True)
    opt.create_if_missing(True)
    opt.create_missing_column_families(True)
    if strict:
        # Refuse to open over a write-ahead log with a damaged or torn record instead
        # of recovering the writes before it (what every other opening does).
        opt.set_wal_recovery_mode(DBRecoveryMode.absolute_consistency())
        opt.set_paranoid_checks(True)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    # Each table file holds its index and filter blocks itself, outside the block
    # cache, where the data blocks that checks read could evict them (a base's m2g
    # filter is 4.7 MB at 40M tuples) and a check would read them again. The first
    # 20,000 checks after open at 40M, five runs each, alternated on a busy machine:
    # p99 130-195 us (median 147) with them in the cache, 90-177 (median 99) without;
    # the very first check 390-4,500 us, then 190 us. They cost ~30 MB at 100M tuples.
    table.set_cache_index_and_filter_blocks(False)
    if cache is not None:
        table.set_block_cache(cache)
    # A base (written once, ``bulk``) is compressed like its SST files (``_sst_options``):
    # its header and its small families go in by a write batch and a flush. The delta,
    # written all the time, keeps lz4 and small blocks.
    compression = DBCompressionType.lz4()
    if bulk:
        compression, block = _table(family)
        table.set_block_size(block)
    opt.set_block_based_table_factory(table)
    opt.set_compression_type(compression)
    if bulk:
        opt.set_write_buffer_size(128 << 20)
        opt.set_max_write_buffer_number(4)
        opt.increase_parallelism(2)
    return opt


def list_families(path: Path | str) -> list[str]:
    """The column families of the RocksDB at ``path``."""
    with rocks_errors(f"cannot list the column families of {str(path)!r}"):
        return list(Rdict.list_cf(str(path)))


def open_shared(
    path: Path, what: str, *, cache_bytes: int, secondary: str | None = None, strict: bool = False
) -> RocksDB | None:
    """A database another process writes, opened read-only (or as a ``secondary``);
    None while it does not exist with every family yet. ``what`` names it in errors."""
    for attempt in range(_READ_ATTEMPTS):
        if not (path / "CURRENT").exists():
            _unless_written(path, what, "its CURRENT file is missing")
            return None
        try:
            # A writer opening the database for the first time creates it before its
            # column families; until they all exist it has written nothing, and a
            # read-only open naming them all would fail.
            missing = sorted(set(FAMILIES) - set(list_families(path)))
            if missing:
                _unless_written(path, what, f"it lacks the column families {missing}")
                return None
            return RocksDB(
                path, read_only=True, cache_bytes=cache_bytes, secondary=secondary, strict=strict
            )
        except Exception as exc:
            # A read-only open reads the list of live files from the MANIFEST, and the
            # writer (the consumer) may delete some of them meanwhile, flushing or
            # compacting: "Corruption: Can't access ...sst". That passes; the next
            # attempt reads the new list.
            if attempt == _READ_ATTEMPTS - 1:
                if isinstance(exc, StorageError):
                    raise
                raise StorageError(f"cannot read {what} at {str(path)!r}: {exc}") from exc
            time.sleep(0.01 * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


_READ_ATTEMPTS = 6  # about 0.3 s of retries in all


def _unless_written(path: Path, what: str, lack: str) -> None:
    """StorageError unless the database at ``path``, which ``lack``s what a finished one
    has, holds no data yet (a writer creating it): read as absent, its data would vanish."""
    data = [p.name for p in [*path.glob("*.sst"), *log_files(path)] if p.stat().st_size]
    if data:
        raise StorageError(
            f"{what} at {str(path)!r} is damaged: {lack}, though it holds data "
            f"({', '.join(sorted(data)[:3])}); restore it from a backup or rebuild the index"
        )


def log_files(path: Path | str) -> list[Path]:
    """The write-ahead logs of the RocksDB at ``path`` (writes not yet in a table file)."""
    return sorted(Path(path).glob("*.log"))


#: pairs a ``Family.columns`` pass holds at once
_PAIRS_AT_ONCE = 1 << 20
_KEY, _VALUE = itemgetter(0), itemgetter(1)


class Family:
    """One column family: point reads, multi-gets and ordered scans."""

    __slots__ = ("name", "where", "_cf")

    def __init__(self, name: str, where: str, cf: Rdict) -> None:
        self.name = name
        self.where = where
        self._cf = cf

    def get(self, key: bytes) -> bytes | None:
        try:
            return self._cf.get(key)
        except Exception as exc:
            what = key_text(self.name, key)
            raise StorageError(f"read of {what} from {self.where} failed: {exc}") from exc

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        """Values of ``keys`` (None where absent) with one multi-get."""
        if not keys:
            return []
        try:
            values = self._cf.get(keys)  # type: ignore[arg-type]  # a list of bytes keys
        except Exception as exc:
            what = f"{key_text(self.name, keys[0])} and {len(keys) - 1} more"
            raise StorageError(f"read of {what} from {self.where} failed: {exc}") from exc
        return list(values) if values is not None else [None] * len(keys)

    def items(self, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Every key and value in key order, from ``start`` (the first key) on.

        A scan that hit a damaged block raises instead of ending early as if the
        family ended there (``_check_end``).
        """
        with rocks_errors(f"scan of {self.name} in {self.where} failed"):
            last = None
            for last, value in self._pairs(start):
                yield last, value
            self._check_end(last, start)

    def as_dict(self) -> dict[bytes, bytes]:
        """Every key and its value, made by rocksdict's iterator without a Python step
        a key (at 40M tuples, 3.8M subjects: 1.1 s a pass, 1.5-2.3 s by ``items`` when
        it took four calls a key); damage raises as in ``items``."""
        with rocks_errors(f"scan of {self.name} in {self.where} failed"):
            out = dict(self._pairs())
            self._check_end(next(reversed(out)) if out else None, None)
        return out

    def columns(self) -> tuple[list[bytes], list[bytes]]:
        """Every key and its value, in key order, as two lists, read as ``as_dict``
        reads: a million pairs at a time, so that no list of every pair is held (at 14M
        closures that list cost 0.9 GB more at the peak)."""
        keys: list[bytes] = []
        values: list[bytes] = []
        with rocks_errors(f"scan of {self.name} in {self.where} failed"):
            found = self._pairs()
            while part := list(islice(found, _PAIRS_AT_ONCE)):
                keys += map(_KEY, part)
                values += map(_VALUE, part)
            self._check_end(keys[-1] if keys else None, None)
        return keys, values

    def _pairs(self, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """rocksdict's own iterator over the family from ``start``, in key order (raw
        mode: keys and values are bytes, whatever its stubs say)."""
        return cast(Iterator[tuple[bytes, bytes]], self._cf.items(from_key=start))

    def _check_end(self, last: bytes | None, start: bytes | None) -> None:
        """rocksdict's iterator ends at damage as if at the end: where a scan ended
        (after ``last``, or at ``start`` when it yielded nothing), RocksDB must say
        that the family ends there, not that a block is damaged."""
        it = self._cf.iter()
        if last is not None:
            it.seek(last)
            it.next()
        elif start is not None:
            it.seek(start)
        else:
            it.seek_to_first()
        it.status()
        if it.valid():
            raise StorageError(
                f"scan of {self.name} in {self.where} stopped at "
                f"{key_text(self.name, it.key())} before the end"
            )

    def ingest(self, path: Path) -> None:
        """Move a finished SST file into this family."""
        opts = IngestExternalFileOptions()
        opts.set_move_files(True)
        with rocks_errors(f"ingesting {self.name} into {self.where} failed"):
            self._cf.ingest_external_file([str(path)], opts)


class Batch:
    """Writes that land together or not at all (a RocksDB write batch)."""

    def __init__(self, db: RocksDB) -> None:
        self._batch = WriteBatch(raw_mode=True)
        self._handles = db._handles

    def put(self, family: str, key: bytes, value: bytes) -> None:
        self._batch.put(key, value, self._handles[family])

    def put_many(self, family: str, items: Iterable[tuple[bytes, bytes]]) -> None:
        """``put`` of many keys and values of one family (the writer's tens of thousands
        a batch: the family's handle looked up once)."""
        put, handle = self._batch.put, self._handles[family]
        for key, value in items:
            put(key, value, handle)

    def put_default(self, key: bytes, value: bytes) -> None:
        self._batch.put(key, value)

    def __len__(self) -> int:
        return int(self._batch.len())


class RocksDB:
    """An open RocksDB with every family of the index format configured."""

    def __init__(
        self,
        path: Path | str,
        *,
        read_only: bool = True,
        bulk: bool = False,
        cache_bytes: int = 256 << 20,
        secondary: str | None = None,
        families: tuple[str, ...] = FAMILIES,
        strict: bool = False,
    ) -> None:
        """Open ``path``; as a secondary instance with ``secondary`` (a scratch
        directory), which follows a writer in another process cheaply (``catch_up``);
        ``strict``: fail on a damaged or torn record of the write-ahead log rather than
        recover up to it (``leopard verify``)."""
        self.where = str(path)
        cache = Cache(cache_bytes)
        opt = _options(cache, bulk=bulk, strict=strict)
        cfs = {n: _options(cache, bulk=bulk, strict=strict, family=n) for n in families}
        if secondary is not None:
            access = AccessType.secondary(secondary)
        else:
            access = AccessType.read_only() if read_only else AccessType.read_write()
        try:
            with rocks_errors(f"cannot open RocksDB at {self.where!r}"):
                self._db: Rdict | None = Rdict(
                    self.where, opt, column_families=cfs, access_type=access
                )
                self._families = {
                    name: Family(name, self.where, self._db.get_column_family(name))
                    for name in families
                    if name != "default"
                }
                self._handles = (
                    {}
                    if read_only or secondary is not None
                    else {n: self._db.get_column_family_handle(n) for n in families}
                )
        except StorageError as exc:
            # RocksDB only says its LOCK is held; by another process (in this one it
            # says so), which is named: asking it here opens and closes the LOCK file,
            # which would drop a lock this process held (POSIX locks are per process)
            if read_only or "Resource temporarily unavailable" not in str(exc):
                raise
            _refuse_if_held(Path(self.where))
            raise

    @property
    def raw(self) -> Rdict:
        assert self._db is not None, "the database is closed"
        return self._db

    def family(self, name: str) -> Family:
        return self._families[name]

    def get(self, key: bytes) -> bytes | None:
        """A value of the default family."""
        with rocks_errors(f"read of {key_text('default', key)} from {self.where} failed"):
            return self.raw.get(key)

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Keys and values of the default family that start with ``prefix``."""
        with rocks_errors(f"scan of {self.where} failed"):
            it = self.raw.iter()
            it.seek(prefix)
            while it.valid() and it.key().startswith(prefix):
                yield it.key(), it.value()
                it.next()
            it.status()

    def put(self, key: bytes, value: bytes) -> None:
        with rocks_errors(f"write to {self.where} failed"):
            self.raw.put(key, value)

    def batch(self) -> Batch:
        return Batch(self)

    def write(self, batch: Batch) -> None:
        with rocks_errors(f"write to {self.where} failed"):
            self.raw.write(batch._batch)

    def flush(self) -> None:
        """Flush every family's memtable to SST files (nothing left only in the log)."""
        with rocks_errors(f"flush of {self.where} failed"):
            db = self.raw
            db.flush()
            for name in self._families:
                db.get_column_family(name).flush()

    def table_stats(self, name: str) -> dict[str, int]:
        """What family ``name`` holds in its live SST files: ``entries``, the raw
        ``key_bytes`` and ``value_bytes``, and ``sst_bytes`` on disk (after compression,
        with indexes and filters). From RocksDB's table properties: nothing is read."""
        with rocks_errors(f"cannot read the table properties of {name} in {self.where}"):
            cf = self.raw if name == "default" else self.raw.get_column_family(name)
            sst = cf.property_int_value("rocksdb.live-sst-files-size") or 0
            text = cf.property_value("rocksdb.aggregated-table-properties") or ""
        props = dict(part.strip().split("=", 1) for part in text.split(";") if "=" in part)

        def number(key: str) -> int:
            try:
                return int(float(props.get(key, "0")))
            except ValueError:
                return 0

        return {
            "entries": number("# entries"),
            "key_bytes": number("raw key size"),
            "value_bytes": number("raw value size"),
            "sst_bytes": int(sst),
        }

    def catch_up(self) -> None:
        """A secondary instance: read what the primary wrote since."""
        with rocks_errors(f"cannot follow the writer of {self.where}"):
            self.raw.try_catch_up_with_primary()

    def close(self) -> None:
        # The column family handles keep the RocksDB, and its LOCK, alive: drop them
        # first, or a database opened again in this process fails with "lock hold by
        # current process" for as long as this object is referenced.
        self._handles = {}
        self._families = {}
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except Exception:  # closing twice, or after a failure: nothing to report
                pass


def _sst_options(family: str) -> Options:
    """How a base's SST file of ``family`` is written (``_TABLES``; zstd at its default
    level, 3). RocksDB records the compression of every block, so a reader opens the
    file whatever its own options."""
    opt = Options(raw_mode=True)
    compression, block = _table(family)
    table = BlockBasedOptions()
    table.set_block_size(block)
    opt.set_block_based_table_factory(table)
    opt.set_compression_type(compression)
    return opt


class SstFile:
    """An SST file of ``family`` written in increasing key order, for ingestion."""

    def __init__(self, path: Path, family: str) -> None:
        self.path = path
        self._writer = SstFileWriter(_sst_options(family))
        with rocks_errors(f"cannot create {str(path)!r}"):
            self._writer.open(str(path))

    def put_many(self, keys: list[bytes], values: list[bytes]) -> None:
        # rocksdict's own error on purpose (no wrapper on this hot loop): the build
        # maps it, a full disk included, where it knows which generation it writes
        writer = self._writer
        for key, value in zip(keys, values, strict=True):
            writer[key] = value

    def finish(self) -> None:
        with rocks_errors(f"cannot finish {str(self.path)!r}"):
            self._writer.finish()
