"""OpenFGA's change format: one ReadChanges item, or a whole response page.

An item is ``{"tuple_key": {"user", "relation", "object"}, "operation", "timestamp"}``;
a page is ``{"changes": [item, ...], "continuation_token"}``. OpenFGA's protos name
these JSON fields in snake_case; a bridge that spells them in camelCase
(``tupleKey``) is read too. ``operation`` comes by name or by number, and protobuf's
JSON mapping omits it at its zero value, ``TUPLE_OPERATION_WRITE``: an item without
one is a write. The tuple key is read by the one grammar's ``parse_openfga``.
Conditional relationships are refused; in a page, such an item (or a malformed one)
is refused alone and the others applied (``Decoded.rejected``).
"""

from __future__ import annotations

import json
from typing import Any

from ingest.codecs.fields import (
    Change,
    Decoded,
    Op,
    Rejected,
    as_object,
    as_string,
    either,
    enum,
    member,
    show,
    timestamp,
)
from leopard.errors import DecodeError, InvalidTuple
from leopard.model.names import parse_openfga

__all__ = ["decode_openfga"]

_OPS: dict[str, Op | None] = {
    "TUPLE_OPERATION_WRITE": "touch",
    "TUPLE_OPERATION_DELETE": "delete",
}
_OP_NUMBERS = {0: "TUPLE_OPERATION_WRITE", 1: "TUPLE_OPERATION_DELETE"}


def decode_openfga(doc: dict[str, Any], options: dict[str, str]) -> Decoded:
    """The changes of one ReadChanges item or response page, in order."""
    if either(doc, "tuple_key", "tupleKey") is None and isinstance(doc.get("changes"), list):
        changes: list[Change] = []
        rejected: list[Rejected] = []
        for i, item in enumerate(doc["changes"]):
            try:
                changes.append(_change(as_object(item, f"changes[{i}]"), f"changes[{i}]."))
            except DecodeError as exc:
                rejected.append(Rejected(i, str(exc), json.dumps(item).encode()))
        return Decoded(changes, tuple(rejected))
    return Decoded([_change(doc, "")])


def _change(doc: dict[str, Any], where: str) -> Change:
    name = "tuple_key" if "tuple_key" in doc or "tupleKey" not in doc else "tupleKey"
    key = as_object(member(doc, name, where), f"{where}{name}")
    if key.get("condition"):
        raise DecodeError(
            f"{where}{name} has the condition {show(key['condition'])}; "
            "conditional relationships are not supported"
        )
    user = as_string(member(key, "user", f"{where}{name}."), f"{where}{name}.user")
    relation = as_string(member(key, "relation", f"{where}{name}."), f"{where}{name}.relation")
    obj = as_string(member(key, "object", f"{where}{name}."), f"{where}{name}.object")
    op = enum(_OPS, _OP_NUMBERS, doc.get("operation"), f"{where}operation")
    ts = doc.get("timestamp")
    try:
        t = parse_openfga(user, relation, obj)
    except InvalidTuple as exc:
        raise DecodeError(f"{where}{name}: {exc}") from None
    return Change(op, t, None if ts is None else timestamp(ts, f"{where}timestamp"))
