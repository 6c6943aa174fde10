"""Reading a request: the query string, the body within its limit, and validation into
the models of ``leopard.http.schemas``, with a message naming each bad value.

Two shortcuts serve the hot paths, and each accepts nothing the models would refuse:
``parse_query`` decodes only what is escaped, and ``check_batch_fast`` reads the common
shape of a ``POST /v1/check`` body without building a pydantic object per check.
"""

from __future__ import annotations

import itertools
import operator
from typing import Any
from urllib.parse import unquote_plus

import pydantic_core
from pydantic import BaseModel, ValidationError

from leopard.http import schemas as S
from leopard.http.errors import ClientGone, HttpError
from leopard.http.types import Receive, Scope

__all__ = [
    "batch_within",
    "MAX_QUERY_BYTES",
    "check_batch",
    "check_batch_fast",
    "describe",
    "parse_query",
    "query",
    "query_params",
    "read_body",
    "validate",
]

#: a query string longer than this is refused (414): two names of at most 1 KiB
#: each, percent-encoded, plus a token fit with room to spare
MAX_QUERY_BYTES = 16 << 10


def query(scope: Scope, model: type[BaseModel]) -> Any:
    """The query string of ``scope`` validated as ``model``."""
    return validate(query_params(scope), model)


def validate(params: dict[str, str], model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise HttpError(400, "invalid_request", describe(exc, model, "query")) from None


def query_params(scope: Scope) -> dict[str, str]:
    """The query string as a dict; 414 when too long, 400 when not UTF-8."""
    raw: bytes = scope.get("query_string", b"")
    if len(raw) > MAX_QUERY_BYTES:
        raise HttpError(
            414,
            "uri_too_long",
            f"the query string is {len(raw):,} bytes; at most {MAX_QUERY_BYTES:,} are accepted",
        )
    try:
        return parse_query(raw)
    except UnicodeDecodeError as exc:
        raise HttpError(
            400, "invalid_request", f"the query string is not valid UTF-8 ({exc.reason})"
        ) from None


def parse_query(raw: bytes) -> dict[str, str]:
    """``a=1&b=x%3Ay`` as a dict; HttpError for a repeated name.

    Not ``urllib.parse.parse_qsl``: this is on the path of every check, and only
    decoding what is actually escaped takes a third of the time.
    """
    params: dict[str, str] = {}
    if not raw:
        return params
    for part in raw.decode().split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if "%" in key or "+" in key:
            key = unquote_plus(key, errors="strict")
        if "%" in value:
            # Names escape ':' and '#' (the other characters of a name need none); an
            # escape left after those is decoded in full, from the original.
            plain = value.replace("%3A", ":").replace("%23", "#").replace("%3a", ":")
            value = (
                plain
                if "%" not in plain and "+" not in plain
                else unquote_plus(value, errors="strict")
            )
        elif "+" in value:
            value = unquote_plus(value, errors="strict")
        if key in params:
            raise HttpError(400, "invalid_request", f"query parameter {key!r} is given twice")
        params[key] = value
    return params


async def read_body(scope: Scope, receive: Receive, max_body: int) -> bytes:
    """The whole body; 413 beyond ``max_body`` bytes, declared or counted as it comes."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > max_body:
                raise HttpError(
                    413,
                    "body_too_large",
                    f"the body is {int(value):,} bytes; at most {max_body:,} are accepted",
                )
            break
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            raise HttpError(413, "body_too_large", f"the body exceeds {max_body:,} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def batch_within(pairs: list[tuple[str, str]], max_batch: int) -> None:
    """413 when a batch holds more checks than ``max_batch``."""
    if len(pairs) > max_batch:
        raise HttpError(
            413,
            "batch_too_large",
            f"{len(pairs):,} checks in one request; at most {max_batch:,} "
            "are accepted (split the batch)",
        )


def check_batch(raw: bytes) -> tuple[list[tuple[str, str]], S.Freshness]:
    """The pairs and freshness of a ``POST /v1/check`` body; 400 naming what is wrong."""
    parsed = check_batch_fast(raw)
    if parsed is not None:
        return parsed
    try:
        req = S.CheckBatchRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise HttpError(
            400, "invalid_request", describe(exc, S.CheckBatchRequest, "body")
        ) from None
    return [(c.subject, c.group) for c in req.checks], req


_NO_FRESHNESS = S.Freshness.model_validate({})
_PAIR = operator.itemgetter("subject", "group")


def check_batch_fast(raw: bytes) -> tuple[list[tuple[str, str]], S.Freshness] | None:
    """The pairs and freshness of a well-formed ``POST /v1/check`` body, or None.

    Building a pydantic object per check costs more than answering it, so the common
    shape (an object whose ``checks`` are objects of exactly two non-empty strings)
    is read here with C-level passes. Anything else returns None and goes through
    ``CheckBatchRequest``, the model the OpenAPI document is made from, which accepts
    it or names what is wrong; this path accepts nothing the model would refuse.
    """
    try:
        body = pydantic_core.from_json(raw)
        checks = body["checks"]
        if type(checks) is not list:
            return None
        pairs = list(map(_PAIR, checks))  # KeyError / TypeError: not the common shape
    except (ValueError, KeyError, TypeError):
        return None
    if checks:
        if set(map(len, checks)) != {2}:
            return None  # a check with a field besides subject and group
        names = list(itertools.chain.from_iterable(pairs))
        if set(map(type, names)) != {str} or min(map(len, names)) == 0:
            return None
    fresh = _NO_FRESHNESS
    if len(body) > 1:
        rest = {k: v for k, v in body.items() if k != "checks"}
        try:
            fresh = S.Freshness.model_validate(rest)
        except ValidationError:
            return None
    return pairs, fresh


def describe(exc: ValidationError, model: type[BaseModel], where: str) -> str:
    """A validation error as one line naming each bad parameter or field and its value."""
    parts = []
    errors = exc.errors(include_url=False)
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err["loc"])
        kind = err["type"]
        if kind == "json_invalid":
            parts.append(f"the body is not valid JSON: {err['msg'].removeprefix('Invalid JSON: ')}")
        elif kind == "extra_forbidden":
            known = ", ".join(model.model_fields)
            parts.append(f"{where} has an unknown field {loc!r} (known: {known})")
        elif kind == "missing":
            parts.append(f"{where} field {loc!r} is missing")
        elif not loc:
            parts.append(f"{where}: {err['msg']}")
        else:
            shown = repr(err["input"])
            if len(shown) > 80:
                shown = shown[:77] + "..."
            parts.append(f"{where} field {loc!r} = {shown}: {err['msg']}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return "; ".join(parts)
