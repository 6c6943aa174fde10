"""A small index and a real uvicorn server on a free port, for the HTTP and client tests."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

import leopard
from leopard.http.server import listen

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
def running_server(app: Any, **config: Any) -> Iterator[str]:
    """Run ``app`` on uvicorn in a thread, on a free port; yield its base URL."""
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(
        uvicorn.Config(app, ws="none", lifespan="on", log_level="warning", **config)
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
