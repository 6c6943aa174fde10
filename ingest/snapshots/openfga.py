"""OpenFGA's snapshot formats: CSV, a JSON array, and JSON lines.

These are the formats people write by hand or export from small stores, not the bulk
path, so they are read one record at a time in Python. A JSON record is OpenFGA's
tuple key, ``{"user", "relation", "object"}``, read by the one grammar's
``parse_openfga``; a CSV row splits the user and the object into type, id and
relation columns, each of which must be exactly its part of the parsed tuple.
Conditional relationships are refused, and so is what is not a whole store's tuples:
a Write body with deletes, a change (a ReadChanges item) whose operation is not a
write, and a Read page whose continuation token says more tuples follow.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any

from ingest.snapshots.records import Bad, Record, check_text, clip
from ingest.snapshots.sources import BLANK, strip_end
from leopard.errors import InvalidInput, InvalidTuple
from leopard.model.names import RelationTuple, parse_openfga

__all__ = ["CSV_COLUMNS", "columns_record", "csv_records", "json_records", "jsonl_records"]

#: what a record's "operation" may hold: OpenFGA's TupleOperation for a write, by name
#: (TUPLE_OPERATION_WRITE), by number (0) or as its older SDKs spell it ("write")
_WRITE_OPERATIONS = ("TUPLE_OPERATION_WRITE", "write", 0)

_CSV_REQUIRED = ("user_type", "user_id", "user_relation", "relation", "object_type", "object_id")
_CSV_OPTIONAL = ("condition_name", "condition_context")
#: the columns of a relationship in OpenFGA's CSV (and in Parquet files of the same shape)
CSV_COLUMNS = _CSV_REQUIRED


def columns_record(values: list[str], condition: str | None, text: str) -> RelationTuple | Bad:
    """A relationship given as the values of ``CSV_COLUMNS`` (a Parquet row, say),
    checked exactly as a CSV row is; ``text`` is how the record is shown in a reject."""
    index = {col: i for i, col in enumerate(CSV_COLUMNS)}
    row = list(values)
    cond = None
    if condition:
        cond = len(row)
        row.append(condition)
    return _csv_row(row, index, cond, text)


# -- CSV -----------------------------------------------------------------------------------


def csv_records(lines: Iterable[str], name: str, *, ends: bool = False) -> Iterator[Record]:
    """OpenFGA CSV: a header, then one relationship per row.

    With ``ends``, each line carries its line end and is the file's bytes decoded
    with ``surrogateescape``, so a bad row keeps the bytes it was read from.
    """
    raw: list[str] = []
    header_read: bytes | None = None

    def feed() -> Iterator[str]:
        for line in lines:
            fed = line if ends and line.endswith("\n") else line + "\n"
            raw.append(fed)
            yield fed

    def bad(text: str, reason: str) -> Bad:
        read = "".join(raw).encode("utf-8", "surrogateescape") if ends else None
        return Bad(text, reason, read, header_read)

    reader = csv.reader(feed())
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InvalidInput(f"{name}:1: the CSV header does not parse: {exc}") from exc
    header_read = "".join(raw).encode("utf-8", "surrogateescape")
    columns = [h.strip().lstrip("\ufeff") for h in header]
    index: dict[str, int] = {}
    for i, col in enumerate(columns):
        index.setdefault(col, i)
    for col in _CSV_REQUIRED:
        if col not in index:
            raise InvalidInput(
                f"{name}: the CSV header has no column {col!r} (expected "
                f"{','.join(_CSV_REQUIRED + _CSV_OPTIONAL)}; the condition columns "
                f"are optional), got {len(columns)} column(s) {columns!r}"
                + (" (one quoted field?)" if len(columns) == 1 and "," in columns[0] else "")
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
            text = _shown(raw, ends)
            yield start, bad(text, f"{clip(text)!r} is not valid CSV: {exc}")
            continue
        text = _shown(raw, ends)
        if not row or (len(row) == 1 and not row[0].strip(BLANK)):
            yield start, None
            continue
        if len(row) > width or len(row) < needed:
            yield (
                start,
                bad(text, f"{clip(text)!r} has {len(row)} fields, the header has {width}"),
            )
            continue
        result = _csv_row(row, index, cond, text)
        yield start, bad(result.text, result.reason) if isinstance(result, Bad) else result


def _shown(lines: list[str], ends: bool) -> str:
    """The lines of a CSV record as one text: "\\n" between them, none at the end."""
    out = [line[:-1] for line in lines]  # each ends in "\n" (see feed)
    if ends:
        out = [line[:-1] if line.endswith("\r") else line for line in out]
    return "\n".join(out)


def _csv_row(
    row: list[str], index: dict[str, int], cond: int | None, text: str
) -> RelationTuple | Bad:
    if any(_has_surrogate(v) for v in row):
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return Bad(shown, f"{clip(shown)!r} is not valid UTF-8")

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
        return Bad(text, _condition_reason(tuple_text, row[cond].strip()))
    result = check_text(tuple_text)
    if isinstance(result, Bad):
        return Bad(text, result.reason)
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
            return Bad(text, _misplaced(tuple_text, key, value))
    return result


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _condition_reason(tuple_text: str, name: str) -> str:
    return (
        f"{clip(tuple_text)!r} has a condition {name!r}; "
        "conditional relationships are not supported"
    )


def _misplaced(tuple_text: str, key: str, value: str) -> str:
    # The joined tuple parsed, but a separator inside one field moved the split.
    return (
        f"{clip(tuple_text)!r}: {key} {value!r} is not valid "
        "(it contains a separator ':', '#' or '@' that its field may not hold)"
    )


# -- JSON and JSON lines -----------------------------------------------------------------


def json_records(data: bytes | str, name: str) -> Iterator[Record]:
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
    except RecursionError:
        raise InvalidInput(f"{name}: JSON arrays or objects nested too deeply to read") from None
    elements = _json_elements(doc, name)
    for number, element in enumerate(elements, 1):
        _check_operation(element, name, number)
        yield number, _json_record(element, _json_text(element))


def _json_elements(doc: Any, name: str) -> list[Any]:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        deletes = doc.get("deletes")  # a Write body: refused when it lists any
        if deletes.get("tuple_keys") if isinstance(deletes, dict) else deletes:
            raise InvalidInput(f"{name}: has 'deletes'; a snapshot holds only tuples to write")
        if "tuples" in doc and isinstance(doc["tuples"], list):
            _check_last_page(doc, name)
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


def _check_last_page(doc: dict[str, Any], name: str) -> None:
    """Refuse a Read response that is not the last page: built, it would be taken for
    the whole store, and every tuple on the pages after it would answer no."""
    token = doc.get("continuation_token")
    if token:
        raise InvalidInput(
            f"{name}: has the continuation_token {clip(json.dumps(token))}: the export "
            "stopped at a page boundary and more tuples follow (the fga CLI stops after "
            "--max-pages, 20 by default); export every page, e.g. "
            "'fga tuple read --max-pages 0', and build from that"
        )


def _check_operation(element: Any, name: str, line: int) -> None:
    """Refuse a change whose operation is not a write (a ReadChanges item of a delete).

    Such a record is refused even with ``skip_invalid``: a file of changes is a log,
    not a snapshot, and skipping its deletes would keep every tuple they removed.
    """
    if not isinstance(element, dict) or "operation" not in element:
        return
    operation = element["operation"]
    if operation is None:  # protobuf's JSON: null is the enum's default, a write
        return
    if isinstance(operation, str | int) and not isinstance(operation, bool):
        if operation in _WRITE_OPERATIONS:
            return
    raise InvalidInput(
        f"{name}:{line}: the record's operation is {clip(json.dumps(operation))}, not a "
        "write: it is a change (a ReadChanges item), and a snapshot holds only tuples "
        "to write; build from the store's tuples ('fga tuple read --max-pages 0') and "
        "let 'leopard follow' apply its changes"
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


def _json_record(element: Any, text: str) -> RelationTuple | Bad:
    if isinstance(element, dict) and "user" not in element:
        for wrapper in ("key", "tuple_key"):
            if isinstance(element.get(wrapper), dict):
                element = element[wrapper]
                break
    if not isinstance(element, dict):
        return Bad(
            text,
            f"expected an object with the keys 'user', 'relation' and 'object', got {clip(text)}",
        )
    values: dict[str, str] = {}
    for key in ("user", "relation", "object"):
        if key not in element:
            return Bad(text, f"{clip(text)} has no key {key!r}")
        value = element[key]
        if not isinstance(value, str):
            return Bad(text, f"the key {key!r} holds {clip(json.dumps(value))}, expected a string")
        values[key] = value
    tuple_text = f"{values['object']}#{values['relation']}@{values['user']}"
    condition = element.get("condition")
    if condition:
        name = condition.get("name") if isinstance(condition, dict) else condition
        if not isinstance(name, str | None):
            return Bad(
                text,
                f"the key 'condition' holds {clip(json.dumps(condition))}, "
                "expected an object with a 'name'",
            )
        if name:
            return Bad(text, _condition_reason(tuple_text, name))
    try:
        return parse_openfga(values["user"], values["relation"], values["object"])
    except InvalidTuple as exc:
        return Bad(text, str(exc))


def jsonl_records(
    lines: Iterable[str | bytes], name: str, *, ends: bool = False
) -> Iterator[Record]:
    """JSON lines: one record as in a JSON array per line (blank lines are skipped).

    With ``ends``, each line carries its line end. A bad line read as bytes keeps them.
    ``name`` is the source's, for a change that is not a write (always refused).
    """
    for number, line in enumerate(lines, 1):
        raw = line if isinstance(line, bytes) else None
        if ends and isinstance(line, bytes):
            line = strip_end(line)
        text = line if isinstance(line, str) else line.decode("utf-8", "backslashreplace")
        if not text.strip(BLANK):
            yield number, None
            continue
        try:
            element = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else exc
            yield number, Bad(text, f"{clip(text)!r} is not valid JSON: {why}", raw)
            continue
        _check_operation(element, name, number)
        result = _json_record(element, text)
        if isinstance(result, Bad):
            result.raw = raw
        yield number, result
