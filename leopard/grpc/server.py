"""The gRPC server: SpiceDB's API on a port, beside ``leopard serve``'s HTTP.

``GrpcServer(index, options, consumer=...)`` binds the port at once (so a port in
use, or unreadable TLS files, fail before anything is served: ``InvalidInput`` naming
them), ``start()`` serves, ``stop()`` drains and closes. It shares the ``Index`` of
the process and, when one runs here, the change consumer, whose batches wake
``at_least_as_fresh`` waits and whose high watermarks make ``fully_consistent``'s
target (``leopard.grpc.consistency``).

Beside SpiceDB's services it serves the standard ``grpc.health.v1.Health`` and server
reflection (``grpcurl`` lists
and describes the API), both open without the preshared key, as health checks are.
Health follows HTTP's ``/readyz`` (``readiness``, asked every ``HEALTH_INTERVAL``
seconds): every service is SERVING while it is ready, NOT_SERVING while it is not (a
stopped consumer, a gap in the stream, a broken index: answers that may be stale
without bound), and the change is logged with the reasons.
Without the ``[grpc]`` extra (grpcio, grpcio-health-checking, grpcio-reflection,
authzed) this module does not import, with an error naming it.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
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

__all__ = ["HEALTH_INTERVAL", "GrpcOptions", "GrpcServer"]

log = logging.getLogger(__name__)

#: how often health is set again from the server's readiness (seconds)
HEALTH_INTERVAL = 1.0


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
    #: None: TLS unless the upstream is a Unix socket or a loopback address
    upstream_tls: bool | None = None
    #: calls served at once (each stream and each wait holds one); streamed answers take
    #: at most three quarters of them (see leopard.grpc.service)
    workers: int = 64

    def check(self) -> None:
        """``InvalidInput`` naming the first setting that cannot serve: asked before
        anything starts (before ``serve --workers`` forks), so it is said once."""
        if self.preshared_key is not None and not self.preshared_key:
            raise InvalidInput("--grpc-preshared-key must not be empty")
        if self.upstream is not None and (not self.upstream or ":" not in self.upstream):
            raise InvalidInput(f"--upstream-spicedb {self.upstream!r}: expected HOST:PORT")
        if (self.tls_cert_path is None) != (self.tls_key_path is None):
            raise InvalidInput("--grpc-tls-cert-path and --grpc-tls-key-path go together")
        if self.tls_cert_path is not None and self.tls_key_path is not None:
            _key_pair(self.tls_cert_path, self.tls_key_path)
        why = _unlistenable(self.host, self.port)
        if why is not None:
            raise InvalidInput(f"cannot listen on {_shown(self.host)}:{self.port} for gRPC: {why}")


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{what} {path!r} cannot be read: {exc.strerror or exc}") from None


def _key_pair(cert_path: str, key_path: str) -> tuple[bytes, bytes]:
    """The PEM private key and certificate chain of the files, checked to load together
    (gRPC's core would refuse them only as a port it cannot add, with log lines)."""
    key = _read(key_path, "--grpc-tls-key-path")
    cert = _read(cert_path, "--grpc-tls-cert-path")
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise InvalidInput(f"--grpc-tls-cert-path {cert_path!r} holds no PEM certificate")
    if b"PRIVATE KEY-----" not in key:
        raise InvalidInput(f"--grpc-tls-key-path {key_path!r} holds no PEM private key")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, ValueError) as exc:
        raise InvalidInput(
            f"--grpc-tls-cert-path {cert_path!r} and --grpc-tls-key-path {key_path!r} do "
            f"not load as a certificate and its key: {getattr(exc, 'reason', None) or exc}"
        ) from None
    return key, cert


def _unlistenable(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, asked before gRPC's core is (whose own
    refusal is also a log line on stderr); None when it can."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        return f"not an address ({exc})"
    if port == 0 or not found:
        return None
    family, kind, proto, _, address = found[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


class GrpcServer:
    """SpiceDB's API over ``index`` (see the module docstring). ``readiness`` says why
    the server is not ready (nothing when it is); without it, health is SERVING while
    the server runs."""

    def __init__(
        self,
        index: Index,
        options: GrpcOptions,
        *,
        consumer: Any = None,
        readiness: Callable[[], list[str]] | None = None,
    ) -> None:
        self.options = options
        self.readiness = readiness
        self._watching = threading.Event()
        self._serving: bool | None = None
        self._said_down = False  # NOT_SERVING was logged since the last SERVING
        options.check()
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
        streams = max(1, options.workers - max(8, options.workers // 4))
        router = Router(servicers, self.upstream, check, streams=streams)
        self.server.add_generic_rpc_handlers((router,))
        self._names = ["", *names]
        self.port = self._bind()

    def _bind(self) -> int:
        o = self.options
        address = f"{_shown(o.host)}:{o.port}"
        try:
            if o.tls_cert_path is not None and o.tls_key_path is not None:
                pair = _key_pair(o.tls_cert_path, o.tls_key_path)
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
        self._set_health()
        if self.readiness is not None:
            threading.Thread(target=self._watch, name="leopard-grpc-health", daemon=True).start()
        return self.address

    def _set_health(self) -> None:
        reasons = []
        if self.readiness is not None:
            try:
                reasons = self.readiness()
            except Exception as exc:  # health must be said, whatever failed
                reasons = [f"readiness could not be read: {type(exc).__name__}: {exc}"]
        serving = not reasons
        if serving == self._serving:
            return
        if self._serving is not None:  # a change, not the state at start
            if not serving:
                log.warning("gRPC health: NOT_SERVING: %s", "; ".join(reasons))
                self._said_down = True
            elif self._said_down:  # not the first SERVING after a start (a consumer's)
                log.warning("gRPC health: SERVING again")
                self._said_down = False
        self._serving = serving
        status = health_pb2.HealthCheckResponse
        for name in self._names:
            self.health.set(name, status.SERVING if serving else status.NOT_SERVING)

    def _watch(self) -> None:
        while not self._watching.wait(HEALTH_INTERVAL):
            self._set_health()

    def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let those under way finish for ``grace`` seconds, close."""
        self._watching.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.close_upstream()

    def close_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
