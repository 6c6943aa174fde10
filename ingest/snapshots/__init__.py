"""Snapshot readers: relation tuples from files into Arrow tables for the offline build.

The build starts from a snapshot of every stored tuple, which for a real deployment is
tens of millions of lines. Parsing those one by one in Python runs at a few hundred
thousand lines a second, which would make the reader, not the closure computation,
the slowest part of a build. So the main format, plain text, is read in blocks of a
few megabytes and each block is validated and cut into columns by vectorised code:
Arrow's RE2 kernel checks the block against ``leopard.model.names.TUPLE_PATTERN`` in one
pass (line by line if the block holds a bad line), numpy finds the separators, and
Arrow's ``take`` copies the fields out. Only lines that fail the pattern (comments,
blanks, mistakes) are looked at in Python, where ``parse_tuple`` gives exactly the
message it gives everywhere else. Blocks are independent, so a small thread pool
works on several at a time (numpy and Arrow release the GIL).

A pure-Python path reads the same bytes line by line. It is used for in-memory
iterables and text streams, and for any block on which the fast path and
``parse_tuple`` would disagree, so the two paths always produce the same rows and the
same rejects (a property test holds them to it).

OpenFGA's CSV and JSON exports and JSON lines are read in Python: they are the
formats people write by hand or export from small stores, not the bulk path.

Every format yields Arrow tables with the string columns of ``COLUMNS``; ``srel`` is
null for a plain subject (``#...`` included). Duplicates pass through; the build
removes them.
"""

from __future__ import annotations

import csv
import errno
import itertools
import json
import os
import stat
import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from leopard.core.batches import COLUMNS, SCHEMA
from leopard.errors import InvalidInput, InvalidTuple
from leopard.model.names import MAX_TUPLE_BYTES, TUPLE_PATTERN, RelationTuple, parse_tuple

__all__ = [
    "COLUMNS",
    "FORMATS",
    "SCHEMA",
    "ReadStats",
    "Reject",
    "detect_format",
    "read_snapshots",
]

FORMATS = ("text", "csv", "json", "jsonl")

STDIN_NAME = "<stdin>"
MEMORY_NAME = "<memory>"

Source = str | os.PathLike[str] | Iterable[str] | Iterable[bytes] | IO[bytes] | IO[str]


@dataclass(frozen=True)
class Reject:
    """One rejected input record and why."""

    source: str  # file name as given; "<stdin>" or "<memory>" otherwise
    line: int  # 1-based physical line (1-based element index in a JSON array)
    text: str  # the raw line or record
    reason: str  # e.g. "'group:eng#member' has no subject after '@'"


@dataclass
class ReadStats:
    """Counters a caller can pass in to watch a read (updated as tables are yielded)."""

    records: int = 0  # tuple records read, valid or not (comments and blanks not counted)
    rejected: int = 0
    bytes_read: int = 0  # bytes read from the sources as stored (compressed if gzip)


# -- tuning ----------------------------------------------------------------------

# Raw bytes read at a time. A text block is this much plus the end of the line it
# cuts; a few MB amortise the per-block Python work while keeping memory flat.
_CHUNK_BYTES = 8 << 20
# Blocks worked on at once. numpy and Arrow release the GIL, so threads scale until
# the reading thread or memory bandwidth is the limit.
_WORKERS = max(1, min(4, os.cpu_count() or 1))
# A line this long is certainly not a tuple; it is measured and reported, not held.
_MAX_LINE = 16 << 20
# Rows gathered in Python lists before they become an Arrow table (CSV, JSON).
_PY_BATCH = 1 << 16

_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"
# Blank means these characters only, in the bytes and the str path alike (bytes.strip's
# set); other Unicode spaces are errors that parse_tuple reports.
_BLANK = " \t\n\r\x0b\x0c"
_BLANK_B = _BLANK.encode()
_LF, _CR, _HASH, _COLON, _AT, _DOT = b"\n\r#:@."

# The tuple pattern, also admitting the line end ("\n" or "\r\n") that the fast path
# leaves on each line. Arrow compiles RE2 without the multiline flag, so "^" and "$"
# are the ends of the whole value.
if not (TUPLE_PATTERN.startswith("^") and TUPLE_PATTERN.endswith("$")):  # pragma: no cover
    raise ImportError("leopard.model.names.TUPLE_PATTERN must be anchored with ^...$")
_TUPLE_BODY = TUPLE_PATTERN[1:-1]
_LINE_PATTERN = rf"^{_TUPLE_BODY}(?:\r?\n)?$"
# A whole block of tuples, comments and blank lines. One DFA pass over the block is
# cheaper than one match per line, and in such a block a line is a tuple exactly when
# it starts with a lowercase letter (comments and blanks start otherwise).
_QUIET = r"[ \t\r\x0b\x0c]*(?:#[^\n]*)?"
_BLOCK_PATTERN = rf"^(?:(?:{_TUPLE_BODY}\r?|{_QUIET})\n)*(?:{_TUPLE_BODY}|{_QUIET})$"

_CSV_REQUIRED = ("user_type", "user_id", "user_relation", "relation", "object_type", "object_id")
_CSV_OPTIONAL = ("condition_name", "condition_context")


# -- public API --------------------------------------------------------------------


def detect_format(name: str | os.PathLike[str]) -> str:
    """Guess a snapshot's format from its file name (a trailing ``.gz`` is ignored).

    ``.csv`` is OpenFGA CSV, ``.json`` a JSON array, ``.jsonl``/``.ndjson`` JSON
    lines; anything else (``.txt``, ``.tuples``, no extension, ``-``) is text.
    """
    base = os.fspath(name).lower()
    if base.endswith(".gz"):
        base = base[:-3]
    ext = os.path.splitext(base)[1]
    if ext == ".csv":
        return "csv"
    if ext == ".json":
        return "json"
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    return "text"


def read_snapshots(
    sources: Sequence[Source] | Source,
    *,
    format: str | None = None,
    skip_invalid: bool = False,
    on_reject: Callable[[Reject], None] | None = None,
    stats: ReadStats | None = None,
    progress: Callable[[int], None] | None = None,
    batch_rows: int = 1 << 20,
) -> Iterator[pa.Table]:
    """Read tuple snapshots; yield tables of valid tuples with the columns of ``SCHEMA``.

    ``sources`` holds paths (``str`` or ``Path``; gzip is recognised by its magic
    bytes), ``"-"`` for standard input, or iterables of tuple lines (read as text
    unless ``format`` says otherwise, reported as ``<memory>``). ``format`` forces one
    of ``FORMATS`` for every source; otherwise each path's extension decides.

    A malformed record raises ``InvalidInput("file:line: reason")`` unless
    ``skip_invalid``, in which case it goes to ``on_reject`` and is counted. Problems
    with a whole file (missing, unreadable, not JSON, a CSV header without a needed
    column) always raise. Paths are checked before anything is read, so a typo in the
    last of several files fails at once rather than after the others were read.

    ``progress`` is called with the number of source bytes (as stored) consumed since
    its last call. Tables hold at most ``batch_rows`` rows.
    """
    if format is not None and format not in FORMATS:
        raise InvalidInput(f"unknown snapshot format {format!r}; expected one of {FORMATS}")
    if batch_rows < 1:
        raise InvalidInput(f"batch_rows must be at least 1, got {batch_rows!r}")
    if isinstance(sources, str | bytes | os.PathLike) or hasattr(sources, "read"):
        items: list[Any] = [sources]  # one source, not a sequence of them
    else:
        items = list(sources)  # type: ignore[arg-type]
    for item in items:
        if isinstance(item, bytes):
            raise InvalidInput(
                f"a source must be a path, '-' or an iterable of lines, not {item!r}"
            )
        if isinstance(item, str | os.PathLike) and os.fspath(item) != "-":
            _check_readable(os.fspath(item))
    reader = _Reader(skip_invalid, on_reject, stats or ReadStats(), progress)
    batcher = _Batcher(batch_rows)
    for item in items:
        for table in reader.read(item, format):
            yield from batcher.add(table)
    yield from batcher.flush()


# -- plumbing: sources, chunks, batches ----------------------------------------------------


def _check_readable(path: str) -> None:
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


def _decoded_chunks(stream: IO[bytes], name: str) -> Iterator[tuple[bytes, int]]:
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


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Physical lines with "\\n" or "\\r\\n" stripped (a lone "\\r" is not a line end)."""
    carry = b""
    for data in chunks:
        if not data:
            continue
        parts = (carry + data).split(b"\n")
        carry = parts.pop()
        for part in parts:
            yield _strip_cr(part)
    if carry:
        yield carry


def _strip_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line


class _Batcher:
    """Regroups tables so that each yielded one has at most ``rows`` rows."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.parts: list[pa.Table] = []
        self.count = 0

    def add(self, table: pa.Table) -> Iterator[pa.Table]:
        while table.num_rows:
            take = min(table.num_rows, self.rows - self.count)
            self.parts.append(table.slice(0, take))
            self.count += take
            table = table.slice(take)
            if self.count == self.rows:
                yield from self.flush()

    def flush(self) -> Iterator[pa.Table]:
        if self.count:
            parts, self.parts, self.count = self.parts, [], 0
            yield parts[0] if len(parts) == 1 else pa.concat_tables(parts)


@dataclass
class _Bad:
    text: str
    reason: str


@dataclass
class _Block:
    """What one text block gave: valid rows, bad lines (1-based within the block)."""

    table: pa.Table | None
    bad: list[tuple[int, _Bad]]
    records: int
    lines: int
    consumed: int = 0


class _Reader:
    """Reads one source at a time and reports rejects, stats and progress in order."""

    def __init__(
        self,
        skip_invalid: bool,
        on_reject: Callable[[Reject], None] | None,
        stats: ReadStats,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.skip_invalid = skip_invalid
        self.on_reject = on_reject
        self.stats = stats
        self.progress = progress

    # -- bookkeeping ----------------------------------------------------------------

    def consumed(self, n: int) -> None:
        if n:
            self.stats.bytes_read += n
            if self.progress is not None:
                self.progress(n)

    def reject(self, source: str, line: int, bad: _Bad) -> None:
        if not self.skip_invalid:
            raise InvalidInput(f"{source}:{line}: {bad.reason}")
        self.stats.rejected += 1
        if self.on_reject is not None:
            self.on_reject(Reject(source, line, bad.text, bad.reason))

    # -- dispatch -------------------------------------------------------------------

    def read(self, item: Any, format: str | None) -> Iterator[pa.Table]:
        if isinstance(item, str | os.PathLike):
            path = os.fspath(item)
            if path == "-":
                yield from self._read_stdin(format or "text")
                return
            try:
                stream = open(path, "rb")  # closed by the with below
            except OSError as exc:
                raise InvalidInput(f"cannot read {path!r}: {exc.strerror or exc}") from exc
            with stream:
                yield from self._read_binary(stream, path, format or detect_format(path))
            return
        if hasattr(item, "read"):
            if isinstance(item.read(0), bytes):
                yield from self._read_binary(item, MEMORY_NAME, format or "text")
            else:
                yield from self._read_items(item, MEMORY_NAME, format or "text")
            return
        if isinstance(item, Iterable):
            yield from self._read_items(item, MEMORY_NAME, format or "text")
            return
        raise InvalidInput(f"a source must be a path, '-' or an iterable of lines, not {item!r}")

    def _read_stdin(self, format: str) -> Iterator[pa.Table]:
        buffer = getattr(sys.stdin, "buffer", None)
        if buffer is not None:
            yield from self._read_binary(buffer, STDIN_NAME, format)
        else:
            yield from self._read_items(sys.stdin, STDIN_NAME, format)

    def _read_binary(self, stream: IO[bytes], name: str, format: str) -> Iterator[pa.Table]:
        chunks = _decoded_chunks(stream, name)
        if format == "text":
            yield from self._text_blocks(chunks, name)
        elif format == "jsonl":
            yield from self._records(name, _jsonl_records(_lines(self._counted(chunks))))
        elif format == "csv":
            lines = (
                line.decode("utf-8", "surrogateescape") for line in _lines(self._counted(chunks))
            )
            yield from self._records(name, _csv_records(lines, name))
        else:
            data = b"".join(self._counted(chunks))
            yield from self._records(name, _json_records(data, name))

    def _counted(self, chunks: Iterator[tuple[bytes, int]]) -> Iterator[bytes]:
        # Progress is reported as each chunk is entered, which for these formats is
        # as the records in it are read.
        for data, n in chunks:
            self.consumed(n)
            yield data

    def _read_items(self, items: Iterable[Any], name: str, format: str) -> Iterator[pa.Table]:
        lines = (_item_line(item) for item in items)
        if format == "text":
            yield from self._records(name, _text_records(lines))
        elif format == "jsonl":
            yield from self._records(name, _jsonl_records(lines))
        elif format == "csv":
            text_lines = (
                line if isinstance(line, str) else line.decode("utf-8", "surrogateescape")
                for line in lines
            )
            yield from self._records(name, _csv_records(text_lines, name))
        else:
            parts = [line if isinstance(line, str) else line.decode("utf-8") for line in lines]
            yield from self._records(name, _json_records("\n".join(parts), name))

    # -- record-at-a-time formats -------------------------------------------------------

    def _records(
        self, name: str, records: Iterator[tuple[int, RelationTuple | _Bad | None]]
    ) -> Iterator[pa.Table]:
        rows: list[RelationTuple] = []
        for line, result in records:
            if result is None:
                continue
            self.stats.records += 1
            if isinstance(result, _Bad):
                self.reject(name, line, result)
                continue
            rows.append(result)
            if len(rows) >= _PY_BATCH:
                yield _table_of(rows)
                rows = []
        if rows:
            yield _table_of(rows)

    # -- text, by blocks ------------------------------------------------------------------

    def _text_blocks(self, chunks: Iterator[tuple[bytes, int]], name: str) -> Iterator[pa.Table]:
        line_base = 0
        for block in _ordered_map(_parse_block, _split_blocks(chunks), _WORKERS):
            self.stats.records += block.records
            for line, bad in block.bad:
                self.reject(name, line_base + line, bad)
            line_base += block.lines
            self.consumed(block.consumed)
            if block.table is not None and block.table.num_rows:
                yield block.table


def _item_line(item: Any) -> str | bytes:
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


def _table_of(rows: list[RelationTuple]) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [()] * 6
    return pa.Table.from_arrays([pa.array(c, pa.string()) for c in columns], schema=SCHEMA)


T = TypeVar("T")
R = TypeVar("R")


def _ordered_map(fn: Callable[[T], R], items: Iterator[T], workers: int) -> Iterator[R]:
    """``map`` over a thread pool, in order, with at most ``workers + 1`` items in flight."""
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="leopard-snapshot") as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


# -- text: one line -----------------------------------------------------------------


def _clip(text: str) -> str:
    return text if len(text) <= 120 else text[:100] + "..."


def _check_bytes(content: bytes) -> RelationTuple | _Bad | None:
    """A text line (line end stripped): a tuple, a reject, or None for a comment/blank."""
    stripped = content.lstrip(_BLANK_B)
    if not stripped or stripped.startswith(b"#"):
        return None
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = content.decode("utf-8", "backslashreplace")
        return _Bad(
            text,
            f"{_clip(text)!r} is not valid UTF-8 "
            f"(byte {content[exc.start]:#04x} at offset {exc.start})",
        )
    return _check_text(text)


def _check_str(text: str) -> RelationTuple | _Bad | None:
    stripped = text.lstrip(_BLANK)
    if not stripped or stripped.startswith("#"):
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return _Bad(text, f"{_clip(text)!r} is not valid Unicode (at offset {exc.start})")
    return _check_text(text)


def _check_text(text: str) -> RelationTuple | _Bad:
    try:
        return parse_tuple(text)
    except InvalidTuple as exc:
        return _Bad(text, str(exc))


def _text_records(
    lines: Iterable[str | bytes],
) -> Iterator[tuple[int, RelationTuple | _Bad | None]]:
    for number, line in enumerate(lines, 1):
        if isinstance(line, str):
            yield number, _check_str(line)
        else:
            yield number, _check_bytes(line)


# -- text: blocks -----------------------------------------------------------------------


@dataclass
class _Overlong:
    """A line too long to hold (``_MAX_LINE``): its start, its size, whether blank."""

    head: bytes
    size: int = 0
    blank: bool = True
    cr: bool = False  # the last byte seen so far is "\r"

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        self.blank = self.blank and not piece.strip(_BLANK_B)
        if piece:
            self.cr = piece.endswith(b"\r")

    def end(self) -> None:  # the "\n" was reached; "\r\n" is not part of the line
        if self.cr:
            self.size -= 1


def _split_blocks(
    chunks: Iterator[tuple[bytes, int]],
) -> Iterator[tuple[bytes | _Overlong, int]]:
    """Regroup chunks into ``(block, raw bytes)`` cut after a "\\n" (the last may not be).

    A line longer than ``_MAX_LINE`` is not held in memory: it becomes an
    ``_Overlong`` job of its own, reported from its first bytes and its size.
    """
    carry = b""
    consumed = 0
    overlong: _Overlong | None = None
    for data, n in chunks:
        consumed += n
        if overlong is not None:
            cut = data.find(b"\n")
            if cut < 0:
                overlong.add(data)
                continue
            overlong.add(data[:cut])
            overlong.end()
            yield overlong, consumed
            overlong, consumed, data = None, 0, data[cut + 1 :]
        if not data:
            continue
        buf = carry + data if carry else data
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            carry = buf  # a line longer than a chunk: keep collecting it
            if len(carry) > _MAX_LINE:
                overlong = _Overlong(carry[:4096])
                overlong.add(carry)
                carry = b""
            continue
        carry = buf[cut:]
        yield buf[:cut], consumed
        consumed = 0
    if overlong is not None:
        yield overlong, consumed
    elif carry or consumed:
        yield carry, consumed


def _parse_block(job: tuple[bytes | _Overlong, int]) -> _Block:
    buf, consumed = job
    if isinstance(buf, _Overlong):
        block = _overlong_block(buf)
    elif len(buf) >= 1 << 31:  # past int32 offsets; _MAX_LINE keeps blocks far below
        block = _parse_block_slow(buf)  # pragma: no cover
    else:
        block = _parse_block_fast(buf)
    block.consumed = consumed
    return block


def _overlong_block(line: _Overlong) -> _Block:
    """What ``_check_bytes`` says of a huge line, without holding it."""
    if line.blank or line.head.lstrip(_BLANK_B).startswith(b"#"):
        return _Block(None, [], 0, 1)
    # parse_tuple's message for a line over MAX_TUPLE_BYTES, with its 100-char preview.
    shown = line.head[:400].decode("utf-8", "backslashreplace")[:100] + "..."
    reason = f"{shown!r} is {line.size} bytes, over the limit of {MAX_TUPLE_BYTES}"
    return _Block(None, [(1, _Bad(shown, reason))], 1, 1)


def _parse_block_slow(buf: bytes) -> _Block:
    """The reference: each line through ``parse_tuple``."""
    lines = buf.split(b"\n")
    last = lines.pop()  # "" if buf ends with "\n", else an unterminated last line
    results: list[RelationTuple] = []
    bad: list[tuple[int, _Bad]] = []
    records = 0
    for number, line in enumerate(lines, 1):
        result = _check_bytes(_strip_cr(line))
        if result is None:
            continue
        records += 1
        if isinstance(result, _Bad):
            bad.append((number, result))
        else:
            results.append(result)
    n_lines = len(lines)
    if last:
        n_lines += 1
        result = _check_bytes(last)
        if result is not None:
            records += 1
            if isinstance(result, _Bad):
                bad.append((n_lines, result))
            else:
                results.append(result)
    return _Block(_table_of(results) if results else None, bad, records, n_lines)


def _parse_block_fast(buf: bytes) -> _Block:
    """Vectorised: RE2 validates, numpy finds the separators, ``take`` cuts the fields.

    One scan lists every separator byte of the block ('\\n', ':', '#', '@') in order.
    In a line that passes ``_LINE_PATTERN`` the first separator is the resource's ':'
    (namespaces hold none); ids may hold '@' but no ':' or '#', and relations hold
    none, so the first '#' is followed in the list by the subject's '@' and ':', and a
    second '#' (if any) starts the subject relation. That locates every field without
    looking at a line in Python. Lines that fail the pattern go through
    ``_check_bytes``, the reference path, for their message.
    """
    size = len(buf)
    if size == 0:
        return _Block(None, [], 0, 0)
    a = np.frombuffer(buf, dtype=np.uint8)
    seps = np.flatnonzero((a == _LF) | (a == _COLON) | (a == _HASH) | (a == _AT))
    kinds = a[seps]
    nl_at = np.flatnonzero(kinds == _LF)  # where each line's "\n" is in seps
    tail = bool(a[-1] != _LF)
    n_lines = len(nl_at) + tail
    offsets = np.empty(n_lines + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1 : len(nl_at) + 1] = seps[nl_at] + 1
    if tail:
        offsets[-1] = size
    # The separators of line i are seps[first[i]:last[i]], then its "\n" (or the end
    # of the block: the sentinel appended to kinds makes kinds[last] safe to read).
    first = np.empty(n_lines, dtype=np.int64)
    first[0] = 0
    first[1:] = nl_at[: n_lines - 1] + 1
    last = np.empty(n_lines, dtype=np.int64)
    last[: len(nl_at)] = nl_at
    if tail:
        last[-1] = len(seps)
    kinds = np.append(kinds, _LF)
    data = pa.py_buffer(buf)
    starts = offsets[:-1]

    if pc.match_substring_regex(pa.array([buf], pa.binary()), _BLOCK_PATTERN)[0].as_py():
        ok = (a[starts] >= ord("a")) & (a[starts] <= ord("z"))
    else:
        bounds = pa.py_buffer(offsets.astype(np.int32))
        lines = pa.Array.from_buffers(pa.binary(), n_lines, [None, bounds, data])
        ok = pc.match_substring_regex(lines, _LINE_PATTERN).to_numpy(zero_copy_only=False)
    fields = _locate(a, seps, kinds, offsets, first, last, ok)

    # What the pattern admits but parse_tuple refuses: over-long lines and wildcards
    # with a relation other than "...". They go to the per-line path with the rest.
    if fields.refuse.any():
        ok = ok.copy()
        ok[fields.good[fields.refuse]] = False
        fields = fields.subset(~fields.refuse)

    bad: list[tuple[int, _Bad]] = []
    records = len(fields.good)
    for i in np.flatnonzero(~ok).tolist():
        line = buf[offsets[i] : offsets[i + 1]]
        if line.endswith(b"\n"):
            line = _strip_cr(line[:-1])
        result = _check_bytes(line)
        if result is None:
            continue
        if not isinstance(result, _Bad):
            # parse_tuple accepts what RE2 refused: trust the reference for this block.
            return _parse_block_slow(buf)
        records += 1
        bad.append((i + 1, result))
    if not records - len(bad):
        return _Block(None, bad, records, n_lines)
    return _Block(fields.table(data, size), bad, records, n_lines)


@dataclass
class _Fields:
    """Where the fields of the good lines of a block are (absolute byte positions)."""

    good: np.ndarray  # line numbers (0-based) in the block
    start: np.ndarray
    c1: np.ndarray  # ':' after the resource namespace
    h1: np.ndarray  # '#' before the relation
    at: np.ndarray  # '@' before the subject
    c2: np.ndarray  # ':' after the subject namespace
    sid_end: np.ndarray  # the second '#', or the end of the line
    srel_start: np.ndarray  # after the second '#', or the end of the line
    end: np.ndarray  # the end of the line without "\n" / "\r\n"
    srel: np.ndarray  # has a subject relation other than "..."
    refuse: np.ndarray

    def subset(self, keep: np.ndarray) -> _Fields:
        return _Fields(**{k: v[keep] for k, v in vars(self).items()})

    def table(self, data: pa.Buffer, size: int) -> pa.Table:
        srel = _cut(data, size, self.srel_start, self.end)
        present = pa.py_buffer(np.packbits(self.srel, bitorder="little"))
        columns = [
            _cut(data, size, self.start, self.c1),
            _cut(data, size, self.c1 + 1, self.h1),
            _cut(data, size, self.h1 + 1, self.at),
            _cut(data, size, self.at + 1, self.c2),
            _cut(data, size, self.c2 + 1, self.sid_end),
            pa.Array.from_buffers(pa.string(), len(srel), [present, *srel.buffers()[1:]]),
        ]
        return pa.Table.from_arrays(columns, schema=SCHEMA)


def _locate(
    a: np.ndarray,
    seps: np.ndarray,
    kinds: np.ndarray,
    offsets: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    ok: np.ndarray,
) -> _Fields:
    if ok.all():  # the usual case: slices instead of gathers
        good = np.arange(len(ok))
        start, stop = offsets[:-1], offsets[1:]
    else:
        good = np.flatnonzero(ok)
        start, stop = offsets[good], offsets[good + 1]
        first, last = first[good], last[good]
    # A good line ends in "\n", "\r\n" or (the unterminated last line) neither.
    lf = a[stop - 1] == _LF
    end = stop - lf - (lf & (a[stop - 2] == _CR))
    k = _skip_ats(kinds, first + 1)  # '@'s of the resource id come before its '#'
    h1 = seps[k]
    at = seps[k + 1]
    c2 = seps[k + 2]
    j = _skip_ats(kinds, k + 3)  # '@'s of the subject id, then maybe a second '#'
    has_srel = (j < last) & (kinds[j] == _HASH)
    h2 = seps[np.minimum(j, len(seps) - 1)]
    sid_end = np.where(has_srel, h2, end)
    srel_start = np.where(has_srel, h2 + 1, end)
    dots = has_srel & (a[np.minimum(srel_start, len(a) - 1)] == _DOT)
    wild_rel = has_srel & ~dots & (sid_end - c2 == 2) & (a[c2 + 1] == ord("*"))
    return _Fields(
        good=good,
        start=start,
        c1=seps[first],
        h1=h1,
        at=at,
        c2=c2,
        sid_end=sid_end,
        srel_start=srel_start,
        end=end,
        srel=has_srel & ~dots,
        refuse=(end - start > MAX_TUPLE_BYTES) | wild_rel,
    )


def _skip_ats(kinds: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Move each index in ``at`` past the '@' separators there (ids may hold '@')."""
    more = np.flatnonzero(kinds[at] == _AT)
    while len(more):  # once per '@' in the id with the most: usually never
        at[more] += 1
        more = more[kinds[at[more]] == _AT]
    return at


def _cut(data: pa.Buffer, size: int, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    """Copy ``data[starts[i]:ends[i]]`` for every i into a string array.

    The spans become the odd elements of one binary array over the whole block (the
    even ones are the gaps between them), and ``take`` copies them out. The fields
    matched the ASCII-only pattern, so viewing the bytes as UTF-8 is safe.
    """
    n = len(starts)
    bounds = np.empty(2 * n + 2, dtype=np.int32)
    bounds[0] = 0
    bounds[1:-1:2] = starts
    bounds[2:-1:2] = ends
    bounds[-1] = size
    spans = pa.Array.from_buffers(pa.binary(), 2 * n + 1, [None, pa.py_buffer(bounds), data])
    taken = spans.take(pa.array(np.arange(1, 2 * n, 2, dtype=np.int32)))
    return taken.view(pa.string())


# -- CSV -----------------------------------------------------------------------------------


def _csv_records(
    lines: Iterable[str], name: str
) -> Iterator[tuple[int, RelationTuple | _Bad | None]]:
    """OpenFGA CSV: a header, then one relationship per row."""
    raw: list[str] = []

    def feed() -> Iterator[str]:
        for line in lines:
            raw.append(line)
            yield line + "\n"

    reader = csv.reader(feed())
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InvalidInput(f"{name}:1: the CSV header does not parse: {exc}") from exc
    columns = [h.strip().lstrip("\ufeff") for h in header]
    index: dict[str, int] = {}
    for i, col in enumerate(columns):
        index.setdefault(col, i)
    for col in _CSV_REQUIRED:
        if col not in index:
            raise InvalidInput(
                f"{name}: the CSV header has no column {col!r} (expected "
                f"{','.join(_CSV_REQUIRED + _CSV_OPTIONAL)}; the condition columns "
                f"are optional), got {','.join(columns)!r}"
            )
    width = len(columns)
    needed = 1 + max(index[c] for c in _CSV_REQUIRED)
    cond = index.get("condition_name")
    while True:
        raw.clear()
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            text = "\n".join(raw)
            yield start, _Bad(text, f"{_clip(text)!r} is not valid CSV: {exc}")
            continue
        text = "\n".join(raw)
        if not row or (len(row) == 1 and not row[0].strip(_BLANK)):
            yield start, None
            continue
        if len(row) > width or len(row) < needed:
            yield (
                start,
                _Bad(text, f"{_clip(text)!r} has {len(row)} fields, the header has {width}"),
            )
            continue
        yield start, _csv_row(row, index, cond, text)


def _csv_row(
    row: list[str], index: dict[str, int], cond: int | None, text: str
) -> RelationTuple | _Bad:
    if any(_has_surrogate(v) for v in row):
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return _Bad(shown, f"{_clip(shown)!r} is not valid UTF-8")

    def get(col: str) -> str:
        return row[index[col]]

    fields = {
        "object_type": get("object_type"),
        "object_id": get("object_id"),
        "relation": get("relation"),
        "user_type": get("user_type"),
        "user_id": get("user_id"),
        "user_relation": get("user_relation"),
    }
    tuple_text = (
        f"{fields['object_type']}:{fields['object_id']}#{fields['relation']}"
        f"@{fields['user_type']}:{fields['user_id']}"
    )
    if fields["user_relation"]:
        tuple_text += f"#{fields['user_relation']}"
    if cond is not None and cond < len(row) and row[cond].strip():
        return _Bad(text, _condition_reason(tuple_text, row[cond].strip()))
    result = _check_text(tuple_text)
    if isinstance(result, _Bad):
        return _Bad(text, result.reason)
    parsed = {
        "object_type": result.resource_type,
        "object_id": result.resource_id,
        "relation": result.relation,
        "user_type": result.subject_type,
        "user_id": result.subject_id,
        "user_relation": result.subject_relation or "",
    }
    if fields["user_relation"] == "...":
        fields["user_relation"] = ""
    for key, value in fields.items():
        if parsed[key] != value:
            return _Bad(text, _misplaced(tuple_text, key, value))
    return result


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _condition_reason(tuple_text: str, name: str) -> str:
    return (
        f"{_clip(tuple_text)!r} has a condition {name!r}; "
        "conditional relationships are not supported"
    )


def _misplaced(tuple_text: str, key: str, value: str) -> str:
    # The joined tuple parsed, but a separator inside one field moved the split.
    return (
        f"{_clip(tuple_text)!r}: {key} {value!r} is not valid "
        "(it contains a separator ':', '#' or '@' that its field may not hold)"
    )


# -- JSON and JSON lines -----------------------------------------------------------------


def _json_records(
    data: bytes | str, name: str
) -> Iterator[tuple[int, RelationTuple | _Bad | None]]:
    """A JSON array of ``{"user", "relation", "object"}`` objects (``fga tuple write``).

    Also accepted: ``{"tuples": [...]}`` (``fga tuple read`` output, whose elements
    wrap the tuple in ``"key"``) and ``{"writes": [...]}`` or
    ``{"writes": {"tuple_keys": [...]}}`` (the Write API body). Line numbers are
    1-based element indexes.
    """
    if not data.strip():
        return
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{name}: not valid JSON: {exc}") from exc
    elements = _json_elements(doc, name)
    for number, element in enumerate(elements, 1):
        yield number, _json_record(element, _json_text(element))


def _json_elements(doc: Any, name: str) -> list[Any]:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        if doc.get("deletes"):
            raise InvalidInput(f"{name}: has 'deletes'; a snapshot holds only tuples to write")
        if "tuples" in doc and isinstance(doc["tuples"], list):
            return doc["tuples"]
        writes = doc.get("writes")
        if isinstance(writes, dict) and isinstance(writes.get("tuple_keys"), list):
            return writes["tuple_keys"]
        if isinstance(writes, list):
            return writes
    raise InvalidInput(
        f"{name}: expected a JSON array of tuples, or an object whose 'tuples' or "
        f"'writes' holds one; got {_json_kind(doc)}"
    )


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:5])
        return f"an object with the keys {keys}" if keys else "an empty object"
    if isinstance(value, list):
        return "an array"
    return json.dumps(value)


def _json_text(element: Any) -> str:
    return json.dumps(element, ensure_ascii=False)


def _json_record(element: Any, text: str) -> RelationTuple | _Bad:
    if isinstance(element, dict) and "user" not in element:
        for wrapper in ("key", "tuple_key"):
            if isinstance(element.get(wrapper), dict):
                element = element[wrapper]
                break
    if not isinstance(element, dict):
        return _Bad(
            text,
            f"expected an object with the keys 'user', 'relation' and 'object', got {_clip(text)}",
        )
    values: dict[str, str] = {}
    for key in ("user", "relation", "object"):
        if key not in element:
            return _Bad(text, f"{_clip(text)} has no key {key!r}")
        value = element[key]
        if not isinstance(value, str):
            return _Bad(
                text, f"the key {key!r} holds {_clip(json.dumps(value))}, expected a string"
            )
        values[key] = value
    tuple_text = f"{values['object']}#{values['relation']}@{values['user']}"
    condition = element.get("condition")
    if condition:
        name = condition.get("name") if isinstance(condition, dict) else condition
        if not isinstance(name, str | None):
            return _Bad(
                text,
                f"the key 'condition' holds {_clip(json.dumps(condition))}, "
                "expected an object with a 'name'",
            )
        if name:
            return _Bad(text, _condition_reason(tuple_text, name))
    result = _check_text(tuple_text)
    if isinstance(result, _Bad):
        return result
    # A separator inside one value can make the joined text split elsewhere.
    subject = f"{result.subject_type}:{result.subject_id}"
    if result.subject_relation is None:
        users = {subject, f"{subject}#..."}
    else:
        users = {f"{subject}#{result.subject_relation}"}
    if values["object"] != f"{result.resource_type}:{result.resource_id}":
        return _Bad(text, _misplaced(tuple_text, "object", values["object"]))
    if values["relation"] != result.relation:
        return _Bad(text, _misplaced(tuple_text, "relation", values["relation"]))
    if values["user"] not in users:
        return _Bad(text, _misplaced(tuple_text, "user", values["user"]))
    return result


def _jsonl_records(
    lines: Iterable[str | bytes],
) -> Iterator[tuple[int, RelationTuple | _Bad | None]]:
    for number, line in enumerate(lines, 1):
        text = line if isinstance(line, str) else line.decode("utf-8", "backslashreplace")
        if not text.strip(_BLANK):
            yield number, None
            continue
        try:
            element = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            yield number, _Bad(text, f"{_clip(text)!r} is not valid JSON: {exc}")
            continue
        yield number, _json_record(element, text)
