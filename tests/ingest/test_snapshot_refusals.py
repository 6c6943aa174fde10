"""What a snapshot reader refuses because it is not a whole store's tuples.

An OpenFGA export can look like a snapshot and not be one: ReadChanges items (a log
whose deletes would be indexed as writes), a Read response cut at a page boundary (the
tuples after it would answer no), a Parquet file (bytes the local engine would read
as text). Each is refused, naming the file (and the record), even with
``skip_invalid``: skipping a delete is as wrong as indexing it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.snapshots import detect_format, read_snapshots
from leopard.errors import InvalidInput

KEY = {"user": "user:anne", "relation": "member", "object": "group:eng"}
ANNE = ("group", "eng", "member", "user", "anne", None)


def change(operation: Any, user: str = "user:anne") -> dict[str, Any]:
    item: dict[str, Any] = {"tuple_key": {**KEY, "user": user}}
    if operation is not None:
        item["operation"] = operation
    item["timestamp"] = "2024-01-01T00:00:00Z"
    return item


def rows(path: Path, **kwargs: Any) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for table in read_snapshots([path], **kwargs):
        out.extend(tuple(r.values()) for r in table.to_pylist())
    return out


@pytest.mark.parametrize("operation", [None, "TUPLE_OPERATION_WRITE", 0, "write"])
@pytest.mark.parametrize("suffix", ["json", "jsonl"])
def test_a_change_that_writes_is_a_tuple(tmp_path: Path, operation: Any, suffix: str) -> None:
    items = [change(operation)]
    path = tmp_path / f"changes.{suffix}"
    text = json.dumps(items) if suffix == "json" else json.dumps(items[0]) + "\n"
    path.write_text(text)
    assert rows(path) == [ANNE]


def test_a_null_operation_is_a_write(tmp_path: Path) -> None:
    """Protobuf's JSON spells an enum's default (TUPLE_OPERATION_WRITE) as null too; the
    change decoder takes it as a write, and so does a snapshot."""
    item = change(None)
    item["operation"] = None
    path = tmp_path / "changes.json"
    path.write_text(json.dumps([item]))
    assert rows(path) == [ANNE]


@pytest.mark.parametrize(
    "operation", ["TUPLE_OPERATION_DELETE", 1, "delete", "TUPLE_OPERATION_WRITE ", True]
)
@pytest.mark.parametrize("suffix", ["json", "jsonl"])
@pytest.mark.parametrize("skip", [False, True])
def test_a_change_that_is_not_a_write_is_refused_with_its_line(
    tmp_path: Path, operation: Any, suffix: str, skip: bool
) -> None:
    bad = change(operation, "user:bob")
    items = [change("TUPLE_OPERATION_WRITE"), change(None, "user:carl"), bad]
    path = tmp_path / f"changes.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps(items))
    else:
        path.write_text("".join(json.dumps(i) + "\n" for i in items))
    shown = json.dumps(bad["operation"])
    with pytest.raises(InvalidInput) as info:
        rows(path, skip_invalid=skip, on_reject=lambda r: None)
    message = str(info.value)
    assert message.startswith(f"{path}:3: the record's operation is {shown}, not a write")
    assert "a snapshot holds only tuples to write" in message


def test_the_change_log_of_the_review_is_refused_at_its_first_delete(tmp_path: Path) -> None:
    # anne written then deleted, bob only deleted: indexed, both were members
    items = [
        change("TUPLE_OPERATION_WRITE"),
        change("TUPLE_OPERATION_DELETE"),
        change("TUPLE_OPERATION_DELETE", "user:bob"),
    ]
    path = tmp_path / "changes.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    with pytest.raises(InvalidInput, match=r'changes\.jsonl:2: .*"TUPLE_OPERATION_DELETE"'):
        rows(path)


def test_a_read_page_with_more_to_follow_is_refused(tmp_path: Path) -> None:
    tuples = [{"key": {**KEY, "user": f"user:u{i}"}, "timestamp": "t"} for i in range(3)]
    path = tmp_path / "dump.json"
    path.write_text(json.dumps({"tuples": tuples, "continuation_token": "eyJ1bGlkIjoi"}))
    for skip in (False, True):
        with pytest.raises(InvalidInput) as info:
            rows(path, skip_invalid=skip)
        message = str(info.value)
        assert message.startswith(f'{path}: has the continuation_token "eyJ1bGlkIjoi"')
        assert "stopped at a page boundary and more tuples follow" in message
        assert "'fga tuple read --max-pages 0'" in message


@pytest.mark.parametrize("token", ["", None])
def test_the_last_read_page_is_a_snapshot(tmp_path: Path, token: str | None) -> None:
    # 'fga tuple read --max-pages 0' ends with an empty token; an SDK may send null
    path = tmp_path / "dump.json"
    path.write_text(json.dumps({"tuples": [{"key": KEY}], "continuation_token": token}))
    assert rows(path) == [ANNE]


def test_parquet_is_recognised_and_refused_by_name(tmp_path: Path) -> None:
    assert detect_format("t.parquet") == "parquet"
    assert detect_format("T.PARQUET") == "parquet"
    assert detect_format(Path("dumps/t.parquet")) == "parquet"
    assert detect_format("parquet") == "text"
    path = tmp_path / "t.parquet"
    cols = ["user_type", "user_id", "user_relation", "relation", "object_type", "object_id"]
    values = ["user", "x", "", "member", "group", "a"]
    pq.write_table(pa.table({c: [v] for c, v in zip(cols, values, strict=True)}), path)
    text = tmp_path / "t.txt"
    text.write_text("group:a#member@user:x\n")
    for skip in (False, True):
        # refused before anything is read, wherever it stands among the sources
        with pytest.raises(InvalidInput) as info:
            list(read_snapshots([text, path], skip_invalid=skip))
        assert str(info.value) == (
            f"{str(path)!r} is Parquet (by its name), which the local engine does not "
            "read: build it with --engine spark"
        )
