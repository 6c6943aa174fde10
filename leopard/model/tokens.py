"""Version tokens: an opaque string for a change-stream position.

A position maps ``topic:partition`` to the next offset to consume, i.e. everything
before it has been applied. Tokens are handed to callers like Zanzibar's zookies or
SpiceDB's ZedTokens: they may compare and wait for them, never look inside. The
encoding is URL-safe base64 of canonical JSON behind a version prefix, so that it
can change without breaking callers that only pass tokens back.

An index that follows SpiceDB keeps the revision it has applied in its position
(under ``leopard.model.zedtoken.SPICEDB_KEY``), so its tokens carry it, and a
ZedToken SpiceDB returned for a write asks for that revision: ``wanted_position``
reads either kind of token.
"""

from __future__ import annotations

import base64
import binascii
import json

from leopard.errors import InvalidInput
from leopard.model.zedtoken import zedtoken_position

__all__ = ["encode_token", "decode_token", "reached", "wanted_position"]

_PREFIX = "v1."


def encode_token(position: dict[str, int]) -> str:
    body = json.dumps({k: int(v) for k, v in sorted(position.items())}, separators=(",", ":"))
    return _PREFIX + base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_token(token: str) -> dict[str, int]:
    """The position in a token; InvalidInput naming the token when it is not one."""
    if not isinstance(token, str) or not token.startswith(_PREFIX):
        raise InvalidInput(f"{token!r} is not a Leopard version token (expected 'v1.…')")
    body = token[len(_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise InvalidInput(f"{token!r} is not a valid Leopard version token") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in data.items()
    ):
        raise InvalidInput(f"{token!r} is not a valid Leopard version token")
    return data


def wanted_position(token: str) -> dict[str, int]:
    """The position a caller asks for: a Leopard version token's, or a SpiceDB
    ZedToken's revision; InvalidInput naming the token when it is neither."""
    if not isinstance(token, str) or token.startswith(_PREFIX):
        return decode_token(token)
    try:
        return zedtoken_position(token)
    except InvalidInput as exc:
        raise InvalidInput(
            f"{token!r} is neither a Leopard version token (expected 'v1.…') nor a "
            f"SpiceDB ZedToken: {exc}"
        ) from None


def reached(current: dict[str, int], wanted: dict[str, int]) -> bool:
    """Whether ``current`` has applied everything ``wanted`` has."""
    return all(current.get(k, 0) >= v for k, v in wanted.items())
