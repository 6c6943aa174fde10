"""Leopard: a group membership index after the Leopard subsystem of Zanzibar.

``s`` is in ``g`` exactly when ``MEMBER2GROUP(s) ∩ GROUP2GROUP(g) ≠ ∅``: nested
groups are precomputed into roaring bitmaps so a check is one intersection::

    import leopard
    leopard.build_index(["org.txt"], "./idx")
    with leopard.open_index("./idx") as ix:
        ix.check("user:alice", "group:eng")
"""

from __future__ import annotations

from leopard.api import build_index, open_index
from leopard.build import BuildReport
from leopard.config import Config, load_config
from leopard.errors import (
    IndexNotFound,
    InvalidConfig,
    InvalidInput,
    InvalidTuple,
    LeopardError,
    StaleIndex,
    StorageError,
)
from leopard.index import Index

__all__ = [
    "BuildReport",
    "Config",
    "Index",
    "IndexNotFound",
    "InvalidConfig",
    "InvalidInput",
    "InvalidTuple",
    "LeopardError",
    "StaleIndex",
    "StorageError",
    "build_index",
    "load_config",
    "open_index",
]
