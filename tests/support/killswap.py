"""A sharded build killed (SIGKILL) right after it swapped in shard 0, before the
others: ``python -m support.killswap ROOT SNAPSHOT [SHARDS]`` (default 2 shards), as
a build killed between two shards' swaps leaves a sharded index."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import leopard
from leopard.store.generations import IndexDir

_real = IndexDir.publish


def _publish(self: IndexDir, tmp: Any) -> Any:
    out = _real(self, tmp)
    if Path(self.path).name == "shard-0":  # kill -9 between two shards' swaps
        os.kill(os.getpid(), signal.SIGKILL)
    return out


if __name__ == "__main__":
    IndexDir.publish = _publish  # type: ignore[method-assign]
    shards = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    leopard.build_index([sys.argv[2]], sys.argv[1], shards=shards)
