"""Forwarding to the SpiceDB behind Leopard: raw bytes in, SpiceDB's answer out.

What the index cannot answer goes, unchanged, to the SpiceDB that Leopard indexes
(``--upstream-spicedb HOST:PORT``): every method Leopard does not serve itself
(``WriteRelationships``, ``ReadRelationships``, ``Watch``, ``ExpandPermissionTree``,
``WriteSchema``, the bulk import and export, the experimental service, any method of
a newer API), and the requests of the methods it serves that need SpiceDB (see
``leopard.grpc.permissions``). A forwarded call keeps its shape (unary or streaming,
either way), its deadline, its metadata (the key to the upstream replaces the
client's ``authorization``), and comes back with SpiceDB's answer, headers, trailers
and error status as they are; a client's cancellation cancels the upstream call.

One change is made to a request: a Leopard version given as ``at_least_as_fresh``
means nothing to SpiceDB, whose head is at least as fresh as anything Leopard has
applied from it, so it is sent as ``fully_consistent``; a Leopard version as
``at_exact_snapshot`` cannot be honoured there and is refused (FAILED_PRECONDITION).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import message_factory

from leopard.errors import InvalidInput
from leopard.grpc.status import Refusal
from leopard.model.targets import uses_tls
from leopard.model.tokens import decode_token

__all__ = ["Upstream", "for_upstream", "remaining"]

#: request headers never passed on: transport ones, and the client's key to Leopard
_DROP = ("authorization", "user-agent", "content-type", "te", "host")


def remaining(context: grpc.ServicerContext) -> float | None:
    """The caller's deadline, as a timeout (None: it set none)."""
    left = context.time_remaining()
    return None if left is None or left > 1e7 else max(left, 0.0)


def _is_ours(token: str) -> bool:
    try:
        decode_token(token)
    except InvalidInput:
        return False
    return True


def for_upstream(request: Any) -> bool:
    """Make ``request``'s consistency one SpiceDB understands; whether it changed."""
    if not request.HasField("consistency"):
        return False
    c = request.consistency
    which = c.WhichOneof("requirement")
    if which == "at_least_as_fresh" and _is_ours(c.at_least_as_fresh.token):
        c.fully_consistent = True
        return True
    if which == "at_exact_snapshot" and _is_ours(c.at_exact_snapshot.token):
        raise Refusal(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"at_exact_snapshot {c.at_exact_snapshot.token} is a Leopard version: the "
            "SpiceDB behind Leopard, which must answer this request, cannot read at it",
        )
    return False


class Upstream:
    """A channel to the SpiceDB behind Leopard, and calls over it as raw bytes."""

    def __init__(
        self, target: str, *, preshared_key: str | None = None, tls: bool | None = None
    ) -> None:
        if not target or ":" not in target:
            raise InvalidInput(f"--upstream-spicedb {target!r}: expected HOST:PORT")
        self.target = target
        self.tls = tls = uses_tls(target, tls)  # None: TLS unless local
        options = [("grpc.max_receive_message_length", 64 << 20)]
        self.channel = (
            grpc.secure_channel(target, grpc.ssl_channel_credentials(), options)
            if tls
            else grpc.insecure_channel(target, options)
        )
        self._key = ("authorization", f"Bearer {preshared_key}") if preshared_key else None

    def close(self) -> None:
        self.channel.close()

    # -- one call --------------------------------------------------------------------

    def _metadata(self, context: grpc.ServicerContext) -> list[tuple[str, Any]]:
        out = [
            (m.key, m.value)  # type: ignore[attr-defined]
            for m in context.invocation_metadata()
            if m.key not in _DROP and not m.key.startswith(("grpc-", ":"))  # type: ignore[attr-defined]
        ]
        if self._key is not None:
            out.append(self._key)
        return out

    def _relay(self, exc: grpc.RpcError, context: grpc.ServicerContext) -> None:
        code, details = exc.code(), exc.details()  # type: ignore[attr-defined]
        if code is grpc.StatusCode.UNAVAILABLE:
            details = f"the SpiceDB behind Leopard ({self.target}) is unavailable: {details}"
        trailers = exc.trailing_metadata()  # type: ignore[attr-defined]
        if trailers:
            context.set_trailing_metadata(tuple(trailers))
        context.abort(code, details)

    def unary(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        """A unary call, answered with SpiceDB's response (or its error)."""
        future = self.channel.unary_unary(method).future(
            request, timeout=remaining(context), metadata=self._metadata(context)
        )
        context.add_callback(future.cancel)
        try:
            response = future.result()
        except grpc.RpcError as exc:
            self._relay(exc, context)
            raise
        _headers(future, context)
        return response  # type: ignore[no-any-return]

    def stream(self, method: str, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        """A server-streaming call, SpiceDB's responses as they come."""
        call = self.channel.unary_stream(method)(
            request, timeout=remaining(context), metadata=self._metadata(context)
        )
        return self._drain(call, context)

    def _drain(self, call: Any, context: grpc.ServicerContext) -> Iterator[bytes]:
        context.add_callback(call.cancel)
        try:
            _headers(call, context)
            yield from call
            _trailers(call, context)
        except grpc.RpcError as exc:
            self._relay(exc, context)

    # -- a whole method --------------------------------------------------------------

    def handler(self, method: str, shape: tuple[bool, bool], input_type: Any) -> Callable[..., Any]:
        """The behaviour of ``method`` (``shape`` is client and server streaming):
        forward every call. ``input_type``: the request descriptor, when the method's
        requests may carry a consistency to make SpiceDB's."""
        client_streaming, server_streaming = shape
        parse = None
        if input_type is not None and "consistency" in input_type.fields_by_name:
            parse = message_factory.GetMessageClass(input_type).FromString

        def adapt(request: bytes) -> bytes:
            if parse is not None:
                message = parse(request)
                if for_upstream(message):
                    return message.SerializeToString()  # type: ignore[no-any-return]
            return request

        if not client_streaming and not server_streaming:
            return lambda request, context: self.unary(method, adapt(request), context)
        if not client_streaming:
            return lambda request, context: self.stream(method, adapt(request), context)
        if not server_streaming:
            call = self.channel.stream_unary(method)

            def client_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
                future = call.future(
                    requests, timeout=remaining(context), metadata=self._metadata(context)
                )
                context.add_callback(future.cancel)
                try:
                    response = future.result()
                except grpc.RpcError as exc:
                    self._relay(exc, context)
                    raise
                _headers(future, context)
                return response  # type: ignore[no-any-return]

            return client_stream
        both = self.channel.stream_stream(method)

        def bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            call = both(requests, timeout=remaining(context), metadata=self._metadata(context))
            return self._drain(call, context)

        return bidi


def _passable(metadata: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(
        (m[0], m[1]) for m in metadata or () if not m[0].startswith(("grpc-", ":", "content-type"))
    )


def _headers(call: Any, context: grpc.ServicerContext) -> None:
    headers = _passable(call.initial_metadata())
    if headers:
        context.send_initial_metadata(headers)
    _trailers(call, context)


def _trailers(call: Any, context: grpc.ServicerContext) -> None:
    try:
        trailers = call.trailing_metadata() if call.done() else None
    except grpc.RpcError:
        trailers = None
    if trailers:
        context.set_trailing_metadata(tuple((m[0], m[1]) for m in trailers))
