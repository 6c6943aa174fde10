"""Bad input on every method Leopard answers: SpiceDB's code and message, never INTERNAL.

Every request here goes, through the authzed client, to Leopard and to SpiceDB
embedded (``support.spicedb_front``) on the same schema and data, and the two refusals
are compared: the status code always, the message too wherever SpiceDB's words do not
name something only it can read (its own cursors). Covered: malformed object types,
ids and relations, an id over 1,024 bytes, missing fields, unknown definitions,
relations and permissions (FAILED_PRECONDITION), wildcards, limits, cursors, and
CheckBulkPermissions' per-item statuses beside a malformed item that fails the whole
request. A property test then draws requests from a pool of good and bad values and
asks both again; Leopard must never answer INTERNAL or UNKNOWN.

Where Leopard deliberately differs, the test says so: ``minimize_latency: false`` is
INVALID_ARGUMENT (SpiceDB: INTERNAL), a request that does not parse is
INVALID_ARGUMENT (SpiceDB: UNKNOWN), and a LookupSubjects cursor of Leopard's is
UNIMPLEMENTED, as issue 11 asks (SpiceDB v1.54 decodes a cursor of its own there and
then ignores it, answering every subject).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from authzed.api import v1
from authzed.api.v1 import debug_pb2
from docs_world import SCHEMA, LeopardGrpc, build, tuples
from google.rpc import error_details_pb2, status_pb2
from hypothesis import event, given, settings
from hypothesis import strategies as st
from support.spicedb_front import SpiceDBFront, missing_reason

import leopard
from leopard.model.schema import parse_spicedb

_MISSING = missing_reason()
pytestmark = [
    pytest.mark.spicedb,
    pytest.mark.skipif(_MISSING is not None, reason=f"SpiceDB not installed: {_MISSING}"),
]

FULL = v1.Consistency(fully_consistent=True)
LONG = "x" * 1025
Item = v1.CheckBulkPermissionsRequestItem
UNARY = ("CheckPermission", "CheckBulkPermissions", "ReadSchema")


def obj(type: str, id: str) -> Any:
    return v1.ObjectReference(object_type=type, object_id=id)


def subj(type: str, id: str, relation: str = "") -> Any:
    return v1.SubjectReference(object=obj(type, id), optional_relation=relation)


def token(text: str) -> Any:
    return v1.Consistency(at_least_as_fresh=v1.ZedToken(token=text))


@dataclass
class Peers:
    leopard: Any
    spicedb: Any
    server: LeopardGrpc


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    data = tuples()
    path = build(tmp_path_factory.mktemp("errors"), data)
    with SpiceDBFront(SCHEMA) as front, LeopardGrpc(path) as leo:
        front.write(data)
        yield Peers(leo.client(), front.client(), leo)


@dataclass(frozen=True)
class Outcome:
    code: str  # "OK" or the status code's name
    details: str = ""
    answer: Any = None
    trailers: tuple[Any, ...] = ()


def ask(client: Any, method: str, request: Any) -> Outcome:
    """The answer, or the refusal, of ``client.method(request)``."""
    try:
        if method in UNARY:
            return Outcome("OK", answer=getattr(client, method)(request))
        return Outcome("OK", answer=list(getattr(client, method)(request)))
    except grpc.RpcError as exc:
        return Outcome(
            exc.code().name,  # type: ignore[attr-defined]
            exc.details(),  # type: ignore[attr-defined]
            trailers=tuple(exc.trailing_metadata() or ()),  # type: ignore[attr-defined]
        )


def check(resource: Any, permission: str, subject: Any, **kw: Any) -> Any:
    return v1.CheckPermissionRequest(resource=resource, permission=permission, subject=subject,
                                     **kw)  # fmt: skip


def bulk(*items: Any, **kw: Any) -> Any:
    return v1.CheckBulkPermissionsRequest(items=list(items), **kw)


def resources(type: str, permission: str, subject: Any, **kw: Any) -> Any:
    return v1.LookupResourcesRequest(resource_object_type=type, permission=permission,
                                     subject=subject, **kw)  # fmt: skip


def subjects(resource: Any, permission: str, type: str, **kw: Any) -> Any:
    return v1.LookupSubjectsRequest(resource=resource, permission=permission,
                                    subject_object_type=type, **kw)  # fmt: skip


U1 = subj("user", "u1")
D1 = obj("doc", "d1")
CP, CB, LR, LS = "CheckPermission", "CheckBulkPermissions", "LookupResources", "LookupSubjects"
#: a cursor of Leopard's form whose JSON nests past the reader's depth
DEEP_CURSOR = "leopard.lr1." + base64.urlsafe_b64encode(b"[" * 5000).decode()

#: (method, request, whether the messages must be equal too)
BAD: dict[str, tuple[str, Any, bool]] = {
    # CheckPermission
    "check: type with a capital": (CP, check(obj("Doc", "d1"), "view", U1), True),
    "check: type too long": (CP, check(obj("a" * 130, "d1"), "view", U1), True),
    "check: id with a space": (CP, check(obj("doc", "d 1"), "view", U1), True),
    "check: id not ASCII": (CP, check(obj("doc", "dé"), "view", U1), True),
    "check: id of 1,025 bytes": (CP, check(obj("doc", LONG), "view", U1), True),
    "check: subject id of 1,025 bytes": (CP, check(D1, "view", subj("user", LONG)), True),
    "check: two fields bad": (CP, check(obj("Doc", "d 1"), "view", U1), True),
    "check: permission malformed": (CP, check(D1, "View!", U1), True),
    "check: permission too long": (CP, check(D1, "a" * 70, U1), True),
    "check: permission empty": (CP, check(D1, "", U1), True),
    "check: subject relation '...'": (CP, check(D1, "view", subj("user", "u1", "...")), True),
    "check: nothing": (CP, v1.CheckPermissionRequest(), True),
    "check: no subject": (CP, v1.CheckPermissionRequest(resource=D1, permission="view"), True),
    "check: unknown definition": (CP, check(obj("nope", "d1"), "view", U1), True),
    "check: tenant definition unknown": (CP, check(obj("acme/doc", "d1"), "view", U1), True),
    "check: unknown permission": (CP, check(D1, "nope", U1), True),
    "check: unknown subject definition": (CP, check(D1, "view", subj("nope", "u1")), True),
    "check: unknown subject relation": (CP, check(D1, "view", subj("group", "g1", "nope")), True),
    "check: wildcard subject": (CP, check(D1, "view", subj("user", "*")), True),
    "check: wildcard resource": (CP, check(obj("doc", "*"), "view", U1), True),
    "check: wildcard userset subject": (CP, check(D1, "view", subj("group", "*", "member")), True),
    "check: wildcard userset, unknown names": (
        CP, check(D1, "nope", subj("group", "*", "nope")), True),
    "check: garbage token": (CP, check(D1, "view", U1, consistency=token("garbage")), True),
    "check: empty token": (CP, check(D1, "view", U1, consistency=token("")), True),
    "check: Leopard-looking garbage": (CP, check(D1, "view", U1, consistency=token("v1.zz")), True),
    "check: garbage token and a long id": (
        CP, check(obj("doc", LONG), "view", U1, consistency=token("garbage")), True),
    # CheckBulkPermissions: refusals of the whole request
    "bulk: a malformed item": (CB, bulk(Item(resource=D1, permission="view", subject=U1),
                                        Item(resource=obj("doc", LONG), permission="view",
                                             subject=U1)), True),
    "bulk: every malformed item named": (CB, bulk(
        Item(resource=obj("doc", "d 1"), permission="view", subject=U1),
        Item(resource=D1, permission="view", subject=U1),
        Item(resource=obj("Doc", "d1"), permission="view", subject=subj("user", "u 1"))), True),
    "bulk: malformed after unknown": (CB, bulk(Item(resource=obj("nope", "d1"), permission="view",
                                                    subject=U1),
                                               Item(resource=D1, permission="vi ew",
                                                    subject=U1)), True),
    "bulk: an empty item": (CB, bulk(Item()), True),
    "bulk: subject relation '...'": (CB, bulk(Item(resource=D1, permission="view",
                                                   subject=subj("user", "u1", "..."))), True),
    "bulk: 10,001 items": (CB, bulk(*[Item(resource=D1, permission="view", subject=U1)] * 10001),
                           True),
    "bulk: garbage token": (CB, bulk(Item(resource=D1, permission="view", subject=U1),
                                     consistency=token("garbage")), True),
    # LookupResources
    "lr: type malformed": (LR, resources("Doc", "view", U1), True),
    "lr: type empty": (LR, resources("", "view", U1), True),
    "lr: permission empty": (LR, resources("doc", "", U1), True),
    "lr: subject id of 1,025 bytes": (LR, resources("doc", "view", subj("user", LONG)), True),
    "lr: no subject": (LR, v1.LookupResourcesRequest(resource_object_type="doc",
                                                      permission="view"), True),
    "lr: unknown definition": (LR, resources("nope", "view", U1), True),
    "lr: unknown permission": (LR, resources("doc", "nope", U1), True),
    "lr: unknown subject definition": (LR, resources("doc", "view", subj("nope", "u1")), True),
    "lr: unknown subject relation": (LR, resources("doc", "view", subj("group", "g1", "nope")),
                                     True),
    "lr: wildcard subject": (LR, resources("doc", "view", subj("user", "*")), True),
    "lr: limit over 1,000": (LR, resources("doc", "view", U1, optional_limit=1001), True),
    "lr: garbage token": (LR, resources("doc", "view", U1, consistency=token("garbage")), True),
    "lr: garbage cursor": (LR, resources("doc", "view", U1, optional_cursor=v1.Cursor(
        token="garbage")), False),
    "lr: cursor nested past the JSON reader's depth": (LR, resources(
        "doc", "view", U1, optional_cursor=v1.Cursor(token=DEEP_CURSOR)), False),
    # LookupSubjects
    "ls: subject type malformed": (LS, subjects(D1, "view", "User"), True),
    "ls: subject type empty": (LS, subjects(D1, "view", ""), True),
    "ls: id with a space": (LS, subjects(obj("doc", "d 1"), "view", "user"), True),
    "ls: id of 1,025 bytes": (LS, subjects(obj("doc", LONG), "view", "user"), True),
    "ls: no resource": (LS, v1.LookupSubjectsRequest(permission="view",
                                                     subject_object_type="user"), True),
    "ls: subject relation malformed": (LS, subjects(D1, "view", "group",
                                                    optional_subject_relation="No!"), True),
    "ls: unknown definition": (LS, subjects(obj("nope", "d1"), "view", "user"), True),
    "ls: unknown permission": (LS, subjects(D1, "nope", "user"), True),
    "ls: permission empty": (LS, subjects(D1, "", "user"), True),
    "ls: unknown subject definition": (LS, subjects(D1, "view", "nope"), True),
    "ls: unknown subject relation": (LS, subjects(D1, "view", "group",
                                                  optional_subject_relation="nope"), True),
    "ls: concrete limit": (LS, subjects(D1, "view", "user", optional_concrete_limit=5), True),
    "ls: concrete limit before unknown names": (
        LS, subjects(obj("nope", "d1"), "view", "user", optional_concrete_limit=5), True),
    "ls: concrete limit after a long id": (
        LS, subjects(obj("doc", LONG), "view", "user", optional_concrete_limit=5), True),
    "ls: garbage token": (LS, subjects(D1, "view", "user", consistency=token("garbage")), True),
    "ls: garbage cursor": (LS, subjects(D1, "view", "user", optional_cursor=v1.Cursor(
        token="garbage")), False),
    "ls: cursor nested past the JSON reader's depth": (LS, subjects(
        D1, "view", "user", optional_cursor=v1.Cursor(token=DEEP_CURSOR)), False),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_request_is_refused_as_spicedb_refuses_it(peers: Peers, case: str) -> None:
    method, request, same_words = BAD[case]
    ours = ask(peers.leopard, method, request)
    theirs = ask(peers.spicedb, method, request)
    assert ours.code not in ("OK", "INTERNAL", "UNKNOWN"), ours
    assert ours.code == theirs.code, (ours, theirs)
    if same_words:
        assert ours.details == theirs.details
    else:
        assert ours.details.startswith("error decoding cursor: ")
        assert theirs.details.startswith("error decoding cursor: ")


def _error_info(outcome: Outcome) -> Any:
    raw = dict(outcome.trailers).get("grpc-status-details-bin")
    if raw is None:
        return None
    status = status_pb2.Status.FromString(raw)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


def test_unknown_names_carry_spicedb_error_info(peers: Peers) -> None:
    """The ``ErrorInfo`` detail SpiceDB attaches (its reason and metadata), seen through
    the streamed methods, whose trailers the fixture relays as SpiceDB sent them."""
    for request in (resources("nope", "view", U1), resources("doc", "nope", U1),
                    subjects(D1, "nope", "user")):  # fmt: skip
        method = LR if isinstance(request, v1.LookupResourcesRequest) else LS
        ours, theirs = ask(peers.leopard, method, request), ask(peers.spicedb, method, request)
        assert ours.code == theirs.code == "FAILED_PRECONDITION"
        mine, spicedb = _error_info(ours), _error_info(theirs)
        assert mine is not None and spicedb is not None
        assert (mine.reason, mine.domain, dict(mine.metadata)) == (
            spicedb.reason, spicedb.domain, dict(spicedb.metadata))  # fmt: skip


def test_bulk_items_get_spicedb_statuses_one_by_one(peers: Peers) -> None:
    """Unknown names are per-item FAILED_PRECONDITION, a wildcard subject per-item
    INVALID_ARGUMENT (even on a wildcard resource), a wildcard resource no permission;
    the good items beside them are answered, in order."""
    items = [
        Item(resource=D1, permission="view", subject=U1),
        Item(resource=D1, permission="nope", subject=U1),
        Item(resource=obj("nope", "d1"), permission="view", subject=U1),
        Item(resource=D1, permission="view", subject=subj("nope", "u1")),
        Item(resource=D1, permission="view", subject=subj("group", "g1", "nope")),
        Item(resource=D1, permission="", subject=U1),
        Item(resource=D1, permission="view", subject=subj("user", "*")),
        Item(resource=obj("doc", "*"), permission="view", subject=subj("user", "*")),
        Item(resource=obj("doc", "*"), permission="view", subject=U1),
        Item(resource=obj("folder", "f7"), permission="view", subject=subj("user", "anyone")),
    ]
    ours = peers.leopard.CheckBulkPermissions(bulk(*items))
    theirs = peers.spicedb.CheckBulkPermissions(bulk(*items, consistency=FULL))
    kinds = []
    for item, a, b in zip(items, ours.pairs, theirs.pairs, strict=True):
        assert a.request == item
        which = a.WhichOneof("response")
        assert which == b.WhichOneof("response")
        if which == "item":
            assert a.item.permissionship == b.item.permissionship
            kinds.append("answer")
        else:
            assert (a.error.code, a.error.message) == (b.error.code, b.error.message)
            kinds.append(_code_name(a.error.code))
    assert kinds == ["answer"] + ["FAILED_PRECONDITION"] * 5 + ["INVALID_ARGUMENT"] * 2 + [
        "answer"] * 2  # fmt: skip


def _code_name(number: int) -> str:
    return next(c.name for c in grpc.StatusCode if c.value[0] == number)


def test_many_malformed_items_still_make_a_status_a_client_reads(peers: Peers) -> None:
    """SpiceDB names every malformed item, and with thousands the status no longer fits
    in the client's metadata limit (RESOURCE_EXHAUSTED on the client's side); Leopard
    names the first 40 and counts the rest."""
    items = [Item(resource=obj("doc", f"d {i}"), permission="view", subject=U1)
             for i in range(5000)]  # fmt: skip
    ours = ask(peers.leopard, CB, bulk(*items))
    assert ours.code == "INVALID_ARGUMENT"
    assert ours.details.startswith("validation errors:\n - items[0].resource.object_id: ")
    assert ours.details.count("\n - items[") == 40
    assert ours.details.endswith("\n - ... and 4960 more")
    assert ask(peers.spicedb, CB, bulk(*items)).code == "RESOURCE_EXHAUSTED"


def test_lookup_subjects_has_no_cursor_or_concrete_limit(peers: Peers) -> None:
    limited = subjects(D1, "view", "user", optional_concrete_limit=1)
    for client in (peers.leopard, peers.spicedb):
        refused = ask(client, LS, limited)
        assert (refused.code, refused.details) == (
            "UNIMPLEMENTED", "concrete limit is not yet supported")  # fmt: skip
    page = list(peers.leopard.LookupResources(resources("doc", "view", U1, optional_limit=1)))
    cursor = page[0].after_result_cursor
    assert cursor.token.startswith("leopard.lr1.")
    refused = ask(peers.leopard, LS, subjects(D1, "view", "user", optional_cursor=cursor))
    assert (refused.code, refused.details) == ("UNIMPLEMENTED", "cursor is not yet supported")


def test_consistency_flags_set_false_are_invalid_not_internal(peers: Peers) -> None:
    for consistency in (v1.Consistency(minimize_latency=False),
                        v1.Consistency(fully_consistent=False)):  # fmt: skip
        request = check(D1, "view", U1, consistency=consistency)
        ours, theirs = ask(peers.leopard, CP, request), ask(peers.spicedb, CP, request)
        assert theirs.code == "INTERNAL"  # SpiceDB: "missing handling of consistency case"
        assert ours.code == "INVALID_ARGUMENT"
        assert "must equal true" in ours.details


@pytest.mark.parametrize("method", [CP, CB, LR, LS, "ReadSchema"])
def test_a_request_that_does_not_parse_is_invalid_argument(peers: Peers, method: str) -> None:
    service = "SchemaService" if method == "ReadSchema" else "PermissionsService"
    with grpc.insecure_channel(peers.server.target) as channel:
        path = f"/authzed.api.v1.{service}/{method}"
        call = channel.unary_unary(path) if method in UNARY else channel.unary_stream(path)
        with pytest.raises(grpc.RpcError) as refused:
            result = call(b"\xff\xff\xff")
            if method not in UNARY:
                list(result)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "does not parse" in refused.value.details()  # type: ignore[attr-defined]


# -- random requests from good and bad values ---------------------------------------------


def _mostly(good: list[str], bad: list[str]) -> list[str]:
    return good * 6 + bad  # sampled: about one value in four or five is bad


TYPES = _mostly(["doc", "folder", "group", "user"], ["nope", "Doc", "", "a" * 130, "acme/doc"])
IDS = _mostly(["d1", "d3", "d5", "f2", "f7", "g1", "g3", "u1", "u5", "u9", "nobody", "a|b=c+d"],
              ["*", "d 1", "", LONG, "dé"] * 3)  # fmt: skip
PERMISSIONS = _mostly(["view", "edit", "viewer", "member", "membership", "owner"],
                      ["nope", "", "View", "a" * 70])  # fmt: skip
RELATIONS = _mostly([""] * 3 + ["member", "view"], ["nope", "..."])
CONSISTENCY = ["none", "latest", "full", "own", "own", "garbage"]


def _consistency(kind: str, own: str | None) -> Any:
    """The consistency of ``kind``; ``own`` None: SpiceDB's side, asked fully
    consistent wherever the kind allows (its minimize_latency reads can be ~5 s stale)."""
    if kind == "garbage":
        return token("garbage")
    if own is None or kind == "full":
        return FULL
    if kind == "none":
        return None
    if kind == "latest":
        return v1.Consistency(minimize_latency=True)
    return token(own)


@st.composite
def requests(draw: Any) -> tuple[str, Callable[[str], Any]]:
    """A method and a request maker (given Leopard's version, or None for SpiceDB)."""
    method = draw(st.sampled_from([CP, CB, LR, LS]))
    pick = st.sampled_from
    rtype, rid, perm = draw(pick(TYPES)), draw(pick(IDS)), draw(pick(PERMISSIONS))
    stype, sid, srel = draw(pick(TYPES)), draw(pick(IDS)), draw(pick(RELATIONS))
    kind = draw(pick(CONSISTENCY))
    more = draw(st.lists(st.tuples(pick(TYPES), pick(IDS), pick(PERMISSIONS), pick(IDS)),
                         max_size=3))  # fmt: skip
    limit = draw(st.sampled_from([0, 0, 2, 1001]))

    def make(own: str | None) -> Any:
        c = _consistency(kind, own)
        kw = {"consistency": c} if c is not None else {}
        s = subj(stype, sid, srel)
        if method == CP:
            return check(obj(rtype, rid), perm, s, **kw)
        if method == CB:
            extra = [Item(resource=obj(t, i), permission=p, subject=subj("user", u))
                     for t, i, p, u in more]  # fmt: skip
            return bulk(Item(resource=obj(rtype, rid), permission=perm, subject=s), *extra, **kw)
        if method == LR:
            return resources(rtype, perm, s, optional_limit=limit, **kw)
        return subjects(obj(rtype, rid), perm, stype, optional_subject_relation=srel, **kw)

    return method, make


def _not_indexed(outcome: Outcome) -> bool:
    return outcome.code == "UNIMPLEMENTED" and "not answered by Leopard's index" in outcome.details


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(drawn=requests())
def test_random_requests_are_answered_or_refused_as_spicedb_does(
    peers: Peers, drawn: tuple[str, Callable[[str | None], Any]]
) -> None:
    method, make = drawn
    request = make(peers.server.index.version)
    ours = ask(peers.leopard, method, request)
    theirs = ask(peers.spicedb, method, make(None))
    assert ours.code not in ("INTERNAL", "UNKNOWN"), ours
    event(f"{method}: {ours.code}")
    if _not_indexed(ours):  # a relation the index does not hold (no upstream here)
        assert theirs.code == "OK", theirs
        return
    assert ours.code == theirs.code, (method, ours, theirs)
    if ours.code != "OK":
        return
    if method == CP:
        assert ours.answer.permissionship == theirs.answer.permissionship
    elif method == CB:
        for a, b in zip(ours.answer.pairs, theirs.answer.pairs, strict=True):
            which = a.WhichOneof("response")
            if which == "error" and _not_indexed(Outcome("UNIMPLEMENTED", a.error.message)):
                continue
            assert which == b.WhichOneof("response"), (a, b)
            if which == "item":
                assert a.item.permissionship == b.item.permissionship
            else:
                assert a.error.code == b.error.code
    elif method == LR:
        mine = [r.resource_object_id for r in ours.answer]
        unlimited = make(None)
        unlimited.optional_limit = 0  # SpiceDB's first page is in an order of its own
        full = {r.resource_object_id for r in ask(peers.spicedb, LR, unlimited).answer}
        limit = request.optional_limit
        assert set(mine) <= full and len(mine) == min(limit or len(full), len(full))
        assert len(theirs.answer) == len(mine)
    else:
        mine = {r.subject.subject_object_id for r in ours.answer}
        spicedb = {r.subject.subject_object_id for r in theirs.answer}
        assert spicedb <= mine
        for extra in mine - spicedb - {"*"}:  # SpiceDB's LookupSubjects drops one now and
            confirmed = peers.spicedb.CheckPermission(check(  # then: its check decides
                request.resource, request.permission, subj(request.subject_object_type, extra),
                consistency=FULL))  # fmt: skip
            assert confirmed.permissionship == HAS, extra


HAS = v1.CheckPermissionResponse.PERMISSIONSHIP_HAS_PERMISSION


# An OpenFGA model whose relations are each either tuples or a rewrite: SpiceDB's
# language states it. One relation that is both (``[user] or owner``) it cannot.
_FGA_STATED = """\
model
  schema 1.1
type user
type doc
  relations
    define owner: [user]
    define reader: [user]
    define view: owner or reader
"""
_FGA_UNSTATED = _FGA_STATED.replace("define view: owner or reader", "define view: [user] or owner")


# what OpenFGA takes and SpiceDB refuses, each with what the refusal names
_FGA_NOT_SPICEDB = [
    (_FGA_UNSTATED, "'view'"),
    (_FGA_STATED.replace("define reader", "define can-read").replace("or reader", "or can-read"),
     "SpiceDB does not take the relation name 'can-read'"),
    (_FGA_STATED.replace("type doc", "type Doc"), "SpiceDB does not take the type name 'Doc'"),
    (_FGA_STATED.replace("define reader: [user]", "define reader: [team#member]").replace(
        "type doc", "type team\n  relations\n    define member: [user, user:*]\ntype doc"),
     "includes the wildcard 'user:*' through 'team#member'"),
    (_FGA_STATED.replace("define owner: [user]", "define owner: [user with user]")
     + "condition user(x: int) {\n  x < 100\n}\n", "'user' is defined twice"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "why"), [(_FGA_STATED, ""), *_FGA_NOT_SPICEDB], ids=lambda v: str(v)[-24:]
)
def test_read_schema_of_an_openfga_model_is_spicedbs_language_or_refused(
    model: str, why: str, tmp_path: Path
) -> None:
    (tmp_path / "model.fga").write_text(model)
    path = tmp_path / "idx"
    leopard.build_index(
        [["doc:d1#owner@user:u1"]], path, schema=tmp_path / "model.fga", force=bool(why)
    )
    with LeopardGrpc(path) as leo:
        outcome = ask(leo.client(), "ReadSchema", v1.ReadSchemaRequest())
    if not why:
        assert outcome.code == "OK"
        stated = parse_spicedb(outcome.answer.schema_text)  # what a SpiceDB client reads
        assert stated.relation("doc", "view").kind == "permission"
        assert sorted(stated.types) == ["doc", "user"]
    else:
        assert outcome.code == "FAILED_PRECONDITION"
        assert "built from an OpenFGA model that SpiceDB cannot state" in outcome.details
        assert why in outcome.details, outcome.details


def test_limit_and_cursor_refusals_carry_spicedb_error_info(peers: Peers) -> None:
    """A limit over 1,000 and a cursor that is not one: SpiceDB's ``ErrorInfo`` too
    (``ERROR_REASON_EXCEEDS_MAXIMUM_ALLOWABLE_LIMIT`` with the limits,
    ``ERROR_REASON_INVALID_CURSOR``)."""
    garbage = v1.Cursor(token="garbage")
    for request in (resources("doc", "view", U1, optional_limit=1001),
                    resources("doc", "view", U1, optional_cursor=garbage),
                    subjects(D1, "view", "user", optional_cursor=garbage)):  # fmt: skip
        method = LR if isinstance(request, v1.LookupResourcesRequest) else LS
        ours, theirs = ask(peers.leopard, method, request), ask(peers.spicedb, method, request)
        assert ours.code == theirs.code == "INVALID_ARGUMENT", (ours, theirs)
        mine, spicedb = _error_info(ours), _error_info(theirs)
        assert mine is not None and spicedb is not None, (ours, theirs)
        assert (mine.reason, mine.domain, dict(mine.metadata)) == (
            spicedb.reason, spicedb.domain, dict(spicedb.metadata))  # fmt: skip


def test_a_cursor_is_refused_with_another_limit_as_spicedb_refuses_it(peers: Peers) -> None:
    """A LookupResources cursor is bound to the request's limit as well: the next page
    asked with another limit (or none) is refused in SpiceDB's words and reason."""
    for client in (peers.leopard, peers.spicedb):
        first = list(client.LookupResources(resources("doc", "view", U1, optional_limit=2,
                                                      consistency=FULL)))  # fmt: skip
        cursor = first[-1].after_result_cursor
        same = ask(client, LR, resources("doc", "view", U1, optional_limit=2,
                                         optional_cursor=cursor, consistency=FULL))  # fmt: skip
        assert same.code == "OK"
        for other in (3, 0):
            refused = ask(client, LR, resources("doc", "view", U1, optional_limit=other,
                                                optional_cursor=cursor))  # fmt: skip
            assert refused.code == "INVALID_ARGUMENT", (client, other, refused)
            assert refused.details.startswith("the cursor provided does not have the same")
            info = _error_info(refused)
            assert info is not None and info.reason == "ERROR_REASON_INVALID_CURSOR"


def test_with_tracing_answers_a_debug_trace_a_spicedb_client_reads(peers: Peers) -> None:
    """``with_tracing``: the question and its answer as one node (the index walks no
    graph: no sub-problems), its source Leopard's index, and the schema used; the
    result is SpiceDB's."""
    for subject in (U1, subj("user", "nobody")):
        request = check(D1, "view", subject, with_tracing=True)
        ours = peers.leopard.CheckPermission(request)
        theirs = peers.spicedb.CheckPermission(check(D1, "view", subject, with_tracing=True,
                                                     consistency=FULL))  # fmt: skip
        assert ours.HasField("debug_trace") and theirs.HasField("debug_trace")
        trace = ours.debug_trace.check
        assert (trace.resource, trace.permission, trace.subject) == (D1, "view", subject)
        assert trace.permission_type == debug_pb2.CheckDebugTrace.PERMISSION_TYPE_PERMISSION
        assert int(trace.result) == int(ours.permissionship)  # the same numbering
        assert int(theirs.debug_trace.check.result) == int(theirs.permissionship)
        assert ours.permissionship == theirs.permissionship
        assert trace.source == "leopard:index" and not trace.HasField("sub_problems")
        assert "definition doc" in ours.debug_trace.schema_used
    plain = peers.leopard.CheckPermission(check(D1, "view", U1))
    assert not plain.HasField("debug_trace")


def test_with_tracing_in_a_bulk_check_traces_each_pair(peers: Peers) -> None:
    """CheckBulkPermissions with ``with_tracing``: each pair answered carries its one
    trace, as SpiceDB's do; the answers are SpiceDB's."""
    items = [Item(resource=D1, permission="view", subject=s) for s in (U1, subj("user", "x"))]
    ours = peers.leopard.CheckBulkPermissions(bulk(*items, with_tracing=True))
    theirs = peers.spicedb.CheckBulkPermissions(bulk(*items, with_tracing=True,
                                                     consistency=FULL))  # fmt: skip
    for mine, spicedb, item in zip(ours.pairs, theirs.pairs, items, strict=True):
        assert mine.item.permissionship == spicedb.item.permissionship
        assert mine.item.HasField("debug_trace") and spicedb.item.HasField("debug_trace")
        trace = mine.item.debug_trace.check
        assert (trace.resource, trace.subject) == (item.resource, item.subject)
        assert int(trace.result) == int(mine.item.permissionship)
        assert "definition doc" in mine.item.debug_trace.schema_used
    plain = peers.leopard.CheckBulkPermissions(bulk(*items))
    assert not any(p.item.HasField("debug_trace") for p in plain.pairs)
