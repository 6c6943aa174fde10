"""Leopard: a group membership index after the Leopard subsystem of Zanzibar."""

from __future__ import annotations

from leopard.errors import (
    IndexNotFound,
    InvalidConfig,
    InvalidInput,
    InvalidTuple,
    LeopardError,
    StaleIndex,
    StorageError,
)

__all__ = [
    "IndexNotFound",
    "InvalidConfig",
    "InvalidInput",
    "InvalidTuple",
    "LeopardError",
    "StaleIndex",
    "StorageError",
]
