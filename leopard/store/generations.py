"""Generations of an index directory: the live one, a new one, the swap between them.

An index directory holds generations and a symlink naming the live one::

    DIR/
      CURRENT -> gen-000004     swapped atomically (rename of a symlink)
      LOCK                      held (flock) by the one build or compaction at work
      gen-000003/               the generation live before: readers may still use it
      gen-000004/
        base/                   RocksDB written once by a build or a compaction
        delta/                  RocksDB of the incremental layer (changes since base)
        build-report.json       what the build read and wrote
        PREVIOUS                the name of the generation live before this one

A build writes a new generation beside the live one and swaps ``CURRENT`` at the
end, so a failed or interrupted build leaves the previous index untouched and a
half-built one is never visible.

One build or compaction at a time: ``acquire`` takes an exclusive ``flock`` on
``LOCK`` (``DirLock``, which also locks a sharded index's root; it writes its pid
there, for the message of the one turned away) before ``prepare``, and ``publish`` or
``abandon`` lets it go; the kernel lets it go if the process dies. Under the lock
nothing else writes, so ``prepare`` removes everything a killed writer left: temporary
generations (``.gen-N.PID.tmp``), temporary links (``.CURRENT.PID.tmp``), and complete
generations that never went live (killed between the rename and the swap). ``tidy``
does the same when an index is opened, only if the lock is free at that moment. A
publish keeps exactly the generation that was live before it and removes every other.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from leopard.errors import IndexNotFound, InvalidInput, StorageError
from leopard.store.space import describe_os_error, format_bytes

__all__ = [
    "DirLock",
    "IndexDir",
    "base_of",
    "delta_of",
    "dir_size",
    "refuse_shrink",
    "report_of",
]

_GEN_RE = re.compile(r"^gen-(\d{6})$")
_GEN_TMP_RE = re.compile(r"^\.gen-(\d{6})\.(\d+)\.tmp$")
_LINK_TMP_RE = re.compile(r"^\.CURRENT\.(\d+)\.tmp$")
_LOCK = "LOCK"
_PREVIOUS = "PREVIOUS"
_POLL = 0.05  # seconds between attempts at a busy lock


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
    """An index directory: generations, the CURRENT symlink, the writers' lock."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = DirLock(self.path)
        #: the generation ``prepare`` made and no ``publish`` or ``abandon`` has ended
        #: yet (a sharded build holds every shard's until all are built)
        self.prepared: Path | None = None

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
            if (self.path / "shards.json").exists():
                raise IndexNotFound(
                    f"{str(self.path)!r} is a sharded index, not one index: give one shard "
                    f"(--index {str(self.path / 'shard-K')!r}), or query it as a whole "
                    "(leopard.open_index, the query commands, leopard serve --route)"
                )
            raise IndexNotFound(
                f"no index at {str(self.path)!r}: it has no CURRENT generation "
                "(build one with 'leopard build')"
            )
        damaged = f"index at {str(self.path)!r} is damaged: {self.current_link}"
        try:
            name = os.readlink(self.current_link)
        except OSError as exc:  # a file or a directory (copied without its symlinks?)
            kind = "directory" if self.current_link.is_dir() else "file"
            raise IndexNotFound(
                f"{damaged} is a {kind}, not a symlink to a generation ({exc.strerror})"
            ) from None
        if not _GEN_RE.match(name):
            raise IndexNotFound(f"{damaged} points to {name!r}, not to a generation")
        target = self.path / name
        if not (target / "base").is_dir():
            raise IndexNotFound(f"index at {str(self.path)!r} is damaged: {target} has no base")
        return target

    def live_report(self) -> dict[str, Any] | None:
        """The build report of the live generation; None without one (or unreadable)."""
        try:
            report = json.loads(report_of(self.current()).read_text())
        except (OSError, ValueError, IndexNotFound):
            return None
        return report if isinstance(report, dict) else None

    @staticmethod
    def generation_name(tmp: Path) -> str:
        """``gen-N`` for the temporary directory of generation N."""
        m = _GEN_TMP_RE.match(tmp.name)
        return f"gen-{m.group(1)}" if m else tmp.name

    def _generations(self) -> list[int]:
        out = []
        for entry in self.path.iterdir():
            m = _GEN_RE.match(entry.name)
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    # -- the lock ---------------------------------------------------------------------

    @property
    def locked(self) -> bool:
        """Whether this object holds the directory's lock."""
        return self._lock.locked

    def acquire(self, wait: bool | float = False) -> None:
        """Take the directory's lock: at once, else StorageError naming the holder.

        ``wait`` True waits as long as it takes, a number that many seconds.
        """
        if self._lock.locked:
            return
        self._check_is_index()
        self._lock.acquire(wait)

    def release(self) -> None:
        """Let the lock go (nothing if not held); never raises."""
        self._lock.release()

    # -- a new generation ---------------------------------------------------------------

    def _check_is_index(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise StorageError(f"{str(self.path)!r} exists and is not a directory")
        if self.path.is_dir() and not self.exists():
            foreign = self.foreign_entry()
            if foreign is not None:
                raise StorageError(
                    f"{str(self.path)!r} exists and is not a Leopard index "
                    f"(it holds {foreign!r}); name an empty or new directory"
                )

    def foreign_entry(self, current: bool = False) -> str | None:
        """The first entry of the directory that no index directory holds (CURRENT
        too unless ``current``); None when there is none, or no directory."""
        try:
            names = sorted(e.name for e in self.path.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return None
        return next((n for n in names if not _ours(n) and not (current and n == "CURRENT")), None)

    def prepare(self, wait: bool | float = False) -> Path:
        """Take the lock (see ``acquire``) and create the directory of a new generation
        beside the live one, after removing what killed writers left."""
        took = not self.locked
        self.acquire(wait)
        try:
            gens = self._generations()
            number = (gens[-1] + 1) if gens else 1  # never a number seen before
            self._clean()
            tmp = self.path / f".gen-{number:06d}.{os.getpid()}.tmp"
            tmp.mkdir()
        except BaseException:
            if took:
                self.release()
            raise
        self.prepared = tmp
        return tmp

    def publish(self, tmp: Path) -> Path:
        """Make a prepared generation the live one, atomically; drop every older one
        but the generation live before it; let the lock go."""
        final = self.path / self.generation_name(tmp)
        self.prepared = None
        before = self._live_name()  # read before the swap: the one to keep
        (tmp / _PREVIOUS).write_text(f"{before or ''}\n")  # empty: it replaced none
        os.replace(tmp, final)
        link_tmp = self.path / f".CURRENT.{os.getpid()}.tmp"
        try:
            if link_tmp.is_symlink() or link_tmp.exists():
                link_tmp.unlink()
            os.symlink(final.name, link_tmp)
            os.replace(link_tmp, self.current_link)
        except BaseException:
            # Not live: take it out again, so that nothing half-published stays.
            with contextlib.suppress(OSError):
                link_tmp.unlink()
            shutil.rmtree(final, ignore_errors=True)
            raise
        # Live from here on: nothing below may fail the publish.
        with contextlib.suppress(OSError):
            _fsync_dir(self.path)
        # The generation just replaced stays until the next swap: a consumer or a
        # reader in another process may still be using it, and switches over within
        # a batch. Every other one is gone.
        for n in self._generations():
            name = f"gen-{n:06d}"
            if name not in (final.name, before):
                shutil.rmtree(self.path / name, ignore_errors=True)
        self.release()
        return final

    def abandon(self, tmp: Path) -> None:
        """Remove a prepared generation and let the lock go; never raises."""
        self.prepared = None
        try:
            shutil.rmtree(tmp, ignore_errors=True)
        except Exception:  # what is left, the next build or compaction removes
            pass
        finally:
            self.release()

    # -- refusals -------------------------------------------------------------------------

    def refuse_shrink(
        self,
        indexed: int,
        read: int,
        max_shrink: float,
        duplicates: int = 0,
        why: str | None = None,
    ) -> None:
        """InvalidInput if a new generation of ``indexed`` tuples (``duplicates`` of
        them repeats) would almost surely be a mistake: none at all, or more than
        ``max_shrink`` (a share) fewer than the live generation's build report counts
        (``why``: why none is indexed). Distinct tuples are compared where the live
        report counts its repeats (a build from before, or of another engine, does
        not: records are compared then, as it counted them)."""
        live = self.live_report() if self.exists() else None
        before = live.get("tuples_indexed") if live else None
        if live and isinstance(before, int) and isinstance(live.get("duplicates"), int):
            before, indexed = before - live["duplicates"], indexed - duplicates
        refuse_shrink(
            str(self.path),
            self.exists(),
            before if isinstance(before, int) else None,
            indexed,
            read,
            max_shrink,
            why=why,
        )

    def no_space(self, exc: BaseException, tmp: Path) -> StorageError | None:
        """A full disk while writing the generation ``tmp``, as one line (else None)."""
        live = self.live_report()
        took = live.get("bytes_on_disk") if live else None
        hint = None
        if isinstance(took, int) and took:
            hint = f"the last build took {format_bytes(took)}"
        doing = f"writing the new generation {self.generation_name(tmp)}"
        return describe_os_error(exc, self.path, doing, hint=hint)

    # -- cleaning up after killed writers ----------------------------------------------

    def tidy(self) -> None:
        """Remove what killed writers left, if no build or compaction is at work now.

        For opening an index: it never waits, and does nothing where the lock is
        busy or cannot be taken (a read-only directory, say). Never raises.
        """
        if self.locked or not self.exists():
            return
        try:
            fd = os.open(self.path / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return
        try:
            if _try_flock(fd):
                with contextlib.suppress(OSError):
                    self._clean()
        finally:
            os.close(fd)  # and with it the lock

    def _live_name(self) -> str | None:
        try:
            return os.readlink(self.current_link)
        except FileNotFoundError:
            return None

    def _previous_of(self, live: str) -> str | None:
        try:
            return (self.path / live / _PREVIOUS).read_text().strip() or None
        except OSError:
            pass
        # A generation published before PREVIOUS was written: the one below it.
        m = _GEN_RE.match(live)
        older = [n for n in self._generations() if m and n < int(m.group(1))]
        return f"gen-{older[-1]:06d}" if older else None

    def _clean(self) -> None:
        """Under the lock: every temporary entry, and every generation that is neither
        the live one nor the one live before it."""
        try:
            live = self._live_name()
        except OSError:  # CURRENT is not a symlink: touch no generation
            live, keep = None, None
        else:
            keep = {live, self._previous_of(live)} if live is not None else set()
        for entry in list(self.path.iterdir()):
            name = entry.name
            if _GEN_TMP_RE.match(name):
                shutil.rmtree(entry, ignore_errors=True)
            elif _LINK_TMP_RE.match(name):
                with contextlib.suppress(OSError):
                    entry.unlink()
            elif keep is not None and _GEN_RE.match(name) and name not in keep:
                shutil.rmtree(entry, ignore_errors=True)


def refuse_shrink(
    where: str,
    live: bool,
    before: int | None,
    indexed: int,
    read: int,
    max_shrink: float,
    counted: str = "in the live generation",
    *,
    why: str | None = None,
) -> None:
    """InvalidInput if an index of ``indexed`` tuples (of ``read`` records) should not
    replace what is at ``where``: nothing indexed at all, or more than ``max_shrink``
    (a share) fewer than the ``before`` the live index (``live``) counts. One index
    counts its live generation's; a sharded index the sum over its shards, which
    ``counted`` says in the message."""
    force = "pass --force (force=True) to build it anyway"
    if indexed == 0:
        what = (
            f"replace the live index at {where!r} with an empty one"
            if live
            else f"build an empty index at {where!r}"
        )
        if before is not None:
            what += f" (it indexes {before:,} tuples)"
        why = why or f"the snapshots hold no tuple to index ({read:,} records read)"
        raise InvalidInput(f"refusing to {what}: {why}; {force}")
    if live and before is None:  # lost or damaged: no guard would hold
        raise InvalidInput(
            f"refusing to replace the live index at {where!r}: the build report of its live "
            "generation (build-report.json) is missing or unreadable, so how many tuples "
            f"it holds is not known (--max-shrink); {force}"
        )
    if before is not None and before > 0 and before - indexed > max_shrink * before:
        lost = 100 * (before - indexed) / before
        raise InvalidInput(
            f"refusing to replace the live index at {where!r}: {indexed:,} tuples "
            f"indexed against {before:,} {counted}, {lost:.0f}% fewer, over "
            f"the limit of {100 * max_shrink:g}% (--max-shrink); {force}"
        )


class DirLock:
    """The writers' lock of a directory: an exclusive ``flock`` on its ``LOCK`` file,
    which holds the holder's pid for the message of the one turned away. An index
    directory's (``IndexDir``), and a sharded index's root, which is no index: its
    builds lock it so that two never split tuples into one ``.split`` at once."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, wait: bool | float = False) -> None:
        """Take the lock (creating the directory): at once, else StorageError naming
        the holder. ``wait`` True waits as long as it takes, a number that many seconds."""
        if self._fd is not None:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot lock {str(self.path)!r}: {exc.strerror or exc}") from exc
        deadline = None if wait is True or wait is False else time.monotonic() + float(wait)
        try:
            while not _try_flock(fd):
                if wait is False or (deadline is not None and time.monotonic() >= deadline):
                    raise StorageError(self._busy_message(fd, wait))
                time.sleep(_POLL)
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):  # the pid is for messages only (and a full disk)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (nothing if not held); never raises."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(fd)

    def _busy_message(self, fd: int, wait: bool | float) -> str:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            holder = ""
        who = f"pid {holder}" if holder.isdigit() else "pid unknown"
        waited = f" (waited {float(wait):g} s)" if wait is not False else ""
        return (
            f"{str(self.path)!r} is locked by another build or compaction ({who}){waited}; "
            "try again when it has finished, or wait for it with --wait"
        )


def _ours(name: str) -> bool:
    """Whether a directory entry is one an index directory holds (CURRENT aside)."""
    return bool(
        name == _LOCK or _GEN_RE.match(name) or name.startswith(".gen-") or _LINK_TMP_RE.match(name)
    )


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
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
