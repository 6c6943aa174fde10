"""SpiceDB's change format: a Watch response, ``{"updates": [...], "changesThrough"}``.

Each update is ``{"operation", "relationship": {"resource", "relation", "subject"}}``;
fields come under their protobuf-JSON (camelCase) or proto (snake_case) names. A
checkpoint response (no updates) holds no change. Caveated and expiring
relationships are refused.
"""

from __future__ import annotations

from typing import Any

from ingest.codecs.fields import (
    REQUIRED,
    Change,
    Op,
    as_object,
    either,
    from_fields,
    lookup,
    member,
    required,
    show,
    snake,
)
from leopard.errors import DecodeError
from leopard.model.names import RelationTuple

__all__ = ["decode_spicedb"]

_OPS: dict[str, Op] = {
    "OPERATION_CREATE": "touch",
    "OPERATION_TOUCH": "touch",
    "OPERATION_DELETE": "delete",
}


def decode_spicedb(doc: dict[str, Any], options: dict[str, str]) -> list[Change]:
    """The changes of one Watch response, in order."""
    updates = doc.get("updates")
    if updates is None:
        # Protobuf JSON omits an empty list: a checkpoint response has only the token.
        if either(doc, "changesThrough", "changes_through") is not None:
            return []
        raise DecodeError("missing 'updates'")
    if not isinstance(updates, list):
        raise DecodeError(f"'updates' is {show(updates)}; expected a list")
    changes = []
    for i, raw in enumerate(updates):
        where = f"updates[{i}]"
        update = as_object(raw, where)
        op = lookup(_OPS, member(update, "operation", f"{where}."), f"{where}.operation")
        rel = as_object(member(update, "relationship", f"{where}."), f"{where}.relationship")
        changes.append(Change(op, _relationship(rel, f"{where}.relationship")))
    return changes


def _relationship(rel: dict[str, Any], where: str) -> RelationTuple:
    for camel, snake_name, what in (
        ("optionalCaveat", "optional_caveat", "a caveat"),
        ("optionalExpiresAt", "optional_expires_at", "an expiration"),
    ):
        extra = either(rel, camel, snake_name)
        if extra:
            raise DecodeError(
                f"{where} has {what} ({show(extra)}); caveated and expiring "
                "relationships are not supported"
            )
    resource = as_object(required(rel, "resource", where), f"{where}.resource")
    subject = as_object(required(rel, "subject", where), f"{where}.subject")
    sobj = as_object(required(subject, "object", f"{where}.subject"), f"{where}.subject.object")
    fields: dict[str, tuple[str, Any]] = {
        "resource_type": _field(resource, "objectType", f"{where}.resource"),
        "resource_id": _field(resource, "objectId", f"{where}.resource"),
        "relation": (f"{where}.relation", required(rel, "relation", where)),
        "subject_type": _field(sobj, "objectType", f"{where}.subject.object"),
        "subject_id": _field(sobj, "objectId", f"{where}.subject.object"),
        "subject_relation": _field(subject, "optionalRelation", f"{where}.subject", None),
    }
    return from_fields(where, fields)


def _field(obj: dict[str, Any], camel: str, where: str, default: Any = REQUIRED) -> tuple[str, Any]:
    """(path, value) of a field under its camelCase or snake_case name."""
    snake_name = snake(camel)
    value = either(obj, camel, snake_name)
    if value is None and default is REQUIRED:
        raise DecodeError(f"missing {where + '.' + camel!r} (or {snake_name!r})")
    return f"{where}.{camel if camel in obj else snake_name}", value
