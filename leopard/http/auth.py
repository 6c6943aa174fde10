"""The bearer-token check: one concern, applied by the app before routing.

With a token configured, every path needs ``Authorization: Bearer <token>``, unknown
paths included, except the public ones (``/healthz`` and ``/readyz``: probes of
orchestrators rarely carry credentials, and those two tell only whether the process
is up and keeping up). A missing or wrong token is a 401 with ``WWW-Authenticate``;
an ``Authorization`` header given more than once is a 400, whatever the values.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from leopard.errors import InvalidInput
from leopard.http.errors import HttpError
from leopard.http.types import Scope

__all__ = ["BearerAuth"]

_MISSING = b'Bearer realm="leopard"'
_INVALID = b'Bearer realm="leopard", error="invalid_token"'


class BearerAuth:
    """``auth(scope)`` returns when the request may pass and raises a 401 otherwise."""

    def __init__(self, token: str, public: Iterable[str] = ()) -> None:
        if not token:
            raise InvalidInput("the bearer token is empty")
        self._token = token.encode()
        self.public = frozenset(public)

    def __call__(self, scope: Scope) -> None:
        if scope["path"] in self.public:
            return
        given = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if given is not None:
                    # Which one would count? A proxy may check one and this server the
                    # other: refused, whatever the values.
                    raise HttpError(
                        400,
                        "invalid_request",
                        "the Authorization header is given more than once; send it once",
                    )
                given = value
        if given is None:
            raise HttpError(
                401,
                "unauthorized",
                "this server needs a bearer token: send 'Authorization: Bearer <token>'",
                headers=[(b"www-authenticate", _MISSING)],
            )
        scheme, _, presented = given.partition(b" ")
        # compare_digest: the time taken must not tell how much of the token matched
        if scheme.lower() != b"bearer" or not hmac.compare_digest(presented.strip(), self._token):
            raise HttpError(
                401,
                "unauthorized",
                "the bearer token is not valid",
                headers=[(b"www-authenticate", _INVALID)],
            )
