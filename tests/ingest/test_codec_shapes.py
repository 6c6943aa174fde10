"""Change messages as the peers really emit them, every documented shape.

SpiceDB's Watch responses are built here as real ``authzed.api.v1`` messages and
written to JSON the ways a bridge does: protobuf's JSON mapping (camelCase, enum
names, a field at its zero value omitted), with proto field names, with enum numbers,
with every field printed, and as SpiceDB's HTTP gateway streams them (each response
inside ``{"result": ...}``, a failure as ``{"error": {"code", "message", "details"}}``).

OpenFGA's ReadChanges items follow its published API definitions (openfga/api,
``openfga/v1/openfga.proto`` and ``openfga_service.proto``): ``TupleChange`` has
``tuple_key`` (json_name ``tuple_key``), ``operation`` (``TupleOperation``, whose
``TUPLE_OPERATION_WRITE`` is 0, so protobuf's JSON omits it) and ``timestamp`` (RFC
3339, nanoseconds); ``ReadChangesResponse`` has ``changes`` and ``continuation_token``.

Debezium's envelope carries ``source.ts_ms`` (commit time in the database; Debezium
2.6 adds ``source.ts_us``/``ts_ns``) beside the connector's own ``ts_ms``.

A bad item among good ones is refused alone, with its index and a message of the same
format holding just it; the others decode.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from authzed.api import v1
from google.protobuf import json_format, struct_pb2

from ingest.codecs import Change, Decoded, decode, decode_message
from leopard.errors import DecodeError, StreamGap
from leopard.model.names import parse_tuple

ENG_ALICE = parse_tuple("group:eng#member@user:alice")
ENG_OPS = parse_tuple("group:eng#member@group:ops#member")
ENG_ALL = parse_tuple("group:eng#member@user:*")
JAN_1 = 1704067200.0  # 2024-01-01T00:00:00Z
TOKEN = "GhUKEzE3MDQwNjcyMDAwMDAwMDAwMDA="


def js(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# -- SpiceDB ------------------------------------------------------------------------


def relationship(text: str, caveat: str | None = None) -> Any:
    t = parse_tuple(text)
    return v1.Relationship(
        resource=v1.ObjectReference(object_type=t.resource_type, object_id=t.resource_id),
        relation=t.relation,
        subject=v1.SubjectReference(
            object=v1.ObjectReference(object_type=t.subject_type, object_id=t.subject_id),
            optional_relation=t.subject_relation or "",
        ),
        optional_caveat=(
            v1.ContextualizedCaveat(caveat_name=caveat, context=struct_pb2.Struct())
            if caveat
            else None
        ),
    )


def update(op: str, text: str, caveat: str | None = None) -> Any:
    return v1.RelationshipUpdate(
        operation=v1.RelationshipUpdate.Operation.Value(f"OPERATION_{op}"),
        relationship=relationship(text, caveat),
    )


def watch_response(*updates: Any, checkpoint: bool = False) -> Any:
    return v1.WatchResponse(
        updates=list(updates), changes_through=v1.ZedToken(token=TOKEN), is_checkpoint=checkpoint
    )


STYLES = {
    "protojson": {},
    "proto names": {"preserving_proto_field_name": True},
    "enum numbers": {"use_integers_for_enums": True},
    "every field": {"always_print_fields_with_no_presence": True},
    "all three": {
        "preserving_proto_field_name": True,
        "use_integers_for_enums": True,
        "always_print_fields_with_no_presence": True,
    },
}


def as_json(message: Any, style: str, gateway: bool = False) -> bytes:
    doc = json_format.MessageToDict(message, **STYLES[style])
    return js({"result": doc} if gateway else doc)


MIXED = [
    update("CREATE", "group:eng#member@user:alice"),
    update("TOUCH", "group:eng#member@group:ops#member"),
    update("TOUCH", "group:eng#member@user:*"),
    update("DELETE", "group:eng#member@user:alice"),
]
EXPECTED = [
    Change("touch", ENG_ALICE),
    Change("touch", ENG_OPS),
    Change("touch", ENG_ALL),
    Change("delete", ENG_ALICE),
]


@pytest.mark.parametrize("gateway", [False, True], ids=["grpc bridge", "http gateway"])
@pytest.mark.parametrize("style", sorted(STYLES))
def test_spicedb_watch_response_in_every_json_style(style: str, gateway: bool) -> None:
    decoded = decode_message("spicedb", as_json(watch_response(*MIXED), style, gateway))
    assert decoded == Decoded(EXPECTED, (), TOKEN)


@pytest.mark.parametrize("gateway", [False, True], ids=["grpc bridge", "http gateway"])
@pytest.mark.parametrize("style", sorted(STYLES))
def test_spicedb_checkpoint_in_every_json_style(style: str, gateway: bool) -> None:
    decoded = decode_message("spicedb", as_json(watch_response(checkpoint=True), style, gateway))
    assert decoded == Decoded([], (), TOKEN)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_spicedb_schema_change_response_stops_the_stream(style: str) -> None:
    """As ``leopard follow`` stops at it: what comes after is read under a new schema."""
    response = v1.WatchResponse(changes_through=v1.ZedToken(token=TOKEN), schema_updated=True)
    with pytest.raises(StreamGap, match="the schema changed at revision .*rebuild it from SpiceDB"):
        decode_message("spicedb", as_json(response, style, True))


def test_spicedb_gateway_prints_unset_messages_as_null() -> None:
    # Go's protojson with EmitUnpopulated (grpc-gateway's default) writes an unset
    # message field as null, which Python's printer never does: add them by hand.
    doc = json.loads(as_json(watch_response(*MIXED), "every field", True))
    for u in doc["result"]["updates"]:
        u["relationship"].update(optionalCaveat=None, optionalExpiresAt=None)
    doc["result"].update(optionalTransactionMetadata=None, fullRevisionMetadata=[])
    assert decode("spicedb", js(doc)) == EXPECTED


@pytest.mark.parametrize(
    ("error", "match"),
    [
        (
            {"code": 9, "message": "revision is too old", "details": []},
            r"spicedb event: the stream reported an error instead of changes: code 9 "
            r"\(FAILED_PRECONDITION\): 'revision is too old'",
        ),
        ({"code": 99, "message": "?"}, r"code 99: '\?'"),
        ("broken", r"the stream reported an error instead of changes: 'broken'"),
    ],
)
def test_spicedb_gateway_error_is_a_bad_message(error: Any, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_message("spicedb", js({"error": error}))


def test_spicedb_gateway_result_must_be_an_object() -> None:
    with pytest.raises(DecodeError, match=r"'result' is \[\]; expected an object"):
        decode_message("spicedb", js({"result": []}))


@pytest.mark.parametrize("style", sorted(STYLES))
def test_spicedb_one_caveated_update_is_refused_alone(style: str) -> None:
    response = watch_response(
        update("TOUCH", "group:eng#member@user:alice"),
        update("TOUCH", "group:eng#member@user:bob", caveat="on_tuesday"),
        update("TOUCH", "group:eng#member@group:ops#member"),
    )
    decoded = decode_message("spicedb", as_json(response, style, gateway=True))
    assert decoded.changes == [Change("touch", ENG_ALICE), Change("touch", ENG_OPS)]
    [r] = decoded.rejected
    assert r.item == 1
    assert r.reason.startswith("spicedb event: updates[1].relationship has a caveat")
    assert "not supported" in r.reason
    # the dead letter is a Watch response of just that update, with its revision
    alone = json.loads(r.value)
    assert len(alone["updates"]) == 1 and alone["changesThrough"] == {"token": TOKEN}
    with pytest.raises(DecodeError, match="has a caveat"):
        decode("spicedb", r.value)
    # taken whole, the message is refused at that item
    with pytest.raises(DecodeError, match=r"updates\[1\].relationship has a caveat"):
        decode("spicedb", as_json(response, style))


def test_spicedb_unspecified_operation_is_refused_alone() -> None:
    response = watch_response(update("TOUCH", "group:eng#member@user:alice"))
    response.updates.add().CopyFrom(
        v1.RelationshipUpdate(relationship=relationship("group:eng#member@user:bob"))
    )
    for style in STYLES:
        decoded = decode_message("spicedb", as_json(response, style))
        assert decoded.changes == [Change("touch", ENG_ALICE)], style
        [r] = decoded.rejected
        assert r.item == 1
        assert "OPERATION_UNSPECIFIED" in r.reason
        assert "expected 'OPERATION_CREATE', 'OPERATION_TOUCH' or 'OPERATION_DELETE'" in r.reason


def test_spicedb_operation_numbers() -> None:
    doc = json_format.MessageToDict(watch_response(*MIXED), use_integers_for_enums=True)
    assert [u["operation"] for u in doc["updates"]] == [1, 2, 2, 3]
    doc["updates"][0]["operation"] = 7
    decoded = decode_message("spicedb", js(doc))
    assert decoded.changes == EXPECTED[1:]
    assert decoded.rejected[0].item == 0
    assert "'updates[0].operation' is 7" in decoded.rejected[0].reason


def test_spicedb_malformed_update_beside_good_ones() -> None:
    doc = json_format.MessageToDict(watch_response(*MIXED))
    doc["updates"].insert(2, 17)
    doc["updates"].insert(0, {"operation": "OPERATION_TOUCH", "relationship": {"relation": "x"}})
    decoded = decode_message("spicedb", js(doc))
    assert decoded.changes == EXPECTED
    assert [(r.item, r.reason) for r in decoded.rejected] == [
        (0, "spicedb event: missing 'updates[0].relationship.resource'"),
        (3, "spicedb event: 'updates[3]' is 17; expected an object"),
    ]


# -- OpenFGA ------------------------------------------------------------------------


def item(user: str = "user:alice", **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "tuple_key": {"user": user, "relation": "member", "object": "group:eng"},
        "timestamp": "2024-01-01T00:00:00Z",
    }
    doc.update(fields)
    return doc


@pytest.mark.parametrize(
    "operation", [None, "TUPLE_OPERATION_WRITE", 0], ids=["omitted", "name", "number"]
)
def test_openfga_write_in_every_spelling(operation: Any) -> None:
    doc = item() if operation is None else item(operation=operation)
    assert "operation" in doc or operation is None
    assert decode("openfga", js(doc)) == [Change("touch", ENG_ALICE, JAN_1)]


@pytest.mark.parametrize("operation", ["TUPLE_OPERATION_DELETE", 1], ids=["name", "number"])
def test_openfga_delete_in_every_spelling(operation: Any) -> None:
    assert decode("openfga", js(item(operation=operation))) == [Change("delete", ENG_ALICE, JAN_1)]


def test_openfga_explicit_null_operation_is_the_zero_value() -> None:
    assert decode("openfga", js(item(operation=None))) == [Change("touch", ENG_ALICE, JAN_1)]


def test_openfga_unknown_operation_number() -> None:
    with pytest.raises(DecodeError, match=r"'operation' is 2; expected 'TUPLE_OPERATION_WRITE'"):
        decode("openfga", js(item(operation=2)))


def test_openfga_camel_case_tuple_key_from_a_bridge() -> None:
    doc = item()
    doc["tupleKey"] = doc.pop("tuple_key")
    assert decode("openfga", js(doc)) == [Change("touch", ENG_ALICE, JAN_1)]
    page = {"changes": [doc], "continuationToken": "abc"}
    assert decode("openfga", js(page)) == [Change("touch", ENG_ALICE, JAN_1)]


def test_openfga_nanosecond_timestamp() -> None:
    [c] = decode("openfga", js(item(timestamp="2024-01-01T00:00:00.123456789Z")))
    assert c.ts == pytest.approx(JAN_1 + 0.123456)


def test_openfga_read_changes_page_as_the_http_api_returns_it() -> None:
    # WRITE omitted (zero value), DELETE named, a wildcard, a userset, the token
    page = {
        "changes": [
            item(),
            item("group:ops#member", operation="TUPLE_OPERATION_DELETE"),
            item("user:*"),
        ],
        "continuation_token": "eyJwayI6IkxBVEVTVF9OU0NPTkZJR19hdXRoMHN0b3JlIn0=",
    }
    assert decode_message("openfga", js(page)) == Decoded(
        [
            Change("touch", ENG_ALICE, JAN_1),
            Change("delete", ENG_OPS, JAN_1),
            Change("touch", ENG_ALL, JAN_1),
        ]
    )


def test_openfga_empty_page() -> None:
    assert decode_message("openfga", js({"changes": [], "continuation_token": "x"})) == Decoded([])


def test_openfga_one_conditional_item_is_refused_alone() -> None:
    conditional = item("user:bob")
    conditional["tuple_key"]["condition"] = {"name": "in_office", "context": {"ip": "1"}}
    page = {"changes": [item(), conditional, item("group:ops#member")], "continuation_token": "x"}
    decoded = decode_message("openfga", js(page))
    assert decoded.changes == [Change("touch", ENG_ALICE, JAN_1), Change("touch", ENG_OPS, JAN_1)]
    [r] = decoded.rejected
    assert r.item == 1
    assert r.reason.startswith("openfga event: changes[1].tuple_key has the condition")
    assert json.loads(r.value) == conditional  # the item alone is an OpenFGA message
    with pytest.raises(DecodeError, match="conditional relationships are not supported"):
        decode("openfga", r.value)


def test_openfga_malformed_items_beside_good_ones() -> None:
    page = {"changes": [3, item(), item(operation="TUPLE_OPERATION_UPSERT"), item("alice")]}
    decoded = decode_message("openfga", js(page))
    assert decoded.changes == [Change("touch", ENG_ALICE, JAN_1)]
    assert [r.item for r in decoded.rejected] == [0, 2, 3]
    assert "'changes[0]' is 3; expected an object" in decoded.rejected[0].reason
    assert "'changes[2].operation' is 'TUPLE_OPERATION_UPSERT'" in decoded.rejected[1].reason
    assert "changes[3].tuple_key: 'group:eng#member@alice'" in decoded.rejected[2].reason


# -- Debezium -----------------------------------------------------------------------


ROW = {
    "resource_type": "group",
    "resource_id": "eng",
    "relation": "member",
    "subject_type": "user",
    "subject_id": "alice",
    "subject_relation": None,
}
COMMITTED = 1704067200123  # the database's commit, ms
PROCESSED = 1704067205000  # the connector's processing, ms


def debezium(source: dict[str, Any] | None, wrap: bool = True) -> bytes:
    payload: dict[str, Any] = {"before": None, "after": ROW, "op": "c", "ts_ms": PROCESSED}
    if source is not None:
        payload["source"] = source
    return js({"schema": {"type": "struct"}, "payload": payload} if wrap else payload)


@pytest.mark.parametrize("wrap", [True, False])
def test_debezium_commit_time_is_source_ts_ms(wrap: bool) -> None:
    source = {"connector": "postgresql", "db": "authz", "ts_ms": COMMITTED, "lsn": 42}
    [c] = decode("debezium", debezium(source, wrap))
    assert c.ts == pytest.approx(COMMITTED / 1000)


def test_debezium_finer_source_times() -> None:
    us = {"ts_ms": COMMITTED, "ts_us": COMMITTED * 1000 + 456}
    [c] = decode("debezium", debezium(us))
    assert c.ts == pytest.approx(COMMITTED / 1000 + 456e-6)
    ns = {**us, "ts_ns": (COMMITTED * 1000 + 456) * 1000 + 789}
    [c] = decode("debezium", debezium(ns))
    assert c.ts == pytest.approx(COMMITTED / 1000 + 456e-6, abs=1e-6)


def test_debezium_without_source_time_uses_the_envelope() -> None:
    [c] = decode("debezium", debezium({"connector": "mysql"}))
    assert c.ts == PROCESSED / 1000
    [c] = decode("debezium", debezium(None))
    assert c.ts == PROCESSED / 1000


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("pg", r"'payload.source' is 'pg'; expected an object"),
        ({"ts_ms": "yesterday"}, r"'payload.source.ts_ms' is 'yesterday'"),
    ],
)
def test_debezium_bad_source(source: Any, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode("debezium", debezium(source))
