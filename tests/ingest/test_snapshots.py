"""Tests of the snapshot readers (ingest.snapshots).

The text reader has a vectorised fast path and a line-by-line reference path; the
property tests at the end hold them to the same rows, rejects and line numbers on
random mixes of good and bad lines, cut into blocks at random places.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ingest.snapshots import (
    FORMATS,
    SCHEMA,
    ReadStats,
    Reject,
    detect_format,
    read_snapshots,
)
from ingest.snapshots import sources as snapshot_sources
from ingest.snapshots import text as snapshot_text
from leopard.errors import InvalidInput, InvalidTuple
from leopard.model.names import parse_tuple

Row = tuple[str, str, str, str, str, str | None]


def rows_of(tables: Iterator[pa.Table] | list[pa.Table]) -> list[Row]:
    out: list[Row] = []
    for table in tables:
        assert table.schema == SCHEMA
        out.extend(tuple(r.values()) for r in table.to_pylist())  # type: ignore[misc]
    return out


def read_all(sources: Any, **kwargs: Any) -> tuple[list[Row], list[Reject], ReadStats]:
    rejects: list[Reject] = []
    stats = ReadStats()
    rows = rows_of(
        read_snapshots(sources, skip_invalid=True, on_reject=rejects.append, stats=stats, **kwargs)
    )
    return rows, rejects, stats


def reason_of(text: str) -> str:
    with pytest.raises(InvalidTuple) as info:
        parse_tuple(text)
    return str(info.value)


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


CAVEAT = "group:a#member@user:b[expiration:2025-01-01T00:00:00Z]"

TEXT = """\
# a snapshot
group:eng#member@user:alice

   # indented comment
group:eng#member@group:ops#member
group:eng#member
group:ops#member@user:*
group:ops#member@user:bob#...
\t
acme/group:g1#member@acme/user:anne@example.com
group:a#member@user:*#member
"""

TEXT_ROWS: list[Row] = [
    ("group", "eng", "member", "user", "alice", None),
    ("group", "eng", "member", "group", "ops", "member"),
    ("group", "ops", "member", "user", "*", None),
    ("group", "ops", "member", "user", "bob", None),
    ("acme/group", "g1", "member", "acme/user", "anne@example.com", None),
]


# -- formats and detection -------------------------------------------------------------


def test_detect_format() -> None:
    assert FORMATS == ("text", "csv", "json", "jsonl")
    cases = {
        "snap.txt": "text",
        "snap.tuples": "text",
        "snap": "text",
        "-": "text",
        "snap.txt.gz": "text",
        "snap.CSV": "csv",
        "snap.csv.gz": "csv",
        "snap.json": "json",
        "snap.json.gz": "json",
        "snap.jsonl": "jsonl",
        "snap.ndjson.gz": "jsonl",
        "dir.csv/snap": "text",
    }
    for name, expected in cases.items():
        assert detect_format(name) == expected, name
    assert detect_format(Path("x/y.jsonl")) == "jsonl"


def test_bad_arguments() -> None:
    with pytest.raises(InvalidInput, match="unknown snapshot format 'yaml'"):
        list(read_snapshots([["group:a#member@user:b"]], format="yaml"))
    with pytest.raises(InvalidInput, match="batch_rows"):
        list(read_snapshots([["group:a#member@user:b"]], batch_rows=0))


# -- text -----------------------------------------------------------------------------------


def test_text_file(tmp_path: Path) -> None:
    path = write(tmp_path / "snap.txt", TEXT)
    rows, rejects, stats = read_all([path])
    assert rows == TEXT_ROWS
    assert [(r.source, r.line, r.text) for r in rejects] == [
        (str(path), 6, "group:eng#member"),
        (str(path), 11, "group:a#member@user:*#member"),
    ]
    assert rejects[0].reason == "'group:eng#member' has no '@' between the relation and the subject"
    assert rejects[1].reason == reason_of("group:a#member@user:*#member")
    assert stats.records == 7
    assert stats.rejected == 2
    assert stats.bytes_read == len(TEXT.encode())


def test_text_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "snap.txt", TEXT)
    with pytest.raises(InvalidInput) as info:
        list(read_snapshots([str(path)]))
    assert str(info.value) == (
        f"{path}:6: 'group:eng#member' has no '@' between the relation and the subject"
    )


def test_caveat_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "snap.txt", f"group:a#member@user:b\n{CAVEAT}\n")
    with pytest.raises(InvalidInput) as info:
        list(read_snapshots([path]))
    assert str(info.value) == f"{path}:2: {reason_of(CAVEAT)}"
    assert "caveat" in str(info.value)


def test_line_endings_and_whitespace(tmp_path: Path) -> None:
    data = (
        b"group:a#member@user:b\r\n"  # CRLF: fine
        b"group:a#member@user:c\n"
        b"group:a#member@user:d \n"  # a trailing space is an error
        b"group:a#mem\rber@user:e\n"  # a lone CR is not a line end
        b"group:a#member@user:f\r\r\n"  # only one CR belongs to the line end
        b"\r\n"
        b"group:a#member@user:g"  # no final newline
    )
    path = write(tmp_path / "snap.txt", data)
    rows, rejects, stats = read_all([path])
    assert [r[4] for r in rows] == ["b", "c", "g"]
    assert [r.line for r in rejects] == [3, 4, 5]
    assert rejects[0].reason == reason_of("group:a#member@user:d ")
    assert rejects[1].text == "group:a#mem\rber@user:e"
    assert rejects[2].text == "group:a#member@user:f\r"
    assert stats.records == 6


def test_unterminated_last_line_with_cr(tmp_path: Path) -> None:
    path = write(tmp_path / "snap.txt", b"group:a#member@user:b\r")
    rows, rejects, _ = read_all([path])
    assert rows == []
    assert rejects[0].reason == reason_of("group:a#member@user:b\r")


def test_invalid_utf8(tmp_path: Path) -> None:
    path = write(
        tmp_path / "snap.txt",
        b"# caf\xe9 comments may hold anything\ngroup:a#member@user:\xff\ngroup:a#member@user:b\n",
    )
    rows, rejects, _ = read_all([path])
    assert rows == [("group", "a", "member", "user", "b", None)]
    assert rejects[0].line == 2
    assert rejects[0].text == "group:a#member@user:\\xff"
    assert "not valid UTF-8" in rejects[0].reason


def test_bom_is_dropped(tmp_path: Path) -> None:
    path = write(tmp_path / "snap.txt", b"\xef\xbb\xbfgroup:a#member@user:b\n")
    assert rows_of(read_snapshots([path])) == [("group", "a", "member", "user", "b", None)]


def test_long_line_rejected_like_parse_tuple(tmp_path: Path) -> None:
    long = "group:a#member@user:" + "x" * 1100
    path = write(tmp_path / "snap.txt", f"group:a#member@user:b\n{long}\n")
    rows, rejects, _ = read_all([path])
    assert len(rows) == 1
    assert rejects == [Reject(str(path), 2, long, reason_of(long))]


def test_empty_and_comment_only(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.txt", b"")
    comments = write(tmp_path / "c.txt", "# nothing\n\n   \n")
    rows, rejects, stats = read_all([empty, comments])
    assert (rows, rejects, stats.records) == ([], [], 0)


def test_duplicates_pass_through() -> None:
    line = "group:a#member@user:b"
    assert len(rows_of(read_snapshots([[line, line, line + "#..."]]))) == 3


def test_in_memory_iterables() -> None:
    rows, rejects, _ = read_all(
        [
            ["group:a#member@user:b\n", "# c\r\n", "group:a#member@user:c\r\n"],
            (b for b in [b"group:a#member@group:x#member", b"nope"]),
        ]
    )
    assert [r[4] for r in rows] == ["b", "c", "x"]
    assert rejects == [Reject("<memory>", 2, "nope", reason_of("nope"))]


def test_binary_stream_source() -> None:
    stream = io.BytesIO(b"group:a#member@user:b\nbad\n")
    rows, rejects, _ = read_all([stream])
    assert rows == [("group", "a", "member", "user", "b", None)]
    assert [(r.source, r.line) for r in rejects] == [("<memory>", 2)]


def test_single_path_not_in_a_list(tmp_path: Path) -> None:
    path = write(tmp_path / "snap.txt", "group:a#member@user:b\n")
    assert len(rows_of(read_snapshots(path))) == 1
    assert len(rows_of(read_snapshots(str(path)))) == 1


# -- files: several, gzip, missing ----------------------------------------------------------


def test_several_files(tmp_path: Path) -> None:
    one = write(tmp_path / "one.txt", "group:a#member@user:b\nbad one\n")
    two = write(tmp_path / "two.txt", "# two\nbad two\ngroup:c#member@user:d\n")
    rows, rejects, stats = read_all([one, str(two)])
    assert [r[1] for r in rows] == ["a", "c"]
    assert [(r.source, r.line, r.text) for r in rejects] == [
        (str(one), 2, "bad one"),
        (str(two), 2, "bad two"),
    ]
    assert stats.records == 4


def test_gzip(tmp_path: Path) -> None:
    plain = TEXT.encode()
    gz = write(tmp_path / "snap.txt.gz", gzip.compress(plain))
    disguised = write(tmp_path / "snap.txt", gzip.compress(plain))  # found by magic bytes
    not_really = write(tmp_path / "plain.gz", plain)
    members = write(tmp_path / "multi.gz", gzip.compress(plain[:50]) + gzip.compress(plain[50:]))
    for path in (gz, disguised, not_really, members):
        sizes: list[int] = []
        rows, rejects, stats = read_all([path], progress=sizes.append)
        assert rows == TEXT_ROWS, path
        assert [r.line for r in rejects] == [6, 11], path
        assert sum(sizes) == stats.bytes_read == path.stat().st_size


def test_gzip_in_small_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny reads and a tiny inflate limit: members, headers and output cut anywhere.
    monkeypatch.setattr(snapshot_sources, "_CHUNK_BYTES", 5)
    plain = TEXT.encode() * 20
    path = write(tmp_path / "multi.gz", gzip.compress(plain[:333]) + gzip.compress(plain[333:]))
    rows, rejects, stats = read_all([path])
    assert rows == TEXT_ROWS * 20
    assert len(rejects) == 40
    assert stats.bytes_read == path.stat().st_size


def test_gzip_csv_by_extension(tmp_path: Path) -> None:
    csv_text = (
        "user_type,user_id,user_relation,relation,object_type,object_id\nuser,b,,member,group,a\n"
    )
    path = write(tmp_path / "snap.csv.gz", gzip.compress(csv_text.encode()))
    assert rows_of(read_snapshots([path])) == [("group", "a", "member", "user", "b", None)]


def test_gzip_truncated_and_corrupt(tmp_path: Path) -> None:
    data = gzip.compress(TEXT.encode() * 100)
    truncated = write(tmp_path / "t.gz", data[: len(data) // 2])
    with pytest.raises(InvalidInput, match="ends early"):
        list(read_snapshots([truncated]))
    corrupt = write(tmp_path / "c.gz", data[:20] + b"\0" * 20 + data[40:])
    with pytest.raises(InvalidInput, match="corrupt gzip"):
        list(read_snapshots([corrupt]))
    trailing = write(tmp_path / "x.gz", data + b"garbage")
    with pytest.raises(InvalidInput, match="after the end of the gzip stream"):
        list(read_snapshots([trailing]))
    padded = write(tmp_path / "p.gz", data + b"\0" * 10)
    assert len(rows_of(read_snapshots([padded], skip_invalid=True))) == 500


def test_missing_file_fails_before_reading(tmp_path: Path) -> None:
    good = write(tmp_path / "good.txt", "group:a#member@user:b\n")
    missing = tmp_path / "missing.txt"
    tables = read_snapshots([good, missing])
    with pytest.raises(InvalidInput) as info:
        next(tables)
    assert str(missing) in str(info.value)
    assert "No such file or directory" in str(info.value)
    with pytest.raises(InvalidInput, match="Is a directory"):
        list(read_snapshots([tmp_path]))


# -- stdin ------------------------------------------------------------------------------------


def test_stdin_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    data = gzip.compress(b"group:a#member@user:b\nbad\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    rows, rejects, _ = read_all(["-"])
    assert rows == [("group", "a", "member", "user", "b", None)]
    assert [(r.source, r.line, r.text) for r in rejects] == [("<stdin>", 2, "bad")]


def test_stdin_text_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("# hi\ngroup:a#member@user:b\r\nbad\n"))
    rows, rejects, _ = read_all(["-"])
    assert rows == [("group", "a", "member", "user", "b", None)]
    assert [(r.source, r.line) for r in rejects] == [("<stdin>", 3)]


def test_stdin_with_format(monkeypatch: pytest.MonkeyPatch) -> None:
    line = json.dumps({"user": "user:b", "relation": "member", "object": "group:a"})
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(line.encode() + b"\n")))
    assert rows_of(read_snapshots(["-"], format="jsonl")) == [
        ("group", "a", "member", "user", "b", None)
    ]


# -- CSV ----------------------------------------------------------------------------------------

CSV_HEADER = (
    "user_type,user_id,user_relation,relation,object_type,object_id,"
    "condition_name,condition_context"
)


def test_csv(tmp_path: Path) -> None:
    text = "\n".join(
        [
            CSV_HEADER,
            "user,anne,,member,group,eng,,",
            "group,ops,member,member,group,eng,,",
            "user,*,,member,group,eng,,",
            "",
            'user,bob,,member,group,eng,in_hours,"{""tz"": ""UTC""}"',
            "user,b#member,,member,group,eng,,",
            "user,carl,,member,group,eng",
            "user,dan,,member,group",
            "user,,,member,group,eng,,",
            '"user","multi\nline",,member,group,eng,,',
            "user,erin,...,member,group,eng,,",
        ]
    )
    path = write(tmp_path / "snap.csv", text + "\r\n")
    rows, rejects, stats = read_all([path])
    assert rows == [
        ("group", "eng", "member", "user", "anne", None),
        ("group", "eng", "member", "group", "ops", "member"),
        ("group", "eng", "member", "user", "*", None),
        ("group", "eng", "member", "user", "carl", None),
        ("group", "eng", "member", "user", "erin", None),
    ]
    by_line = {r.line: r for r in rejects}
    assert sorted(by_line) == [6, 7, 9, 10, 11]
    assert by_line[6].reason == (
        "'group:eng#member@user:bob' has a condition 'in_hours'; "
        "conditional relationships are not supported"
    )
    assert by_line[6].text.startswith("user,bob,")
    assert "user_id 'b#member'" in by_line[7].reason
    assert "has 5 fields, the header has 8" in by_line[9].reason
    assert by_line[10].reason == reason_of("group:eng#member@user:")
    assert by_line[11].text == '"user","multi\nline",,member,group,eng,,'
    assert stats.records == 10


def test_csv_without_condition_columns(tmp_path: Path) -> None:
    text = (
        "user_type,user_id,user_relation,relation,object_type,object_id\nuser,b,,member,group,a\n"
    )
    path = write(tmp_path / "snap.csv", text)
    assert rows_of(read_snapshots([path])) == [("group", "a", "member", "user", "b", None)]


def test_csv_bad_header(tmp_path: Path) -> None:
    path = write(tmp_path / "snap.csv", "user_type,user_id,relation,object_type,object_id\n")
    with pytest.raises(InvalidInput) as info:
        list(read_snapshots([path], skip_invalid=True))
    assert str(path) in str(info.value)
    assert "'user_relation'" in str(info.value)


def test_csv_error_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "snap.csv",
        f"{CSV_HEADER}\nuser,b,,member,group,a,,\n\nuser,b,,Member,group,a,,\n",
    )
    with pytest.raises(InvalidInput) as info:
        list(read_snapshots([path]))
    assert str(info.value) == f"{path}:4: {reason_of('group:a#Member@user:b')}"


def test_format_override(tmp_path: Path) -> None:
    path = write(
        tmp_path / "snap.txt",
        "user_type,user_id,user_relation,relation,object_type,object_id\nuser,b,,member,group,a\n",
    )
    assert rows_of(read_snapshots([path], format="csv")) == [
        ("group", "a", "member", "user", "b", None)
    ]
    lines = [
        "user_type,user_id,user_relation,relation,object_type,object_id",
        "user,c,,member,group,a",
    ]
    assert rows_of(read_snapshots([lines], format="csv")) == [
        ("group", "a", "member", "user", "c", None)
    ]
    with pytest.raises(InvalidInput, match=":1: "):
        list(read_snapshots([path], format="text"))


# -- JSON ---------------------------------------------------------------------------------------


def test_json_array(tmp_path: Path) -> None:
    records: list[Any] = [
        {"user": "user:anne", "relation": "member", "object": "group:eng"},
        {"user": "group:ops#member", "relation": "member", "object": "group:eng"},
        {"user": "user:*", "relation": "member", "object": "group:eng"},
        {"relation": "member", "object": "group:eng"},
        {"user": 7, "relation": "member", "object": "group:eng"},
        {"user": "user:b", "relation": "member", "object": "group:eng", "condition": {"name": "c"}},
        {"user": "user:c", "relation": "member", "object": "group:eng", "condition": None},
        "group:eng#member@user:d",
        {"user": "user:e", "relation": "member@user:x", "object": "group:eng"},
        {"user": "user:f", "relation": "member", "object": "group:eng#member"},
    ]
    path = write(tmp_path / "snap.json", json.dumps(records, indent=2))
    rows, rejects, stats = read_all([path])
    assert rows == [
        ("group", "eng", "member", "user", "anne", None),
        ("group", "eng", "member", "group", "ops", "member"),
        ("group", "eng", "member", "user", "*", None),
        ("group", "eng", "member", "user", "c", None),
    ]
    by_line = {r.line: r for r in rejects}
    assert sorted(by_line) == [4, 5, 6, 8, 9, 10]
    assert "has no key 'user'" in by_line[4].reason
    assert "the key 'user' holds 7, expected a string" == by_line[5].reason
    assert "has a condition 'c'; conditional relationships are not supported" in by_line[6].reason
    assert "expected an object" in by_line[8].reason
    assert by_line[4].text == json.dumps(records[3], ensure_ascii=False)
    assert stats.records == len(records)


def test_json_missing_key_raises(tmp_path: Path) -> None:
    path = write(tmp_path / "snap.json", '[{"user": "user:a", "relation": "member"}]')
    with pytest.raises(InvalidInput, match=r"snap\.json:1: .*has no key 'object'"):
        list(read_snapshots([path]))


def test_json_wrappers(tmp_path: Path) -> None:
    key = {"user": "user:anne", "relation": "member", "object": "group:eng"}
    expected = [("group", "eng", "member", "user", "anne", None)]
    read_output = {"tuples": [{"key": key, "timestamp": "2024-01-01T00:00:00Z"}]}
    write_body = {"writes": {"tuple_keys": [key]}}
    for i, doc in enumerate([read_output, write_body, {"writes": [key]}, [key]]):
        path = write(tmp_path / f"snap{i}.json", json.dumps(doc))
        assert rows_of(read_snapshots([path])) == expected, doc


def test_json_bad_documents(tmp_path: Path) -> None:
    for name, text, message in [
        ("a.json", "[{", "not valid JSON"),
        ("b.json", '{"other": 1}', "expected a JSON array"),
        ("c.json", '"just a string"', "expected a JSON array"),
    ]:
        path = write(tmp_path / name, text)
        with pytest.raises(InvalidInput, match=message):
            list(read_snapshots([path], skip_invalid=True))
    assert rows_of(read_snapshots([write(tmp_path / "empty.json", "  \n")])) == []


def test_json_separator_in_a_field(tmp_path: Path) -> None:
    # The fields join into a tuple (subject 'user:x@y') only by moving the split.
    record = {"user": "y", "relation": "member@user:x", "object": "group:e"}
    path = write(tmp_path / "snap.json", json.dumps([record]))
    rows, rejects, _ = read_all([path])
    assert rows == []
    assert [(r.line, r.text) for r in rejects] == [(1, json.dumps(record))]
    assert rejects[0].reason == (
        "'group:e#member@user:x@y': relation 'member@user:x' is not valid "
        "(it contains a separator ':', '#' or '@' that its field may not hold)"
    )


def test_jsonl(tmp_path: Path) -> None:
    lines = [
        json.dumps({"user": "user:anne", "relation": "member", "object": "group:eng"}),
        "",
        "{not json",
        json.dumps({"user": "user:b", "relation": "member"}),
        json.dumps({"user": "group:x#...", "relation": "member", "object": "group:eng"}),
    ]
    path = write(tmp_path / "snap.ndjson", "\r\n".join(lines))
    rows, rejects, stats = read_all([path])
    assert rows == [
        ("group", "eng", "member", "user", "anne", None),
        ("group", "eng", "member", "group", "x", None),
    ]
    assert [r.line for r in rejects] == [3, 4]
    assert rejects[0].text == "{not json"
    assert "not valid JSON" in rejects[0].reason
    assert "has no key 'object'" in rejects[1].reason
    assert stats.records == 4


# -- batching, progress, early stop ---------------------------------------------------------------


def test_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_sources, "_CHUNK_BYTES", 100)
    lines = [f"group:g{i % 7}#member@user:u{i}" for i in range(1000)]
    path = write(tmp_path / "snap.txt", "\n".join(lines) + "\n")
    tables = list(read_snapshots([path, lines], batch_rows=64))
    assert all(0 < t.num_rows <= 64 for t in tables)
    assert sum(t.num_rows for t in tables[:-1]) == 64 * (len(tables) - 1)
    assert [r[4] for r in rows_of(tables)] == [f"u{i}" for i in range(1000)] * 2


def test_blocks_keep_line_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_sources, "_CHUNK_BYTES", 7)
    path = write(tmp_path / "snap.txt", TEXT * 3)
    rows, rejects, stats = read_all([path])
    assert rows == TEXT_ROWS * 3
    assert [r.line for r in rejects] == [6, 11, 17, 22, 28, 33]
    assert stats.bytes_read == len(TEXT) * 3


def test_stop_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_sources, "_CHUNK_BYTES", 64)
    path = write(tmp_path / "snap.txt", "group:a#member@user:b\n" * 1000)
    tables = read_snapshots([path], batch_rows=10)
    assert next(tables).num_rows == 10
    tables.close()


def test_overlong_line_not_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_sources, "_CHUNK_BYTES", 50)
    monkeypatch.setattr(snapshot_text, "_MAX_LINE", 200)
    long = "group:a#member@user:" + "x" * 1500
    comment = "# " + "y" * 1500
    blank = " " * 1500
    text = f"group:a#member@user:b\n{long}\r\n{comment}\n{blank}\ngroup:a#member@user:c\n{long}"
    path = write(tmp_path / "snap.txt", text)
    rows, rejects, _ = read_all([path])
    assert [r[4] for r in rows] == ["b", "c"]
    assert [r.line for r in rejects] == [2, 6]
    assert rejects[0].reason == reason_of(long)
    assert rejects[1].reason == reason_of(long)


# -- fast path against the reference ---------------------------------------------------


def test_fast_path_falls_back_when_patterns_disagree(monkeypatch: pytest.MonkeyPatch) -> None:
    # Make RE2 refuse lines that parse_tuple accepts: the block must come out as the
    # reference path makes it, not lose them.
    monkeypatch.setattr(snapshot_text, "_LINE_PATTERN", "^nothing$")
    monkeypatch.setattr(snapshot_text, "_BLOCK_PATTERN", "^nothing$")
    buf = TEXT.encode()
    assert_same_block(buf)
    rows, _, _ = read_all([io.BytesIO(buf)])
    assert rows == TEXT_ROWS


def assert_same_block(buf: bytes) -> None:
    fast = snapshot_text._parse_block_fast(buf)
    slow = snapshot_text._parse_block_slow(buf)
    assert rows_of([fast.table] if fast.table else []) == rows_of(
        [slow.table] if slow.table else []
    )
    assert fast.bad == slow.bad
    assert (fast.records, fast.lines) == (slow.records, slow.lines)


_LOWER = "abcdefghijklmnopqrstuvwxyz"
_NAME = st.builds(
    lambda head, rest: head + rest,
    st.sampled_from(_LOWER),
    st.text(alphabet=_LOWER + "0123456789_", max_size=4),
)
_NS = st.builds(lambda t, n: f"{t}/{n}" if t else n, st.one_of(st.just(""), _NAME), _NAME)
_REL = _NAME
_ID = st.text(alphabet=_LOWER + "AZ09_-/|=+.@", min_size=1, max_size=8)


@st.composite
def tuple_lines(draw: st.DrawFn) -> str:
    subject_id = draw(st.one_of(_ID, st.just("*")))
    srel = draw(st.one_of(st.none(), st.just("..."), _REL))
    text = f"{draw(_NS)}:{draw(_ID)}#{draw(_REL)}@{draw(_NS)}:{subject_id}"
    return text if srel is None else f"{text}#{srel}"


def mangle(line: str, data: st.DataObject) -> str:
    """A near miss: one character of a good line replaced, dropped or doubled."""
    i = data.draw(st.integers(0, len(line) - 1))
    what = data.draw(st.sampled_from(["replace", "drop", "double"]))
    if what == "drop":
        return line[:i] + line[i + 1 :]
    if what == "double":
        return line[:i] + line[i] + line[i:]
    char = data.draw(st.sampled_from(list(":#@.*[] \t\rAZaz09_-/é\x00\x1f")))
    return line[:i] + char + line[i + 1 :]


@st.composite
def blocks(draw: st.DrawFn) -> bytes:
    data = draw(st.data())
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 30))):
        kind = draw(
            st.sampled_from(
                ["good", "good", "good", "near", "comment", "blank", "text", "bytes", "long"]
            )
        )
        if kind == "good":
            line = draw(tuple_lines()).encode()
        elif kind == "near":
            line = mangle(draw(tuple_lines()), data).encode()
        elif kind == "comment":
            line = draw(st.sampled_from([b"#", b"  # x", b"\t#\xff", b"# a:b#c@d"]))
        elif kind == "blank":
            line = draw(st.sampled_from([b"", b" ", b"\t \x0b\x0c", b"\r"]))
        elif kind == "text":
            line = draw(st.text(max_size=20)).replace("\n", "").encode("utf-8", "replace")
        elif kind == "bytes":
            line = draw(st.binary(max_size=20)).replace(b"\n", b"")
        else:
            line = draw(tuple_lines()).encode() + b"x" * draw(st.integers(990, 1030))
        parts.append(line + draw(st.sampled_from([b"\n", b"\n", b"\r\n"])))
    buf = b"".join(parts)
    if buf and draw(st.booleans()):
        buf = buf.rstrip(b"\n")  # an unterminated last line
    return buf


@settings(max_examples=300, deadline=None)
@given(blocks())
def test_fast_and_slow_paths_agree(buf: bytes) -> None:
    assert_same_block(buf)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks(), st.integers(1, 64), st.integers(1, 3))
def test_reader_agrees_with_line_by_line(buf: bytes, chunk: int, workers: int) -> None:
    # The whole reader, cut into blocks anywhere and run on a pool, against the
    # in-memory path that checks each line on its own. (A stream that starts like
    # gzip or with a BOM is read differently on purpose.)
    assume(not buf.startswith((b"\x1f\x8b", b"\xef\xbb\xbf")))
    old = snapshot_sources._CHUNK_BYTES, snapshot_text._WORKERS
    snapshot_sources._CHUNK_BYTES, snapshot_text._WORKERS = chunk, workers
    try:
        fast = read_all([io.BytesIO(buf)])
    finally:
        snapshot_sources._CHUNK_BYTES, snapshot_text._WORKERS = old
    lines = [line + b"\n" for line in buf.split(b"\n")]
    lines[-1] = lines[-1][:-1]  # what follows the last "\n" (b"" if buf ends with one)
    slow = read_all([lines if lines[-1] else lines[:-1]])
    assert fast[0] == slow[0]
    assert [(r.line, r.text, r.reason) for r in fast[1]] == [
        (r.line, r.text, r.reason) for r in slow[1]
    ]
    assert fast[2].records == slow[2].records
    assert fast[2].bytes_read == len(buf)
