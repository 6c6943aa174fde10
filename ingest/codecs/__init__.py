"""Change-event codecs: Kafka message values in, tuple touches and deletes out.

The incremental layer consumes tuple changes, but the systems that write them speak
different dialects: Leopard's own JSON, OpenFGA's ReadChanges items, SpiceDB's Watch
responses and Debezium change-data-capture envelopes of a tuple table. Each codec turns
one message value into a list of ``Change`` (a SpiceDB Watch response or a Debezium
update carries several), so that the consumer loop never knows which dialect it reads.

A malformed message raises ``DecodeError`` with a one-line reason that names the bad
value; the consumer adds topic, partition and offset and sends the message to its
dead-letter topic. A bad *codec configuration* (unknown format, unknown option) raises
plain ``InvalidInput`` instead: that is the operator's mistake, not the message's, and
must stop the consumer rather than dead-letter every message.

Every change of one tuple must go to one partition so that its changes stay in order;
``message_key`` is the key that guarantees it for the native format.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from leopard.errors import DecodeError, InvalidInput, InvalidTuple
from leopard.model.names import RelationTuple, format_tuple, parse_tuple

__all__ = [
    "CODECS",
    "DEBEZIUM_COLUMNS",
    "Change",
    "DecodeError",
    "decode",
    "encode_native",
    "message_key",
]

CODECS = ("native", "openfga", "spicedb", "debezium")

# Debezium options: where each part of a tuple lives in a row of the tuple table.
DEBEZIUM_COLUMNS: Mapping[str, str] = {
    "resource_type": "resource_type",
    "resource_id": "resource_id",
    "relation": "relation",
    "subject_type": "subject_type",
    "subject_id": "subject_id",
    "subject_relation": "subject_relation",
}
_DEBEZIUM_OPTIONS = frozenset(DEBEZIUM_COLUMNS) | {"tuple_column"}

# A timestamp above this, read as seconds, would lie after the year 5000: it is almost
# surely in milliseconds, and guessing would silently shift every change by 1000x.
_MAX_TS_SECONDS = 1e11
_PREVIEW_BYTES = 80
_REQUIRED = object()

Op = Literal["touch", "delete"]


class Change(NamedTuple):
    """One tuple change: ``touch`` writes the tuple (idempotently), ``delete`` removes it.

    ``ts`` is when the change happened, in seconds since the epoch, if the source says.
    """

    op: Op
    tuple: RelationTuple
    ts: float | None = None


# The native event exactly as ``encode_native`` writes it without a timestamp: read
# without a JSON parse. The tuple text holds no escape, quote or control character
# (JSON would have escaped those), so its bytes are the string; anything else, and a
# tuple that does not parse, takes the general path and its precise error.
_NATIVE_PLAIN = re.compile(rb'\{"op":"(touch|delete)","tuple":"([^"\\\x00-\x1f]*)"\}')


def decode(format: str, value: bytes | None, *, options: dict | None = None) -> list[Change]:
    """Decode one message value of the given format into its changes, in order.

    A Debezium tombstone (``None`` or empty value, sent after each delete for log
    compaction) holds no change and decodes to ``[]``; in the other formats an empty
    message is malformed.
    """
    if format not in _DECODERS:
        raise InvalidInput(f"unknown change format {format!r}; expected one of {CODECS}")
    opts = _check_options(format, options)
    if format == "native" and value:
        m = _NATIVE_PLAIN.fullmatch(value)
        if m is not None:
            try:
                t = parse_tuple(m[2].decode())
            except (UnicodeDecodeError, InvalidTuple):
                pass
            else:
                return [Change("touch" if m[1] == b"touch" else "delete", t)]
    try:
        if not value:
            if format == "debezium":
                return []
            raise DecodeError("the message is empty")
        return _DECODERS[format](_load_json(value), opts)
    except DecodeError as exc:
        raise DecodeError(f"{format} event: {exc}") from None


def encode_native(change: Change) -> bytes:
    """The native JSON for ``change``; ``decode("native", ...)`` gives it back."""
    doc: dict[str, Any] = {"op": change.op, "tuple": format_tuple(change.tuple)}
    if change.ts is not None:
        doc["ts"] = change.ts
    return json.dumps(doc, separators=(",", ":")).encode()


def message_key(t: RelationTuple) -> bytes:
    """The Kafka key of a change of ``t``: its canonical text, so that all changes of
    one tuple land in one partition, in order."""
    return format_tuple(t).encode()


# -- the codecs ----------------------------------------------------------------


def _decode_native(doc: dict[str, Any], options: dict[str, str]) -> list[Change]:
    op = _member(doc, "op", "")
    if op not in ("touch", "delete"):
        raise DecodeError(f"'op' is {_show(op)}; expected 'touch' or 'delete'")
    text = _string(_member(doc, "tuple", ""), "tuple")
    ts = doc.get("ts")
    return [Change(op, _parse("tuple", text), None if ts is None else _timestamp(ts, "ts"))]


_OPENFGA_OPS: dict[str, Op] = {"TUPLE_OPERATION_WRITE": "touch", "TUPLE_OPERATION_DELETE": "delete"}


def _decode_openfga(doc: dict[str, Any], options: dict[str, str]) -> list[Change]:
    # One ReadChanges item, or a whole response page ({"changes": [...]}).
    if "tuple_key" not in doc and isinstance(doc.get("changes"), list):
        return [
            _openfga_change(_object(item, f"changes[{i}]"), f"changes[{i}].")
            for i, item in enumerate(doc["changes"])
        ]
    return [_openfga_change(doc, "")]


def _openfga_change(doc: dict[str, Any], where: str) -> Change:
    key = _object(_member(doc, "tuple_key", where), f"{where}tuple_key")
    if key.get("condition"):
        raise DecodeError(
            f"{where}tuple_key has the condition {_show(key['condition'])}; "
            "conditional relationships are not supported"
        )
    user = _string(_member(key, "user", f"{where}tuple_key."), f"{where}tuple_key.user")
    relation = _string(_member(key, "relation", f"{where}tuple_key."), f"{where}tuple_key.relation")
    obj = _string(_member(key, "object", f"{where}tuple_key."), f"{where}tuple_key.object")
    op = _lookup(_OPENFGA_OPS, _member(doc, "operation", where), f"{where}operation")
    ts = doc.get("timestamp")
    t = _parse(f"{where}tuple_key", f"{obj}#{relation}@{user}")
    # The three fields must be exactly the three parts of the tuple, not split
    # differently by a '#' or '@' inside one of them.
    _same(f"{where}tuple_key.object", obj, f"{t.resource_type}:{t.resource_id}")
    _same(f"{where}tuple_key.relation", relation, t.relation)
    return Change(op, t, None if ts is None else _timestamp(ts, f"{where}timestamp"))


_SPICEDB_OPS: dict[str, Op] = {
    "OPERATION_CREATE": "touch",
    "OPERATION_TOUCH": "touch",
    "OPERATION_DELETE": "delete",
}


def _decode_spicedb(doc: dict[str, Any], options: dict[str, str]) -> list[Change]:
    updates = doc.get("updates")
    if updates is None:
        # Protobuf JSON omits an empty list: a checkpoint response has only the token.
        if _either(doc, "changesThrough", "changes_through") is not None:
            return []
        raise DecodeError("missing 'updates'")
    if not isinstance(updates, list):
        raise DecodeError(f"'updates' is {_show(updates)}; expected a list")
    changes = []
    for i, raw in enumerate(updates):
        where = f"updates[{i}]"
        update = _object(raw, where)
        op = _lookup(_SPICEDB_OPS, _member(update, "operation", f"{where}."), f"{where}.operation")
        rel = _object(_member(update, "relationship", f"{where}."), f"{where}.relationship")
        changes.append(Change(op, _spicedb_relationship(rel, f"{where}.relationship")))
    return changes


def _spicedb_relationship(rel: dict[str, Any], where: str) -> RelationTuple:
    for camel, snake, what in (
        ("optionalCaveat", "optional_caveat", "a caveat"),
        ("optionalExpiresAt", "optional_expires_at", "an expiration"),
    ):
        extra = _either(rel, camel, snake)
        if extra:
            raise DecodeError(
                f"{where} has {what} ({_show(extra)}); caveated and expiring "
                "relationships are not supported"
            )
    resource = _object(_required(rel, "resource", where), f"{where}.resource")
    subject = _object(_required(rel, "subject", where), f"{where}.subject")
    sobj = _object(_required(subject, "object", f"{where}.subject"), f"{where}.subject.object")
    fields: dict[str, tuple[str, Any]] = {
        "resource_type": _spicedb_field(resource, "objectType", f"{where}.resource"),
        "resource_id": _spicedb_field(resource, "objectId", f"{where}.resource"),
        "relation": (f"{where}.relation", _required(rel, "relation", where)),
        "subject_type": _spicedb_field(sobj, "objectType", f"{where}.subject.object"),
        "subject_id": _spicedb_field(sobj, "objectId", f"{where}.subject.object"),
        "subject_relation": _spicedb_field(subject, "optionalRelation", f"{where}.subject", None),
    }
    return _from_fields(where, fields)


def _spicedb_field(
    obj: dict[str, Any], camel: str, where: str, default: Any = _REQUIRED
) -> tuple[str, Any]:
    """(path, value) of a field under its camelCase or snake_case name."""
    snake = _snake(camel)
    value = _either(obj, camel, snake)
    if value is None and default is _REQUIRED:
        raise DecodeError(f"missing {where + '.' + camel!r} (or {snake!r})")
    return f"{where}.{camel if camel in obj else snake}", value


def _decode_debezium(doc: dict[str, Any], options: dict[str, str]) -> list[Change]:
    where = ""
    if "payload" in doc and "op" not in doc:
        # With the JSON converter's schemas enabled the event sits under "payload".
        payload = doc["payload"]
        if payload is None:
            return []  # a tombstone written as JSON
        doc = _object(payload, "payload")
        where = "payload."
    op = _member(doc, "op", where)
    ts_ms = doc.get("ts_ms")
    ts = None if ts_ms is None else _timestamp(ts_ms, f"{where}ts_ms", scale=1000)
    if op in ("c", "r"):
        return [Change("touch", _debezium_row(doc, "after", where, op, options), ts)]
    if op == "d":
        return [Change("delete", _debezium_row(doc, "before", where, op, options), ts)]
    if op == "u":
        old = _debezium_row(doc, "before", where, op, options)
        new = _debezium_row(doc, "after", where, op, options)
        return [] if old == new else [Change("delete", old, ts), Change("touch", new, ts)]
    if op == "t":
        raise DecodeError(f"'{where}op' is 't' (a truncated table), which is not supported")
    raise DecodeError(f"'{where}op' is {_show(op)}; expected 'c', 'u', 'd' or 'r'")


def _debezium_row(
    doc: dict[str, Any], side: str, where: str, op: str, options: dict[str, str]
) -> RelationTuple:
    row = doc.get(side)
    if row is None:
        hint = " (for PostgreSQL, set REPLICA IDENTITY FULL)" if side == "before" else ""
        raise DecodeError(f"op {op!r} has no {where}{side!r} row{hint}")
    row = _object(row, f"{where}{side}")
    where = f"{where}{side}"
    if "tuple_column" in options:
        column = options["tuple_column"]
        path = f"{where}.{column}"
        return _parse(path, _string(_column(row, column, where), path))
    fields: dict[str, tuple[str, Any]] = {}
    for part, default in DEBEZIUM_COLUMNS.items():
        column = options.get(part, default)
        # The subject relation column may be absent or null: a plain subject.
        value = row.get(column) if part == "subject_relation" else _column(row, column, where)
        # Integer id columns arrive as JSON numbers.
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        fields[part] = (f"{where}.{column}", value)
    try:
        return _from_fields(where, fields)
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


_DECODERS: dict[str, Callable[[dict[str, Any], dict[str, str]], list[Change]]] = {
    "native": _decode_native,
    "openfga": _decode_openfga,
    "spicedb": _decode_spicedb,
    "debezium": _decode_debezium,
}


# -- helpers -------------------------------------------------------------------


def _check_options(format: str, options: dict | None) -> dict[str, str]:
    if not options:
        return {}
    if format != "debezium":
        raise InvalidInput(f"the {format} change format takes no options, got {sorted(options)}")
    unknown = sorted(set(options) - _DEBEZIUM_OPTIONS)
    if unknown:
        raise InvalidInput(
            f"unknown debezium option(s) {unknown}; expected some of {sorted(_DEBEZIUM_OPTIONS)}"
        )
    for name, column in options.items():
        if not isinstance(column, str) or not column:
            raise InvalidInput(f"debezium option {name!r} must name a column, not {column!r}")
    return dict(options)


def _load_json(value: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(value)
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"the message is not UTF-8 (byte {exc.object[exc.start]:#04x} at position "
            f"{exc.start}): {_preview(value)}"
        ) from None
    except json.JSONDecodeError as exc:
        raise DecodeError(
            f"the message is not JSON ({exc.msg} at character {exc.pos}): {_preview(value)}"
        ) from None
    if not isinstance(doc, dict):
        raise DecodeError(f"the message is a JSON {_json_type(doc)}; expected an object")
    return doc


def _parse(where: str, text: str) -> RelationTuple:
    try:
        return parse_tuple(text)
    except InvalidTuple as exc:
        raise DecodeError(f"{where}: {exc}") from None


def _from_fields(where: str, fields: dict[str, tuple[str, Any]]) -> RelationTuple:
    """Build a tuple from its six parts, given as (path, value), refusing a part that is
    not a string or that smuggles in a separator (a subject id ``"x#member"``)."""
    parts: dict[str, str | None] = {}
    for name, (path, value) in fields.items():
        if name == "subject_relation" and value in (None, "", "..."):
            parts[name] = None  # a plain subject, spelled any of the usual ways
        else:
            parts[name] = _string(value, path)
    srel = parts["subject_relation"]
    text = (
        f"{parts['resource_type']}:{parts['resource_id']}#{parts['relation']}"
        f"@{parts['subject_type']}:{parts['subject_id']}" + (f"#{srel}" if srel else "")
    )
    t = _parse(where, text)
    for name, given in parts.items():
        _same(fields[name][0], given, getattr(t, name))
    return t


def _same(where: str, given: str | None, parsed: str | None) -> None:
    if given != parsed:
        raise DecodeError(f"{where!r} is {_show(given)}, which does not fit in a tuple there")


def _member(doc: dict[str, Any], key: str, prefix: str) -> Any:
    if key not in doc:
        raise DecodeError(f"missing {prefix + key!r}")
    return doc[key]


def _either(doc: dict[str, Any], camel: str, snake: str) -> Any:
    """A field under its protobuf-JSON (camelCase) or its proto (snake_case) name."""
    return doc[camel] if camel in doc else doc.get(snake)


def _required(doc: dict[str, Any], key: str, where: str) -> Any:
    value = doc.get(key)
    if value is None:
        raise DecodeError(f"missing {where + '.' + key!r}")
    return value


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(f"{where!r} is {_show(value)}; expected an object")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"{where!r} is {_show(value)}; expected a string")
    return value


def _lookup(table: dict[str, Op], value: Any, where: str) -> Op:
    if not isinstance(value, str) or value not in table:
        names = [repr(k) for k in table]
        expected = ", ".join(names[:-1]) + " or " + names[-1]
        raise DecodeError(f"{where!r} is {_show(value)}; expected {expected}")
    return table[value]


def _timestamp(value: Any, where: str, *, scale: float = 1.0) -> float:
    """Seconds since the epoch from a number (``value / scale``) or an ISO 8601 string.

    A string without a UTC offset is read as UTC.
    """
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise DecodeError(
                f"{where!r} is {_show(value)}; expected a number or an ISO 8601 time"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(f"{where!r} is {_show(value)}; expected a number or an ISO 8601 time")
    seconds = value / scale
    if not math.isfinite(seconds) or seconds < 0:
        raise DecodeError(f"{where!r} is {_show(value)}; expected a time after 1970")
    if seconds >= _MAX_TS_SECONDS:
        raise DecodeError(
            f"{where!r} is {_show(value)}, too large for seconds since 1970 "
            f"(milliseconds? divide by 1000)"
        )
    return float(seconds)


def _show(value: Any) -> str:
    """A short, one-line rendering of a JSON value for a message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _preview(value: bytes) -> str:
    head = bytes(value[:_PREVIEW_BYTES])
    return repr(head) + ("..." if len(value) > _PREVIEW_BYTES else "")


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"
