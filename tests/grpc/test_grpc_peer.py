"""Leopard's gRPC answers are SpiceDB's: the same questions through the authzed client,
to Leopard and to SpiceDB embedded (through ``support.spicedb_front``), on the same
schema and data, with no disagreement.

Every indexed permission and relation of every folder and doc (and group) is asked
about every user (one unknown), every group's ``member`` userset, and usersets of the
objects themselves (``folder:f0#view``, ``doc:d3#viewer``: SpiceDB counts a userset in
its own object's sets). SpiceDB's LookupSubjects may list a subject more than once
(once per path, on relations); answers are compared as sets there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from authzed.api import v1
from docs_world import DOCS, FOLDERS, GROUPS, INDEXED, SCHEMA, USERS, LeopardGrpc, build, tuples
from support.spicedb_front import SpiceDBFront, missing_reason

from leopard.model.schema.spicedb import parse_spicedb
from leopard.model.tokens import decode_token

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


SUBJECTS = (
    [subj("user", u) for u in [*USERS, "nobody"]]
    + [subj("group", g, "member") for g in GROUPS]
    + [subj("folder", f, "view") for f in FOLDERS[:4]]
    + [subj("folder", "f2", "edit"), subj("doc", "d3", "viewer"), subj("doc", "d5", "edit")]
)


def shown(s: Any) -> str:
    rel = f"#{s.optional_relation}" if s.optional_relation else ""
    return f"{s.object.object_type}:{s.object.object_id}{rel}"


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, LeopardGrpc]]:
    """(Leopard's client, SpiceDB's client, Leopard's server) on the same data."""
    data = tuples()
    path = build(tmp_path_factory.mktemp("peer"), data)
    with SpiceDBFront(SCHEMA) as front, LeopardGrpc(path) as leo:
        front.write(data)
        yield leo.client(), front.client(), leo


def check_items() -> list[Any]:
    return [
        v1.CheckBulkPermissionsRequestItem(resource=obj(t, i), permission=p, subject=s)
        for s in SUBJECTS
        for t, i in OBJECTS + [("group", g) for g in GROUPS]
        for p in INDEXED[t]
    ]


def test_check_permission_agrees(peers: tuple[Any, Any, LeopardGrpc]) -> None:
    leopard, spicedb, server = peers
    disagree = []
    items = check_items()
    for item in items:
        request = v1.CheckPermissionRequest(
            resource=item.resource, permission=item.permission, subject=item.subject
        )
        ours = leopard.CheckPermission(request)
        request.consistency.CopyFrom(FULL)
        theirs = spicedb.CheckPermission(request)
        if ours.permissionship != theirs.permissionship:
            where = f"{item.resource.object_type}:{item.resource.object_id}#{item.permission}"
            disagree.append(f"{shown(item.subject)} in {where}: {ours} vs {theirs}")
        assert ours.checked_at.token == server.index.version
    assert not disagree, f"{len(disagree)} of {len(items)}:\n" + "\n".join(disagree[:20])
    assert len(items) > 4000


def test_check_bulk_permissions_agrees(peers: tuple[Any, Any, LeopardGrpc]) -> None:
    leopard, spicedb, _ = peers
    items = check_items()
    ours = leopard.CheckBulkPermissions(v1.CheckBulkPermissionsRequest(items=items))
    theirs = spicedb.CheckBulkPermissions(
        v1.CheckBulkPermissionsRequest(items=items, consistency=FULL)
    )
    assert len(ours.pairs) == len(theirs.pairs) == len(items)
    for item, a, b in zip(items, ours.pairs, theirs.pairs, strict=True):
        assert a.request == item
        assert a.WhichOneof("response") == b.WhichOneof("response") == "item"
        assert a.item.permissionship == b.item.permissionship, shown(item.subject)
    assert decode_token(ours.checked_at.token) is not None


def _resources(client: Any, request: Any) -> list[str]:
    return [r.resource_object_id for r in client.LookupResources(request)]


def test_lookup_resources_agrees_and_pages(peers: tuple[Any, Any, LeopardGrpc]) -> None:
    leopard, spicedb, _ = peers
    asked = 0
    for s in SUBJECTS:
        for t in ("folder", "doc"):
            for p in INDEXED[t]:
                request = v1.LookupResourcesRequest(resource_object_type=t, permission=p, subject=s)
                ours = _resources(leopard, request)
                request.consistency.CopyFrom(FULL)
                theirs = _resources(spicedb, request)
                assert ours == sorted(ours)
                assert set(ours) == set(theirs), f"{shown(s)}: {t}#{p}"
                asked += 1
                if len(ours) > 2:  # page through two at a time
                    paged, cursor = [], None
                    while True:
                        page = v1.LookupResourcesRequest(
                            resource_object_type=t, permission=p, subject=s, optional_limit=2
                        )
                        if cursor is not None:
                            page.optional_cursor.CopyFrom(cursor)
                        answers = list(leopard.LookupResources(page))
                        paged += [a.resource_object_id for a in answers]
                        if len(answers) < 2:
                            break
                        cursor = answers[-1].after_result_cursor
                    assert paged == ours
    assert asked > 200


def test_lookup_subjects_agrees(peers: tuple[Any, Any, LeopardGrpc]) -> None:
    leopard, spicedb, _ = peers
    wildcards = 0
    options = v1.LookupSubjectsRequest.WildcardOption
    for t, i in OBJECTS:
        for p in INDEXED[t]:
            for option in options.values():
                request = v1.LookupSubjectsRequest(
                    resource=obj(t, i), permission=p, subject_object_type="user",
                    wildcard_option=option,
                )  # fmt: skip
                ours = [r.subject.subject_object_id for r in leopard.LookupSubjects(request)]
                request.consistency.CopyFrom(FULL)
                answers = list(spicedb.LookupSubjects(request))
                theirs = {r.subject.subject_object_id for r in answers}
                assert len(ours) == len(set(ours))
                assert set(ours) == theirs, f"{t}:{i}#{p} {options.Name(option)}"
                assert not any(r.excluded_subjects for r in answers)
                wildcards += "*" in ours
    assert wildcards > 10  # folder f7 and all below it, under every option


def test_read_schema_is_the_schema_as_written(peers: tuple[Any, Any, LeopardGrpc]) -> None:
    leopard, spicedb, server = peers
    ours = leopard.ReadSchema(v1.ReadSchemaRequest())
    theirs = spicedb.ReadSchema(v1.ReadSchemaRequest())
    assert ours.schema_text == SCHEMA  # comments and layout kept
    assert ours.read_at.token == server.index.version
    assert parse_spicedb(theirs.schema_text, "spicedb") == parse_spicedb(SCHEMA, "leopard")


def test_the_fixture_serves_spicedb_whole_api(tmp_path: Path) -> None:
    """The front answers every service: unary through C, streams through the proxy,
    bulk export and import composed of them."""
    from authzed.api.v1 import experimental_service_pb2 as exp
    from authzed.api.v1 import permission_service_pb2 as perm

    with SpiceDBFront(SCHEMA) as front:
        client = front.client()
        token = front.write(["doc:a#viewer@user:x", "doc:b#viewer@user:y", "folder:f#owner@user:x"])
        exported = list(client.ExportBulkRelationships(perm.ExportBulkRelationshipsRequest(
            optional_limit=2, consistency=v1.Consistency(at_least_as_fresh=token))))  # fmt: skip
        assert sum(len(e.relationships) for e in exported) == 3 and len(exported) == 2
        with pytest.raises(grpc.RpcError) as refused:  # CREATE of what exists...
            client.ImportBulkRelationships(iter([perm.ImportBulkRelationshipsRequest(
                relationships=[r for e in exported for r in e.relationships])]))  # fmt: skip
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]
    with SpiceDBFront(SCHEMA) as fresh:  # ... so into an empty one
        client = fresh.client()
        loaded = client.ImportBulkRelationships(iter([perm.ImportBulkRelationshipsRequest(
            relationships=[r for e in exported for r in e.relationships])]))  # fmt: skip
        assert loaded.num_loaded == 3
        experimental = list(client.BulkExportRelationships(exp.BulkExportRelationshipsRequest()))
        assert sum(len(e.relationships) for e in experimental) == 3
        watch = client.Watch(v1.WatchRequest(), timeout=0.5)
        with pytest.raises(grpc.RpcError) as raised:
            list(watch)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
