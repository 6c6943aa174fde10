"""What every codec shares: the ``Change`` it returns and the readers of JSON fields.

Each reader checks one field of a decoded message and raises ``DecodeError`` naming
the field's path (``updates[0].relationship.resource``) and the value found, so a
dead-lettered message says what to fix. ``from_fields`` builds a tuple from its six
parts, which is how SpiceDB and Debezium spell one.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from leopard.errors import DecodeError, InvalidTuple
from leopard.model.names import RelationTuple, parse_tuple

__all__ = [
    "REQUIRED",
    "Change",
    "Decoded",
    "Op",
    "Rejected",
    "as_object",
    "as_string",
    "either",
    "enum",
    "from_fields",
    "load_json",
    "lookup",
    "member",
    "parse_at",
    "required",
    "show",
    "snake",
    "timestamp",
]

Op = Literal["touch", "delete"]

#: the default of an optional argument that makes a field required
REQUIRED: Any = object()

# A timestamp above this, read as seconds, would lie after the year 5000: it is almost
# surely in milliseconds, and guessing would silently shift every change by 1000x.
_MAX_TS_SECONDS = 1e11
_PREVIEW_BYTES = 80


class Change(NamedTuple):
    """One tuple change: ``touch`` writes the tuple (idempotently), ``delete`` removes it.

    ``ts`` is when the change happened, in seconds since the epoch, if the source says.
    """

    op: Op
    tuple: RelationTuple
    ts: float | None = None


class Rejected(NamedTuple):
    """One bad item of a message whose other items are applied.

    ``item`` is its index in the message, ``reason`` why it was refused (naming its
    path), and ``value`` a message of the same format holding just that item, so
    that the dead letter, once fixed, can be published again as it is.
    """

    item: int
    reason: str
    value: bytes


class Decoded(NamedTuple):
    """What one message holds: its good changes in order, its refused items, and the
    upstream position it brings the stream to (a SpiceDB Watch response's
    ``changesThrough`` ZedToken), if it names one."""

    changes: list[Change]
    rejected: tuple[Rejected, ...] = ()
    through: str | None = None


def load_json(value: bytes) -> dict[str, Any]:
    """The JSON object of a message value."""
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
    except RecursionError:
        raise DecodeError(
            f"the message nests JSON arrays or objects too deeply to read: {_preview(value)}"
        ) from None
    except ValueError as exc:  # an integer of more digits than Python converts, say
        raise DecodeError(
            f"the message is JSON that cannot be read ({exc}): {_preview(value)}"
        ) from None
    if not isinstance(doc, dict):
        raise DecodeError(f"the message is a JSON {_json_type(doc)}; expected an object")
    return doc


def parse_at(where: str, text: str) -> RelationTuple:
    """``parse_tuple`` of the text found at ``where``."""
    try:
        return parse_tuple(text)
    except InvalidTuple as exc:
        raise DecodeError(f"{where}: {exc}") from None


def from_fields(where: str, fields: dict[str, tuple[str, Any]]) -> RelationTuple:
    """Build a tuple from its six parts, given as (path, value), refusing a part that is
    not a string or that smuggles in a separator (a subject id ``"x#member"``)."""
    parts: dict[str, str | None] = {}
    for name, (path, value) in fields.items():
        if name == "subject_relation" and value in (None, "", "..."):
            parts[name] = None  # a plain subject, spelled any of the usual ways
        else:
            parts[name] = as_string(value, path)
    srel = parts["subject_relation"]
    text = (
        f"{parts['resource_type']}:{parts['resource_id']}#{parts['relation']}"
        f"@{parts['subject_type']}:{parts['subject_id']}" + (f"#{srel}" if srel else "")
    )
    t = parse_at(where, text)
    for name, given in parts.items():
        if given != getattr(t, name):
            raise DecodeError(
                f"{fields[name][0]!r} is {show(given)}, which does not fit in a tuple there"
            )
    return t


def member(doc: dict[str, Any], key: str, prefix: str) -> Any:
    """``doc[key]``, which must be present (``prefix`` is the path of ``doc``)."""
    if key not in doc:
        raise DecodeError(f"missing {prefix + key!r}")
    return doc[key]


def either(doc: dict[str, Any], camel: str, snake: str) -> Any:
    """A field under its protobuf-JSON (camelCase) or its proto (snake_case) name."""
    return doc[camel] if camel in doc else doc.get(snake)


def required(doc: dict[str, Any], key: str, where: str) -> Any:
    """``doc[key]``, which must be present and not null."""
    value = doc.get(key)
    if value is None:
        raise DecodeError(f"missing {where + '.' + key!r}")
    return value


def snake(camel: str) -> str:
    """``optionalRelation`` -> ``optional_relation``."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


def as_object(value: Any, where: str) -> dict[str, Any]:
    """``value``, which must be a JSON object."""
    if not isinstance(value, dict):
        raise DecodeError(f"{where!r} is {show(value)}; expected an object")
    return value


def as_string(value: Any, where: str) -> str:
    """``value``, which must be a string."""
    if not isinstance(value, str):
        raise DecodeError(f"{where!r} is {show(value)}; expected a string")
    return value


def lookup(table: dict[str, Op], value: Any, where: str) -> Op:
    """The operation a dialect's name stands for."""
    if not isinstance(value, str) or value not in table:
        names = [repr(k) for k in table]
        expected = ", ".join(names[:-1]) + " or " + names[-1]
        raise DecodeError(f"{where!r} is {show(value)}; expected {expected}")
    return table[value]


def enum(names: dict[str, Op | None], numbers: dict[int, str], value: Any, where: str) -> Op:
    """The operation an enum field stands for, given by name or by number, as protobuf's
    JSON mapping allows both. ``value`` is None when the field is absent: protobuf's
    JSON omits a field at its zero value, so absence means the enum's 0 (for OpenFGA,
    ``TUPLE_OPERATION_WRITE``; for SpiceDB, ``OPERATION_UNSPECIFIED``, refused). A name
    mapped to None is a value the dialect has but Leopard cannot apply."""
    given = value
    if value is None:
        value = numbers[0]
    elif isinstance(value, int) and not isinstance(value, bool) and value in numbers:
        value = numbers[value]
    op = names.get(value) if isinstance(value, str) else None
    if op is None:
        valid = [repr(k) for k, v in names.items() if v is not None]
        expected = ", ".join(valid[:-1]) + " or " + valid[-1]
        if given is None:
            shown = f"absent (protobuf JSON omits the zero value, {numbers[0]})"
        elif given is not value:
            shown = f"{show(given)} ({value})"
        else:
            shown = show(given)
        raise DecodeError(f"{where!r} is {shown}; expected {expected}")
    return op


def timestamp(value: Any, where: str, *, scale: float = 1.0) -> float:
    """Seconds since the epoch from a number (``value / scale``) or an ISO 8601 string.

    A string without a UTC offset is read as UTC.
    """
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise DecodeError(
                f"{where!r} is {show(value)}; expected a number or an ISO 8601 time"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(f"{where!r} is {show(value)}; expected a number or an ISO 8601 time")
    try:
        seconds = value / scale
    except OverflowError:  # an integer beyond any float
        raise DecodeError(f"{where!r} is {show(value)}, too large for a time") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise DecodeError(f"{where!r} is {show(value)}; expected a time after 1970")
    if seconds >= _MAX_TS_SECONDS:
        raise DecodeError(
            f"{where!r} is {show(value)}, too large for seconds since 1970 "
            f"(milliseconds? divide by 1000)"
        )
    return float(seconds)


def show(value: Any) -> str:
    """A short, one-line rendering of a JSON value for a message."""
    try:
        text = repr(value)
    except ValueError:  # an integer of more digits than Python will print
        return f"an integer of {value.bit_length()} bits"
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
