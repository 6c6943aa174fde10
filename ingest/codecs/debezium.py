"""Debezium's change format: change-data-capture envelopes of a table of tuples.

An event is ``{"op", "before", "after", "source", "ts_ms"}``, under ``"payload"`` when
the JSON converter writes schemas. A change's time is when the database committed it,
``source.ts_ms`` (or the finer ``source.ts_us``/``source.ts_ns`` of Debezium 2.6 on);
the envelope's own ``ts_ms``, when the connector processed it, stands in only when the
event has no ``source`` time. A create or snapshot read touches the ``after`` row, a delete
deletes the ``before`` row, and an update that changes the tuple deletes the old and
touches the new. The codec options say where each part of a tuple lives in a row
(``DEBEZIUM_COLUMNS`` holds the defaults), or name one column holding the whole tuple
text (``tuple_column``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ingest.codecs.fields import (
    Change,
    Decoded,
    as_object,
    as_string,
    from_fields,
    member,
    parse_at,
    show,
    timestamp,
)
from leopard.errors import DecodeError, InvalidInput
from leopard.model.names import RelationTuple

__all__ = ["DEBEZIUM_COLUMNS", "check_options", "decode_debezium"]

# Debezium options: where each part of a tuple lives in a row of the tuple table.
DEBEZIUM_COLUMNS: Mapping[str, str] = {
    "resource_type": "resource_type",
    "resource_id": "resource_id",
    "relation": "relation",
    "subject_type": "subject_type",
    "subject_id": "subject_id",
    "subject_relation": "subject_relation",
}
_OPTIONS = frozenset(DEBEZIUM_COLUMNS) | {"tuple_column"}


def check_options(options: dict) -> dict[str, str]:
    """The codec options, checked: a bad one is the operator's mistake (InvalidInput)."""
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise InvalidInput(
            f"unknown debezium option(s) {unknown}; expected some of {sorted(_OPTIONS)}"
        )
    for name, column in options.items():
        if not isinstance(column, str) or not column:
            raise InvalidInput(f"debezium option {name!r} must name a column, not {column!r}")
    beside = sorted(set(options) - {"tuple_column"})
    if "tuple_column" in options and beside:
        raise InvalidInput(
            f"debezium option 'tuple_column' names the one column holding the whole tuple: "
            f"{beside} would be ignored beside it; give one or the other"
        )
    return dict(options)


def decode_debezium(doc: dict[str, Any], options: dict[str, str]) -> Decoded:
    """The changes of one change event, in order (none for a tombstone or a no-op)."""
    return Decoded(_changes(doc, options))


def _changes(doc: dict[str, Any], options: dict[str, str]) -> list[Change]:
    where = ""
    if "payload" in doc and "op" not in doc:
        # With the JSON converter's schemas enabled the event sits under "payload".
        payload = doc["payload"]
        if payload is None:
            return []  # a tombstone written as JSON
        doc = as_object(payload, "payload")
        where = "payload."
    op = member(doc, "op", where)
    ts = _commit_time(doc, where)
    if op in ("c", "r"):
        return [Change("touch", _row(doc, "after", where, op, options), ts)]
    if op == "d":
        return [Change("delete", _row(doc, "before", where, op, options), ts)]
    if op == "u":
        old = _row(doc, "before", where, op, options)
        new = _row(doc, "after", where, op, options)
        return [] if old == new else [Change("delete", old, ts), Change("touch", new, ts)]
    if op == "t":
        raise DecodeError(f"'{where}op' is 't' (a truncated table), which is not supported")
    raise DecodeError(f"'{where}op' is {show(op)}; expected 'c', 'u', 'd' or 'r'")


# the source's commit time, finest first, with its scale to seconds
_SOURCE_TIMES = (("ts_ns", 1e9), ("ts_us", 1e6), ("ts_ms", 1e3))


def _commit_time(doc: dict[str, Any], where: str) -> float | None:
    """When the database committed the change (``source.ts_*``), else when the
    connector processed it (``ts_ms``), else None."""
    source = doc.get("source")
    if source is not None:
        source = as_object(source, f"{where}source")
        for name, scale in _SOURCE_TIMES:
            if source.get(name) is not None:
                return timestamp(source[name], f"{where}source.{name}", scale=scale)
    ts_ms = doc.get("ts_ms")
    return None if ts_ms is None else timestamp(ts_ms, f"{where}ts_ms", scale=1000)


def _row(
    doc: dict[str, Any], side: str, where: str, op: str, options: dict[str, str]
) -> RelationTuple:
    row = doc.get(side)
    if row is None:
        hint = " (for PostgreSQL, set REPLICA IDENTITY FULL)" if side == "before" else ""
        raise DecodeError(f"op {op!r} has no {where}{side!r} row{hint}")
    row = as_object(row, f"{where}{side}")
    where = f"{where}{side}"
    if "tuple_column" in options:
        column = options["tuple_column"]
        path = f"{where}.{column}"
        return parse_at(path, as_string(_column(row, column, where), path))
    fields: dict[str, tuple[str, Any]] = {}
    for part, default in DEBEZIUM_COLUMNS.items():
        column = options.get(part, default)
        # The subject relation may be null (a plain subject), and its column absent from
        # a table of plain subjects: unless the options name it, which is then a column
        # the row must have (a misspelt one read every userset as a plain subject).
        if part == "subject_relation" and part not in options:
            value = row.get(column)
        else:
            value = _column(row, column, where)
        # Integer id columns arrive as JSON numbers.
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        fields[part] = (f"{where}.{column}", value)
    try:
        return from_fields(where, fields)
    except DecodeError as exc:
        # PostgreSQL's default replica identity keeps only the key columns in "before".
        if side == "before" and any(v is None for _, v in fields.values()):
            raise DecodeError(f"{exc} (for PostgreSQL, set REPLICA IDENTITY FULL)") from None
        raise


def _column(row: dict[str, Any], column: str, where: str) -> Any:
    if column not in row:
        raise DecodeError(
            f"{where!r} row has no column {column!r} (it has {sorted(row)}); "
            "map the columns with the codec options"
        )
    return row[column]
