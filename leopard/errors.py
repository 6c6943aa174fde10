"""The exceptions Leopard raises.

Every error the library raises on purpose derives from one root, so callers can
catch ``LeopardError`` and know the message is meant for a person::

    LeopardError
    ├── InvalidTuple      a relation tuple, subject or group name is malformed
    ├── InvalidConfig     the set configuration is malformed
    ├── InvalidInput      a snapshot file, change event or argument is unusable
    ├── IndexNotFound     no index at the given path
    ├── StaleIndex        the index has not applied a demanded version in time
    └── StorageError      RocksDB refused or failed an operation

Errors of rocksdict and kafka-python are re-raised as these at the boundary
(``raise StorageError(msg) from exc``) so their types never leak to callers.
"""

from __future__ import annotations

__all__ = [
    "LeopardError",
    "InvalidTuple",
    "InvalidConfig",
    "InvalidInput",
    "IndexNotFound",
    "StaleIndex",
    "StorageError",
]


class LeopardError(Exception):
    """Root of every error Leopard raises on purpose."""


class InvalidTuple(LeopardError, ValueError):
    """A relation tuple, subject or group name does not parse."""


class InvalidConfig(LeopardError, ValueError):
    """The set configuration is malformed; the message names the key."""


class InvalidInput(LeopardError, ValueError):
    """A file, event or argument cannot be used; the message names where it came from."""


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
    """RocksDB failed or refused an operation."""
