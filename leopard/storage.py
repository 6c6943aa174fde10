"""RocksDB storage: the on-disk layout of an index, raw bytes only.

An index directory holds generations and a symlink naming the live one::

    DIR/
      CURRENT -> gen-000002     swapped atomically (rename of a symlink)
      gen-000002/
        base/                   RocksDB written once by a build or a compaction
        delta/                  RocksDB of the incremental layer (changes since base)

A build writes a new generation beside the live one and swaps ``CURRENT`` at the
end, so a failed or interrupted build leaves the previous index untouched and a
half-built one is never visible.

Column families (keys are raw bytes; group and subject ids are 4-byte big-endian
so that iteration follows id order; every set value is a portable roaring bitmap):

    default   meta: b"format" -> version, b"meta" -> JSON, b"groups" -> names
    m2g       subject name -> 4-byte subject id + MEMBER2GROUP bitmap (direct groups)
    sname     subject id -> subject name
    g2g       group id -> GROUP2GROUP (descendants, itself included)
    g2a       group id -> GROUP2ANCESTOR (ancestors, itself included)
    g2m       group id -> GROUP2MEMBER (direct leaf members: subject ids)
    child     group id -> direct child groups
    parent    group id -> direct parent groups
    support   group id + b"g" + child group id, or group id + b"s" + subject id ->
              8-byte little-endian mask of the stored relations feeding that edge
              (only for sets fed by several relations: deleting one tuple must not
              drop an edge another relation still feeds; an edge with no entry is
              fed by the set's first relation alone)

rocksdict must be opened with ``column_families=`` naming every family, default
included: otherwise each family silently falls back to default options (no block
cache, no bloom filter) on reopen and point reads get ~100x slower.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    Options,
    Rdict,
)

from leopard.errors import IndexNotFound, StorageError

__all__ = [
    "FORMAT_VERSION",
    "SET_FAMILIES",
    "FAMILIES",
    "gkey",
    "open_db",
    "IndexDir",
]

FORMAT_VERSION = 1
SET_FAMILIES = ("m2g", "sname", "g2g", "g2a", "g2m", "child", "parent", "support")
FAMILIES = ("default", *SET_FAMILIES)

_GEN_RE = re.compile(r"^gen-(\d{6})$")
_U32 = struct.Struct(">I")


def gkey(i: int) -> bytes:
    """The key of a group or subject id: 4 bytes, big-endian."""
    return _U32.pack(i)


def _options(cache: Cache | None, *, bulk: bool = False) -> Options:
    opt = Options(raw_mode=True)
    opt.create_if_missing(True)
    opt.create_missing_column_families(True)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    if cache is not None:
        table.set_block_cache(cache)
    opt.set_block_based_table_factory(table)
    opt.set_compression_type(DBCompressionType.lz4())
    if bulk:
        opt.set_write_buffer_size(128 << 20)
        opt.set_max_write_buffer_number(4)
        opt.increase_parallelism(2)
    return opt


def open_db(
    path: Path | str,
    *,
    families: tuple[str, ...] = FAMILIES,
    read_only: bool = True,
    bulk: bool = False,
    cache_bytes: int = 256 << 20,
    secondary: str | None = None,
) -> Rdict:
    """Open a RocksDB with every family configured (see the module docstring).

    With ``secondary`` (a scratch directory) it is opened as a secondary instance,
    which follows a writer in another process cheaply (``try_catch_up_with_primary``).
    """
    cache = Cache(cache_bytes)
    opt = _options(cache, bulk=bulk)
    cfs = {name: _options(cache, bulk=bulk) for name in families}
    if secondary is not None:
        access = AccessType.secondary(secondary)
    else:
        access = AccessType.read_only() if read_only else AccessType.read_write()
    try:
        return Rdict(str(path), opt, column_families=cfs, access_type=access)
    except Exception as exc:  # rocksdict raises plain Exception subclasses
        raise StorageError(f"cannot open RocksDB at {str(path)!r}: {exc}") from exc


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


class IndexDir:
    """An index directory: generations and the CURRENT symlink."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def current_link(self) -> Path:
        return self.path / "CURRENT"

    def exists(self) -> bool:
        return self.current_link.is_symlink() or self.current_link.exists()

    def current(self) -> Path:
        """The live generation; IndexNotFound when there is none."""
        if not self.path.exists():
            raise IndexNotFound(f"no index at {str(self.path)!r}: the directory does not exist")
        if not self.exists():
            raise IndexNotFound(
                f"no index at {str(self.path)!r}: it has no CURRENT generation "
                "(build one with 'leopard build')"
            )
        target = self.path / os.readlink(self.current_link)
        if not (target / "base").is_dir():
            raise IndexNotFound(f"index at {str(self.path)!r} is damaged: {target} has no base")
        return target

    def _generations(self) -> list[int]:
        out = []
        for entry in self.path.iterdir():
            m = _GEN_RE.match(entry.name)
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    def prepare(self) -> Path:
        """Create the directory of a new generation beside the live one."""
        if self.path.exists() and not self.path.is_dir():
            raise StorageError(f"{str(self.path)!r} exists and is not a directory")
        if self.path.is_dir() and not self.exists():
            foreign = [
                e.name
                for e in self.path.iterdir()
                if not _GEN_RE.match(e.name) and not e.name.startswith(".gen-")
            ]
            if foreign:
                raise StorageError(
                    f"{str(self.path)!r} exists and is not a Leopard index "
                    f"(it holds {foreign[0]!r}); name an empty or new directory"
                )
        self.path.mkdir(parents=True, exist_ok=True)
        self._clean_abandoned()
        gens = self._generations()
        number = (gens[-1] + 1) if gens else 1
        tmp = self.path / f".gen-{number:06d}.{os.getpid()}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        return tmp

    def publish(self, tmp: Path) -> Path:
        """Make a prepared generation the live one, atomically; drop older ones."""
        number = int(tmp.name.split(".")[1].split("-")[1])
        final = self.path / f"gen-{number:06d}"
        os.replace(tmp, final)
        link_tmp = self.path / f".CURRENT.{os.getpid()}.tmp"
        if link_tmp.is_symlink() or link_tmp.exists():
            link_tmp.unlink()
        os.symlink(final.name, link_tmp)
        os.replace(link_tmp, self.current_link)
        _fsync_dir(self.path)
        # The generation just replaced stays until the next swap: a consumer or a
        # reader in another process may still be using it, and switches over within
        # a batch. Anything older is gone.
        for n in self._generations():
            if n < number - 1:
                shutil.rmtree(self.path / f"gen-{n:06d}", ignore_errors=True)
        return final

    def abandon(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)

    def _clean_abandoned(self) -> None:
        """Remove temporary generations of builds whose process is gone."""
        for entry in self.path.iterdir():
            if entry.name.startswith(".gen-") and entry.name.endswith(".tmp"):
                try:
                    pid = int(entry.name.split(".")[2])
                except (IndexError, ValueError):
                    continue
                if pid != os.getpid() and not _alive(pid):
                    shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_meta(db: Rdict, where: str) -> dict[str, Any]:
    """The metadata of a base, after checking its format version."""
    fmt = db.get(b"format")
    if fmt is None:
        raise IndexNotFound(f"{where} is not a Leopard index (no format version)")
    version = int(fmt.decode())
    if version != FORMAT_VERSION:
        raise StorageError(
            f"{where} has index format {version}; this Leopard reads format {FORMAT_VERSION} "
            "(rebuild the index with 'leopard build')"
        )
    raw = db.get(b"meta")
    return json.loads(raw.decode()) if raw else {}


def iter_family(db: Rdict, family: str) -> Iterator[tuple[bytes, bytes]]:
    cf = db.get_column_family(family)
    it = cf.iter()
    it.seek_to_first()
    while it.valid():
        yield it.key(), it.value()
        it.next()
