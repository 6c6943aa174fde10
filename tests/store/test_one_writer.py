"""One writer a RocksDB: a second one, in another process, is refused naming the first.

RocksDB itself only says that its LOCK file is held; a second consumer of an index
would read ``IO error: While lock file ...: Resource temporarily unavailable``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from leopard.errors import StorageError
from leopard.store.rocks import RocksDB

HOLD = """
import sys
from leopard.store.rocks import RocksDB
db = RocksDB(sys.argv[1], read_only=False)
print("held", flush=True)
sys.stdin.read()
db.close()
"""


def test_a_second_writer_is_refused_naming_the_first(tmp_path: Path) -> None:
    path = tmp_path / "delta"
    RocksDB(path, read_only=False).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(StorageError) as info:
            RocksDB(path, read_only=False)
        assert str(info.value).startswith(
            f"{str(path)!r} is being written by another process (pid {holder.pid}): "
            "an index takes one writer at a time"
        )
        RocksDB(path, read_only=True).close()  # reading it is fine
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(30)
        holder.stdout.close()
    RocksDB(path, read_only=False).close()  # once it has let go
