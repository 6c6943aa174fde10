"""What the index cannot answer goes to the SpiceDB behind Leopard, and comes back as
SpiceDB answered it: an exclusion, caveat contexts, usersets listed as subjects,
writes, reads, Watch, bulk import and export, the schema calls, methods Leopard has
never heard of. SpiceDB embedded, through ``support.spicedb_front``, is the upstream.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from authzed.api import v1
from authzed.api.v1 import experimental_service_pb2 as exp
from authzed.api.v1 import permission_service_pb2 as perm
from docs_world import DOCS, FOLDERS, GROUPS, SCHEMA, USERS, LeopardGrpc, build, tuples
from google.protobuf import struct_pb2
from support.spicedb_front import SpiceDBFront, missing_reason

import leopard
from leopard.model.zedtoken import encode_zedtoken

_MISSING = missing_reason()
pytestmark = [
    pytest.mark.spicedb,
    pytest.mark.skipif(_MISSING is not None, reason=f"SpiceDB not installed: {_MISSING}"),
]

FULL = v1.Consistency(fully_consistent=True)
OBJECTS = [("folder", f) for f in FOLDERS] + [("doc", d) for d in DOCS]


def obj(type: str, id: str) -> Any:
    return v1.ObjectReference(object_type=type, object_id=id)


def subj(type: str, id: str, relation: str = "") -> Any:
    return v1.SubjectReference(object=obj(type, id), optional_relation=relation)


def rel(resource: tuple[str, str], relation: str, subject: Any) -> Any:
    return v1.Relationship(resource=obj(*resource), relation=relation, subject=subject)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, LeopardGrpc]]:
    """(Leopard's client, SpiceDB's client, Leopard): Leopard forwards to that SpiceDB."""
    data = tuples()
    path = build(tmp_path_factory.mktemp("fwd"), data)
    with SpiceDBFront(SCHEMA) as front:
        front.write(data)
        front.settle(data[-1])  # the tests compare forwarded default reads with it
        with LeopardGrpc(path, upstream=front.target) as leo:
            yield leo.client(), front.client(), leo


def test_an_exclusion_only_spicedb_answers_is_forwarded(
    world: tuple[Any, Any, LeopardGrpc],
) -> None:
    leopard, spicedb, server = world
    held = 0
    for user in USERS:
        for t, i in OBJECTS:
            request = v1.CheckPermissionRequest(
                resource=obj(t, i), permission="view_ok", subject=subj("user", user)
            )
            ours = leopard.CheckPermission(request)
            assert not ours.checked_at.token.startswith("v1.")  # SpiceDB's ZedToken
            request.consistency.CopyFrom(FULL)
            assert ours.permissionship == spicedb.CheckPermission(request).permissionship
            held += ours.permissionship == v1.CheckPermissionResponse.PERMISSIONSHIP_HAS_PERMISSION
    assert held > 20
    # a Leopard version as at_least_as_fresh is made fully consistent on the way
    version = v1.ZedToken(token=server.index.version)
    asked = v1.CheckPermissionRequest(
        resource=obj("doc", "d0"), permission="view_ok", subject=subj("user", "u1"),
        consistency=v1.Consistency(at_least_as_fresh=version),
    )  # fmt: skip
    assert leopard.CheckPermission(asked).permissionship
    asked.consistency.CopyFrom(v1.Consistency(at_exact_snapshot=version))
    with pytest.raises(grpc.RpcError) as refused:
        leopard.CheckPermission(asked)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert "is a Leopard version" in refused.value.details()  # type: ignore[attr-defined]


def test_a_mixed_bulk_check_is_split_and_merged_in_order(
    world: tuple[Any, Any, LeopardGrpc],
) -> None:
    leopard, spicedb, _ = world
    items = []
    for n, (t, i) in enumerate(OBJECTS):
        user = subj("user", USERS[n % len(USERS)])
        for p in ("view", "view_ok", "edit", "nope"):
            items.append(v1.CheckBulkPermissionsRequestItem(resource=obj(t, i), permission=p,
                                                            subject=user))  # fmt: skip
        items.append(v1.CheckBulkPermissionsRequestItem(resource=obj(t, i), permission="view",
                                                        subject=subj("user", "*")))  # fmt: skip
    ours = leopard.CheckBulkPermissions(v1.CheckBulkPermissionsRequest(items=items))
    theirs = spicedb.CheckBulkPermissions(
        v1.CheckBulkPermissionsRequest(items=items, consistency=FULL)
    )
    assert ours.checked_at.token.startswith("v1.")
    kinds = set()
    for item, a, b in zip(items, ours.pairs, theirs.pairs, strict=True):
        assert a.request == item
        which = a.WhichOneof("response")
        assert which == b.WhichOneof("response")
        if which == "item":
            assert a.item.permissionship == b.item.permissionship
        else:
            assert (a.error.code, a.error.message) == (b.error.code, b.error.message)
        kinds.add((item.permission, which, a.error.code))
    assert ("nope", "error", 9) in kinds and ("view", "error", 3) in kinds  # from both sides


def test_lookups_only_spicedb_answers_are_forwarded(world: tuple[Any, Any, LeopardGrpc]) -> None:
    leopard, spicedb, _ = world
    for user in USERS[:8]:
        request = v1.LookupResourcesRequest(
            resource_object_type="doc", permission="view_ok", subject=subj("user", user)
        )
        ours = {r.resource_object_id for r in leopard.LookupResources(request)}
        request.consistency.CopyFrom(FULL)
        assert ours == {r.resource_object_id for r in spicedb.LookupResources(request)}
    for t, i in OBJECTS[:12]:
        for request in (
            v1.LookupSubjectsRequest(resource=obj(t, i), permission="view_ok",
                                     subject_object_type="user"),
            v1.LookupSubjectsRequest(resource=obj(t, i), permission="view",
                                     subject_object_type="group",
                                     optional_subject_relation="member"),
        ):  # fmt: skip
            ours = {r.subject.subject_object_id for r in leopard.LookupSubjects(request)}
            request.consistency.CopyFrom(FULL)
            assert ours == {r.subject.subject_object_id for r in spicedb.LookupSubjects(request)}


def test_a_caveat_context_goes_to_spicedb(world: tuple[Any, Any, LeopardGrpc]) -> None:
    leopard, _, _ = world
    context = struct_pb2.Struct()
    context.update({"now": "2024-01-01"})
    request = v1.CheckPermissionRequest(
        resource=obj("doc", "d1"), permission="view", subject=subj("user", "u1"), context=context
    )
    assert not leopard.CheckPermission(request).checked_at.token.startswith("v1.")
    request.ClearField("context")
    assert leopard.CheckPermission(request).checked_at.token.startswith("v1.")
    lookup = v1.LookupResourcesRequest(
        resource_object_type="doc", permission="view", subject=subj("user", "u1"), context=context
    )
    assert all(not r.looked_up_at.token.startswith("v1.") for r in leopard.LookupResources(lookup))


def test_a_write_through_leopard_goes_to_spicedb(world: tuple[Any, Any, LeopardGrpc]) -> None:
    leopard, spicedb, _ = world
    touch = v1.RelationshipUpdate.Operation.OPERATION_TOUCH
    new = rel(("doc", "fresh"), "viewer", subj("user", "newbie"))
    written = leopard.WriteRelationships(
        v1.WriteRelationshipsRequest(updates=[v1.RelationshipUpdate(operation=touch,
                                                                    relationship=new)])
    )  # fmt: skip
    assert written.written_at.token and not written.written_at.token.startswith("v1.")
    read = v1.ReadRelationshipsRequest(
        relationship_filter=v1.RelationshipFilter(
            resource_type="doc", optional_resource_id="fresh"
        ),
        consistency=v1.Consistency(at_least_as_fresh=written.written_at),
    )
    assert [r.relationship for r in leopard.ReadRelationships(read)] == [new]
    # SpiceDB's token is no Leopard version: the check goes to SpiceDB, which has it;
    # the index has not seen the change (no stream follows SpiceDB here)
    check = v1.CheckPermissionRequest(resource=obj("doc", "fresh"), permission="view",
                                      subject=subj("user", "newbie"))  # fmt: skip
    has = v1.CheckPermissionResponse.PERMISSIONSHIP_HAS_PERMISSION
    assert leopard.CheckPermission(check).permissionship != has
    check.consistency.CopyFrom(v1.Consistency(at_least_as_fresh=written.written_at))
    assert leopard.CheckPermission(check).permissionship == has
    expand = v1.ExpandPermissionTreeRequest(resource=obj("doc", "fresh"), permission="view",
                                            consistency=FULL)  # fmt: skip
    ours, theirs = leopard.ExpandPermissionTree(expand), spicedb.ExpandPermissionTree(expand)
    assert ours.tree_root == theirs.tree_root
    deleted = leopard.DeleteRelationships(v1.DeleteRelationshipsRequest(
        relationship_filter=v1.RelationshipFilter(resource_type="doc", optional_resource_id="fresh")
    ))  # fmt: skip
    read.consistency.CopyFrom(v1.Consistency(at_least_as_fresh=deleted.deleted_at))
    assert list(leopard.ReadRelationships(read)) == []


def test_streams_go_both_ways(world: tuple[Any, Any, LeopardGrpc]) -> None:
    """Watch and bulk export stream SpiceDB's answers; bulk import streams requests."""
    leopard, spicedb, _ = world
    seen: list[Any] = []
    watch = leopard.Watch(v1.WatchRequest(optional_object_types=["group"]), timeout=20)
    reader = threading.Thread(target=lambda: seen.extend(_first_update(watch)))
    reader.start()
    added = [rel(("group", f"imported{n}"), "member", subj("user", f"x{n}")) for n in range(5)]
    try:
        threading.Event().wait(0.5)  # the watch is open: the import comes after
        loaded = leopard.ImportBulkRelationships(
            iter([perm.ImportBulkRelationshipsRequest(relationships=added[:3]),
                  perm.ImportBulkRelationshipsRequest(relationships=added[3:])])
        )  # fmt: skip
        assert loaded.num_loaded == 5
        reader.join(20)
    finally:
        watch.cancel()
    assert seen and seen[0].relationship.resource.object_type == "group"
    exported = list(leopard.ExportBulkRelationships(
        perm.ExportBulkRelationshipsRequest(optional_limit=50, consistency=FULL)))  # fmt: skip
    direct = list(spicedb.ExportBulkRelationships(
        perm.ExportBulkRelationshipsRequest(optional_limit=50, consistency=FULL)))  # fmt: skip
    assert len(exported) == len(direct) > 2
    mine = [r for page in exported for r in page.relationships]
    assert mine == [r for page in direct for r in page.relationships]
    assert all(r in mine for r in added)
    bulk = leopard.BulkCheckPermission(exp.BulkCheckPermissionRequest(items=[
        exp.BulkCheckPermissionRequestItem(resource=obj("group", "imported1"),
                                           permission="member", subject=subj("user", "x1"))
    ], consistency=FULL))  # fmt: skip
    assert bulk.pairs[0].item.permissionship == 2


def _first_update(watch: Any) -> list[Any]:
    for response in watch:
        if response.updates:
            return list(response.updates)
    return []


def test_schema_calls_and_unknown_methods_are_forwarded(
    world: tuple[Any, Any, LeopardGrpc],
) -> None:
    leopard, spicedb, server = world
    assert leopard.WriteSchema(v1.WriteSchemaRequest(schema=SCHEMA)).written_at.token
    assert leopard.ReadSchema(v1.ReadSchemaRequest()).schema_text == SCHEMA  # the index's
    for call in (
        lambda c: c.ReflectSchema(v1.ReflectSchemaRequest()),
        lambda c: c.ExperimentalCountRelationships(
            exp.ExperimentalCountRelationshipsRequest(name="all")
        ),
    ):
        outcomes = []
        for client in (leopard, spicedb):
            with pytest.raises(grpc.RpcError) as failed:
                call(client)
            outcomes.append((failed.value.code(), failed.value.details()))  # type: ignore[attr-defined]
        assert outcomes[0] == outcomes[1]  # SpiceDB embedded's own refusal, relayed
    with grpc.insecure_channel(server.target) as channel:
        made_up = channel.unary_unary("/authzed.api.v2.Future/Method")
        with pytest.raises(grpc.RpcError) as failed:
            made_up(b"")
    assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
    assert "Method not found" in failed.value.details()  # type: ignore[attr-defined]


def test_without_an_upstream_what_needs_spicedb_is_unimplemented(tmp_path: Path) -> None:
    with LeopardGrpc(build(tmp_path)) as leo:
        client = leo.client()
        calls = [
            lambda: client.CheckPermission(v1.CheckPermissionRequest(
                resource=obj("doc", "d1"), permission="view_ok", subject=subj("user", "u1"))),
            lambda: client.WriteRelationships(v1.WriteRelationshipsRequest()),
            lambda: list(client.ReadRelationships(v1.ReadRelationshipsRequest(
                relationship_filter=v1.RelationshipFilter(resource_type="doc")))),
            lambda: list(client.Watch(v1.WatchRequest())),
            lambda: client.ImportBulkRelationships(iter([])),
            lambda: list(client.LookupSubjects(v1.LookupSubjectsRequest(
                resource=obj("doc", "d1"), permission="view", subject_object_type="group",
                optional_subject_relation="member"))),
        ]  # fmt: skip
        for call in calls:
            with pytest.raises(grpc.RpcError) as failed:
                call()
            assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
            assert "--upstream-spicedb" in failed.value.details()  # type: ignore[attr-defined]
        with grpc.insecure_channel(leo.target) as channel:
            with pytest.raises(grpc.RpcError) as failed:
                channel.unary_unary("/authzed.api.v2.Future/Method")(b"")
        assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
        assert "Method is answered by SpiceDB" in failed.value.details()  # type: ignore[attr-defined]
        bulk = client.CheckBulkPermissions(v1.CheckBulkPermissionsRequest(items=[
            v1.CheckBulkPermissionsRequestItem(resource=obj("doc", "d1"), permission=p,
                                               subject=subj("user", "u1"))
            for p in ("view", "view_ok")]))  # fmt: skip
        assert bulk.pairs[0].WhichOneof("response") == "item"
        assert bulk.pairs[1].error.code == grpc.StatusCode.UNIMPLEMENTED.value[0]
        assert "uses an exclusion" in bulk.pairs[1].error.message


class _Recorder(grpc.GenericRpcHandler):
    """An upstream that records what reaches it and answers empty messages."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    def service(self, details: Any) -> Any:
        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.seen.append(dict(context.invocation_metadata()))  # type: ignore[arg-type]
            context.set_trailing_metadata((("io.spicedb.respmeta.x", "1"),))
            return b""

        return grpc.unary_unary_rpc_method_handler(answer)


def _recording_upstream() -> tuple[_Recorder, grpc.Server, int]:
    """A started upstream that records what reaches it: the recorder, the server (stop
    it) and its port."""
    recorder = _Recorder()
    upstream = grpc.server(futures.ThreadPoolExecutor(2))
    upstream.add_generic_rpc_handlers((recorder,))
    port = upstream.add_insecure_port("127.0.0.1:0")
    upstream.start()
    return recorder, upstream, port


def _index_following(tmp_path: Path, position: dict[str, int]) -> Path:
    """The docs world built at ``position``, as an index that follows a stream."""
    path = tmp_path / "idx"
    (tmp_path / "docs.zed").write_text(SCHEMA)
    leopard.build_index([tuples()], path, schema=tmp_path / "docs.zed", position=position)
    return path


def test_the_upstream_gets_its_own_key_and_the_callers_headers(tmp_path: Path) -> None:
    recorder, upstream, port = _recording_upstream()
    try:
        options = {"upstream": f"127.0.0.1:{port}", "upstream_preshared_key": "back-door",
                   "preshared_key": "front-door"}  # fmt: skip
        with LeopardGrpc(build(tmp_path), **options) as leo:
            client = leo.client("front-door")
            _, call = client.WriteRelationships.with_call(
                v1.WriteRelationshipsRequest(), metadata=[("x-request-id", "abc")]
            )
            assert dict(call.trailing_metadata())["io.spicedb.respmeta.x"] == "1"
            with pytest.raises(grpc.RpcError) as refused:
                leo.client("wrong").WriteRelationships(v1.WriteRelationshipsRequest())
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    finally:
        upstream.stop(None)
    assert len(recorder.seen) == 1  # the refused call never went on
    assert recorder.seen[0]["authorization"] == "Bearer back-door"
    assert recorder.seen[0]["x-request-id"] == "abc"


def test_fully_consistent_of_a_stream_applied_elsewhere_goes_to_the_upstream(
    tmp_path: Path,
) -> None:
    """An index that follows a stream no consumer in this server applies cannot know the
    stream's head: a fully consistent check goes to the SpiceDB behind Leopard, which
    can; one that may be answered at the current version does not."""
    recorder, upstream, port = _recording_upstream()
    path = _index_following(tmp_path, {"changes:0": 3})
    question = {
        "resource": obj("doc", DOCS[0]),
        "permission": "view",
        "subject": subj("user", USERS[0]),
    }
    try:
        with LeopardGrpc(path, upstream=f"127.0.0.1:{port}") as leo:
            client = leo.client()
            client.CheckPermission(v1.CheckPermissionRequest(**question))
            assert recorder.seen == []  # answered by the index
            full = v1.Consistency(fully_consistent=True)
            client.CheckPermission(v1.CheckPermissionRequest(**question, consistency=full))
    finally:
        upstream.stop(None)
    assert len(recorder.seen) == 1


def test_a_spicedb_snapshot_the_index_is_not_at_goes_to_the_upstream(tmp_path: Path) -> None:
    """``at_exact_snapshot`` with SpiceDB's ZedToken at an index that follows SpiceDB
    (its version holding a bridged topic's offsets too): the revision the index is at
    is answered from the index; any other goes to the SpiceDB behind Leopard, which
    keeps its past revisions, and without one is refused naming both revisions."""
    recorder, upstream, port = _recording_upstream()
    path = _index_following(tmp_path, {"spicedb": 50, "bridged:0": 7})

    def ask(client: Any, revision: int) -> Any:
        snapshot = v1.Consistency(
            at_exact_snapshot=v1.ZedToken(token=encode_zedtoken(str(revision)))
        )
        return client.CheckPermission(
            v1.CheckPermissionRequest(
                resource=obj("doc", DOCS[0]),
                permission="view",
                subject=subj("user", USERS[0]),
                consistency=snapshot,
            )
        )

    try:
        with LeopardGrpc(path, upstream=f"127.0.0.1:{port}") as leo:
            answer = ask(leo.client(), 50)
            assert answer.checked_at.token == leo.index.version
            assert recorder.seen == []  # answered by the index
            ask(leo.client(), 49)
            ask(leo.client(), 51)
    finally:
        upstream.stop(None)
    assert len(recorder.seen) == 2
    with LeopardGrpc(path) as leo:
        assert ask(leo.client(), 50).checked_at.token == leo.index.version
        for revision, why in ((49, "revision has expired"), (51, "revision was invalid")):
            with pytest.raises(grpc.RpcError) as refused:
                ask(leo.client(), revision)
            assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE  # type: ignore[attr-defined]
            said = refused.value.details()  # type: ignore[attr-defined]
            assert why in said and f"SpiceDB revision {revision}" in said and "at 50" in said


def test_a_version_not_reached_in_time_goes_to_the_upstream(tmp_path: Path) -> None:
    """``at_least_as_fresh`` of a revision the index has not applied within the wait
    (its follower behind, or stopped): the SpiceDB behind Leopard, which issued the
    token, answers it (checks, bulk checks, lookups) instead of the request failing;
    without an upstream it is OUT_OF_RANGE, as before. A token the index has reached
    is answered from the index."""
    recorder, upstream, port = _recording_upstream()
    path = _index_following(tmp_path, {"spicedb": 50})
    token = encode_zedtoken("60")  # a write SpiceDB made that the index has not seen
    ahead = v1.Consistency(at_least_as_fresh=v1.ZedToken(token=token))
    reached = v1.Consistency(at_least_as_fresh=v1.ZedToken(token=encode_zedtoken("50")))
    question = {
        "resource": obj("doc", DOCS[0]),
        "permission": "view",
        "subject": subj("user", USERS[0]),
    }
    bulk = v1.CheckBulkPermissionsRequest(
        items=[v1.CheckBulkPermissionsRequestItem(**question)], consistency=ahead
    )
    lookup = v1.LookupResourcesRequest(
        resource_object_type="doc",
        permission="view",
        subject=subj("user", USERS[0]),
        consistency=ahead,
    )
    try:
        with LeopardGrpc(path, upstream=f"127.0.0.1:{port}", max_wait=0.2) as leo:
            client = leo.client()
            answer = client.CheckPermission(
                v1.CheckPermissionRequest(**question, consistency=reached)
            )
            assert answer.checked_at.token == leo.index.version
            assert recorder.seen == []  # answered by the index
            client.CheckPermission(v1.CheckPermissionRequest(**question, consistency=ahead))
            assert len(recorder.seen) == 1
            client.CheckBulkPermissions(bulk)
            assert len(recorder.seen) == 2
            list(client.LookupResources(lookup))
            assert len(recorder.seen) == 3
            # a next page holding Leopard's cursor stays here: SpiceDB cannot read it
            lookup.consistency.CopyFrom(reached)
            lookup.optional_limit = 1
            [first] = client.LookupResources(lookup)
            lookup.consistency.CopyFrom(ahead)
            lookup.optional_cursor.CopyFrom(first.after_result_cursor)
            with pytest.raises(grpc.RpcError) as kept:
                list(client.LookupResources(lookup))
            assert kept.value.code() == grpc.StatusCode.OUT_OF_RANGE  # type: ignore[attr-defined]
            said = kept.value.details()  # type: ignore[attr-defined]
            assert "the request holds a cursor Leopard gave" in said, said
            assert "without the cursor" in said
            assert len(recorder.seen) == 3
    finally:
        upstream.stop(None)
    with LeopardGrpc(path, max_wait=0.2) as leo:
        with pytest.raises(grpc.RpcError) as refused:
            leo.client().CheckPermission(v1.CheckPermissionRequest(**question, consistency=ahead))
        assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE  # type: ignore[attr-defined]
        pairs = leo.client().CheckBulkPermissions(bulk).pairs
        assert pairs[0].error.code == grpc.StatusCode.OUT_OF_RANGE.value[0]


def test_an_upstream_that_is_down_is_unavailable_naming_it(tmp_path: Path) -> None:
    with LeopardGrpc(build(tmp_path), upstream="127.0.0.1:1") as leo:
        with pytest.raises(grpc.RpcError) as failed:
            leo.client().WriteRelationships(v1.WriteRelationshipsRequest(), timeout=10)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert "the SpiceDB behind Leopard (127.0.0.1:1)" in failed.value.details()  # type: ignore[attr-defined]


def test_leopard_answers_what_it_indexes_even_with_an_upstream(
    world: tuple[Any, Any, LeopardGrpc],
) -> None:
    leopard, _, server = world
    subject = subj("group", GROUPS[0], "member")
    request = v1.CheckPermissionRequest(
        resource=obj("doc", "d1"), permission="view", subject=subject
    )
    answer = leopard.CheckPermission(request)
    assert answer.checked_at.token == server.index.version
