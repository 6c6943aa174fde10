"""SpiceDB's change format: a Watch response, ``{"updates": [...], "changesThrough"}``.

Each update is ``{"operation", "relationship": {"resource", "relation", "subject"}}``;
fields come under their protobuf-JSON (camelCase) or proto (snake_case) names, enums
by name or by number. A checkpoint (``isCheckpoint``) holds no update, only the revision
it brings the stream to. A schema-change response (``schemaUpdated``) stops the stream
(``StreamGap``), as it stops ``leopard follow``: an index built before reads the
relationships after it as the old schema did. SpiceDB's HTTP gateway streams
each response as ``{"result": {...}}`` and a failure as ``{"error": {"code",
"message"}}``: the first is unwrapped, the second is a malformed message naming the
error. An update that cannot be applied (caveated, expiring, malformed) is refused on
its own: the others of its response are applied (``Decoded.rejected``).
"""

from __future__ import annotations

import json
from typing import Any

from ingest.codecs.fields import (
    REQUIRED,
    Change,
    Decoded,
    Op,
    Rejected,
    as_object,
    either,
    enum,
    from_fields,
    member,
    required,
    show,
    snake,
)
from leopard.errors import DecodeError, StreamGap
from leopard.model.names import RelationTuple

__all__ = ["decode_spicedb"]

_OPS: dict[str, Op | None] = {
    "OPERATION_UNSPECIFIED": None,
    "OPERATION_CREATE": "touch",
    "OPERATION_TOUCH": "touch",
    "OPERATION_DELETE": "delete",
}
_OP_NUMBERS = dict(enumerate(_OPS))  # the enum's numbers are its order

# gRPC status codes by number, as the gateway's error object gives them
_CODES = (
    "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS "
    "PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE "
    "UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED"
).split()


def decode_spicedb(doc: dict[str, Any], options: dict[str, str]) -> Decoded:
    """The changes of one Watch response, in order, and its refused updates."""
    doc = _unwrap(doc)
    through = _through(doc)
    if doc.get("schemaUpdated", doc.get("schema_updated")) is True:
        raise StreamGap(
            f"the schema changed at revision {through!r}: an index built before no longer "
            "reads relationships as SpiceDB does; rebuild it from SpiceDB (leopard build "
            "--from spicedb:...) and consume on from its revision"
        )
    updates = doc.get("updates")
    if updates is None:
        # Protobuf JSON omits an empty list: a checkpoint response has only the token.
        if through is not None:
            return Decoded([], (), through)
        raise DecodeError("missing 'updates'")
    if not isinstance(updates, list):
        raise DecodeError(f"'updates' is {show(updates)}; expected a list")
    changes: list[Change] = []
    rejected: list[Rejected] = []
    for i, raw in enumerate(updates):
        where = f"updates[{i}]"
        try:
            update = as_object(raw, where)
            op = enum(_OPS, _OP_NUMBERS, update.get("operation"), f"{where}.operation")
            rel = as_object(member(update, "relationship", f"{where}."), f"{where}.relationship")
            changes.append(Change(op, _relationship(rel, f"{where}.relationship")))
        except DecodeError as exc:
            alone: dict[str, Any] = {"updates": [raw]}
            if through is not None:
                alone["changesThrough"] = {"token": through}
            rejected.append(Rejected(i, str(exc), json.dumps(alone).encode()))
    return Decoded(changes, tuple(rejected), through)


def _unwrap(doc: dict[str, Any]) -> dict[str, Any]:
    """The Watch response inside the HTTP gateway's ``result`` wrapper, if any."""
    if "updates" in doc or _through(doc) is not None:
        return doc
    if "result" in doc:
        return as_object(doc["result"], "result")
    if "error" in doc:
        error = doc["error"]
        if isinstance(error, dict):
            code = error.get("code")
            name = _CODES[code] if isinstance(code, int) and 0 <= code < len(_CODES) else None
            status = f"{code} ({name})" if name else show(code)
            raise DecodeError(
                f"the stream reported an error instead of changes: code {status}: "
                f"{show(error.get('message'))}"
            )
        raise DecodeError(f"the stream reported an error instead of changes: {show(error)}")
    return doc


def _through(doc: dict[str, Any]) -> str | None:
    """The ZedToken text of ``changesThrough``, if the response has one."""
    token = either(doc, "changesThrough", "changes_through")
    if token is None:
        return None
    token = as_object(token, "changesThrough")
    text = token.get("token")
    if not isinstance(text, str):
        raise DecodeError(f"'changesThrough.token' is {show(text)}; expected a string")
    return text


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
