"""Every exception Leopard raises, and the one table that maps them to HTTP statuses.

Every error the library raises on purpose derives from one root, so callers can
catch ``LeopardError`` and know the message is meant for a person::

    LeopardError
    ├── InvalidTuple        a relation tuple, subject or group name is malformed
    ├── InvalidConfig       the set configuration is malformed
    │   └── InvalidSchema   a SpiceDB or OpenFGA schema is malformed or refused
    ├── InvalidInput        a snapshot file, argument or request is unusable
    │   └── DecodeError     a change message cannot be decoded (it goes to the DLQ)
    ├── IndexNotFound       no index at the given path
    ├── StaleIndex          the index has not applied a demanded version in time
    ├── StorageError        RocksDB refused or failed an operation
    ├── BrokerError         the Kafka broker cannot be reached or refused a request
    │   └── UpstreamError   the followed SpiceDB or OpenFGA cannot be reached or refused
    │       └── UpstreamGap the upstream no longer has the changes after the index's revision
    ├── StreamGap           a bridged change stream starts after the index's revision
    └── ServiceError        the HTTP service failed or could not be reached (client side)
        ├── Unauthorized    the service wants a bearer token, or refused the one given
        └── ShardUnavailable a shard server of a sharded index cannot be reached

Errors of rocksdict and kafka-python are re-raised as these at the boundary, once
(``leopard.store.rocks.rocks_errors``, ``ingest.kafka``), so their types never leak
to callers.

``HTTP_ERRORS`` is the one mapping from an error class to the HTTP status and the
error code of the JSON body (``{"error": code, "detail": message}``). The server
finds the entry of an exception by walking its class hierarchy (a subclass answers
as its nearest listed ancestor); the client inverts the table, turning the code of
an answer back into the class, so both sides raise the same exceptions.
"""

from __future__ import annotations

__all__ = [
    "LeopardError",
    "InvalidTuple",
    "InvalidConfig",
    "InvalidSchema",
    "InvalidInput",
    "DecodeError",
    "IndexNotFound",
    "StaleIndex",
    "StorageError",
    "BrokerError",
    "UpstreamError",
    "UpstreamGap",
    "StreamGap",
    "ServiceError",
    "Unauthorized",
    "ShardUnavailable",
    "HTTP_ERRORS",
    "http_status",
    "error_for_code",
]


class LeopardError(Exception):
    """Root of every error Leopard raises on purpose."""


class InvalidTuple(LeopardError, ValueError):
    """A relation tuple, subject or group name does not parse."""


class InvalidConfig(LeopardError, ValueError):
    """The set configuration is malformed; the message names the key."""


class InvalidSchema(InvalidConfig):
    """A SpiceDB or OpenFGA schema is malformed, refers to what it does not define, or
    uses what Leopard does not support.

    The message names the file, the line (and column when known) and what is wrong.
    """


class InvalidInput(LeopardError, ValueError):
    """A file, event or argument cannot be used; the message names where it came from."""


class DecodeError(InvalidInput):
    """A change message cannot be decoded; the message says what is wrong with it."""


class IndexNotFound(LeopardError):
    """There is no Leopard index at the given path."""


class StaleIndex(LeopardError):
    """The index has not applied the demanded version within the allowed wait.

    ``current`` holds the token of the version the index has reached.
    """

    def __init__(self, message: str, current: str | None = None) -> None:
        super().__init__(message)
        self.current = current


class StorageError(LeopardError):
    """RocksDB failed or refused an operation, or the index on disk is damaged."""


class BrokerError(LeopardError):
    """The Kafka broker could not be found, started, reached or asked to do something."""


class UpstreamError(BrokerError):
    """The SpiceDB or OpenFGA an index follows (instead of a Kafka topic) cannot be
    reached, or refused a request; a change source like a broker, hence the parent."""


class UpstreamGap(UpstreamError):
    """The upstream no longer serves the changes after the index's revision (older than
    its watch window, or its schema changed): the index must be rebuilt from it."""


class StreamGap(LeopardError):
    """The change stream starts after what the index has applied: changes between were
    never published (a bridge started at a later revision than the index's), so the
    consumer stops rather than go on without them."""


class ServiceError(LeopardError):
    """The service could not be reached, or failed in a way that is not about the input.

    ``status`` is the HTTP status (None when there was no answer) and ``code`` the
    error code of the answer's body, if any.
    """

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Unauthorized(ServiceError, PermissionError):
    """The service wants a bearer token (HTTP 401), or refused the one given."""


class ShardUnavailable(ServiceError):
    """A shard server of a sharded index did not answer (the router's 503, or the sharded
    client's error); the message names the shard and its URL."""

    def __init__(self, message: str, status: int | None = 503, code: str | None = None) -> None:
        super().__init__(message, status, code or "shard_unavailable")


#: error class -> (HTTP status, error code); see the module docstring
HTTP_ERRORS: dict[type[LeopardError], tuple[int, str]] = {
    InvalidTuple: (400, "invalid_tuple"),
    InvalidInput: (400, "invalid_input"),
    InvalidConfig: (400, "invalid_input"),
    Unauthorized: (401, "unauthorized"),
    IndexNotFound: (503, "index_not_found"),
    StorageError: (503, "storage_error"),
    BrokerError: (503, "broker_error"),
    StaleIndex: (503, "stale"),
    ShardUnavailable: (503, "shard_unavailable"),
    ServiceError: (500, "internal"),
}

_BY_CODE: dict[str, type[LeopardError]] = {}
for _cls, (_status, _code) in HTTP_ERRORS.items():
    _BY_CODE.setdefault(_code, _cls)


def http_status(exc: BaseException) -> tuple[int, str] | None:
    """The status and error code of an exception, or None when it is not ours."""
    for cls in type(exc).__mro__:
        found = HTTP_ERRORS.get(cls)  # type: ignore[call-overload]
        if found is not None:
            return found
    return None


def error_for_code(code: str | None) -> type[LeopardError] | None:
    """The class an answer's error code stands for (the table inverted)."""
    return _BY_CODE.get(code) if code else None
