"""SpiceDB as a source: the connection, its relationships as tuples, and the bootstrap.

``SpiceDBSource`` says how to reach one SpiceDB: a gRPC target (``127.0.0.1:50051``,
``unix:///path/to.sock``), its preshared key, and TLS or not (by default TLS, except
for a Unix socket or a loopback address). ``bootstrap`` builds an index from it:

1. ``ReadSchema``: the schema text is the index's configuration (its union-only
   relations and permissions are the sets) and its ``read_at`` ZedToken is the
   bootstrap revision;
2. ``ExportBulkRelationships`` at exactly that revision, streamed and resumed from
   its last cursor when the stream breaks; where SpiceDB does not serve the export
   (UNIMPLEMENTED), ``ReadRelationships`` of each definition, in pages, at that same
   snapshot;
3. the build, which records that revision as the index's position (under
   ``SPICEDB_KEY``) and the token in its source state, so that ``leopard follow``
   watches from exactly there.

Caveated and expiring relationships cannot be indexed: they are left out and counted,
as the Watch codec refuses them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from authzed.api.v1 import core_pb2, schema_service_pb2, schema_service_pb2_grpc
from authzed.api.v1 import permission_service_pb2 as perm
from authzed.api.v1 import permission_service_pb2_grpc as perm_grpc

from ingest.codecs.fields import from_fields
from leopard.core.batches import table_from_tuples
from leopard.core.build import BuildReport, build_from_batches
from leopard.errors import DecodeError, UpstreamError
from leopard.model.config import Config, SchemaSource
from leopard.model.names import RelationTuple
from leopard.model.schema.spicedb import parse_spicedb
from leopard.model.targets import uses_tls as tls_by_default
from leopard.model.zedtoken import SPICEDB_KEY, decode_zedtoken, revision_number

__all__ = [
    "BootstrapReport",
    "SpiceDBSource",
    "bootstrap",
    "relationship_tuple",
    "upstream_error",
]

log = logging.getLogger("leopard.upstream")

#: relationships a page of the export (or of ReadRelationships) asks for
PAGE = 1000
#: rows of one Arrow batch handed to the build
BATCH_ROWS = 1 << 16
#: seconds a unary call may take
CALL_TIMEOUT = 30.0
#: how often a broken export stream is resumed from its cursor before giving up
RESUMES = 5
#: keepalive (ms): a ping after this long without a frame from SpiceDB, and the
#: connection given up when the ping is not answered within the timeout. Without it a
#: Watch whose path went silent (a NAT or load balancer that dropped the flow, a host
#: lost without a RST) waits forever and looks idle: nothing is applied, nothing is
#: logged. With it the stream fails (UNAVAILABLE), and the follower reconnects and
#: resumes from its stored revision. 30 s, since a gRPC server counts pings closer
#: than its minimum as strikes (grpc-go's default is 5 minutes, unless it sends data in
#: between) and answers too many with a GOAWAY: the stream then ends, is resumed the
#: same way, and gRPC doubles the interval.
KEEPALIVE_MS = (30_000, 10_000)


def channel_options(keepalive_ms: tuple[int, int] = KEEPALIVE_MS) -> list[tuple[str, int]]:
    """The options of a channel to SpiceDB.

    The reconnection backoff is bounded: gRPC's default grows to 120 s, and while it
    waits every call fails at once, so a SpiceDB back after a long outage would be seen
    up to two minutes late. Keepalive pings are sent while a call is open (the Watch
    always is) and not on an idle channel, which a server without
    ``PermitWithoutStream`` (SpiceDB's, by grpc-go's default) takes for abuse; and
    with no cap on pings while the client sends no data (gRPC's default stops after 2),
    since a Watch sends nothing after its request. The ping timeout is the keepalive
    timeout too: gRPC (1.85) closes the connection on a ping unanswered within
    ``grpc.http2.ping_timeout_ms`` (a minute by default), which a keepalive timeout
    alone does not shorten.
    """
    time_ms, timeout_ms = keepalive_ms
    return [
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 5000),
        ("grpc.keepalive_time_ms", time_ms),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        ("grpc.http2.ping_timeout_ms", timeout_ms),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
    ]


@dataclass
class SpiceDBSource:
    """How to reach one SpiceDB. ``tls`` None: TLS unless the target is local."""

    target: str
    key: str | None = None
    tls: bool | None = None
    #: gRPC keepalive (ms): ping interval and timeout (see ``KEEPALIVE_MS``)
    keepalive_ms: tuple[int, int] = KEEPALIVE_MS
    _channel: grpc.Channel | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"spicedb:{self.target}"

    def uses_tls(self) -> bool:
        return tls_by_default(self.target, self.tls)

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            options = channel_options(self.keepalive_ms)
            if self.uses_tls():
                creds = grpc.ssl_channel_credentials()
                if self.key:
                    creds = grpc.composite_channel_credentials(
                        creds, grpc.access_token_call_credentials(self.key)
                    )
                self._channel = grpc.secure_channel(self.target, creds, options=options)
            else:
                self._channel = grpc.insecure_channel(self.target, options=options)
        return self._channel

    def metadata(self) -> list[tuple[str, str]]:
        """Per-call metadata: the key as a bearer token on a plain channel (a TLS
        channel carries it in its call credentials)."""
        if self.key and not self.uses_tls():
            return [("authorization", f"Bearer {self.key}")]
        return []

    def head_token(self, timeout: float | None = None) -> str:
        """The ZedToken of SpiceDB's head revision, as of now: ReadSchema's ``read_at``
        (SpiceDB reads the schema at its head); UpstreamError if it does not answer."""
        stub = schema_service_pb2_grpc.SchemaServiceStub(self.channel())
        try:
            answer = stub.ReadSchema(
                schema_service_pb2.ReadSchemaRequest(),
                metadata=self.metadata(),
                timeout=CALL_TIMEOUT if timeout is None else timeout,
            )
        except grpc.RpcError as exc:
            raise upstream_error(self, "ReadSchema", exc) from None
        return str(answer.read_at.token)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def upstream_error(source: SpiceDBSource, what: str, exc: grpc.RpcError) -> UpstreamError:
    """One line naming the SpiceDB, what was asked and its status."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code is not None else "UNKNOWN"
    return UpstreamError(f"{source.name}: {what} failed: {name}: {details}")


def relationship_tuple(rel: Any) -> RelationTuple:
    """The tuple of a ``v1.Relationship``; DecodeError for a caveated or expiring one
    or one that is not a valid tuple."""
    if rel.HasField("optional_caveat") and rel.optional_caveat.caveat_name:
        raise DecodeError(
            f"has the caveat {rel.optional_caveat.caveat_name!r}; caveated relationships "
            "are not supported"
        )
    if rel.HasField("optional_expires_at"):
        raise DecodeError("has an expiration; expiring relationships are not supported")
    s = rel.subject
    fields: dict[str, tuple[str, Any]] = {
        "resource_type": ("resource.object_type", rel.resource.object_type),
        "resource_id": ("resource.object_id", rel.resource.object_id),
        "relation": ("relation", rel.relation),
        "subject_type": ("subject.object.object_type", s.object.object_type),
        "subject_id": ("subject.object.object_id", s.object.object_id),
        "subject_relation": ("subject.optional_relation", s.optional_relation or None),
    }
    return from_fields("relationship", fields)


# -- the bootstrap -------------------------------------------------------------------


@dataclass
class BootstrapReport:
    """What a bootstrap read and built."""

    source: str
    revision: str  # the ZedToken of ReadSchema's read_at
    relationships: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    method: str = "ExportBulkRelationships"
    build: BuildReport | None = None

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def bootstrap(
    path: str | Path,
    source: SpiceDBSource,
    *,
    only: list[str] | None = None,
    max_shrink: float | None = 0.5,
    wait: bool | float = False,
    progress: Callable[[int], None] | None = None,
    memory: int | None = None,
) -> BootstrapReport:
    """Build the index at ``path`` from SpiceDB's schema and relationships at one
    revision, and record that revision as its position (see the module docstring).
    ``memory`` is the build's budget in bytes (``build_from_batches``)."""
    schema_stub = schema_service_pb2_grpc.SchemaServiceStub(source.channel())
    try:
        answer = schema_stub.ReadSchema(
            schema_service_pb2.ReadSchemaRequest(),
            metadata=source.metadata(),
            timeout=CALL_TIMEOUT,
        )
    except grpc.RpcError as exc:
        raise upstream_error(source, "ReadSchema", exc) from None
    token = answer.read_at.token
    revision = revision_number(decode_zedtoken(token).revision)
    text = answer.schema_text
    config = Config.model_validate(
        {
            "schema": SchemaSource(
                dialect="spicedb", text=text, filename=f"{source.name} ReadSchema", only=only or []
            )
        }
    )
    definitions = sorted(parse_spicedb(text, f"{source.name} ReadSchema").types)
    report = BootstrapReport(source.name, token)
    tuples = _relationships(source, token, definitions, report, progress)
    report.build = build_from_batches(
        _batches(tuples),
        path,
        config,
        position={SPICEDB_KEY: revision},
        source_state={SPICEDB_KEY: {"token": token, "source": source.name}},
        max_shrink=max_shrink,
        wait=wait,
        memory=memory,
    )
    if report.skipped:
        log.warning(
            "%s: left out of the index: %s",
            source.name,
            ", ".join(f"{n:,} {why}" for why, n in sorted(report.skipped.items())),
        )
    return report


def _batches(tuples: Iterator[RelationTuple]) -> Iterator[Any]:
    chunk: list[RelationTuple] = []
    for t in tuples:
        chunk.append(t)
        if len(chunk) >= BATCH_ROWS:
            yield table_from_tuples(chunk)
            chunk = []
    if chunk:
        yield table_from_tuples(chunk)


def _relationships(
    source: SpiceDBSource,
    token: str,
    definitions: list[str],
    report: BootstrapReport,
    progress: Callable[[int], None] | None,
) -> Iterator[RelationTuple]:
    """Every relationship at the revision of ``token``, as tuples (counted)."""
    try:
        pages = _export(source, token)
        first = next(pages, None)
        chained: Iterator[Any] = _chain(first, pages)
    except _Unimplemented:
        report.method = "ReadRelationships"
        chained = _read_each(source, token, definitions)
    for relationships in chained:
        for rel in relationships:
            try:
                t = relationship_tuple(rel)
            except DecodeError as exc:
                report.skip(_skip_reason(rel, exc))
                continue
            report.relationships += 1
            yield t
        if progress is not None:
            progress(len(relationships))


def _skip_reason(rel: Any, exc: DecodeError) -> str:
    if rel.HasField("optional_caveat") and rel.optional_caveat.caveat_name:
        return "caveated relationships"
    if rel.HasField("optional_expires_at"):
        return "expiring relationships"
    return f"invalid relationships ({exc})"


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    if first is not None:
        yield first
        yield from rest


class _Unimplemented(Exception):
    pass


def _export(source: SpiceDBSource, token: str) -> Iterator[Any]:
    """Pages of ExportBulkRelationships at exactly ``token``, resumed by cursor."""
    stub = perm_grpc.PermissionsServiceStub(source.channel())
    cursor: str | None = None
    failures = 0
    while True:
        request = perm.ExportBulkRelationshipsRequest(
            consistency=perm.Consistency(at_exact_snapshot=core_pb2.ZedToken(token=token)),
            optional_limit=PAGE,
        )
        if cursor is not None:
            request.optional_cursor.token = cursor
        try:
            for page in stub.ExportBulkRelationships(request, metadata=source.metadata()):
                failures = 0
                cursor = page.after_result_cursor.token or cursor
                yield page.relationships
            return
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            if code == grpc.StatusCode.UNIMPLEMENTED and cursor is None:
                raise _Unimplemented() from None
            failures += 1
            if code not in _RETRIED or failures > RESUMES:
                raise upstream_error(source, "ExportBulkRelationships", exc) from None
            log.warning("%s: export interrupted (%s); resuming", source.name, code.name)
            time.sleep(min(0.2 * 2**failures, 5.0))


_RETRIED = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
)


def _read_each(source: SpiceDBSource, token: str, definitions: list[str]) -> Iterator[Any]:
    """Pages of ReadRelationships of each definition at exactly ``token``."""
    stub = perm_grpc.PermissionsServiceStub(source.channel())
    for definition in definitions:
        cursor: str | None = None
        while True:
            request = perm.ReadRelationshipsRequest(
                consistency=perm.Consistency(at_exact_snapshot=core_pb2.ZedToken(token=token)),
                relationship_filter=perm.RelationshipFilter(resource_type=definition),
                optional_limit=PAGE,
            )
            if cursor is not None:
                request.optional_cursor.token = cursor
            try:
                page = list(stub.ReadRelationships(request, metadata=source.metadata()))
            except grpc.RpcError as exc:
                raise upstream_error(source, f"ReadRelationships of {definition!r}", exc) from None
            if page:
                yield [p.relationship for p in page]
                cursor = page[-1].after_result_cursor.token
            if len(page) < PAGE:
                break
