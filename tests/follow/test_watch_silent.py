"""A Watch whose connection goes silent (half-open TCP) is found dead and resumed.

A NAT or load balancer that drops an idle flow, or a SpiceDB host lost without a RST,
leaves the follower's TCP connection open with nothing coming through. Between the
follower and SpiceDB embedded (``support.spicedb_front``) runs a TCP proxy whose
connections open so far stop forwarding bytes, both sockets kept open; new
connections are forwarded again, as a NAT forwards a new flow. Without keepalive the
follower waited on that stream forever, looking idle and healthy, and a later write
was never applied; with keepalive (here 1 s, so the test is short) the stream fails,
the follower logs the outage, reconnects and resumes from its stored revision.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.spicedb_front import SpiceDBFront, missing_reason
from world import SCHEMA, disagreements

from ingest.upstream.spicedb import KEEPALIVE_MS, SpiceDBSource, bootstrap, channel_options
from ingest.upstream.watch import SpiceDBFollower

_MISSING = missing_reason()


class SilencingProxy:
    """Forwards TCP to ``port``; ``silence()`` drops every byte of the connections open
    so far (their sockets stay open), while later ones are forwarded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.flows: list[threading.Event] = []
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.listener.getsockname()[1]}"

    def silence(self) -> None:
        for silent in list(self.flows):
            silent.set()

    def close(self) -> None:
        for s in [self.listener, *self.sockets]:
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.port))
            silent = threading.Event()
            self.flows.append(silent)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b, silent), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, silent: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                if not silent.is_set():
                    dst.sendall(data)
        except OSError:
            pass


@pytest.fixture
def front() -> Iterator[SpiceDBFront]:
    if _MISSING is not None:
        pytest.skip(f"SpiceDB not installed: {_MISSING}")
    with SpiceDBFront(SCHEMA) as running:
        yield running


def test_the_channel_pings_a_watch_that_sends_nothing() -> None:
    options = dict(channel_options())
    assert KEEPALIVE_MS == (30_000, 10_000)
    assert options["grpc.keepalive_time_ms"] == 30_000
    # gRPC 1.85 closes the connection on a ping unanswered within the ping timeout
    # (60 s by default), not the keepalive timeout alone
    assert options["grpc.keepalive_timeout_ms"] == options["grpc.http2.ping_timeout_ms"] == 10_000
    assert options["grpc.http2.max_pings_without_data"] == 0  # a Watch sends no data
    assert options["grpc.keepalive_permit_without_calls"] == 0
    assert dict(channel_options((1000, 500)))["grpc.http2.ping_timeout_ms"] == 500


@pytest.mark.spicedb
def test_a_silent_watch_is_resumed_on_a_new_connection(
    front: SpiceDBFront, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="leopard")
    proxy = SilencingProxy(int(front.target.rsplit(":", 1)[1]))
    front.write(["group:g0#member@user:u0"])
    path = tmp_path / "ix"
    bootstrap(path, SpiceDBSource(front.target))
    source = SpiceDBSource(proxy.target, keepalive_ms=(1000, 1000))
    follower = SpiceDBFollower(path, source, backoff=(0.1, 0.5))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            follower.run()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        token = front.write(["group:g0#member@user:u1"])
        follower.index.wait_for(token.token, timeout=20)
        assert follower.watch.reconnects == 0
        proxy.silence()
        token = front.write(["group:g0#member@user:u2", "group:g0#member@user:u3"])
        front.write(["group:g0#member@user:u0"], operation="DELETE")
        token = front.write(["group:g0#member@user:u4"])
        # was: never applied, with the follower connected, ready and silent
        follower.index.wait_for(token.token, timeout=30)
        assert disagreements(follower.index, front) == []
        assert follower.watch.reconnects >= 1 and follower.watch.connected
    finally:
        follower.stop()
        thread.join(30)
        proxy.close()
    assert not errors, errors
    assert "change source unavailable (spicedb:" in caplog.text
    assert "change source reachable again" in caplog.text
