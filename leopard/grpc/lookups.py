"""SpiceDB's LookupResources and LookupSubjects, answered from the index.

``LookupResources`` is ``Index.groups_of(subject, type=, permission=)``: the ids of
the objects whose permission holds the subject, streamed in id order, one response
each, with ``optional_limit`` (at most 1,000, as in SpiceDB) and a cursor on every
response. SpiceDB's cursors are opaque; Leopard's, ``leopard.lr1.…``, hold the last
id answered and a digest of the request's arguments (``optional_limit`` among them, as
SpiceDB's), so the next page starts after that id, and a cursor of another request,
or of the same one with another limit, is refused in SpiceDB's words and with its
``ErrorInfo`` reason (``ERROR_REASON_INVALID_CURSOR``; a limit over 1,000:
``ERROR_REASON_EXCEEDS_MAXIMUM_ALLOWABLE_LIMIT``). A cursor that
is not Leopard's (a SpiceDB one) is forwarded with its request to the SpiceDB behind
Leopard, or refused (INVALID_ARGUMENT ``error decoding cursor``) without one.

``LookupSubjects`` is ``Index.members_of(group)`` narrowed to the subject type: leaf
subjects, a wildcard as ``subject_object_id "*"`` (also under
``WILDCARD_OPTION_EXCLUDE_WILDCARDS``, as SpiceDB answers), never excluded subjects
(an indexed permission has no exclusion). A concrete limit is UNIMPLEMENTED, as in
SpiceDB; subjects that are usersets (``optional_subject_relation``) are not listed by
the index and go to the SpiceDB behind Leopard. Each lookup reads the index at one
version, under its lock, before streaming.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import grpc
from authzed.api.v1 import core_pb2
from authzed.api.v1 import permission_service_pb2 as pb

from leopard.grpc.answering import Answering, Forward
from leopard.grpc.names import Fields, group_name, subject_name
from leopard.grpc.status import Refusal, wildcard

__all__ = ["Lookups", "MAX_LOOKUP_LIMIT", "decode_cursor", "encode_cursor"]

MAX_LOOKUP_LIMIT = 1000  # SpiceDB's default maximum of optional_limit
CURSOR_PREFIX = "leopard.lr1."
PAGE = 10_000  # subjects read from the index at a time
HAS = pb.LookupPermissionship.LOOKUP_PERMISSIONSHIP_HAS_PERMISSION
MISMATCH = (
    "the cursor provided does not have the same arguments as the original API call; please "
    "ensure you are making the same API call, with the exact same parameters (besides the "
    "cursor)"
)


def _digest(request: Any) -> str:
    """The arguments a cursor is bound to: all but the cursor (the limit too, as
    SpiceDB's cursors are)."""
    s = request.subject
    parts = (
        request.resource_object_type,
        request.permission,
        s.object.object_type,
        s.object.object_id,
        s.optional_relation,
        str(request.optional_limit),
    )
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def bad_cursor(message: str) -> Refusal:
    """A cursor refused, with the ``ErrorInfo`` reason SpiceDB gives."""
    return Refusal(grpc.StatusCode.INVALID_ARGUMENT, message, "ERROR_REASON_INVALID_CURSOR")


def encode_cursor(digest: str, after: str) -> str:
    body = json.dumps([digest, after], separators=(",", ":")).encode()
    return CURSOR_PREFIX + base64.urlsafe_b64encode(body).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[str, str]:
    """``(digest, last id)`` of a Leopard cursor; ValueError when it is not one."""
    if not token.startswith(CURSOR_PREFIX):
        raise ValueError("it is not a cursor Leopard gave (they start with 'leopard.lr1.')")
    body = token[len(CURSOR_PREFIX) :]
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"it is damaged ({exc})") from None
    except RecursionError:
        raise ValueError("it is damaged (nested too deeply)") from None
    if not (isinstance(data, list) and len(data) == 2 and all(isinstance(x, str) for x in data)):
        raise ValueError("it is damaged")
    return data[0], data[1]


class Lookups(Answering):
    """LookupResources and LookupSubjects (a part of ``Permissions``)."""

    def LookupResources(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:  # noqa: N802
        try:
            return self._lookup_resources(request)
        except Forward:
            return self.forward_stream("LookupResources", request, context)

    def _lookup_resources(self, request: Any) -> Iterator[Any]:
        want = self.want(request)
        fields = Fields()
        fields.check("type", request.resource_object_type, "resource_object_type")
        fields.check("permission", request.permission, "permission")
        fields.subject(request)
        fields.done()
        limit = request.optional_limit
        if limit > MAX_LOOKUP_LIMIT:
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"provided limit {limit} is greater than maximum allowed of {MAX_LOOKUP_LIMIT}",
                "ERROR_REASON_EXCEEDS_MAXIMUM_ALLOWABLE_LIMIT",
                {"limit_provided": str(limit), "maximum_limit_allowed": str(MAX_LOOKUP_LIMIT)},
            )
        if self.needs_spicedb(request):
            raise Forward()
        digest = _digest(request)
        after = None
        if request.HasField("optional_cursor"):
            after = self._after(request.optional_cursor.token, digest)
        rtype, perm = request.resource_object_type, request.permission
        subject = request.subject
        stype, sid, srel = (
            subject.object.object_type,
            subject.object.object_id,
            subject.optional_relation,
        )
        self.answerable(rtype, perm, stype, srel)
        if sid == "*":
            raise wildcard("lookup resources on wildcard", "subject.object_id")
        freshness = self.freshness
        self.reach(want, cursor=after is not None)
        with self.index.lock:
            version = freshness.exact(want)
            names = self.index.groups_of(subject_name(subject), type=rtype, permission=perm)
        start, end = len(rtype) + 1, -len(perm) - 1
        ids = [n[start:end] for n in names]
        if after is not None:
            ids = ids[bisect.bisect_right(ids, after) :]
        if limit:
            ids = ids[:limit]
        return _resources(ids, version, digest)

    def _after(self, token: str, digest: str) -> str:
        """The last id of a Leopard cursor for this request."""
        try:
            theirs, after = decode_cursor(token)
        except ValueError as exc:
            if self.upstream is not None:
                raise Forward() from None
            raise bad_cursor(f"error decoding cursor: {exc}") from None
        if theirs != digest:
            raise bad_cursor(MISMATCH)
        return after

    def LookupSubjects(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:  # noqa: N802
        try:
            return self._lookup_subjects(request)
        except Forward:
            return self.forward_stream("LookupSubjects", request, context)

    def _lookup_subjects(self, request: Any) -> Iterator[Any]:
        want = self.want(request)
        fields = Fields()
        fields.object(request, "resource")
        fields.check("relation", request.permission, "permission")
        fields.check("type", request.subject_object_type, "subject_object_type")
        if request.optional_subject_relation:
            fields.check("relation", request.optional_subject_relation, "optional_subject_relation")
        fields.done()
        if request.optional_concrete_limit:
            raise Refusal(grpc.StatusCode.UNIMPLEMENTED, "concrete limit is not yet supported")
        if request.HasField("optional_cursor"):
            try:
                decode_cursor(request.optional_cursor.token)
            except ValueError as exc:
                if self.upstream is not None:
                    raise Forward() from None
                raise bad_cursor(f"error decoding cursor: {exc}") from None
            raise Refusal(grpc.StatusCode.UNIMPLEMENTED, "cursor is not yet supported")
        if self.needs_spicedb(request):
            raise Forward()
        resource, perm = request.resource, request.permission
        stype, srel = request.subject_object_type, request.optional_subject_relation
        self.answerable(resource.object_type, perm, stype, srel)
        if srel:
            if self.upstream is not None:
                raise Forward()
            raise self.not_indexed(
                f"LookupSubjects of {stype}#{srel}",
                "the index lists leaf subjects, not the usersets nested in a set",
            )
        if resource.object_id == "*":
            return iter(())  # as SpiceDB answers it
        if self.index.placement is not None:  # a shard served alone
            if self.upstream is not None:
                raise Forward()
            what = f"LookupSubjects of {resource.object_type}:{resource.object_id}#{perm}"
            raise Refusal(grpc.StatusCode.FAILED_PRECONDITION, self.index.placement.alone(what))
        freshness = self.freshness
        self.reach(want)
        group = group_name(resource.object_type, resource.object_id, perm)
        with self.index.lock:
            version = freshness.exact(want)
            ids = self._subject_ids(group, stype)
        return _subjects(ids, version)

    def _subject_ids(self, group: str, type: str) -> list[str]:
        """The ids of the leaf subjects of ``type`` in ``group`` (``*``: its wildcard)."""
        prefix = type + ":"
        skip = len(prefix)
        out: list[str] = []
        after = prefix
        while True:
            page = self.index.members_of(group, limit=PAGE, after=after)
            for name in page:
                if not name.startswith(prefix):
                    return out
                rest = name[skip:]
                if "#" not in rest:
                    out.append(rest)
            if len(page) < PAGE:
                return out
            after = page[-1]


def _resources(ids: list[str], version: str, digest: str) -> Iterator[Any]:
    token = core_pb2.ZedToken(token=version)
    Response, Cursor = pb.LookupResourcesResponse, core_pb2.Cursor  # noqa: N806
    for rid in ids:
        yield Response(
            looked_up_at=token,
            resource_object_id=rid,
            permissionship=HAS,
            after_result_cursor=Cursor(token=encode_cursor(digest, rid)),
        )


def _subjects(ids: list[str], version: str) -> Iterator[Any]:
    token = core_pb2.ZedToken(token=version)
    Response, Resolved = pb.LookupSubjectsResponse, pb.ResolvedSubject  # noqa: N806
    for sid in ids:
        yield Response(
            looked_up_at=token,
            subject_object_id=sid,
            permissionship=HAS,
            subject=Resolved(subject_object_id=sid, permissionship=HAS),
        )
