"""``leopard serve --workers N``: N processes on one port, run for real.

Each request goes on a fresh connection, so the kernel spreads them over the workers
(``SO_REUSEPORT``); the ``Leopard-Worker`` header says which one answered. With a
real broker, worker 0 applies the stream and the other follows it: a token read from
either is honoured by both. SIGTERM stops every process, a killed worker is started
again, and the connection bound is the server's, not each worker's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.http import (
    build_small_index,
    call,
    connect,
    leopard_serve,
    q,
    raw_answer,
    read_until_closed,
    wait_until,
)

from ingest.codecs import Change
from ingest.kafka.local_broker import LocalBroker
from ingest.kafka.publish import publish
from leopard.http.openfga import default_store_id
from leopard.model.names import parse_tuple

CHECK = "/v1/check?" + q(subject="user:alice", group="group:eng")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_small_index(tmp_path_factory.mktemp("workers") / "idx")


def worker_of(headers: dict[str, str]) -> tuple[int, int]:
    """(slot, pid) from ``Leopard-Worker: SLOT; pid=PID``."""
    slot, _, pid = headers["leopard-worker"].partition("; pid=")
    return int(slot), int(pid)


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def until_both(url: str, target: str, tries: int = 400) -> dict[int, int]:
    """Requests on fresh connections until both workers answered: slot -> pid."""
    seen: dict[int, int] = {}
    for _ in range(tries):
        a = call(url, "GET", target)
        assert a.status == 200, a.body
        slot, pid = worker_of(a.headers)
        seen[slot] = pid
        if len(seen) == 2:
            break
    return seen


def stop(proc: subprocess.Popen[str], workers: set[int]) -> None:
    """SIGTERM the server: it ends cleanly, and so does every worker."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert wait_until(lambda: not any(alive(p) for p in workers), timeout=10), workers
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


def test_two_workers_answer_on_one_port(index_dir: Path) -> None:
    """Both workers answer, each is a child of the server, each has its own /readyz
    and /metrics; a worker killed is started again; SIGTERM stops them all."""
    with leopard_serve("--index", str(index_dir), "--workers", "2") as (url, proc):
        seen = until_both(url, CHECK)
        assert set(seen) == {0, 1}, seen
        assert set(seen.values()) == children(proc.pid)
        for _ in range(10):
            a = call(url, "GET", CHECK)
            assert a.json["member"] is True
            r = call(url, "GET", "/readyz")
            assert r.status == 200 and r.json["ready"], r.json
            assert call(url, "GET", "/metrics").status == 200
        # a worker that dies while serving is started again in its place
        os.kill(seen[1], signal.SIGKILL)
        restarted = lambda: len(children(proc.pid)) == 2 and seen[1] not in children(proc.pid)  # noqa: E731
        assert wait_until(restarted)
        again = wait_until(lambda: until_both(url, CHECK, tries=50).get(1) not in (None, seen[1]))
        assert again
        stop(proc, children(proc.pid) | set(seen.values()))


@pytest.mark.kafka
def test_a_token_from_one_worker_is_honoured_by_every_worker(
    broker: LocalBroker, topic: str, index_dir: Path, tmp_path: Path
) -> None:
    """Worker 0 applies the stream, worker 1 follows it: a token read from an answer,
    given as at_least on many requests, is reached by whichever worker answers."""
    idx = build_small_index(tmp_path / "idx")
    args = ("--index", str(idx), "--brokers", broker.bootstrap, "--topic", topic)
    with leopard_serve(*args, "--workers", "2") as (url, proc):
        workers = set(until_both(url, CHECK).values())
        assert len(workers) == 2
        for n in range(3):
            who = f"user:newbie{n}"
            written = publish(
                [Change("touch", parse_tuple(f"group:backend#member@{who}"))],
                broker.bootstrap,
                topic,
            )
            # the first waits for the consumer (it joins its group in about a second)
            asked = q(subject=who, group="group:all", at_least=written.token, max_wait="30")
            first = call(url, "GET", "/v1/check?" + asked)
            assert first.status == 200 and first.json["member"] is True, first.body
            token = first.json["token"]
            answered: set[int] = set()
            for _ in range(40):
                a = call(url, "GET", "/v1/check?" + q(subject=who, group="group:eng",
                                                       at_least=token, max_wait="10"))  # fmt: skip
                assert a.status == 200, a.body
                assert a.json["member"] is True
                answered.add(worker_of(a.headers)[0])
            assert answered == {0, 1}
        # only worker 0 consumes: its /readyz reports the consumer's lag, worker 1's none
        reports = {}
        for _ in range(200):
            r = call(url, "GET", "/readyz")
            reports[worker_of(r.headers)[0]] = r.json
            if len(reports) == 2:
                break
        assert reports[0]["lag"] == 0 and reports[1]["lag"] is None, reports
        assert reports[0]["token"] == reports[1]["token"]
        stop(proc, workers | children(proc.pid))


@pytest.mark.kafka
def test_higher_consistency_is_honoured_by_every_worker(
    broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    """OpenFGA's HIGHER_CONSISTENCY, no token: a change published just before the
    request is seen by whichever worker answers. Worker 1 re-reads the index only every
    60 s here, so without asking worker 0 for the stream's head it answers from what it
    read last."""
    idx = build_small_index(tmp_path / "idx")
    args = ("--index", str(idx), "--brokers", broker.bootstrap, "--topic", topic)
    store = default_store_id(idx)

    def check(user: str) -> tuple[int, int, bool]:
        body = {"tuple_key": {"user": user, "relation": "member", "object": "group:eng"},
                "consistency": "HIGHER_CONSISTENCY"}  # fmt: skip
        a = call(url, "POST", f"/stores/{store}/check", json.dumps(body))
        assert a.status == 200, a.body
        return worker_of(a.headers)[0], a.status, a.json["allowed"]

    with leopard_serve(*args, "--workers", "2", "--refresh-interval", "60") as (url, proc):
        workers = set(until_both(url, CHECK).values())
        # both answer once worker 0's consumer has joined its group (a 503 before)
        joined = wait_until(
            lambda: call(url, "POST", f"/stores/{store}/check", json.dumps(
                {"tuple_key": {"user": "user:alice", "relation": "member",
                               "object": "group:eng"},
                 "consistency": "HIGHER_CONSISTENCY"})).status == 200, 30)  # fmt: skip
        assert joined
        for n in range(3):
            who = f"user:newbie{n}"
            publish([Change("touch", parse_tuple(f"group:backend#member@{who}"))],
                    broker.bootstrap, topic)  # fmt: skip
            answered: dict[int, list[bool]] = {}
            while len(answered) < 2:
                slot, _, allowed = check(who)
                answered.setdefault(slot, []).append(allowed)
            assert answered == {s: [True] * len(v) for s, v in answered.items()}, answered
        stop(proc, workers | children(proc.pid))


def test_the_connection_bound_is_the_servers(index_dir: Path) -> None:
    """--max-connections 4 with 2 workers: four idle connections, wherever the kernel
    put them, make a fifth a 503."""
    with leopard_serve(
        "--index", str(index_dir), "--workers", "2",
        "--max-connections", "4", "--idle-timeout", "60", "--header-timeout", "60",
    ) as (url, proc):  # fmt: skip
        workers = set(until_both(url, CHECK).values())
        held = [connect(url) for _ in range(4)]
        try:
            time.sleep(0.3)  # every worker has accepted and counted its own
            extra = connect(url)
            extra.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            status, _, body = raw_answer(read_until_closed(extra))
            extra.close()
            assert (status, body["error"]) == (503, "too_many_connections")
        finally:
            for sock in held:
                sock.close()
        assert wait_until(lambda: call(url, "GET", CHECK).status == 200, timeout=10)
        stop(proc, workers)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--workers", "0"), "--workers"),
        (("--workers", "many"), "--workers"),
        (("--workers", "100000"), "--workers"),
        (
            ("--workers", "2", "--brokers", "127.0.0.1:1", "--topic", "t",
             "--refresh-interval", "0"),
            "--refresh-interval above 0",
        ),
    ],
)  # fmt: skip
def test_a_bad_workers_value_is_refused(
    index_dir: Path, args: tuple[str, ...], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "leopard", "serve", "--index", str(index_dir), "--port", "0",
         *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    """No index there: the server says so once, before starting workers; exit 1."""
    (tmp_path / "idx").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "leopard", "serve", "--index", str(tmp_path / "idx"),
         "--port", "0", "--workers", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    # said once, before any worker starts (a worker that fails to serve says why in
    # its own one line: tests/grpc/test_grpc_serve.py, a gRPC port taken)
    assert done.stderr.strip().splitlines() == [
        f"Error: no index at {str(tmp_path / 'idx')!r}: it has no CURRENT generation "
        "(build one with 'leopard build')"
    ], done.stderr
