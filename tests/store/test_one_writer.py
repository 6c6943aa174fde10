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


CHILD = """
import sys
from leopard.store.rocks import RocksDB
try:
    RocksDB(sys.argv[1], read_only=False).close()
    print("opened")
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_a_second_open_in_the_writer_process_keeps_its_lock(tmp_path: Path) -> None:
    """Naming the holder opens the LOCK file, and closing it would drop every lock this
    process holds on it (POSIX locks are per process): a mistaken second open in the
    writer's own process must leave other processes refused."""
    path = tmp_path / "delta"
    writer = RocksDB(path, read_only=False)
    try:
        with pytest.raises(StorageError, match="lock hold by current process"):
            RocksDB(path, read_only=False)
        other = subprocess.run(
            [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True
        )
        assert other.stdout.startswith("StorageError "), other.stdout
        assert "is being written by another process" in other.stdout
    finally:
        writer.close()
