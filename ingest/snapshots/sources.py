"""Where snapshot bytes come from: files, standard input and in-memory lines.

Paths are checked before anything is read; streams are read in chunks of
``_CHUNK_BYTES``; gzip is recognised by its magic bytes, not by the file name, and
inflated a bounded amount at a time; a leading UTF-8 BOM is dropped. Lines end in
"\\n" or "\\r\\n" (a lone "\\r" is not a line end), and blank means the characters of
``BLANK`` only, in the bytes and the str paths alike.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Any

from leopard.errors import InvalidInput

__all__ = [
    "BLANK",
    "BLANK_BYTES",
    "MEMORY_NAME",
    "STDIN_NAME",
    "Source",
    "check_readable",
    "decoded_chunks",
    "item_line",
    "split_lines",
    "strip_cr",
    "strip_end",
]

STDIN_NAME = "<stdin>"
MEMORY_NAME = "<memory>"

Source = str | os.PathLike[str] | Iterable[str] | Iterable[bytes] | IO[bytes] | IO[str]

# Blank means these characters only, in the bytes and the str path alike (bytes.strip's
# set); other Unicode spaces are errors that parse_tuple reports.
BLANK = " \t\n\r\x0b\x0c"
BLANK_BYTES = BLANK.encode()

# Raw bytes read at a time. A text block is this much plus the end of the line it
# cuts; a few MB amortise the per-block Python work while keeping memory flat.
_CHUNK_BYTES = 8 << 20

_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"


def check_readable(path: str) -> None:
    """Raise InvalidInput if ``path`` cannot be read, without taking data from it."""
    # Regular files are opened to test permissions; pipes (``<(zcat x.gz)``) and
    # devices are only looked at, since opening one may take data from it.
    try:
        if stat.S_ISREG(os.stat(path).st_mode):
            with open(path, "rb"):
                pass
        elif stat.S_ISDIR(os.stat(path).st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path!r}: {exc.strerror or exc}") from exc


def _raw_chunks(stream: IO[bytes], name: str) -> Iterator[bytes]:
    while True:
        try:
            data = stream.read(_CHUNK_BYTES)
        except OSError as exc:
            raise InvalidInput(f"cannot read {name!r}: {exc.strerror or exc}") from exc
        if not data:
            return
        yield data


def decoded_chunks(stream: IO[bytes], name: str) -> Iterator[tuple[bytes, int]]:
    """Yield ``(bytes, raw bytes consumed)``, gunzipping if the data starts like gzip.

    Detection is by magic bytes, not by name, so ``snap.txt`` holding gzip and
    ``snap.gz`` holding plain text both read correctly. Multi-member gzip files (as
    ``cat a.gz b.gz`` makes) are read to the end. A leading UTF-8 BOM is dropped.
    """
    raw = _raw_chunks(stream, name)
    first = b""
    for data in raw:
        first += data
        if len(first) >= 2:
            break
    if not first:
        return
    if not first.startswith(_GZIP_MAGIC):
        chunks: Iterator[tuple[bytes, int]] = _plain(first, raw)
    else:
        chunks = _gunzip(first, raw, name)
    bom_checked = False
    for data, consumed in chunks:
        if not bom_checked and data:
            bom_checked = True
            if data.startswith(_UTF8_BOM):
                data = data[len(_UTF8_BOM) :]
        yield data, consumed


def _plain(first: bytes, rest: Iterator[bytes]) -> Iterator[tuple[bytes, int]]:
    yield first, len(first)
    for data in rest:
        yield data, len(data)


def _gunzip(first: bytes, rest: Iterator[bytes], name: str) -> Iterator[tuple[bytes, int]]:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    fed = False  # the current member has had input, so it must reach its end
    padding = False  # zeros after the last member, as some tools write
    try:
        for data in itertools.chain([first], rest):
            consumed = len(data)
            if padding:
                if data.strip(b"\0"):
                    raise InvalidInput(f"{name}: data after the end of the gzip stream")
                data = b""
            while data:
                fed = True
                # max_length bounds the memory that a highly compressed chunk can take.
                out = inflater.decompress(data, _CHUNK_BYTES)
                data = inflater.unconsumed_tail
                if inflater.eof:
                    data = inflater.unused_data
                    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    fed = False
                    if data and not data.startswith(_GZIP_MAGIC[:1]):
                        if data.strip(b"\0"):
                            raise InvalidInput(f"{name}: data after the end of the gzip stream")
                        padding, data = True, b""
                if out:
                    yield out, consumed
                    consumed = 0
            if consumed:
                yield b"", consumed
        if fed:  # a member is open: drain what zlib holds back, then it must be done
            out = inflater.flush()
            if out:
                yield out, 0
            if not inflater.eof:
                raise InvalidInput(f"{name}: the gzip data ends early (truncated file?)")
    except zlib.error as exc:
        raise InvalidInput(f"{name}: corrupt gzip data ({exc})") from exc


def split_lines(chunks: Iterable[bytes], *, keepends: bool = False) -> Iterator[bytes]:
    """Physical lines with "\\n" or "\\r\\n" stripped (a lone "\\r" is not a line end),
    or with ``keepends`` as they were read, line end included."""
    carry = b""
    for data in chunks:
        if not data:
            continue
        parts = (carry + data).split(b"\n")
        carry = parts.pop()
        for part in parts:
            yield part + b"\n" if keepends else strip_cr(part)
    if carry:
        yield carry


def strip_end(line: bytes) -> bytes:
    """``line`` without its line end ("\\n" or "\\r\\n"), if it has one."""
    return strip_cr(line[:-1]) if line.endswith(b"\n") else line


def strip_cr(line: bytes) -> bytes:
    """``line`` without a trailing "\\r" (the rest of a "\\r\\n" line end)."""
    return line[:-1] if line.endswith(b"\r") else line


def item_line(item: Any) -> str | bytes:
    """One line of an in-memory iterable, with "\\n" or "\\r\\n" stripped."""
    if isinstance(item, bytes | bytearray | memoryview):
        line: str | bytes = bytes(item)
    elif isinstance(item, str):
        line = item
    else:
        raise InvalidInput(f"an in-memory source must hold str or bytes lines, got {item!r}")
    if line[-1:] in ("\n", b"\n"):
        line = line[:-2] if line[-2:-1] in ("\r", b"\r") else line[:-1]
    return line
