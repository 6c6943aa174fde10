"""A small index and a real uvicorn server on a free port, for the HTTP and client tests;
``leopard serve`` as a child process; requests on fresh connections, plain or raw."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import uvicorn

import leopard
from leopard.http.connections import DEFAULT_IDLE_TIMEOUT, ConnectionLimits
from leopard.http.server import listen, uvicorn_config

#: a small org: nesting, a cycle, a wildcard, a '+' in an id, a group worth paginating
TUPLES = [
    "group:eng#member@user:alice",
    "group:eng#member@group:backend#member",
    "group:backend#member@user:bob",
    "group:backend#member@user:carol+x",
    "group:all#member@group:eng#member",
    "group:all#member@group:sales#member",
    "group:sales#member@user:dave",
    "group:cyc1#member@group:cyc2#member",
    "group:cyc2#member@group:cyc1#member",
    "group:cyc1#member@user:erin",
    "group:public#member@user:*",
    *(f"group:big#member@user:m{i:02d}" for i in range(25)),
]
MAX_BATCH = 50
MAX_BODY = 8192
TOKEN = "s3cret-token_for-tests"


def build_small_index(path: Path) -> Path:
    leopard.build_index([TUPLES], path)
    return path


@contextlib.contextmanager
def running_server(
    app: Any, limits: ConnectionLimits | None = None, **config: Any
) -> Iterator[str]:
    """Run ``app`` on uvicorn in a thread, on a free port, with the connection protocol
    ``leopard serve`` runs (``limits``, or the defaults with uvicorn's
    ``timeout_keep_alive`` as the idle timeout if given); yield its base URL."""
    if limits is None:
        idle = config.pop("timeout_keep_alive", DEFAULT_IDLE_TIMEOUT)
        limits = ConnectionLimits(idle_timeout=idle)
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(
        uvicorn_config(app, limits, lifespan="on", log_level="warning", **config)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


# -- requests ----------------------------------------------------------------------------


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def call(
    base: str,
    method: str,
    target: str,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request on a fresh connection, nothing interpreted."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def q(**params: str) -> str:
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())


def connect(base: str, timeout: float = 10.0) -> socket.socket:
    """A raw TCP connection to the server at ``base``."""
    parts = urlsplit(base)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    return sock


def read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes the connection (a reset ends it too)."""
    data = b""
    try:
        while len(data) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    return data


def raw_answer(data: bytes) -> tuple[int, dict[str, str], Any]:
    """The status, headers and JSON body of one raw HTTP/1.1 answer."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, json.loads(body) if body else None


# -- metrics -----------------------------------------------------------------------------

_SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$'
)


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by metric name; asserts each line is valid text exposition."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    types: dict[str, str] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram")
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, value = m.group(1), m.group(4)
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert family in types or name in types, f"{name} has no # TYPE"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        samples.setdefault(name, []).append((labels, float(value)))
    return samples


# -- leopard serve in a child process ----------------------------------------------------


@contextlib.contextmanager
def leopard_serve(*args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``leopard serve ... --port 0`` in a child process; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "leopard", "serve", "--port", "0", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        said = ""  # warnings may come first (a broker that does not answer yet, say)
        while (line := proc.stderr.readline()).startswith("leopard: warning:"):
            said += line
        m = re.search(r"on (http://\S+?)[,\s]", line + " ")
        assert m, (
            f"no URL in {said + line!r}; {proc.stderr.read() if proc.poll() is not None else ''}"
        )
        yield m.group(1), proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def wait_until(predicate: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def rss_bytes(pid: int) -> int:
    """The resident memory of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")
