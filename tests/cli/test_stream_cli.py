"""``leopard publish`` and ``leopard consume``/``serve`` at their edges, in real
processes: a change file that is not UTF-8, brokers that do not answer at the start."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.kafka.local_broker import LocalBroker, free_port

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
def test_brokers_that_do_not_answer_at_the_start_are_said_once_and_retried(
    index: Path, command: str
) -> None:
    """Not kafka-python's 30 s of log lines and then a traceback, nor an exit: a broker
    down when a consumer or a server starts is said once and retried, as an outage
    after the start is (a supervisor restarting either during an outage must not make
    it exit again; the server serves the index meanwhile)."""
    brokers = f"127.0.0.1:{free_port()}"
    extra = ["--port", "0"] if command == "serve" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "leopard", command, "--index", str(index), "--brokers",
         brokers, "--topic", "t", *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline().decode()
        assert f"the brokers {brokers!r} do not answer yet" in first, first
        time.sleep(4)
        assert proc.poll() is None  # still running, retrying
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        rest = proc.stderr.read().decode()
        assert "Traceback" not in rest, rest
        assert rest.count("\n") <= 6, rest  # no line per attempt
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_a_position_in_another_topic_is_said_when_the_consumed_one_starts_over(
    broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    """An index built at a position of a topic the consumer does not read (a typo in
    ``build --position``): it reads its topic from the start, and says so, naming both."""
    snapshot = tmp_path / "t.txt"
    snapshot.write_text("group:eng#member@user:alice\n")
    index = tmp_path / "idx"
    typo = "x" + topic
    built = leopard("build", snapshot, "--index", index, "--position", f"{typo}:0=2")
    assert built.returncode == 0, built.stderr
    change = b"+group:eng#member@user:bob\n"
    assert (
        leopard("publish", "--brokers", broker.bootstrap, "--topic", topic, stdin=change).returncode
        == 0
    )
    consumed = leopard(
        "consume",
        "--index",
        index,
        "--brokers",
        broker.bootstrap,
        "--topic",
        topic,
        "--idle-exit",
        "2",
    )
    said = consumed.stderr.decode()
    assert consumed.returncode == 0, said
    assert f"names topic(s) {typo!r}, not {topic!r}: reading {topic!r} from its beginning" in said
    assert said.count("names topic(s)") == 1
    assert leopard("check", "user:bob", "group:eng", "--index", index).stdout == b"true\n"


@pytest.mark.kafka
@pytest.mark.slow
def test_shards_sharing_a_consumer_group_are_told_they_miss_partitions(
    broker: LocalBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """Two shards of an index consumed with one --group-id: Kafka splits the topic's
    partitions between the two consumers, and each shard misses the changes of the
    other's partitions for good. Each ``consume --idle-exit`` that ended split says so
    and ends with status 1 (both ended 0, their indexes silently behind)."""
    topic = new_topic(partitions=2)
    lines = [f"group:g{i}#member@user:u{i}" for i in range(40)]
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n")
    built = leopard("build", tmp_path / "t.txt", "--index", tmp_path / "ix", "--shards", "2")
    assert built.returncode == 0, built.stderr
    changes = "".join(f"+group:g{i}#member@user:new{i}\n" for i in range(40)).encode()
    published = leopard("publish", "--brokers", broker.bootstrap, "--topic", topic, stdin=changes)
    assert published.returncode == 0, published.stderr
    consumers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "leopard",
                "consume",
                "--index",
                str(tmp_path / "ix" / f"shard-{k}"),
                "--brokers",
                broker.bootstrap,
                "--topic",
                topic,
                "--group-id",
                "shared",
                "--idle-exit",
                "12",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (0, 1)
    ]
    ended = [(c.wait(180), c.communicate()[1]) for c in consumers]
    split = [said for status, said in ended if status == 1]
    assert split, ended
    for said in split:
        assert "consumer group 'shared' gave partitions" in said, said
        assert f"{topic}:" in said and "give each index (each shard) its own --group-id" in said
    for status, said in ended:
        assert status in (0, 1) and "Traceback" not in said, said
