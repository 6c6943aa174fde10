"""What the handlers of the peer faces read and return: the request as they see it, a
``Reply``, and the body read and validated into a model.

The faces (``leopard.http.openfga``, ``leopard.http.authzen``) know no web framework:
``leopard.http.peers`` routes to them and sends their ``Reply``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from leopard.http.errors import HttpError
from leopard.http.parsing import describe, read_body
from leopard.http.types import Receive, Scope

__all__ = ["PeerRequest", "Reply", "parse_body"]

M = TypeVar("M", bound=BaseModel)
Headers = list[tuple[bytes, bytes]]


@dataclass
class PeerRequest:
    """A request routed to a face: the ASGI scope and receive, and the path parameters."""

    scope: Scope
    receive: Receive
    params: dict[str, str]
    max_body: int
    _body: bytes | None = None

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    def header(self, name: bytes) -> bytes | None:
        """The value of a header (the first, if repeated), or None."""
        for key, value in self.scope["headers"]:
            if key == name:
                return bytes(value)
        return None

    async def body(self) -> bytes:
        """The whole body, within the server's limit (413 beyond it)."""
        if self._body is None:
            self._body = await read_body(self.scope, self.receive, self.max_body)
        return self._body


@dataclass
class Reply:
    """An answer: its status, body (bytes, or chunks to stream) and content type."""

    status: int
    body: bytes | AsyncIterator[bytes]
    content_type: str = "application/json"
    headers: Headers = field(default_factory=list)

    @classmethod
    def of(cls, model: BaseModel, status: int = 200) -> Reply:
        """The JSON of ``model``, leaving out what is unset (None)."""
        return cls(status, model.model_dump_json(exclude_none=True).encode())


def parse_body(raw: bytes, model: type[M]) -> M:
    """``raw`` validated as ``model``; HttpError 400 naming what is wrong."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if not raw.strip():
            detail = "the body is empty; a JSON object is expected"
        elif (parsed := _json(raw)) is not _INVALID and not isinstance(parsed, dict):
            detail = f"the body must be a JSON object, not {type(parsed).__name__}"
        else:
            detail = describe(exc, model, "body")
        raise HttpError(400, "invalid_request", detail) from None


_INVALID: Any = object()


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return _INVALID
