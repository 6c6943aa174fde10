"""SpiceDB's PermissionsService, answered from the index: checks here, lookups in
``leopard.grpc.lookups``.

``CheckPermission`` asks ``Index.check(subject, "type:id#permission")``. With
``with_tracing`` (and no SpiceDB behind Leopard, which would answer it) its
``debug_trace`` is one node: the question, its result, the time taken, the source
``leopard:index`` and no sub-problems, since the index meets precomputed sets and walks
no graph (``leopard explain`` says why a subject is in a set); ``schema_used`` is the
schema in SpiceDB's language, where there is one.
``CheckBulkPermissions`` checks every answerable item with one ``Index.check_many`` at
one version; an item about an unknown definition, relation or permission is a
per-item FAILED_PRECONDITION and one with a wildcard subject a per-item
INVALID_ARGUMENT (SpiceDB's statuses, in ``pairs[i].error``), while a malformed item
fails the whole request (``validation error: items[3].resource.object_id: ...``, every
malformed item named), as in SpiceDB; an ``at_least_as_fresh`` version not reached in
time is every item's OUT_OF_RANGE, checked at the version asked for, as SpiceDB
answers a revision it does not have. Items the index cannot answer (not indexed, with
a caveat context) go to the SpiceDB behind Leopard in one request of their own, and
its pairs are merged back in order; without one they are per-item UNIMPLEMENTED. At
most 10,000 items, as in SpiceDB.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from authzed.api.v1 import core_pb2, debug_pb2
from authzed.api.v1 import permission_service_pb2 as pb
from authzed.api.v1.permission_service_pb2_grpc import PermissionsServiceServicer

from leopard.grpc.answering import Forward
from leopard.grpc.consistency import AT_LEAST
from leopard.grpc.forward import for_upstream
from leopard.grpc.lookups import Lookups
from leopard.grpc.names import (
    RULES,
    Catalog,
    Fields,
    resource_wildcard,
    subject_name,
    wildcard_userset,
)
from leopard.grpc.schema import spicedb_text
from leopard.grpc.status import Refusal, wildcard

__all__ = ["MAX_CHECKS", "Permissions"]

MAX_CHECKS = 10_000  # SpiceDB's maximum of items in a CheckBulkPermissions
HAS = pb.CheckPermissionResponse.PERMISSIONSHIP_HAS_PERMISSION
NO = pb.CheckPermissionResponse.PERMISSIONSHIP_NO_PERMISSION
TRACE_HAS = debug_pb2.CheckDebugTrace.PERMISSIONSHIP_HAS_PERMISSION
TRACE_NO = debug_pb2.CheckDebugTrace.PERMISSIONSHIP_NO_PERMISSION
_FORWARD = "forward"
_ID_RE = RULES["id"][0]


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(message: Any, name: str) -> bytes:
    """The key of a length-delimited field (``field number << 3 | 2``)."""
    return _varint(message.DESCRIPTOR.fields_by_name[name].number << 3 | 2)


_CHECKED_AT = _tag(pb.CheckBulkPermissionsResponse, "checked_at")
_PAIRS = _tag(pb.CheckBulkPermissionsResponse, "pairs")
_REQUEST = _tag(pb.CheckBulkPermissionsPair, "request")
_ERROR = _tag(pb.CheckBulkPermissionsPair, "error")
_ANSWERS: dict[int, bytes] = {
    int(answer): _tag(pb.CheckBulkPermissionsPair, "item") + _varint(len(item)) + item
    for answer, item in (
        (p, pb.CheckBulkPermissionsResponseItem(permissionship=p).SerializeToString())
        for p in (HAS, NO)
    )
}
#: the varints of lengths below 2**14 (every item and pair of a bulk check, in practice)
_LENGTHS = [_varint(n) for n in range(1 << 14)]


def _bulk_response(version: str, items: Any, outcome: list[Any]) -> bytes:
    """The serialized ``CheckBulkPermissionsResponse``: a pair per item, each echoing
    the item. Written as bytes, pair by pair: building ten thousand pair messages
    (each a copy of its request item) took most of a bulk check's time."""
    token = core_pb2.ZedToken(token=version).SerializeToString()
    parts = [_CHECKED_AT, _varint(len(token)), token]
    append, request, pairs, answers = parts.append, _REQUEST, _PAIRS, _ANSWERS
    lengths, small = _LENGTHS, len(_LENGTHS)
    for item, answer in zip(items, outcome, strict=True):
        raw = item.SerializeToString()
        size = len(raw)
        head = request + (lengths[size] if size < small else _varint(size))
        if answer.__class__ is int:
            pair = head + raw + answers[answer]
        elif isinstance(answer, Refusal):
            status = answer.status().SerializeToString()
            pair = head + raw + _ERROR + _varint(len(status)) + status
        else:
            pair = answer.SerializeToString()  # the upstream's pair, as it came
        size = len(pair)
        append(pairs)
        append(lengths[size] if size < small else _varint(size))
        append(pair)
    return b"".join(parts)


class Permissions(Lookups, PermissionsServiceServicer):
    """CheckPermission, CheckBulkPermissions, LookupResources and LookupSubjects."""

    SERVICE = "authzed.api.v1.PermissionsService"
    #: the methods of the service this servicer answers (the rest are forwarded)
    ANSWERS = ("CheckPermission", "CheckBulkPermissions", "LookupResources", "LookupSubjects")

    def CheckPermission(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            return self._check(request)
        except Forward:
            return self.forward("CheckPermission", request, context)

    def _check(self, request: Any) -> Any:
        want = self.want(request)
        fields = Fields()
        fields.object(request, "resource")
        fields.check("relation", request.permission, "permission")
        fields.subject(request)
        fields.done()
        if self.needs_spicedb(request):
            raise Forward()
        resource, subject = request.resource, request.subject
        if resource.object_id == "*":
            raise resource_wildcard()
        if subject.optional_relation and subject.object.object_id == "*":
            raise wildcard_userset()
        rtype, perm = resource.object_type, request.permission
        stype, srel = subject.object.object_type, subject.optional_relation
        self.answerable(rtype, perm, stype, srel)
        if subject.object.object_id == "*":
            raise wildcard("check on wildcard subject", "subject.object_id")
        freshness = self.freshness
        self.reach(want)
        index = self.index
        started = time.perf_counter_ns()
        with index.lock:
            version = freshness.exact(want)
            member = index.check(subject_name(subject), f"{rtype}:{resource.object_id}#{perm}")
        answer = pb.CheckPermissionResponse(
            checked_at=core_pb2.ZedToken(token=version), permissionship=HAS if member else NO
        )
        if request.with_tracing:
            answer.debug_trace.CopyFrom(self._trace(request, member, started))
        return answer

    def _trace(self, request: Any, member: bool, started: int, used: str | None = None) -> Any:
        """The debug trace of a check answered from the index: the question and its
        answer as one node, with no sub-problems (the index meets precomputed sets, it
        walks no graph), its source ``leopard:index``, and the schema it was built with."""
        plan = self.index.config.plan
        kind = debug_pb2.CheckDebugTrace.PERMISSION_TYPE_RELATION
        if plan is not None:
            typedef = plan.schema.types.get(request.resource.object_type)
            relation = typedef.relations.get(request.permission) if typedef else None
            if relation is not None and relation.kind == "permission":
                kind = debug_pb2.CheckDebugTrace.PERMISSION_TYPE_PERMISSION
        node = debug_pb2.CheckDebugTrace(
            resource=request.resource,
            permission=request.permission,
            permission_type=kind,
            subject=request.subject,
            result=TRACE_HAS if member else TRACE_NO,
            was_cached_result=False,
            source="leopard:index",
        )
        node.duration.FromNanoseconds(time.perf_counter_ns() - started)
        if used is None:
            used = spicedb_text(self.index.config)[0] or ""
        return debug_pb2.DebugInformation(check=node, schema_used=used)

    def CheckBulkPermissions(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            want = self.want(request)
        except Forward:
            return self.forward("CheckBulkPermissions", request, context)
        items = request.items
        outcome, local_at, local, forward_at = self._sort_items(items)
        if len(items) > MAX_CHECKS:
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"check count of {len(items)} is greater than maximum allowed of {MAX_CHECKS}",
            )
        freshness = self.freshness
        version: str | None = None
        try:
            self.reach(want)
        except Forward:  # not reached in time: SpiceDB has that version, answers every item
            return self.forward("CheckBulkPermissions", request, context)
        except Refusal as stale:
            if want.kind != AT_LEAST or stale.code != grpc.StatusCode.OUT_OF_RANGE:
                raise  # a version no wait reaches fails the request, as SpiceDB's garbage
            # SpiceDB answers a revision it does not have with every item's own
            # OUT_OF_RANGE, checked at the revision asked for; the upstream, when there
            # is one, still answers what it answers (at its head, fresher than that)
            assert want.token is not None
            outcome = [stale] * len(items)
            local_at, local, version = [], [], want.token
        if forward_at:
            self._forward_items(request, forward_at, outcome, context)
        if version is None:
            started = time.perf_counter_ns()
            with self.index.lock:
                version = freshness.exact(want)
                answers = self.index.check_many(local) if local else ()
            used = (spicedb_text(self.index.config)[0] or "") if request.with_tracing else ""
            for i, member in zip(local_at, answers, strict=True):
                outcome[i] = HAS if member else NO
                if request.with_tracing:  # a pair of its own, with its one-node trace
                    item = pb.CheckBulkPermissionsResponseItem(
                        permissionship=outcome[i],
                        debug_trace=self._trace(items[i], member, started, used),
                    )
                    outcome[i] = pb.CheckBulkPermissionsPair(request=items[i], item=item)
        return _bulk_response(version, items, outcome)

    def _sort_items(
        self, items: Any
    ) -> tuple[list[Any], list[int], list[tuple[str, str]], list[int]]:
        """Validate every item (a malformed one fails the request) and sort them into
        answers known now, checks for the index and items for the upstream."""
        cat = self.catalog()
        upstream = self.upstream is not None
        good_type, good_rel = Fields._good["type"], Fields._good["relation"]
        id_ok = _ID_RE.fullmatch
        verdicts: dict[tuple[str, str, str, str], Any] = {}
        outcome: list[Any] = [None] * len(items)
        local_at: list[int] = []
        local: list[tuple[str, str]] = []
        forward_at: list[int] = []
        malformed: Fields | None = None  # every item's violations, as SpiceDB lists them
        for i, item in enumerate(items):
            resource, subject = item.resource, item.subject
            obj = subject.object
            rtype, rid, perm = resource.object_type, resource.object_id, item.permission
            stype, sid, srel = obj.object_type, obj.object_id, subject.optional_relation
            if not (
                rtype in good_type
                and stype in good_type
                and perm in good_rel
                and (not srel or srel in good_rel)
                and len(rid) <= 1024
                and len(sid) <= 1024
                and id_ok(rid)
                and id_ok(sid)
            ):  # (a missing resource or subject has an empty type: never a good one)
                if malformed is None:
                    malformed = Fields()
                seen = len(malformed.violations)
                self._check_item(malformed, item, i)
                if len(malformed.violations) > seen:
                    continue  # the request fails below, naming every malformed item
            if malformed is not None and malformed.violations:
                continue
            key = (rtype, perm, stype, srel)
            verdict = verdicts.get(key)
            if verdict is None:
                verdict = verdicts[key] = self._verdict(cat, key)
            if verdict is not True:
                if verdict == _FORWARD:
                    forward_at.append(i)
                else:
                    outcome[i] = verdict
            elif upstream and item.HasField("context"):
                forward_at.append(i)
            elif sid == "*":  # before a wildcard resource, as in SpiceDB
                outcome[i] = wildcard("check on wildcard subject", "subject.object_id")
            elif rid == "*":
                outcome[i] = NO  # as SpiceDB answers it
            else:
                local_at.append(i)
                local.append(
                    (f"{stype}:{sid}#{srel}" if srel else f"{stype}:{sid}", f"{rtype}:{rid}#{perm}")
                )
        if malformed is not None:
            malformed.done()  # raises when an item was malformed
        return outcome, local_at, local, forward_at

    @staticmethod
    def _check_item(fields: Fields, item: Any, i: int) -> None:
        prefix = f"items[{i}]."
        fields.object(item, "resource", prefix)
        fields.check("relation", item.permission, f"{prefix}permission")
        fields.subject(item, prefix)

    def _verdict(self, cat: Catalog, key: tuple[str, str, str, str]) -> Any:
        """True (the index answers), ``_FORWARD``, or the item's refusal."""
        rtype, perm, stype, srel = key
        problem = cat.known(rtype, perm) or cat.known(stype, srel or None)
        if problem is None and cat.indexed(rtype, perm):
            return True
        if self.upstream is not None:
            return _FORWARD
        if problem is not None:
            return problem
        return self.not_indexed(f"{rtype}#{perm}", cat.why_not(rtype, perm))

    def _forward_items(
        self, request: Any, at: list[int], outcome: list[Any], context: grpc.ServicerContext
    ) -> None:
        """Ask the upstream about the items at ``at`` in one request; merge its pairs."""
        assert self.upstream is not None
        sub = pb.CheckBulkPermissionsRequest(
            consistency=request.consistency, with_tracing=request.with_tracing
        )
        sub.items.extend(request.items[i] for i in at)
        if not request.HasField("consistency"):
            sub.ClearField("consistency")
        for_upstream(sub)
        raw = self.upstream.unary(
            "/authzed.api.v1.PermissionsService/CheckBulkPermissions",
            sub.SerializeToString(),
            context,
        )
        pairs = pb.CheckBulkPermissionsResponse.FromString(raw).pairs
        if len(pairs) != len(at):
            raise Refusal(
                grpc.StatusCode.UNAVAILABLE,
                f"the SpiceDB behind Leopard answered {len(pairs)} pairs for {len(at)} items",
            )
        for i, pair in zip(at, pairs, strict=True):
            outcome[i] = pair
