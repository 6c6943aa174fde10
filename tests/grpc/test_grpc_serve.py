"""``leopard serve --grpc-port``: SpiceDB's API from a real server process, to the
authzed client, with the preshared key, TLS from files, the health service and server
reflection, following a real broker; and the option errors.

Each server here is ``python -m leopard serve`` in a child process on free ports; the
gRPC address is read from its start-up line (``serving SpiceDB's gRPC API on ...``).
The certificate for TLS is made in the test (``cryptography``): a self-signed one for
127.0.0.1 and localhost.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpcutil
import pytest
from authzed.api import v1
from docs_world import SCHEMA, build, tuples
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from support.http import call, wait_until

from ingest.codecs import Change
from ingest.kafka.local_broker import LocalBroker
from ingest.kafka.publish import publish
from leopard.model.names import parse_tuple

HAS = v1.CheckPermissionResponse.PERMISSIONSHIP_HAS_PERMISSION
NO = v1.CheckPermissionResponse.PERMISSIONSHIP_NO_PERMISSION
KEY = "the-preshared-key_0123"
SERVICES = {
    "authzed.api.v1.PermissionsService",
    "authzed.api.v1.SchemaService",
    "authzed.api.v1.WatchService",
    "authzed.api.v1.ExperimentalService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}


@dataclass
class Served:
    target: str  # host:port of gRPC
    url: str  # the HTTP base URL
    proc: subprocess.Popen[str]
    lines: list[str]  # stderr up to the HTTP line


@contextlib.contextmanager
def leopard_serve(*args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """``leopard serve --port 0 --grpc-port 0 ARGS`` in a child process, once it serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "leopard", "serve", "--port", "0", "--grpc-port", "0", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    lines: list[str] = []
    target = url = None
    try:
        while url is None:  # gRPC starts first, then HTTP announces itself
            line = proc.stderr.readline()
            assert line, f"leopard serve ended: {''.join(lines)}{proc.stderr.read()}"
            lines.append(line)
            found = re.search(r"serving SpiceDB's gRPC API on (\S+?)(,|\s|$)", line)
            if found:
                target = found.group(1)
            found = re.search(r" on (http://\S+?)[,\s]", line)
            if found:
                url = found.group(1)
        assert target is not None, lines
        yield Served(target, url, proc, lines)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stderr.close()


def obj(type: str, id: str) -> Any:
    return v1.ObjectReference(object_type=type, object_id=id)


def user(id: str) -> Any:
    return v1.SubjectReference(object=obj("user", id))


def viewers() -> tuple[str, str]:
    """A doc and a user the data makes a direct viewer of it."""
    for line in tuples():
        m = re.fullmatch(r"doc:(\w+)#viewer@user:(\w+)", line)
        if m:
            return m.group(1), m.group(2)
    raise AssertionError("no doc viewer in the data")


def permission(client: Any, doc: str, who: str, consistency: Any = None,
               metadata: Any = None) -> int:  # fmt: skip
    request = v1.CheckPermissionRequest(resource=obj("doc", doc), permission="view",
                                        subject=user(who), consistency=consistency)  # fmt: skip
    return int(client.CheckPermission(request, timeout=30, metadata=metadata).permissionship)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("serve"))


# -- plain ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_answers_the_authzed_client(index: Path) -> None:
    doc, who = viewers()
    with leopard_serve("--index", str(index)) as served:
        assert re.fullmatch(r"127\.0\.0\.1:\d+", served.target), served.lines
        client = v1.InsecureClient(served.target, "no key needed")
        assert permission(client, doc, who) == HAS
        assert permission(client, doc, "nobody") == NO
        answered = client.CheckBulkPermissions(v1.CheckBulkPermissionsRequest(items=[
            v1.CheckBulkPermissionsRequestItem(resource=obj("doc", doc), permission=p,
                                               subject=user(who))
            for p in ("view", "viewer", "edit")]))  # fmt: skip
        assert [p.item.permissionship for p in answered.pairs][:2] == [HAS, HAS]
        found = client.LookupResources(v1.LookupResourcesRequest(
            resource_object_type="doc", permission="view", subject=user(who)))  # fmt: skip
        assert doc in [r.resource_object_id for r in found]
        assert client.ReadSchema(v1.ReadSchemaRequest()).schema_text == SCHEMA
        with grpc.insecure_channel(served.target) as channel:
            assert serving(channel) and services_listed(channel) == SERVICES
        # what only SpiceDB answers, with no SpiceDB behind: UNIMPLEMENTED, saying why
        with pytest.raises(grpc.RpcError) as refused:
            client.WriteRelationships(v1.WriteRelationshipsRequest())
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(20) in (0, -signal.SIGTERM)
        assert served.proc.stderr is not None
        assert "Traceback" not in served.proc.stderr.read()


def serving(channel: grpc.Channel) -> bool:
    """Whether the health service says SERVING for the server and each API service."""
    stub = health_pb2_grpc.HealthStub(channel)
    status = health_pb2.HealthCheckResponse.SERVING
    names = ["", "authzed.api.v1.PermissionsService", "authzed.api.v1.SchemaService"]
    answers = [stub.Check(health_pb2.HealthCheckRequest(service=n), timeout=10) for n in names]
    with pytest.raises(grpc.RpcError) as unknown:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    return all(a.status == status for a in answers)


def services_listed(channel: grpc.Channel) -> set[str]:
    """The services server reflection lists; each described down to its methods."""
    database = ProtoReflectionDescriptorDatabase(channel)
    names = set(database.get_services())
    described = database.FindFileContainingSymbol("authzed.api.v1.PermissionsService")
    service = next(s for s in described.service if s.name == "PermissionsService")
    assert {"CheckPermission", "CheckBulkPermissions", "LookupResources",
            "LookupSubjects"} <= {m.name for m in service.method}  # fmt: skip
    return names


# -- preshared key and TLS -----------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path, bytes]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert, key, cert PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leopard test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, pem


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    pytest.importorskip("cryptography")
    return self_signed(tmp_path_factory.mktemp("tls"))


def refused_with(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value.code(), refused.value.details()  # type: ignore[attr-defined]


@pytest.mark.slow
def test_the_preshared_key_is_required_as_spicedb_requires_it(index: Path) -> None:
    """SpiceDB's --grpc-preshared-key: no ``authorization`` (or not a bearer one) is
    UNAUTHENTICATED, a wrong key PERMISSION_DENIED (SpiceDB's codes); health checks
    and reflection stay open. The key comes from the environment here."""
    doc, who = viewers()
    with leopard_serve("--index", str(index), env={"LEOPARD_GRPC_PRESHARED_KEY": KEY}) as served:
        assert "preshared key required" in served.lines[0]
        good = v1.Client(served.target, grpcutil.insecure_bearer_token_credentials(KEY))
        assert permission(good, doc, who) == HAS
        assert permission(v1.InsecureClient(served.target, KEY), doc, who) == HAS
        wrong = v1.Client(served.target, grpcutil.insecure_bearer_token_credentials("wrong"))
        code, details = refused_with(lambda: permission(wrong, doc, who))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert details == "invalid preshared key: invalid token"
        anonymous = v1.Client(served.target, grpc.local_channel_credentials())
        code, details = refused_with(lambda: permission(anonymous, doc, who))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert details.startswith("invalid preshared key: ")
        for header in ("Basic " + KEY, KEY, "Bearer "):
            metadata = [("authorization", header)]
            code, _ = refused_with(
                lambda: permission(anonymous, doc, who, metadata=metadata)  # noqa: B023
            )
            assert code == grpc.StatusCode.UNAUTHENTICATED, header
        # streamed and forwarded methods ask for the key too
        code, _ = refused_with(lambda: list(wrong.LookupResources(v1.LookupResourcesRequest(
            resource_object_type="doc", permission="view", subject=user(who)))))  # fmt: skip
        assert code == grpc.StatusCode.PERMISSION_DENIED
        code, _ = refused_with(lambda: anonymous.WriteRelationships(v1.WriteRelationshipsRequest()))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        with grpc.insecure_channel(served.target) as channel:  # no key at all
            assert serving(channel) and services_listed(channel) == SERVICES


@pytest.mark.slow
def test_tls_from_files_with_the_key(index: Path, certificate: tuple[Path, Path, bytes]) -> None:
    cert, key, pem = certificate
    doc, who = viewers()
    args = ("--index", str(index), "--grpc-preshared-key", KEY,
            "--grpc-tls-cert-path", str(cert), "--grpc-tls-key-path", str(key))  # fmt: skip
    with leopard_serve(*args) as served:
        assert "over TLS" in served.lines[0]
        client = v1.Client(served.target, grpcutil.bearer_token_credentials(KEY, pem))
        assert permission(client, doc, who) == HAS
        assert permission(client, doc, "nobody") == NO
        wrong = v1.Client(served.target, grpcutil.bearer_token_credentials("nope", pem))
        assert refused_with(lambda: permission(wrong, doc, who))[0] == (
            grpc.StatusCode.PERMISSION_DENIED)  # fmt: skip
        # plain text to a TLS port, and TLS that does not trust the certificate, fail
        plain = v1.InsecureClient(served.target, KEY)
        assert refused_with(lambda: permission(plain, doc, who))[0] == grpc.StatusCode.UNAVAILABLE
        untrusting = v1.Client(served.target, grpcutil.bearer_token_credentials(KEY))
        code, _ = refused_with(lambda: permission(untrusting, doc, who))
        assert code == grpc.StatusCode.UNAVAILABLE
        with grpc.secure_channel(served.target, grpc.ssl_channel_credentials(pem)) as channel:
            assert serving(channel) and services_listed(channel) == SERVICES


# -- following a broker ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.kafka
def test_tokens_of_published_changes_and_full_consistency(
    broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    """``leopard publish``'s token as ``at_least_as_fresh`` reads the write; a request
    ``fully_consistent`` sees every change published (acknowledged) before it."""
    index = build(tmp_path)
    args = ("--index", str(index), "--brokers", broker.bootstrap, "--topic", topic)
    with leopard_serve(*args, "--grpc-max-wait", "20") as served:
        client = v1.InsecureClient(served.target, "x")
        assert permission(client, "fresh", "newbie") == NO
        written = publish([Change("touch", parse_tuple("doc:fresh#viewer@user:newbie"))],
                          broker.bootstrap, topic)  # fmt: skip
        # the consumer joins its group (about a second here) and applies it
        token = v1.ZedToken(token=written.token)
        answered = client.CheckPermission(v1.CheckPermissionRequest(
            resource=obj("doc", "fresh"), permission="view", subject=user("newbie"),
            consistency=v1.Consistency(at_least_as_fresh=token)), timeout=60)  # fmt: skip
        assert answered.permissionship == HAS
        assert answered.checked_at.token == written.token
        full = v1.Consistency(fully_consistent=True)
        for n in range(8):  # each change asked about right after its acknowledgement
            later = publish([Change("touch", parse_tuple(f"doc:fresh#viewer@user:late{n}"))],
                            broker.bootstrap, topic)  # fmt: skip
            assert permission(client, "fresh", f"late{n}", consistency=full) == HAS, n
            checked = client.CheckPermission(v1.CheckPermissionRequest(
                resource=obj("doc", "fresh"), permission="view", subject=user("newbie"),
                consistency=full))  # fmt: skip
            assert checked.checked_at.token == later.token
            time.sleep(0.1 * (n % 3))  # idle gaps of different lengths


@pytest.mark.spicedb
def test_health_follows_readiness(tmp_path: Path) -> None:
    """The standard health service is what gRPC deployments probe (Kubernetes, Envoy):
    SERVING while the server is ready, NOT_SERVING once it is not. Here the follower of
    SpiceDB stops at a schema change (its answers would be stale without bound): HTTP's
    /readyz and gRPC's health both say so, and the change is logged with the reason."""
    from support.spicedb_front import SpiceDBFront

    from ingest.upstream.spicedb import SpiceDBSource, bootstrap

    with SpiceDBFront(SCHEMA) as front:
        front.write(tuples()[:200])
        index = tmp_path / "idx"
        bootstrap(index, SpiceDBSource(front.target))
        with leopard_serve("--index", str(index), "--source", f"spicedb:{front.target}") as served:
            channel = grpc.insecure_channel(served.target)
            ready = lambda: call(served.url, "GET", "/readyz").status == 200  # noqa: E731
            assert wait_until(ready, 30)
            assert wait_until(lambda: serving(channel), 10)
            front.client().WriteSchema(
                v1.WriteSchemaRequest(schema=SCHEMA + "\ndefinition extra {}\n")
            )
            assert wait_until(lambda: not ready(), 30)
            assert wait_until(lambda: not serving(channel), 10)
            channel.close()
            served.proc.send_signal(signal.SIGTERM)
            served.proc.wait(20)
            assert served.proc.stderr is not None
            said = served.proc.stderr.read()
            assert "gRPC health: NOT_SERVING: the consumer has stopped" in said, said
            assert "SERVING again" not in said  # the first SERVING after start is no recovery
            assert "the schema changed" in said


# -- option errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--grpc-host", "127.0.0.1"], "--grpc-host needs --grpc-port"),
        (["--upstream-spicedb", "127.0.0.1:50051"], "--upstream-spicedb needs --grpc-port"),
        (["--grpc-tls-cert-path", "c.pem"], "--grpc-tls-cert-path needs --grpc-port"),
        (["--grpc-port", "70000"], "Invalid value for '--grpc-port'"),
        (["--grpc-max-wait", "-1", "--grpc-port", "0"], "Invalid value for '--grpc-max-wait'"),
    ],
)
def test_grpc_options_without_what_they_need_are_usage_errors(
    index: Path, args: list[str], message: str
) -> None:
    from click.testing import CliRunner

    from leopard.cli.serve import serve_command

    result = CliRunner().invoke(serve_command, ["--index", str(index), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Usage:" in result.output and result.exception is None or isinstance(
        result.exception, SystemExit)  # fmt: skip


def _busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.slow
def test_bad_grpc_settings_stop_serve_with_one_line(
    index: Path, tmp_path: Path, certificate: tuple[Path, Path, bytes]
) -> None:
    """Errors found when the server starts: exit status 1, one line naming the value."""
    cert, key, _ = certificate
    _, other_key, _ = self_signed(tmp_path)  # a key of another certificate
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    busy = _busy_port()
    port = str(busy.getsockname()[1])
    try:
        cases = [
            (["--grpc-port", port], f"cannot listen on 127.0.0.1:{port} for gRPC"),
            (["--grpc-port", "0", "--grpc-tls-cert-path", str(cert)],
             "--grpc-tls-cert-path and --grpc-tls-key-path go together"),
            (["--grpc-port", "0", "--grpc-tls-cert-path", str(tmp_path / "none.pem"),
              "--grpc-tls-key-path", str(key)], "--grpc-tls-cert-path"),
            (["--grpc-port", "0", "--grpc-tls-cert-path", str(garbage),
              "--grpc-tls-key-path", str(key)], "garbage.pem' holds no PEM certificate"),
            (["--grpc-port", "0", "--grpc-tls-cert-path", str(cert),
              "--grpc-tls-key-path", str(cert)], "cert.pem' holds no PEM private key"),
            (["--grpc-port", "0", "--grpc-tls-cert-path", str(cert),
              "--grpc-tls-key-path", str(other_key)], "do not load as a certificate and its key"),
            (["--grpc-port", "0", "--grpc-host", "no.such.host.invalid"],
             "cannot listen on no.such.host.invalid:0 for gRPC: not an address"),
            (["--grpc-port", "0", "--grpc-preshared-key", ""],
             "--grpc-preshared-key must not be empty"),
            (["--grpc-port", "0", "--upstream-spicedb", "nohostport"],
             "--upstream-spicedb 'nohostport': expected HOST:PORT"),
        ]  # fmt: skip
        for args, message in cases:
            done = subprocess.run(
                [sys.executable, "-m", "leopard", "serve", "--index", str(index), "--port", "0",
                 *args],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 1, (args, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: "), (args, done.stderr)
            assert message in lines[0], (args, lines[0])
    finally:
        busy.close()
