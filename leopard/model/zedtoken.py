"""SpiceDB's ZedTokens: the one place that looks inside them.

A ZedToken is opaque to SpiceDB's clients, but a follower must order them: the token
of a write names the revision the write landed at, and the index has applied it once
it has applied the Watch stream through that revision. SpiceDB encodes a token as
standard base64 of a small protobuf message (its ``impl.v1.DecodedZedToken``)::

    DecodedZedToken { oneof { V1Zookie deprecated_v1_zookie = 2; V1ZedToken v1 = 3; } }
    V1Zookie        { uint64 revision = 1; }
    V1ZedToken      { string revision = 1; string datastore_unique_id_prefix = 2;
                      bytes schema_hash = 3; }

The revision is the datastore's own text. The memory, MySQL and Spanner datastores
write an integer (nanoseconds, or a transaction id), CockroachDB a hybrid logical
clock ``<nanoseconds>.<10-digit logical clock>``; those are totally ordered, and
``revision_number`` turns them into one integer that keeps their order (an HLC as
``nanoseconds * 10**10 + logical``, which is never compared with an integer kind: one
upstream has one datastore). PostgreSQL's revisions are snapshots (base64 of a
protobuf of xmin, xmax and in-progress ids), only partly ordered: they are refused,
saying so.

The decoder is written here from the message definition above; it reads protobuf's
wire format (varints and length-delimited fields) and skips fields it does not know,
as protobuf does.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import NamedTuple

from leopard.errors import InvalidInput

__all__ = [
    "OPENFGA_KEY",
    "SPICEDB_KEY",
    "ZedToken",
    "decode_zedtoken",
    "encode_zedtoken",
    "revision_number",
    "zedtoken_position",
]

#: the position key under which an index keeps the SpiceDB revision it has applied
SPICEDB_KEY = "spicedb"
#: the index's position and source-state section of a followed OpenFGA store
OPENFGA_KEY = "openfga"

_INTEGER = re.compile(r"[0-9]{1,20}")
_HLC = re.compile(r"([0-9]{1,19})\.([0-9]{1,10})")
_HLC_LOGICAL_DIGITS = 10


class ZedToken(NamedTuple):
    """What a ZedToken holds: the revision text, and (v1 tokens) the first bytes of
    the datastore's unique id and the schema's hash, both possibly empty."""

    revision: str
    datastore_prefix: str = ""
    schema_hash: bytes = b""


def decode_zedtoken(token: str) -> ZedToken:
    """The content of a ZedToken's text; InvalidInput naming it when it is not one."""
    if not isinstance(token, str) or not token:
        raise InvalidInput(f"{token!r} is not a SpiceDB ZedToken (expected base64 text)")
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{token!r} is not a SpiceDB ZedToken (not base64)") from None
    try:
        fields = _fields(raw)
        found: ZedToken | None = None
        for number, value in fields:
            if number == 2 and isinstance(value, bytes):  # V1Zookie (deprecated)
                rev = [v for n, v in _fields(value) if n == 1 and isinstance(v, int)]
                found = ZedToken(str(rev[-1] if rev else 0))
            elif number == 3 and isinstance(value, bytes):  # V1ZedToken
                found = _v1(value)
    except ValueError as exc:
        raise InvalidInput(f"{token!r} is not a SpiceDB ZedToken ({exc})") from None
    if found is None or not found.revision:
        raise InvalidInput(f"{token!r} is not a SpiceDB ZedToken (it holds no revision)")
    return found


def encode_zedtoken(revision: str, datastore_prefix: str = "", schema_hash: bytes = b"") -> str:
    """The ZedToken text SpiceDB writes for ``revision`` (a v1 token)."""
    body = _string(1, revision.encode())
    if datastore_prefix:
        body += _string(2, datastore_prefix.encode())
    if schema_hash:
        body += _string(3, schema_hash)
    return base64.b64encode(_string(3, body)).decode()


def revision_number(revision: str) -> int:
    """One integer per revision, in the datastore's order (see the module's docstring);
    InvalidInput for a revision that cannot be ordered so."""
    if _INTEGER.fullmatch(revision):
        return int(revision)
    m = _HLC.fullmatch(revision)
    if m:
        logical = int(m[2].ljust(_HLC_LOGICAL_DIGITS, "0"))
        return int(m[1]) * 10**_HLC_LOGICAL_DIGITS + logical
    raise InvalidInput(
        f"SpiceDB revision {revision!r} is neither an integer (memory, MySQL or Spanner "
        "datastore) nor a hybrid logical clock (CockroachDB); PostgreSQL's snapshot "
        "revisions are only partly ordered and cannot be followed"
    )


def zedtoken_position(token: str) -> dict[str, int]:
    """The index position a ZedToken asks for: its revision under ``SPICEDB_KEY``."""
    return {SPICEDB_KEY: revision_number(decode_zedtoken(token).revision)}


# -- the wire format -----------------------------------------------------------------


def _v1(raw: bytes) -> ZedToken:
    revision, prefix, schema_hash = "", "", b""
    for number, value in _fields(raw):
        if not isinstance(value, bytes):
            continue
        if number == 1:
            revision = _text(value)
        elif number == 2:
            prefix = _text(value)
        elif number == 3:
            schema_hash = value
    return ZedToken(revision, prefix, schema_hash)


def _text(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise ValueError("a revision that is not UTF-8") from None


def _fields(raw: bytes) -> list[tuple[int, int | bytes]]:
    """``(field number, value)`` of a message: an int for a varint or fixed field, the
    bytes of a length-delimited one."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(raw):
        key, i = _varint(raw, i)
        number, kind = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if kind == 0:
            value, i = _varint(raw, i)
            out.append((number, value))
        elif kind == 2:
            size, i = _varint(raw, i)
            if i + size > len(raw):
                raise ValueError("a field runs past the end")
            out.append((number, raw[i : i + size]))
            i += size
        elif kind in (1, 5):
            width = 8 if kind == 1 else 4
            if i + width > len(raw):
                raise ValueError("a field runs past the end")
            out.append((number, int.from_bytes(raw[i : i + width], "little")))
            i += width
        else:
            raise ValueError(f"wire type {kind} is not protobuf's")
    return out


def _varint(raw: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(raw) or shift > 63:
            raise ValueError("a truncated or overlong varint")
        byte = raw[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _string(number: int, value: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(value)) + value


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
