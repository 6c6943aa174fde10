"""SpiceDB's errors: the gRPC codes and messages its clients see, raised as ``Refusal``.

Every refusal a client can cause carries the code SpiceDB gives for it and a message
in its words, so that code written against SpiceDB handles Leopard's the same way:

==========================  ===================================================
INVALID_ARGUMENT            malformed input (``validation error: resource.object_id:
                            must be at most 1024 bytes``), a ZedToken that is no
                            version of this index (``invalid revision requested``,
                            naming why for a SpiceDB ZedToken),
                            a wildcard subject, a cursor that is not one of ours
                            or not of this request (``ERROR_REASON_INVALID_CURSOR``),
                            a limit over 1,000 (``..._EXCEEDS_MAXIMUM_ALLOWABLE_LIMIT``)
FAILED_PRECONDITION         an unknown definition, relation or permission (``object
                            definition `nope` not found``), carrying SpiceDB's
                            ``ErrorInfo`` reason
OUT_OF_RANGE                an ``at_least_as_fresh`` version not applied in time
                            (``invalid zedtoken: revision was invalid``); an
                            ``at_exact_snapshot`` that is not the current version
                            (``invalid revision: revision has expired``)
UNAVAILABLE                 the change stream's head not applied in time
                            (``fully_consistent``); the index unreadable
UNIMPLEMENTED               what SpiceDB does not do either, and what only the
                            SpiceDB behind Leopard can answer when none is given
UNAUTHENTICATED             no preshared key (``PERMISSION_DENIED`` a wrong one)
==========================  ===================================================

A ``LeopardError`` that reaches a handler is mapped by ``refusal_of``; client input
never becomes INTERNAL.
"""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.rpc import error_details_pb2, status_pb2

from leopard.errors import (
    IndexNotFound,
    InvalidConfig,
    InvalidInput,
    InvalidTuple,
    LeopardError,
    StaleIndex,
    StorageError,
)

__all__ = ["Refusal", "refusal_of", "unknown_definition", "unknown_relation", "wildcard"]

#: the domain of SpiceDB's ErrorInfo details
DOMAIN = "authzed.com"


class Refusal(Exception):
    """A request refused with a gRPC ``code`` and SpiceDB-style ``message``; ``reason``
    and ``metadata`` make the ``google.rpc.ErrorInfo`` detail SpiceDB attaches."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = metadata or {}

    def status(self) -> status_pb2.Status:
        """As a ``google.rpc.Status`` (a per-item error of CheckBulkPermissions)."""
        out = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.reason is not None:
            info = error_details_pb2.ErrorInfo(
                reason=self.reason, domain=DOMAIN, metadata=self.metadata
            )
            out.details.add().Pack(info)
        return out

    def abort(self, context: grpc.ServicerContext) -> NoReturn:
        """End the call with this status (and its details, as SpiceDB sends them)."""
        if self.reason is not None:
            context.set_trailing_metadata(
                (("grpc-status-details-bin", self.status().SerializeToString()),)
            )
        context.abort(self.code, self.message)
        raise AssertionError("unreachable")  # abort raises


def unknown_definition(name: str) -> Refusal:
    return Refusal(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"object definition `{name}` not found",
        "ERROR_REASON_UNKNOWN_DEFINITION",
        {"definition_name": name},
    )


def unknown_relation(definition: str, relation: str) -> Refusal:
    return Refusal(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"relation/permission `{relation}` not found under definition `{definition}`",
        "ERROR_REASON_UNKNOWN_RELATION_OR_PERMISSION",
        {"definition_name": definition, "relation_or_permission_name": relation},
    )


def wildcard(what: str, field: str) -> Refusal:
    """``cannot perform check on wildcard subject`` and its kin."""
    return Refusal(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"invalid argument: cannot perform {what}",
        "ERROR_REASON_WILDCARD_NOT_ALLOWED",
        {"field": field},
    )


def refusal_of(exc: LeopardError) -> Refusal:
    """The gRPC status of an error the index raised."""
    code = grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, (InvalidTuple, InvalidInput, InvalidConfig)):
        code = grpc.StatusCode.INVALID_ARGUMENT
    elif isinstance(exc, StaleIndex):
        code = grpc.StatusCode.OUT_OF_RANGE
    elif isinstance(exc, (StorageError, IndexNotFound)):
        code = grpc.StatusCode.UNAVAILABLE
    return Refusal(code, str(exc))
