"""The text format: one tuple per line, read by blocks (vectorised) or by lines.

A text file is cut into blocks of whole lines (``_split_blocks``) and a small thread
pool parses several at a time (numpy and Arrow release the GIL). In a block, Arrow's
RE2 kernel checks every line against ``leopard.model.names.TUPLE_PATTERN`` (in one
pass over the whole block when it holds no bad line; the block is viewed as UTF-8
text, so RE2 reads characters and a line that is not UTF-8 fails), numpy finds the
separators and checks the limits the pattern leaves out, and Arrow's ``take`` copies
the fields out (``_parse_block_fast``). Only lines that fail the pattern (comments,
blanks, mistakes) or that a limit puts in doubt are looked at in Python, where
``parse_tuple`` gives exactly the message it gives everywhere else.

The line path (``_check_bytes``, ``text_records``) is the reference: it reads in-memory
lines and text streams, and any block on which the fast path and ``parse_tuple`` would
disagree (``_parse_block_slow``), so the two paths always produce the same rows and
the same rejects.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.snapshots.records import Bad, Record, check_text, clip
from ingest.snapshots.sources import BLANK, BLANK_BYTES, strip_cr
from leopard.core.batches import SCHEMA, table_from_tuples
from leopard.model.names import (
    MAX_ID_BYTES,
    MAX_NAMESPACE_CHARS,
    MAX_TUPLE_BYTES,
    TUPLE_PATTERN,
    RelationTuple,
    tuple_too_long,
)

__all__ = ["Block", "text_blocks", "text_records"]

# Blocks worked on at once. numpy and Arrow release the GIL, so threads scale until
# the reading thread or memory bandwidth is the limit.
_WORKERS = max(1, min(4, os.cpu_count() or 1))
# A line this long is certainly not a tuple (it is far over MAX_TUPLE_BYTES); it is
# measured and reported, not held.
_MAX_LINE = 16 << 20
if _MAX_LINE <= MAX_TUPLE_BYTES:  # pragma: no cover
    raise ImportError("_MAX_LINE must be over MAX_TUPLE_BYTES: such a line is refused by size")
# What of a line over _MAX_LINE is kept, for its preview and to tell a comment.
_HEAD = 4096

# The bytes the fast path looks for in a block.
_LF, _CR, _HASH, _COLON, _AT, _DOT, _CLOSE = b"\n\r#:@.]"


# The tuple pattern, also admitting the line end ("\n" or "\r\n") that the fast path
# leaves on each line. Arrow compiles RE2 without the multiline flag, so "^" and "$"
# are the ends of the whole value.
if not (TUPLE_PATTERN.startswith("^") and TUPLE_PATTERN.endswith("$")):  # pragma: no cover
    raise ImportError("leopard.model.names.TUPLE_PATTERN must be anchored with ^...$")
_TUPLE_BODY = TUPLE_PATTERN[1:-1]
_LINE_PATTERN = rf"^{_TUPLE_BODY}(?:\r?\n)?$"
# A whole block of tuples, comments and blank lines. One DFA pass over the block is
# cheaper than one match per line, and in such a block a line is a tuple exactly when
# it does not start like a comment or a blank line (no namespace starts with a blank
# or '#').
_QUIET = r"[ \t\r\x0b\x0c]*(?:#[^\n]*)?"
_BLOCK_PATTERN = rf"^(?:(?:{_TUPLE_BODY}\r?|{_QUIET})\n)*(?:{_TUPLE_BODY}|{_QUIET})$"
_QUIET_START = np.zeros(256, dtype=bool)
_QUIET_START[list(b" \t\r\x0b\x0c#\n")] = True


@dataclass
class Block:
    """What one text block gave: valid rows, bad lines (1-based within the block)."""

    table: pa.Table | None
    bad: list[tuple[int, Bad]]
    records: int
    lines: int
    consumed: int = 0


# -- lines ---------------------------------------------------------------------------


def _check_bytes(content: bytes, raw: bytes | None = None) -> RelationTuple | Bad | None:
    """A text line (line end stripped): a tuple, a reject, or None for a comment/blank.

    ``raw`` is the line as read, line end included (``content`` by default); a
    reject keeps it.
    """
    stripped = content.lstrip(BLANK_BYTES)
    if not stripped or stripped.startswith(b"#"):
        return None
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = content.decode("utf-8", "backslashreplace")
        result: RelationTuple | Bad = Bad(
            text,
            f"{clip(text)!r} is not valid UTF-8 "
            f"(byte {content[exc.start]:#04x} at offset {exc.start})",
        )
    else:
        result = check_text(text)
    if isinstance(result, Bad):
        result.raw = content if raw is None else raw
    return result


def _check_str(text: str) -> RelationTuple | Bad | None:
    """``_check_bytes`` of a line that is already text."""
    stripped = text.lstrip(BLANK)
    if not stripped or stripped.startswith("#"):
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return Bad(text, f"{clip(text)!r} is not valid Unicode (at offset {exc.start})")
    return check_text(text)


def text_records(lines: Iterable[str | bytes]) -> Iterator[Record]:
    """The records of in-memory lines (line ends stripped), one line at a time."""
    for number, line in enumerate(lines, 1):
        if isinstance(line, str):
            yield number, _check_str(line)
        else:
            yield number, _check_bytes(line)


# -- blocks --------------------------------------------------------------------------


def text_blocks(chunks: Iterator[tuple[bytes, int]]) -> Iterator[Block]:
    """The blocks of a text stream's chunks, parsed on a thread pool, in order."""
    return _ordered_map(_parse_block, _split_blocks(chunks), _WORKERS)


@dataclass
class _Overlong:
    """A line too long to hold (``_MAX_LINE``): its start, its size, whether blank."""

    head: bytes
    size: int = 0
    blank: bool = True
    cr: bool = False  # the last byte seen so far is "\r"

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        self.blank = self.blank and not piece.strip(BLANK_BYTES)
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
                overlong = _Overlong(carry[:_HEAD])
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


def _parse_block(job: tuple[bytes | _Overlong, int]) -> Block:
    buf, consumed = job
    if isinstance(buf, _Overlong):
        block = _overlong_block(buf)
    elif len(buf) >= 1 << 31:  # past int32 offsets; _MAX_LINE keeps blocks far below
        block = _parse_block_slow(buf)  # pragma: no cover
    else:
        block = _parse_block_fast(buf)
    block.consumed = consumed
    return block


def _overlong_block(line: _Overlong) -> Block:
    """What ``_check_bytes`` says of a huge line, without holding it."""
    if line.blank or line.head.lstrip(BLANK_BYTES).startswith(b"#"):
        return Block(None, [], 0, 1)
    # parse_tuple's message for a line over MAX_TUPLE_BYTES (as a line over _MAX_LINE
    # is), with its 100-char preview.
    shown = line.head[:400].decode("utf-8", "backslashreplace")[:100] + "..."
    reason = f"{shown!r} {tuple_too_long(line.size)}"
    return Block(None, [(1, Bad(shown, reason))], 1, 1)


def _parse_block_slow(buf: bytes) -> Block:
    """The reference: each line through ``parse_tuple``."""
    lines = buf.split(b"\n")
    last = lines.pop()  # "" if buf ends with "\n", else an unterminated last line
    results: list[RelationTuple] = []
    bad: list[tuple[int, Bad]] = []
    records = 0
    for number, line in enumerate(lines, 1):
        result = _check_bytes(strip_cr(line), line + b"\n")
        if result is None:
            continue
        records += 1
        if isinstance(result, Bad):
            bad.append((number, result))
        else:
            results.append(result)
    n_lines = len(lines)
    if last:
        n_lines += 1
        result = _check_bytes(last)
        if result is not None:
            records += 1
            if isinstance(result, Bad):
                bad.append((n_lines, result))
            else:
                results.append(result)
    return Block(table_from_tuples(results) if results else None, bad, records, n_lines)


def _parse_block_fast(buf: bytes) -> Block:
    """Vectorised: RE2 validates, numpy finds the separators, ``take`` cuts the fields.

    One scan lists every separator byte of the block ('\\n', ':', '#', '@') in order.
    In a line that passes ``_LINE_PATTERN`` the first separator is the resource's ':'
    (namespaces hold none); ids may hold '@' but no ':' or '#', and relations hold
    none, so the first '#' is followed in the list by the subject's '@' and ':', and a
    second '#' (if any) starts the subject relation. That locates every field without
    looking at a line in Python. Lines that fail the pattern go through
    ``_check_bytes``, the reference path, for their message, and so do lines that pass
    it but that a limit the pattern leaves out puts in doubt (``_Fields.doubt``): those
    that ``parse_tuple`` accepts keep their place among the rows.
    """
    size = len(buf)
    if size == 0:
        return Block(None, [], 0, 0)
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

    # Viewed as UTF-8 text (unchecked: RE2 matches no character in bytes that are not
    # UTF-8, so such a block or line fails and the per-line path reports it).
    whole = pa.Array.from_buffers(
        pa.string(), 1, [None, pa.py_buffer(np.array([0, size], dtype=np.int32)), data]
    )
    if pc.match_substring_regex(whole, _BLOCK_PATTERN)[0].as_py():
        ok = ~_QUIET_START[a[starts]]
    else:
        bounds = pa.py_buffer(offsets.astype(np.int32))
        lines = pa.Array.from_buffers(pa.string(), n_lines, [None, bounds, data])
        ok = pc.match_substring_regex(lines, _LINE_PATTERN).to_numpy(zero_copy_only=False)
    fields = _locate(a, seps, kinds, offsets, first, last, ok)

    # What the pattern admits but parse_tuple may refuse goes to the per-line path
    # with the lines that failed it.
    doubted = np.zeros(n_lines, dtype=bool)
    if fields.doubt.any():
        doubted[fields.good[fields.doubt]] = True
        ok = ok & ~doubted

    bad: list[tuple[int, Bad]] = []
    accepted: list[int] = []
    records = 0
    for i in np.flatnonzero(~ok).tolist():
        raw = line = buf[offsets[i] : offsets[i + 1]]
        if line.endswith(b"\n"):
            line = strip_cr(line[:-1])
        result = _check_bytes(line, raw)
        if result is None:
            continue
        if not isinstance(result, Bad):
            if doubted[i]:  # a doubt cleared: the row stays where it is
                accepted.append(i)
                continue
            # parse_tuple accepts what RE2 refused: trust the reference for this block.
            return _parse_block_slow(buf)
        records += 1
        bad.append((i + 1, result))
    if fields.doubt.any():
        keep = ~fields.doubt
        keep[np.searchsorted(fields.good, accepted)] = True
        fields = fields.subset(keep)
    records += len(fields.good)
    if not fields.good.size:
        return Block(None, bad, records, n_lines)
    return Block(fields.table(data, size), bad, records, n_lines)


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
    # a limit the pattern leaves out may be broken: an id over MAX_ID_BYTES, a namespace
    # over MAX_NAMESPACE_CHARS bytes (maybe not characters), the relation "...", or a
    # last character ']' (maybe a caveat)
    doubt: np.ndarray

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
    dots = _dots(a, srel_start, has_srel & (end - srel_start == 3))
    c1 = seps[first]
    doubt = (
        (h1 - c1 > MAX_ID_BYTES + 1)
        | (sid_end - c2 > MAX_ID_BYTES + 1)
        | (c1 - start > MAX_NAMESPACE_CHARS)
        | (c2 - at > MAX_NAMESPACE_CHARS + 1)
        | _dots(a, h1 + 1, at - h1 == 4)
        | (a[end - 1] == _CLOSE)
    )
    return _Fields(
        good=good,
        start=start,
        c1=c1,
        h1=h1,
        at=at,
        c2=c2,
        sid_end=sid_end,
        srel_start=srel_start,
        end=end,
        srel=has_srel & ~dots,
        doubt=doubt,
    )


def _dots(a: np.ndarray, at: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Whether ``a[at:at + 3]`` is "..." (past the end: not), for the rows ``where``
    picks (few: a relation three bytes long); False for the others."""
    out = np.zeros(len(at), dtype=bool)
    rows = np.flatnonzero(where)
    pos = at[rows]
    hit = np.ones(len(rows), dtype=bool)
    for k in range(3):
        i = pos + k
        hit &= (i < len(a)) & (a[np.minimum(i, len(a) - 1)] == _DOT)
    out[rows] = hit
    return out


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
    even ones are the gaps between them), and ``take`` copies them out. Their lines
    matched the pattern as UTF-8 text and every field lies between ASCII separators,
    so each field is UTF-8 text too.
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
