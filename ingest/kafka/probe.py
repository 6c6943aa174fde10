"""Is a Kafka broker answering? One ApiVersions request, bounded in time, no client state.

kafka-python's clients reconnect on their own and report nothing while a broker is
away (a poll just returns nothing), and a client constructed against a dead broker
leaks its sockets. So liveness is probed by hand: open a connection, send the one
request every Kafka-protocol broker answers (ApiVersions, version 0), and wait for
the answer with the same correlation id, all within ``timeout`` seconds.
"""

from __future__ import annotations

import socket
import struct

from leopard.errors import BrokerError

__all__ = ["broker_answers", "require_brokers"]

_API_VERSIONS = 18
_CLIENT_ID = b"leopard-probe"


def _request(correlation_id: int) -> bytes:
    header = struct.pack(">hhih", _API_VERSIONS, 0, correlation_id, len(_CLIENT_ID))
    body = header + _CLIENT_ID
    return struct.pack(">i", len(body)) + body


def _answers(host: str, port: int, timeout: float, correlation_id: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_request(correlation_id))
            got = b""
            while len(got) < 8:
                chunk = sock.recv(8 - len(got))
                if not chunk:
                    return False
                got += chunk
    except OSError:
        return False
    size, answered_id = struct.unpack(">ii", got)
    return size >= 4 and answered_id == correlation_id


def broker_answers(bootstrap: str, timeout: float, correlation_id: int = 1) -> bool:
    """Whether any of the ``host:port[,...]`` brokers answers within ``timeout`` s."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if port.isdigit() and _answers(host or "localhost", int(port), timeout, correlation_id):
            return True
    return False


def require_brokers(bootstrap: str, timeout: float) -> None:
    """``broker_answers``, or a BrokerError naming the brokers."""
    if not broker_answers(bootstrap, timeout):
        raise BrokerError(
            f"cannot reach the brokers {bootstrap!r}: none answered a Kafka request "
            f"within {timeout:g} s"
        )
