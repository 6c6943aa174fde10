"""Leopard: a group membership index after the Leopard subsystem of Zanzibar.

``s`` is in ``g`` exactly when ``MEMBER2GROUP(s) ∩ GROUP2GROUP(g) ≠ ∅``: nested
groups are precomputed into roaring bitmaps so a check is one intersection::

    import leopard
    leopard.build_index(["org.txt"], "./idx")
    with leopard.open_index("./idx") as ix:
        ix.check("user:alice", "group:eng")

The names below are loaded on first use (PEP 562), so ``import leopard.client``
or ``import leopard.errors`` does not pull in the index's heavy dependencies
(pyarrow, rocksdict) or the server's (uvicorn).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from leopard.errors import (
    IndexNotFound,
    InvalidConfig,
    InvalidInput,
    InvalidTuple,
    LeopardError,
    StaleIndex,
    StorageError,
)

if TYPE_CHECKING:
    from leopard.api import build_index, open_index
    from leopard.core.build import BuildReport
    from leopard.core.index import Index
    from leopard.model.config import Config, load_config

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

#: public name -> the module that defines it, imported when the name is first used
_LAZY = {
    "build_index": "leopard.api",
    "open_index": "leopard.api",
    "BuildReport": "leopard.core.build",
    "Index": "leopard.core.index",
    "Config": "leopard.model.config",
    "load_config": "leopard.model.config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'leopard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next use is a plain attribute lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
