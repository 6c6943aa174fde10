"""``read_snapshots``: every source, in every format, into batches of tuples.

A ``_Reader`` reads one source at a time: it opens it (``sources``), hands its bytes or
lines to the reader of its format (``text``, ``openfga``), and keeps the books in
source order: records and rejects counted in ``ReadStats``, bad records raised or
passed to ``on_reject``, consumed bytes reported to ``progress``. A ``Batcher``
regroups what comes out into tables of at most ``batch_rows`` rows.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any

import pyarrow as pa

from ingest.snapshots.openfga import csv_records, json_records, jsonl_records
from ingest.snapshots.records import Bad, Batcher, ReadStats, Record, Reject
from ingest.snapshots.sources import (
    MEMORY_NAME,
    STDIN_NAME,
    Source,
    check_readable,
    decoded_chunks,
    item_line,
    split_lines,
)
from ingest.snapshots.text import text_blocks, text_records
from leopard.core.batches import table_from_tuples
from leopard.errors import InvalidInput
from leopard.model.names import RelationTuple

__all__ = ["FORMATS", "detect_format", "read_snapshots"]

FORMATS = ("text", "csv", "json", "jsonl")

# Rows gathered in Python lists before they become an Arrow table (CSV, JSON).
_PY_BATCH = 1 << 16


def detect_format(name: str | os.PathLike[str]) -> str:
    """Guess a snapshot's format from its file name (a trailing ``.gz`` is ignored).

    ``.csv`` is OpenFGA CSV, ``.json`` a JSON array, ``.jsonl``/``.ndjson`` JSON
    lines; anything else (``.txt``, ``.tuples``, no extension, ``-``) is text.
    ``.parquet`` is Parquet, which is not one of ``FORMATS``: Spark reads it, and
    ``read_snapshots`` refuses it by name rather than reading its bytes as text.
    """
    base = os.fspath(name).lower()
    if base.endswith(".gz"):
        base = base[:-3]
    ext = os.path.splitext(base)[1]
    if ext == ".parquet":
        return "parquet"
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
            if format is None and detect_format(item) == "parquet":
                raise InvalidInput(
                    f"{os.fspath(item)!r} is Parquet (by its name), which the local "
                    "engine does not read: build it with --engine spark"
                )
            check_readable(os.fspath(item))
    reader = _Reader(skip_invalid, on_reject, stats or ReadStats(), progress)
    batcher = Batcher(batch_rows)
    for item in items:
        for table in reader.read(item, format):
            yield from batcher.add(table)
    yield from batcher.flush()


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

    def reject(self, source: str, line: int, bad: Bad, format: str) -> None:
        if not self.skip_invalid:
            raise InvalidInput(f"{source}:{line}: {bad.reason}")
        self.stats.rejected += 1
        if self.on_reject is not None:
            self.on_reject(Reject(source, line, bad.text, bad.reason, bad.raw, format, bad.header))

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
        chunks = decoded_chunks(stream, name)
        if format == "text":
            yield from self._text_blocks(chunks, name)
        elif format == "jsonl":
            lines = split_lines(self._counted(chunks), keepends=True)
            yield from self._records(name, format, jsonl_records(lines, name, ends=True))
        elif format == "csv":
            raw = split_lines(self._counted(chunks), keepends=True)
            text = (line.decode("utf-8", "surrogateescape") for line in raw)
            yield from self._records(name, format, csv_records(text, name, ends=True))
        else:
            data = b"".join(self._counted(chunks))
            yield from self._records(name, format, json_records(data, name))

    def _counted(self, chunks: Iterator[tuple[bytes, int]]) -> Iterator[bytes]:
        # Progress is reported as each chunk is entered, which for these formats is
        # as the records in it are read.
        for data, n in chunks:
            self.consumed(n)
            yield data

    def _read_items(self, items: Iterable[Any], name: str, format: str) -> Iterator[pa.Table]:
        lines = (item_line(item) for item in items)
        if format == "text":
            yield from self._records(name, format, text_records(lines))
        elif format == "jsonl":
            yield from self._records(name, format, jsonl_records(lines, name))
        elif format == "csv":
            text_lines = (
                line if isinstance(line, str) else line.decode("utf-8", "surrogateescape")
                for line in lines
            )
            yield from self._records(name, format, csv_records(text_lines, name))
        else:
            parts = [line if isinstance(line, str) else line.decode("utf-8") for line in lines]
            yield from self._records(name, format, json_records("\n".join(parts), name))

    # -- record-at-a-time formats -------------------------------------------------------

    def _records(self, name: str, format: str, records: Iterator[Record]) -> Iterator[pa.Table]:
        rows: list[RelationTuple] = []
        for line, result in records:
            if result is None:
                continue
            self.stats.records += 1
            if isinstance(result, Bad):
                self.reject(name, line, result, format)
                continue
            rows.append(result)
            if len(rows) >= _PY_BATCH:
                yield table_from_tuples(rows)
                rows = []
        if rows:
            yield table_from_tuples(rows)

    # -- text, by blocks ------------------------------------------------------------------

    def _text_blocks(self, chunks: Iterator[tuple[bytes, int]], name: str) -> Iterator[pa.Table]:
        line_base = 0
        for block in text_blocks(chunks):
            self.stats.records += block.records
            for line, bad in block.bad:
                self.reject(name, line_base + line, bad, "text")
            line_base += block.lines
            self.consumed(block.consumed)
            if block.table is not None and block.table.num_rows:
                yield block.table
