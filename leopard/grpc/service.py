"""Routing every gRPC method: Leopard's answer, SpiceDB's (forwarded), or why not.

``Router`` is one ``grpc.GenericRpcHandler`` for SpiceDB's whole v1 API, built from
the service descriptors that the ``authzed`` package ships (PermissionsService,
SchemaService, WatchService, ExperimentalService). A method a servicer answers
(``Permissions.ANSWERS``, ``Schema.ANSWERS``) runs it; every other method, and any
method of a service not listed (a newer API), is forwarded as raw bytes to the SpiceDB
behind Leopard with its shape kept (``Upstream.handler``), or, without one, ends
UNIMPLEMENTED saying what would answer it.

Every call first shows the preshared key when one is set, as SpiceDB's
``--grpc-preshared-key`` wants it (``authorization: Bearer KEY``): a missing one is
UNAUTHENTICATED, a wrong one PERMISSION_DENIED, in SpiceDB's words. A request that
does not parse is INVALID_ARGUMENT; a ``Refusal`` ends the call with its status; an
error of the index is mapped by ``refusal_of``.

A streamed answer (LookupResources, LookupSubjects) holds a worker thread until the
client has read it all: a client that stops reading blocks its thread on the
connection's flow control. So that such streams cannot take every thread (and every
check and health probe with them), at most ``streams`` are answered at once; one more
is RESOURCE_EXHAUSTED at once, saying so, and the other threads stay for the rest.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from authzed.api.v1 import (
    experimental_service_pb2,
    permission_service_pb2,
    schema_service_pb2,
    watch_service_pb2,
)
from google.protobuf import message_factory
from google.protobuf.message import DecodeError

from leopard.errors import LeopardError
from leopard.grpc.forward import Upstream
from leopard.grpc.status import Refusal, refusal_of

__all__ = ["Router", "SERVICES", "key_check"]

SERVICES = (
    permission_service_pb2.DESCRIPTOR.services_by_name["PermissionsService"],
    schema_service_pb2.DESCRIPTOR.services_by_name["SchemaService"],
    watch_service_pb2.DESCRIPTOR.services_by_name["WatchService"],
    experimental_service_pb2.DESCRIPTOR.services_by_name["ExperimentalService"],
)
_SHAPES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}
Check = Callable[[grpc.ServicerContext], None]


def _serialize(message: Any) -> bytes:
    """A response: a message, or the upstream's bytes as they came."""
    return message if message.__class__ is bytes else message.SerializeToString()  # type: ignore[no-any-return]


def key_check(key: str) -> Check:
    """Refuse a call without ``authorization: Bearer <key>`` (SpiceDB's preshared key)."""
    expected = key.encode()

    def check(context: grpc.ServicerContext) -> None:
        value = None
        for name, got in context.invocation_metadata():  # type: ignore[misc]
            if name == "authorization":
                value = got
                break
        unauthenticated = grpc.StatusCode.UNAUTHENTICATED
        if value is None:
            context.abort(
                unauthenticated, "invalid preshared key: Request unauthenticated with bearer"
            )
        scheme, sep, token = str(value).partition(" ")
        if not sep:
            context.abort(unauthenticated, "invalid preshared key: Bad authorization string")
        if scheme.lower() != "bearer":
            context.abort(
                unauthenticated, "invalid preshared key: Request unauthenticated with bearer"
            )
        if not token:
            context.abort(unauthenticated, "missing preshared key")
        if not hmac.compare_digest(token.encode(), expected):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "invalid preshared key: invalid token")

    return check


def _guarded(check: Check | None, run: Callable[..., Any]) -> Callable[..., Any]:
    if check is None:
        return run

    def guarded(request: Any, context: grpc.ServicerContext) -> Any:
        check(context)
        return run(request, context)

    return guarded


class Router(grpc.GenericRpcHandler):
    """The handler of every method (see the module docstring)."""

    def __init__(
        self,
        servicers: list[Any],
        upstream: Upstream | None,
        check: Check | None = None,
        *,
        streams: int = 48,
    ) -> None:
        self.upstream = upstream
        self.check = check
        self.streams = streams
        self._streaming = threading.BoundedSemaphore(streams)
        answers = {}
        for servicer in servicers:
            for name in servicer.ANSWERS:
                answers[(servicer.SERVICE, name)] = servicer
        self.table: dict[str, grpc.RpcMethodHandler] = {}
        for service in SERVICES:
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                owner = answers.get((service.full_name, method.name))
                if owner is not None:
                    self.table[path] = self._answer(owner, method)
                else:
                    self.table[path] = self._elsewhere(
                        path, (method.client_streaming, method.server_streaming), method.input_type
                    )

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method  # type: ignore[attr-defined]
        found = self.table.get(method)
        if found is None:  # a method of no service listed: its shape is unknown, stream both
            found = self._elsewhere(method, (True, True), None)
        return found

    def _answer(self, servicer: Any, method: Any) -> grpc.RpcMethodHandler:
        parse = message_factory.GetMessageClass(method.input_type).FromString
        run = getattr(servicer, method.name)
        check = self.check

        def _request(raw: bytes, context: grpc.ServicerContext) -> Any:
            if check is not None:
                check(context)
            try:
                return parse(raw)
            except DecodeError as exc:
                raise Refusal(
                    grpc.StatusCode.INVALID_ARGUMENT, f"the request does not parse: {exc}"
                ) from None

        if not method.server_streaming:

            def unary(raw: bytes, context: grpc.ServicerContext) -> Any:
                try:
                    return run(_request(raw, context), context)
                except Refusal as refusal:
                    refusal.abort(context)
                except LeopardError as exc:
                    refusal_of(exc).abort(context)

            return grpc.unary_unary_rpc_method_handler(unary, response_serializer=_serialize)

        slots, most = self._streaming, self.streams

        def streamed(raw: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
            if not slots.acquire(blocking=False):
                Refusal(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{most} streamed answers are being sent already, the most this server "
                    "sends at once; try again once a client has read its answer",
                ).abort(context)
            try:
                yield from run(_request(raw, context), context)
            except Refusal as refusal:
                refusal.abort(context)
            except LeopardError as exc:
                refusal_of(exc).abort(context)
            finally:
                slots.release()

        return grpc.unary_stream_rpc_method_handler(streamed, response_serializer=_serialize)

    def _elsewhere(self, path: str, shape: tuple[bool, bool], input_type: Any) -> Any:
        """Forward ``path`` to the upstream, or refuse it saying why."""
        if self.upstream is not None:
            run = self.upstream.handler(path, shape, input_type)
        else:
            name = path.rpartition("/")[2]

            def run(request: Any, context: grpc.ServicerContext) -> Any:
                context.abort(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"{name} is answered by SpiceDB, not by Leopard's index (which answers "
                    "CheckPermission, CheckBulkPermissions, LookupResources, LookupSubjects "
                    "and ReadSchema): start Leopard with --upstream-spicedb HOST:PORT to "
                    "forward it to the SpiceDB it indexes",
                )

        return _SHAPES[shape](_guarded(self.check, run))
