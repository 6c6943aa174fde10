"""Leopard's own change format: ``{"op": "touch" | "delete", "tuple": "...", "ts": ...}``.

``ts`` (seconds since the epoch, or an ISO 8601 time) is optional. ``encode_native``
writes the format and ``message_key`` the Kafka key that keeps the changes of one tuple
in one partition, in order.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ingest.codecs.fields import Change, Decoded, as_string, member, parse_at, show, timestamp
from leopard.errors import DecodeError, InvalidTuple
from leopard.model.names import RelationTuple, format_tuple, parse_tuple

__all__ = ["decode_native", "decode_plain", "encode_native", "message_key"]

# The native event exactly as ``encode_native`` writes it without a timestamp: read
# without a JSON parse. The tuple text holds no escape, quote or control character
# (JSON would have escaped those), so its bytes are the string; anything else, and a
# tuple that does not parse, takes the general path and its precise error.
_NATIVE_PLAIN = re.compile(rb'\{"op":"(touch|delete)","tuple":"([^"\\\x00-\x1f]*)"\}')
_OP = {b"touch": "touch", b"delete": "delete"}
_new = tuple.__new__


def decode_plain(value: bytes) -> list[Change] | None:
    """The change of a message in the plain form ``encode_native`` writes, or None to
    take the general path (``decode_native`` of its JSON)."""
    m = _NATIVE_PLAIN.fullmatch(value)
    if m is None:
        return None
    try:
        t = parse_tuple(m[2].decode())
    except (UnicodeDecodeError, InvalidTuple):
        return None
    # Change(op, t), made as its tuple is (its generated __new__ is a Python call)
    return [_new(Change, (_OP[m[1]], t, None))]


def decode_native(doc: dict[str, Any], options: dict[str, str]) -> Decoded:
    """The change of one native event."""
    op = member(doc, "op", "")
    if op not in ("touch", "delete"):
        raise DecodeError(f"'op' is {show(op)}; expected 'touch' or 'delete'")
    text = as_string(member(doc, "tuple", ""), "tuple")
    ts = doc.get("ts")
    return Decoded(
        [Change(op, parse_at("tuple", text), None if ts is None else timestamp(ts, "ts"))]
    )


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
