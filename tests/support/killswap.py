"""A sharded build killed (SIGKILL) right after it swapped in shard 0, before the
others: ``python -m support.killswap ROOT SNAPSHOT [SHARDS]`` (default 2 shards), as
a build killed between two shards' swaps leaves a sharded index. Tests call
``killed_between_swaps``, which runs it as a child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import leopard
from leopard.store.generations import IndexDir

_real = IndexDir.publish
_TESTS = Path(__file__).resolve().parents[1]  # where ``support`` is


def killed_between_swaps(root: Path, snapshot: Path, shards: int = 2) -> None:
    """Build ``snapshot`` into the sharded index ``root`` in a child process killed
    right after shard 0's swap. The child finds this checkout's package and ``support``
    whether or not the package is installed."""
    path = [str(_TESTS.parent), str(_TESTS), os.environ.get("PYTHONPATH", "")]
    done = subprocess.run(
        [sys.executable, "-m", "support.killswap", str(root), str(snapshot), str(shards)],
        check=False,
        cwd=_TESTS,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)},
    )
    assert done.returncode == -signal.SIGKILL, done


def _publish(self: IndexDir, tmp: Any) -> Any:
    out = _real(self, tmp)
    if Path(self.path).name == "shard-0":  # kill -9 between two shards' swaps
        os.kill(os.getpid(), signal.SIGKILL)
    return out


if __name__ == "__main__":
    IndexDir.publish = _publish  # type: ignore[method-assign]
    shards = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    leopard.build_index([sys.argv[2]], sys.argv[1], shards=shards)
