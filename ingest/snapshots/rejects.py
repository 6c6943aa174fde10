"""The rejects file of a build (``--rejects``): the records it refused, as a snapshot.

Once its records are fixed, a rejects file builds as a snapshot of the format they
were read in, with no other edit:

- text: each record's bytes after a ``#`` line with its reason (text takes comments);
- CSV: the header line of the snapshot they came from, then each record's bytes;
- JSON: an array of the refused elements, one a line;
- JSON lines: each record's bytes, one a line.

CSV, JSON and JSON lines hold no comments, so for them the reasons go to a side file,
``<rejects>.reasons``: one line a record, ``record N (source FILE:LINE): reason``.

A build whose snapshots are of several formats writes the records of each format to a
file of its own: the rejects file holds those of the format its name says (of the
first snapshot's, if no snapshot is of that format), and each other format's go
beside it, to ``<rejects>.txt``, ``.csv``, ``.json`` or ``.jsonl``. The CSV snapshots
feeding one file must share their header's columns.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from ingest.snapshots.openfga import CSV_COLUMNS
from ingest.snapshots.reader import FORMATS, detect_format
from ingest.snapshots.records import Reject
from leopard.core.build import space_errors
from leopard.errors import InvalidInput

__all__ = ["RejectsFile", "RejectsTarget", "rejects_targets"]

#: the extension of a format's own rejects file, beside the one named
_EXTENSIONS = {"text": ".txt", "csv": ".csv", "json": ".json", "jsonl": ".jsonl"}
_DOING = "writing the rejected records"


@dataclass(frozen=True)
class RejectsTarget:
    """Where the rejects of one format go: the file, and the reasons' side file (None
    for text, whose file holds the reasons as ``#`` lines)."""

    format: str
    path: str
    reasons: str | None

    def describe(self) -> str:
        """The file for a person: its name, its format, where its reasons are."""
        where = (
            f"reasons in {self.reasons}"
            if self.reasons is not None
            else "each after a '#' line with its reason"
        )
        hint = ""
        if detect_format(self.path) != self.format:
            hint = f"; build it with --format {self.format}"
        return f"{self.path} ({self.format}, {where}{hint})"


def _source_format(item: Any, format: str | None) -> str | None:
    """The format ``read_snapshots`` reads ``item`` as (None: Parquet, which it refuses)."""
    if format is not None:
        return format
    if isinstance(item, str | os.PathLike) and os.fspath(item) != "-":
        found = detect_format(item)
        return found if found in FORMATS else None
    return "text"


def rejects_targets(
    path: str | os.PathLike[str], sources: Sequence[Any], format: str | None
) -> dict[str, RejectsTarget]:
    """The files the rejects of a build from ``sources`` go to, by format."""
    name = os.fspath(path)
    items = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    formats: list[str] = []
    for item in items:
        found = _source_format(item, format)
        if found is not None and found not in formats:
            formats.append(found)
    if not formats:
        formats = ["text"]
    main = detect_format(name) if detect_format(name) in formats else formats[0]
    out = {}
    for fmt in [main] + [f for f in formats if f != main]:
        file = name if fmt == main else name + _EXTENSIONS[fmt]
        out[fmt] = RejectsTarget(fmt, file, None if fmt == "text" else file + ".reasons")
    return out


def _refuse_a_snapshot(targets: Iterable[RejectsTarget], sources: Sequence[Any]) -> None:
    """InvalidInput when a file the rejects would be written to is a snapshot read: it
    would be emptied before it is read."""
    items = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    read = {
        os.path.realpath(item)
        for item in items
        if isinstance(item, str | os.PathLike) and os.fspath(item) != "-"
    }
    for target in targets:
        for file in (target.path, target.reasons):
            if file is not None and os.path.realpath(file) in read:
                raise InvalidInput(
                    f"--rejects {target.path!r}: {file!r} would be written over, and it is "
                    "a snapshot this build reads; name the rejects file another way"
                )


class _Sink:
    """One rejects file (and its reasons' side file) of one format."""

    def __init__(self, target: RejectsTarget) -> None:
        self.target = target
        self.count = 0
        self.header: tuple[list[str], str] | None = None  # columns, and whose
        self.file: IO[bytes] | None = _open(target.path)
        self.reasons: IO[bytes] | None = None
        try:
            if target.reasons is not None:
                self.reasons = _open(target.reasons)
            if target.format == "json":
                self._write(b"[\n")
        except BaseException:
            self.close()
            raise

    def _write(self, data: bytes, reasons: bool = False) -> None:
        file, path = self.file, self.target.path
        if reasons:
            file, path = self.reasons, self.target.reasons or path
        if file is not None:
            with space_errors(path, _DOING):
                file.write(data)

    def write(self, reject: Reject) -> None:
        self.count += 1
        fmt = self.target.format
        if fmt == "text":
            self._write(reject.entry())
            return
        if fmt == "csv":
            self._csv_header(reject)
        body = reject.body()
        if fmt == "json":
            body = (b",\n" if self.count > 1 else b"") + body.rstrip(b"\r\n")
        self._write(body)
        reason = " ".join(reject.reason.splitlines())
        line = f"record {self.count} (source {reject.source}:{reject.line}): {reason}\n"
        self._write(line.encode("utf-8", "backslashreplace"), reasons=True)

    def _csv_header(self, reject: Reject) -> None:
        header = reject.header or (",".join(CSV_COLUMNS) + "\n").encode()
        text = header.decode("utf-8", "surrogateescape")
        columns = [c.strip() for c in next(csv.reader(io.StringIO(text)), [])]
        if self.header is None:
            self.header = (columns, reject.source)
            self._write(header if header.endswith(b"\n") else header + b"\n")
        elif self.header[0] != columns:
            raise InvalidInput(
                f"--rejects {self.target.path}: the CSV header of {reject.source} "
                f"({','.join(columns)}) is not that of {self.header[1]} "
                f"({','.join(self.header[0])}), and a CSV rejects file has one header: "
                "give these snapshots the same header, or build them without --rejects"
            )

    def close(self) -> None:
        if self.file is not None and self.target.format == "json":
            self._write(b"\n]\n" if self.count else b"]\n")
        for attr, path in (("file", self.target.path), ("reasons", self.target.reasons)):
            file = getattr(self, attr)
            setattr(self, attr, None)
            if file is not None:
                with space_errors(path or "", _DOING):
                    file.close()


def _open(path: str) -> IO[bytes]:
    with space_errors(path, _DOING):
        try:
            return open(path, "wb")  # noqa: SIM115 - closed by _Sink.close
        except OSError as exc:
            raise InvalidInput(f"cannot write {path!r}: {exc.strerror or exc}") from exc


class RejectsFile:
    """Where rejected records go: ``on_reject`` and the rejects files of ``path``
    (``rejects_targets``), which are complete (closed) once the snapshots are read,
    before anything is swapped in."""

    def __init__(
        self,
        path: str | Path | None,
        sources: Sequence[Any],
        format: str | None,
        on_reject: Callable[[Any], None] | None,
    ) -> None:
        self.targets = {} if path is None else rejects_targets(path, sources, format)
        self.sources = sources
        self.on_reject = on_reject
        self.wanted = path is not None or on_reject is not None
        self.sinks: dict[str, _Sink] = {}

    def __enter__(self) -> RejectsFile:
        _refuse_a_snapshot(self.targets.values(), self.sources)
        try:
            for fmt, target in self.targets.items():
                self.sinks[fmt] = _Sink(target)
        except BaseException:
            self.close()
            raise
        return self

    def write(self, reject: Reject) -> None:
        if self.sinks:
            sink = self.sinks.get(reject.format)
            if sink is None:  # the targets are the formats the sources are read as
                raise InvalidInput(f"a {reject.format} record has no rejects file")
            sink.write(reject)
        if self.on_reject is not None:
            self.on_reject(reject)

    def closed_after(self, batches: Iterable[pa.Table]) -> Iterator[pa.Table]:
        yield from batches
        self.close()

    def close(self) -> None:
        sinks, self.sinks = self.sinks, {}
        failed: BaseException | None = None
        for sink in sinks.values():
            try:
                sink.close()
            except BaseException as exc:  # close the others, then raise the first
                failed = failed or exc
        if failed is not None:
            raise failed

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(Exception):  # a failure here is already being raised
            self.close()
