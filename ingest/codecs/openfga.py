"""OpenFGA's change format: one ReadChanges item, or a whole response page.

An item is ``{"tuple_key": {"user", "relation", "object"}, "operation", "timestamp"}``;
a page is ``{"changes": [item, ...]}``. The tuple key is read by the one grammar's
``parse_openfga``. Conditional relationships are refused.
"""

from __future__ import annotations

from typing import Any

from ingest.codecs.fields import Change, Op, as_object, as_string, lookup, member, show, timestamp
from leopard.errors import DecodeError, InvalidTuple
from leopard.model.names import parse_openfga

__all__ = ["decode_openfga"]

_OPS: dict[str, Op] = {"TUPLE_OPERATION_WRITE": "touch", "TUPLE_OPERATION_DELETE": "delete"}


def decode_openfga(doc: dict[str, Any], options: dict[str, str]) -> list[Change]:
    """The changes of one ReadChanges item or response page, in order."""
    if "tuple_key" not in doc and isinstance(doc.get("changes"), list):
        return [
            _change(as_object(item, f"changes[{i}]"), f"changes[{i}].")
            for i, item in enumerate(doc["changes"])
        ]
    return [_change(doc, "")]


def _change(doc: dict[str, Any], where: str) -> Change:
    key = as_object(member(doc, "tuple_key", where), f"{where}tuple_key")
    if key.get("condition"):
        raise DecodeError(
            f"{where}tuple_key has the condition {show(key['condition'])}; "
            "conditional relationships are not supported"
        )
    user = as_string(member(key, "user", f"{where}tuple_key."), f"{where}tuple_key.user")
    relation = as_string(
        member(key, "relation", f"{where}tuple_key."), f"{where}tuple_key.relation"
    )
    obj = as_string(member(key, "object", f"{where}tuple_key."), f"{where}tuple_key.object")
    op = lookup(_OPS, member(doc, "operation", where), f"{where}operation")
    ts = doc.get("timestamp")
    try:
        t = parse_openfga(user, relation, obj)
    except InvalidTuple as exc:
        raise DecodeError(f"{where}tuple_key: {exc}") from None
    return Change(op, t, None if ts is None else timestamp(ts, f"{where}timestamp"))
