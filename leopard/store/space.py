"""A full disk or an exhausted quota, said in one line by every writer of the index.

Python reports a full disk as ``OSError`` with ``errno.ENOSPC`` (``EDQUOT`` for a
quota); RocksDB reports it as an IO error whose text says "No space left on device"
("Disk quota exceeded"), possibly already wrapped in a ``StorageError`` by
``leopard.store.rocks``. ``no_space`` finds either anywhere in an exception's chain,
and ``describe_os_error`` turns it into one ``StorageError`` naming the path, what was
being written and the space free there, e.g.::

    no space left on /x/idx (writing the new generation gen-000004: 1.2 GiB free,
    the last build took 2.3 GiB)

Every other error is left alone (``describe_os_error`` returns None), so callers map
with ``raise describe_os_error(exc, ...) or ... from exc`` or ``space_errors``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from leopard.errors import StorageError

__all__ = ["describe_os_error", "format_bytes", "free_bytes", "no_space", "space_errors"]

_WHAT = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded"}
_TEXTS = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    # our own descriptions, as a forked writer reports them to its parent
    "no space left on /": errno.ENOSPC,
    "disk quota exceeded on /": errno.EDQUOT,
}
# RocksDB names the file: "IO error: No space left on device: While appending to
# file: /x/idx/gen-000004/base/000012.sst: No space left on device"
_PATH_IN_TEXT = re.compile(r"(?:file|directory|dir): (/.+?): (?:No space|Disk quota)")


def no_space(exc: BaseException) -> int | None:
    """``ENOSPC`` or ``EDQUOT`` if that is what ``exc`` (or what it came from) is."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _WHAT:
            return current.errno
        text = str(current)
        for needle, code in _TEXTS.items():
            if needle in text:
                return code
        current = current.__cause__ or current.__context__
    return None


def free_bytes(path: str | Path) -> int | None:
    """Bytes free for this user on the file system of ``path`` (or of its nearest
    existing parent); None when that cannot be found."""
    p = Path(os.path.abspath(path))
    for candidate in (p, *p.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def format_bytes(n: int) -> str:
    """``n`` bytes for a person: 512 bytes, 3.4 KiB, 1.2 GiB."""
    if n < 1024:
        return f"{n} bytes"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"


def describe_os_error(
    exc: BaseException,
    path: str | Path | None = None,
    doing: str | None = None,
    *,
    hint: str | None = None,
) -> StorageError | None:
    """The one-line ``StorageError`` for a full disk or quota, None for anything else.

    ``path`` is what was being written (for RocksDB errors, by default the file the
    message names); ``doing`` says what for ("writing the new generation gen-000004");
    ``hint`` follows the free space ("the last build took 2.3 GiB").
    """
    code = no_space(exc)
    if code is None:
        return None
    if path is None:
        path = _path_of(exc)
    where = os.fspath(path) if path is not None else "the device"
    details = []
    free = free_bytes(path) if path is not None else None
    if free is not None:
        details.append(f"{format_bytes(free)} free")
    if hint:
        details.append(hint)
    inner = ", ".join(details)
    if doing:
        inner = f"{doing}: {inner}" if inner else doing
    return StorageError(f"{_WHAT[code]} on {where}" + (f" ({inner})" if inner else ""))


@contextlib.contextmanager
def space_errors(path: str | Path, doing: str, *, hint: str | None = None) -> Iterator[None]:
    """Re-raise a full disk or quota inside the block as ``describe_os_error`` says."""
    try:
        yield
    except Exception as exc:
        error = describe_os_error(exc, path, doing, hint=hint)
        if error is None:
            raise
        raise error from exc


def _path_of(exc: BaseException) -> str | None:
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            break
        if isinstance(current, OSError) and current.filename:
            return os.fspath(current.filename)
        found = _PATH_IN_TEXT.search(str(current))
        if found:
            return found.group(1)
        current = current.__cause__ or current.__context__
    return None
