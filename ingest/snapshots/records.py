"""What the readers share: a record's outcome, the reports of a read, and batching.

Every reader turns its input into ``(line, outcome)`` pairs, ``Record``: the outcome is
a ``RelationTuple``, a ``Bad`` record with the reason it was refused, or None for a
line that holds no record (a comment or a blank). ``Reject`` and ``ReadStats`` are
what a caller of ``read_snapshots`` sees of the bad records and of the whole read.

A bad record keeps the bytes it was read from (``raw``), line end included, so that
a file of rejects (``Reject.entry``) is the input without its accepted lines: CRLF
line ends, trailing spaces and bytes that are not UTF-8 come out as they went in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from leopard.errors import InvalidTuple
from leopard.model.names import RelationTuple, parse_tuple

__all__ = [
    "Bad",
    "Batcher",
    "ReadStats",
    "Record",
    "Reject",
    "check_text",
    "clip",
]


@dataclass(frozen=True)
class Reject:
    """One rejected input record and why."""

    source: str  # file name as given; "<stdin>" or "<memory>" otherwise
    line: int  # 1-based physical line (1-based element index in a JSON array)
    text: str  # the line or record as shown to a person (line end stripped)
    reason: str  # e.g. "'group:eng#member' has no subject after '@'"
    #: the bytes read, line end included; None where they were not kept (a JSON
    #: array's element, an in-memory str line, a line over 16 MiB)
    raw: bytes | None = field(default=None, compare=False, repr=False)
    #: the snapshot format it was read as (one of ``FORMATS``)
    format: str = field(default="text", compare=False)
    #: a CSV record's header line as read (line end included), else None
    header: bytes | None = field(default=None, compare=False, repr=False)

    def entry(self) -> bytes:
        """This reject in a text rejects file: a ``#`` line with the reason, then the
        record exactly as read (``body``)."""
        reason = " ".join(f"{self.source}:{self.line}: {self.reason}".splitlines())
        return b"# " + reason.encode("utf-8", "backslashreplace") + b"\n" + self.body()

    def body(self) -> bytes:
        """The record exactly as read, ending in a line end (``text`` as UTF-8 where
        its bytes were not kept: a JSON array's element is its object on one line)."""
        body = self.raw if self.raw is not None else self.text.encode("utf-8", "backslashreplace")
        return body if body.endswith(b"\n") else body + b"\n"


@dataclass
class ReadStats:
    """Counters a caller can pass in to watch a read (updated as tables are yielded)."""

    records: int = 0  # tuple records read, valid or not (comments and blanks not counted)
    rejected: int = 0
    bytes_read: int = 0  # bytes read from the sources as stored (compressed if gzip)


@dataclass
class Bad:
    """A refused record: its text as shown to a person, why, and its bytes as read."""

    text: str
    reason: str
    raw: bytes | None = None
    header: bytes | None = None  # a CSV record's: its file's header line as read


#: a record's line (1-based) and what it holds
Record = tuple[int, RelationTuple | Bad | None]


def clip(text: str) -> str:
    """``text``, cut short for a message."""
    return text if len(text) <= 120 else text[:100] + "..."


def check_text(text: str) -> RelationTuple | Bad:
    """``parse_tuple``, its error as a ``Bad`` record."""
    try:
        return parse_tuple(text)
    except InvalidTuple as exc:
        return Bad(text, str(exc))


class Batcher:
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
