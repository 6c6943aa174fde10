"""Error answers: ``HttpError`` for what the app refuses itself, and every other
exception turned into a status and a JSON body by the one table in ``leopard.errors``.

A ``LeopardError`` answers with the status and code ``HTTP_ERRORS`` gives its class
(the nearest listed ancestor, found by ``http_status``) and its own message, which is
written for a person: a bad name is a 400 naming it, a version not reached in time a
503 with the version reached, a failing store a 503 saying what failed. Anything
else is a fault of the server: a 500 whose detail stays in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from leopard.errors import StaleIndex, http_status
from leopard.http.schemas import ErrorBody

__all__ = ["ClientGone", "HttpError", "error_answer", "error_body"]

log = logging.getLogger("leopard.http")

Headers = list[tuple[bytes, bytes]]


class HttpError(Exception):
    """An answer other than 200, raised by a handler or the dispatcher."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        token: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.token = token
        self.headers = list(headers)


class ClientGone(Exception):
    """The client disconnected before its request was read: nobody to answer."""


def error_body(code: str, detail: str, token: str | None = None) -> bytes:
    """The JSON of ``ErrorBody``; ``token`` only when there is one."""
    body = ErrorBody(error=code, detail=detail, token=token)
    return body.model_dump_json(exclude_none=True).encode()


def error_answer(exc: Exception, method: str, path: str) -> tuple[int, bytes, Headers]:
    """The status, body and extra headers answering ``exc`` raised for ``method path``."""
    if isinstance(exc, HttpError):
        return exc.status, error_body(exc.code, exc.detail, exc.token), exc.headers
    found = http_status(exc)
    if found is None:
        # Everything a client can send is answered above; this is our fault.
        log.error("internal error answering %s %s", method, path, exc_info=exc)
        return 500, error_body("internal", "internal server error (logged)"), []
    status, code = found
    token = None
    if isinstance(exc, StaleIndex):
        token = exc.current  # the version reached, so the client knows how far it got
    elif status >= 500:
        _log_once(exc, method, path)
    return status, error_body(code, str(exc), token), []


_LOGGED: dict[str, int] = {}  # message -> times seen since it was last logged in full
_LOG_EVERY = 1000


def _log_once(exc: Exception, method: str, path: str) -> None:
    """Log a failure of ours in full the first time its message is seen, then one line
    every ``_LOG_EVERY`` times: a damaged index fails every query the same way, and a
    traceback per request would bury everything else in the log."""
    message = str(exc)
    seen = _LOGGED.get(message, 0)
    if len(_LOGGED) > 10_000:
        _LOGGED.clear()
    _LOGGED[message] = seen + 1
    if seen == 0:
        log.error("%s %s failed: %s", method, path, exc, exc_info=exc)
    elif seen % _LOG_EVERY == 0:
        log.error("%s %s failed (%d times so far): %s", method, path, seen + 1, exc)
