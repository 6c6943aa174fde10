"""``serve --upstream-spicedb``: TLS unless the SpiceDB is local, as ``--source-tls``
decides, so the upstream's preshared key never crosses a network in clear text unless
``--upstream-insecure`` says so. What goes on the wire is captured by a bare listener."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from authzed.api import v1
from click.testing import CliRunner
from docs_world import LeopardGrpc, build

from leopard.cli import main
from leopard.grpc.forward import Upstream

KEY = "SECRETKEY123"
PREFACE = b"PRI * HTTP/2.0"


def _own_address() -> str:
    """An address of this machine that is not a loopback one (none: skip)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent
            address = str(probe.getsockname()[0])
        except OSError:
            address = ""
    if not address or address.startswith("127.") or address == "0.0.0.0":
        pytest.skip("no address here but loopback ones")
    return address


@pytest.fixture
def capture() -> Iterator[tuple[int, bytearray]]:
    """A listener on every address that records what the first connection sends."""
    got = bytearray()
    server = socket.create_server(("0.0.0.0", 0))
    server.settimeout(10)

    def take() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(2)
            try:
                while chunk := conn.recv(65536):
                    got.extend(chunk)
            except OSError:
                pass

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    yield server.getsockname()[1], got
    thread.join(15)
    server.close()


def _forward_a_write(path: Path, target: str, **options: object) -> None:
    with LeopardGrpc(path, upstream=target, upstream_preshared_key=KEY, **options) as leo:
        with pytest.raises(grpc.RpcError):
            leo.client().WriteRelationships(v1.WriteRelationshipsRequest(), timeout=3)


def test_a_remote_upstream_is_reached_over_tls_by_default(
    tmp_path: Path, capture: tuple[int, bytearray]
) -> None:
    port, got = capture
    _forward_a_write(build(tmp_path), f"{_own_address()}:{port}")
    assert got[:1] == b"\x16"  # a TLS handshake record, not HTTP/2's preface
    assert KEY.encode() not in got


def test_plain_text_to_a_remote_upstream_only_when_asked(
    tmp_path: Path, capture: tuple[int, bytearray]
) -> None:
    port, got = capture
    _forward_a_write(build(tmp_path), f"{_own_address()}:{port}", upstream_tls=False)
    assert got.startswith(PREFACE)


def test_a_local_upstream_is_plain_by_default() -> None:
    assert Upstream("127.0.0.1:50051").tls is False
    assert Upstream("localhost:50051").tls is False
    assert Upstream("[::1]:50051").tls is False
    assert Upstream("192.0.2.2:50051").tls is True
    assert Upstream("spicedb.example:50051").tls is True
    assert Upstream("127.0.0.1:50051", tls=True).tls is True


def test_the_help_says_the_rule_as_source_tls_does() -> None:
    said = CliRunner().invoke(main, ["serve", "--help"], terminal_width=1000).stdout
    rule = "(default: plain for a Unix socket or a loopback address, TLS otherwise)"
    assert said.count(rule) == 2  # --source-tls and --upstream-tls
