"""``leopard publish`` and ``leopard consume``/``serve`` at their edges, in real
processes: a change file that is not UTF-8, brokers that do not answer at the start."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.kafka.local_broker import free_port

CHANGES = b"+group:eng#member@user:d1\n+group:eng#member@user:d\xff2\n"


def leopard(*args: str | Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "leopard", *map(str, args)],
        capture_output=True,
        input=stdin,
        timeout=60,
        check=False,
    )


def one_line_error(done: subprocess.CompletedProcess[bytes]) -> str:
    assert done.returncode == 1, done.stderr
    assert done.stdout == b""
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, done.stderr.decode()
    assert lines[0].startswith("Error: ")
    return lines[0][len("Error: ") :]


def test_publish_names_the_line_and_byte_that_is_not_utf8(tmp_path: Path) -> None:
    """The file is read before any broker is asked: none is needed."""
    path = tmp_path / "changes.txt"
    path.write_bytes(CHANGES)
    said = "'+group:eng#member@user:d\\\\xff2' is not valid UTF-8 (byte 0xff at offset 24)"
    brokers = f"127.0.0.1:{free_port()}"
    from_file = leopard("publish", path, "--brokers", brokers, "--topic", "t")
    assert one_line_error(from_file) == f"{path}:2: {said}"
    from_stdin = leopard("publish", "--brokers", brokers, "--topic", "t", stdin=CHANGES)
    assert one_line_error(from_stdin) == f"<stdin>:2: {said}"


@pytest.fixture
def index(tmp_path: Path) -> Path:
    snapshot = tmp_path / "t.txt"
    snapshot.write_text("group:eng#member@user:alice\n")
    assert leopard("build", snapshot, "--index", tmp_path / "idx").returncode == 0
    return tmp_path / "idx"


@pytest.mark.parametrize("command", ["consume", "serve"])
def test_brokers_that_do_not_answer_at_the_start_are_one_line(index: Path, command: str) -> None:
    """Not kafka-python's 30 s of log lines and then a traceback (an outage after the
    start is retried: tests/ingest/test_consumer_start.py and test_consumer_faults.py)."""
    brokers = f"127.0.0.1:{free_port()}"
    extra = ["--port", "0"] if command == "serve" else ["--idle-exit", "1"]
    started = time.monotonic()
    done = leopard(command, "--index", index, "--brokers", brokers, "--topic", "t", *extra)
    assert one_line_error(done) == (
        f"cannot reach the brokers {brokers!r}: none answered a Kafka request within 3 s"
    )
    assert time.monotonic() - started < 20
