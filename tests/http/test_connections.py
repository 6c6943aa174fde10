"""What clients send before a request reaches the app, bounded before authentication.

The bounds live in the connection protocol ``leopard serve`` runs uvicorn with
(``leopard.http.connections``), so these tests run ``leopard serve`` itself as a child
process, with a bearer token and short timeouts, and do over raw sockets what hostile
or broken clients do: a head that never ends, a head or a body that stalls or
trickles, a crowd of idle connections. Each checks the server answers as bounded and
goes on serving everyone else.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.http import (
    TOKEN,
    build_small_index,
    call,
    connect,
    leopard_serve,
    raw_answer,
    read_until_closed,
    rss_bytes,
    wait_until,
)

HEADER_TIMEOUT = 3.0
BODY_TIMEOUT = 2.0
IDLE_TIMEOUT = 1.0
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECK = "/v1/check?subject=user:alice&group=group:eng"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_small_index(tmp_path_factory.mktemp("connections") / "idx")


@pytest.fixture(scope="module")
def guarded(index_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """``leopard serve`` with a token and short timeouts; (its URL, its process id)."""
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN + "\n")
    with leopard_serve(
        "--index", str(index_dir),
        "--auth-token-file", str(token_file),
        "--header-timeout", str(HEADER_TIMEOUT),
        "--body-timeout", str(BODY_TIMEOUT),
        "--idle-timeout", str(IDLE_TIMEOUT),
        "--workers", "1",  # one process, whose connections these tests watch
    ) as (url, proc):  # fmt: skip
        yield url, proc.pid


def trickle(sock: socket.socket, pieces: list[bytes], every: float) -> threading.Thread:
    """Send ``pieces`` one at a time, ``every`` seconds apart, until one fails."""

    def run() -> None:
        try:
            for piece in pieces:
                sock.sendall(piece)
                time.sleep(every)
        except OSError:
            pass  # closed by the server: what is expected

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_an_endless_head_is_refused_431_before_the_token(guarded: tuple[str, int]) -> None:
    """A header that never ends, without a token: 431 once the head passes 64 KiB, and
    the server stops reading, so it stays small however much is pushed at it."""
    url, pid = guarded
    before = rss_bytes(pid)
    sock = connect(url)
    offered = 32 << 20
    sent = 0

    def push() -> None:
        nonlocal sent
        try:
            sock.sendall(b"GET " + CHECK.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Big: ")
            chunk = b"a" * 65536
            while sent < offered:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server closed the connection

    started = time.monotonic()
    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    try:
        data = read_until_closed(sock)
        elapsed = time.monotonic() - started
        pusher.join(30)
    finally:
        sock.close()
    status, headers, body = raw_answer(data)
    assert status == 431, data[:200]
    assert body["error"] == "header_too_large" and "65,536 bytes" in body["detail"]
    assert headers["connection"] == "close"
    assert elapsed < 5
    assert not pusher.is_alive() and sent < offered // 2, sent  # it stopped reading
    assert rss_bytes(pid) - before < 16 << 20
    # a head just under the bound is read, and the token is still asked for
    pad = {"X-Pad": "p" * 60_000}
    assert call(url, "GET", CHECK, headers={**AUTH, **pad}).status == 200
    assert call(url, "GET", CHECK, headers=pad).status == 401


def test_a_stalled_or_trickling_head_is_closed_at_the_header_timeout(
    guarded: tuple[str, int],
) -> None:
    """Half a head then nothing, or a header line every half second: both are answered
    408 and closed once the head is late, while other clients are served meanwhile."""
    url, _ = guarded
    head = b"GET " + CHECK.encode() + b" HTTP/1.1\r\nHost: x\r\n"
    stalled, trickling = connect(url), connect(url)
    started = time.monotonic()
    try:
        stalled.sendall(head)
        trickling.sendall(head)
        sender = trickle(trickling, [b"X-Slow: %d\r\n" % i for i in range(100)], 0.5)
        for _ in range(10):  # served meanwhile, each at once
            t = time.monotonic()
            assert call(url, "GET", CHECK, headers=AUTH).status == 200
            assert time.monotonic() - t < 1.0
        for sock in (stalled, trickling):
            data = read_until_closed(sock)
            elapsed = time.monotonic() - started
            status, headers, body = raw_answer(data)
            assert status == 408, data[:200]
            assert body["error"] == "request_timeout" and "headers" in body["detail"]
            assert headers["connection"] == "close"
            assert HEADER_TIMEOUT - 0.5 < elapsed < HEADER_TIMEOUT + 3, elapsed
        sender.join(10)
    finally:
        stalled.close()
        trickling.close()


def test_an_idle_connection_is_closed_at_the_idle_timeout(guarded: tuple[str, int]) -> None:
    """A connection that sends nothing, fresh or after an answer, is closed (without an
    answer: nothing was asked) after the idle timeout, before the header timeout."""
    url, _ = guarded
    fresh = connect(url)
    started = time.monotonic()
    try:
        assert read_until_closed(fresh) == b""
        assert IDLE_TIMEOUT - 0.3 < time.monotonic() - started < HEADER_TIMEOUT - 0.5
    finally:
        fresh.close()
    kept = connect(url)
    try:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive
        answered = time.monotonic()
        data = read_until_closed(kept)
        assert raw_answer(data)[0] == 200
        assert IDLE_TIMEOUT - 0.3 < time.monotonic() - answered < HEADER_TIMEOUT - 0.5
    finally:
        kept.close()


def test_a_stalled_or_trickling_body_is_closed_at_the_body_timeout(
    guarded: tuple[str, int],
) -> None:
    """A body that stops, or comes a byte at a time, is answered 408 and closed once
    the whole of it is late; a body in time is answered as ever."""
    url, _ = guarded
    body = json.dumps({"checks": [{"subject": "user:alice", "group": "group:eng"}]}).encode()
    head = (
        b"POST /v1/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    ) % (TOKEN.encode(), len(body))
    stalled, trickling = connect(url), connect(url)
    started = time.monotonic()
    try:
        stalled.sendall(head + body[:10])
        trickling.sendall(head)
        sender = trickle(trickling, [body[i : i + 1] for i in range(len(body))], 0.3)
        assert call(url, "POST", "/v1/check", body, headers=AUTH).json["results"] == [True]
        for sock in (stalled, trickling):
            data = read_until_closed(sock)
            elapsed = time.monotonic() - started
            status, headers, answer = raw_answer(data)
            assert status == 408, data[:200]
            assert answer["error"] == "request_timeout" and "body" in answer["detail"]
            assert headers["connection"] == "close"
            assert BODY_TIMEOUT - 0.5 < elapsed < BODY_TIMEOUT + 3, elapsed
        sender.join(10)
    finally:
        stalled.close()
        trickling.close()


def test_connections_beyond_the_bound_are_answered_503(index_dir: Path) -> None:
    """With --max-connections 4 and four idle connections open, a fifth is answered a
    clean 503 and closed; those under the bound are served meanwhile; past the hard
    limit a connection is answered at once; service resumes when the crowd goes."""
    bound, hard = 4, 4 + 8
    with leopard_serve(
        "--index", str(index_dir),
        "--max-connections", str(bound),
        "--idle-timeout", "60",
        "--header-timeout", "60",
        "--workers", "1",  # the bound across workers: tests/http/test_workers.py
    ) as (url, _):  # fmt: skip
        held = [connect(url) for _ in range(bound)]
        try:
            extra = connect(url)
            extra.sendall(b"GET /v1/check?subject=user:alice&group=group:eng HTTP/1.1\r\n\r\n")
            status, headers, body = raw_answer(read_until_closed(extra))
            extra.close()
            assert status == 503
            assert body["error"] == "too_many_connections"
            assert headers["connection"] == "close" and headers["retry-after"] == "1"
            # a connection opened under the bound is served as before, and kept alive
            held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert held[0].recv(65536).startswith(b"HTTP/1.1 200 ")
            # refused ones waiting for their heads count too: past the hard limit, a
            # new connection is answered at once, without being read
            held += [connect(url) for _ in range(hard - bound)]
            time.sleep(0.3)
            beyond = connect(url)
            started = time.monotonic()
            status, _, body = raw_answer(read_until_closed(beyond))
            beyond.close()
            assert (status, body["error"]) == (503, "too_many_connections")
            assert time.monotonic() - started < 1.0
        finally:
            for sock in held:
                sock.close()
        assert wait_until(lambda: call(url, "GET", CHECK).status == 200, timeout=10)


def test_serve_fits_its_connections_to_the_open_file_limit() -> None:
    """Every connection takes a file descriptor: under a low hard limit the bound is
    lowered, with a warning; under a low soft limit the soft limit is raised."""
    code = (
        "import resource, sys\n"
        "from leopard.http.server import fit_connections\n"
        "soft, hard = int(sys.argv[1]), int(sys.argv[2])\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))\n"
        "print(*fit_connections(1000), sep='|')\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )

    def run(soft: int, hard: int) -> list[str]:
        r = subprocess.run(
            [sys.executable, "-c", code, str(soft), str(hard)], capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    fit, rest = run(512, 512)[0].split("|", 1)
    assert 300 < int(fit) < 1000
    assert f"leaves room for {int(fit):,} connections, not 1,000" in rest
    (fit_line, soft_now) = run(256, 8192)
    assert fit_line == "1000|None" and 1000 < int(soft_now) <= 8192
