"""Generations of an index directory: the live one, a new one, the swap between them.

An index directory holds generations and a symlink naming the live one::

    DIR/
      CURRENT -> gen-000002     swapped atomically (rename of a symlink)
      gen-000002/
        base/                   RocksDB written once by a build or a compaction
        delta/                  RocksDB of the incremental layer (changes since base)

A build writes a new generation beside the live one and swaps ``CURRENT`` at the
end, so a failed or interrupted build leaves the previous index untouched and a
half-built one is never visible.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from leopard.errors import IndexNotFound, StorageError

__all__ = ["IndexDir", "base_of", "delta_of", "dir_size", "report_of"]

_GEN_RE = re.compile(r"^gen-(\d{6})$")


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


def base_of(generation: Path) -> Path:
    """The base RocksDB of a generation."""
    return generation / "base"


def delta_of(generation: Path) -> Path:
    """The incremental layer's RocksDB of a generation."""
    return generation / "delta"


def report_of(generation: Path) -> Path:
    """The build report a build or compaction left in its generation."""
    return generation / "build-report.json"
