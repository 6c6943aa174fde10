"""The gRPC server: SpiceDB's API on a port, beside ``leopard serve``'s HTTP.

``GrpcServer(index, options, consumer=...)`` binds the port at once (so a port in
use, or unreadable TLS files, fail before anything is served: ``InvalidInput`` naming
them), ``start()`` serves, ``stop()`` drains and closes. It shares the ``Index`` of
the process and, when one runs here, the change consumer, whose batches wake
``at_least_as_fresh`` waits and whose high watermarks make ``fully_consistent``'s
target (``leopard.grpc.consistency``).

Beside SpiceDB's services it serves the standard ``grpc.health.v1.Health`` (every
service SERVING while the server runs) and server reflection (``grpcurl`` lists
and describes the API), both open without the preshared key, as health checks are.
Without the ``[grpc]`` extra (grpcio, grpcio-health-checking, grpcio-reflection,
authzed) this module does not import, with an error naming it.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leopard.core.index import Index
from leopard.errors import InvalidInput

try:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from leopard.grpc.consistency import Freshness, StreamHead
    from leopard.grpc.forward import Upstream
    from leopard.grpc.permissions import Permissions
    from leopard.grpc.schema import Schema
    from leopard.grpc.service import SERVICES, Router, key_check
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise ModuleNotFoundError(
        "serving SpiceDB's API over gRPC needs grpcio, grpcio-health-checking, "
        "grpcio-reflection and authzed: pip install 'leopard-index[grpc]'",
        name=exc.name,
    ) from exc

__all__ = ["GrpcOptions", "GrpcServer"]


@dataclass(frozen=True)
class GrpcOptions:
    """How to serve SpiceDB's API: where, with which key and TLS, forwarding where."""

    port: int = 50051  # 0: any free port
    host: str = "127.0.0.1"
    #: require ``authorization: Bearer KEY`` (SpiceDB's --grpc-preshared-key)
    preshared_key: str | None = None
    tls_cert_path: str | None = None
    tls_key_path: str | None = None
    #: the longest wait for at_least_as_fresh and fully_consistent, in seconds
    max_wait: float = 1.0
    #: ``HOST:PORT`` of the SpiceDB that Leopard indexes: what the index cannot answer
    upstream: str | None = None
    upstream_preshared_key: str | None = None
    upstream_tls: bool = False
    #: calls served at once (each stream and each wait holds one)
    workers: int = 64


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{what} {path!r} cannot be read: {exc.strerror or exc}") from None


class GrpcServer:
    """SpiceDB's API over ``index`` (see the module docstring)."""

    def __init__(self, index: Index, options: GrpcOptions, *, consumer: Any = None) -> None:
        self.options = options
        if options.preshared_key is not None and not options.preshared_key:
            raise InvalidInput("--grpc-preshared-key must not be empty")
        head = StreamHead(consumer) if consumer is not None else None
        freshness = Freshness(index, max_wait=options.max_wait, head=head)
        self.upstream = (
            Upstream(
                options.upstream,
                preshared_key=options.upstream_preshared_key,
                tls=options.upstream_tls,
            )
            if options.upstream
            else None
        )
        self.health = health.HealthServicer()
        self.server = grpc.server(
            ThreadPoolExecutor(options.workers, thread_name_prefix="leopard-grpc"),
            options=[("grpc.so_reuseport", 0)],  # a port in use is an error, not shared
        )
        servicers = [
            # the stubs call every method abstract; those not written here are forwarded
            Permissions(index, freshness, self.upstream),  # type: ignore[abstract]
            Schema(index, freshness, self.upstream),  # type: ignore[abstract]
        ]
        check = key_check(options.preshared_key) if options.preshared_key else None
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [s.full_name for s in SERVICES]
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME],
            self.server,
        )  # fmt: skip
        self.server.add_generic_rpc_handlers((Router(servicers, self.upstream, check),))
        self._names = ["", *names]
        self.port = self._bind()

    def _bind(self) -> int:
        o = self.options
        shown = f"[{o.host}]" if ":" in o.host else o.host
        address = f"{shown}:{o.port}"
        if (o.tls_cert_path is None) != (o.tls_key_path is None):
            raise InvalidInput("--grpc-tls-cert-path and --grpc-tls-key-path go together")
        try:
            if o.tls_cert_path is not None and o.tls_key_path is not None:
                pair = (_read(o.tls_key_path, "--grpc-tls-key-path"),
                        _read(o.tls_cert_path, "--grpc-tls-cert-path"))  # fmt: skip
                port = self.server.add_secure_port(address, grpc.ssl_server_credentials([pair]))
            else:
                port = self.server.add_insecure_port(address)
        except RuntimeError:
            port = 0
        if not port:
            self.close_upstream()
            raise InvalidInput(f"cannot listen on {address} for gRPC (in use, or not an address)")
        return port

    @property
    def address(self) -> str:
        host = self.options.host
        if ":" in host:
            host = f"[{host}]"
        elif host in ("0.0.0.0", ""):
            host = socket.gethostname()
        return f"{host}:{self.port}"

    def start(self) -> str:
        """Serve; the address served (``host:port``)."""
        self.server.start()
        for name in self._names:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.address

    def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let those under way finish for ``grace`` seconds, close."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.close_upstream()

    def close_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
