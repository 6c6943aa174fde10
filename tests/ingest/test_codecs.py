"""Unit tests of the change-event codecs: every format, every way a message can be bad.

Every codec takes names as long and as varied as the peers allow (SpiceDB's ids of
1,024 bytes, OpenFGA's upper case, '-', '.' and non-ASCII names) and refuses one
part over its limit naming the part.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import ingest.codecs as codecs
from ingest.codecs import CODECS, Change, decode, encode_native, message_key
from leopard.errors import DecodeError, InvalidInput, LeopardError
from leopard.model.names import MAX_ID_BYTES, RelationTuple, parse_tuple

ENG_ALICE = parse_tuple("group:eng#member@user:alice")
ENG_OPS = parse_tuple("group:eng#member@group:ops#member")
JAN_1 = 1704067200.0  # 2024-01-01T00:00:00Z


def js(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def bad(fmt: str, value: bytes | None, match: str, options: dict | None = None) -> str:
    """Decode a bad message; return the error text after checking it is one line."""
    with pytest.raises(DecodeError, match=match) as info:
        decode(fmt, value, options=options)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{fmt} event: ")
    return text


# -- shared behaviour ------------------------------------------------------------


def test_codecs_are_listed() -> None:
    assert CODECS == ("native", "openfga", "spicedb", "debezium")


def test_decode_error_is_invalid_input() -> None:
    assert issubclass(DecodeError, InvalidInput)
    assert issubclass(DecodeError, LeopardError)


def test_unknown_format_is_not_a_decode_error() -> None:
    with pytest.raises(InvalidInput, match=r"unknown change format 'avro'") as info:
        decode("avro", b"{}")
    assert not isinstance(info.value, DecodeError)


@pytest.mark.parametrize("fmt", CODECS)
def test_not_json(fmt: str) -> None:
    bad(fmt, b"{oops", r"not JSON \(Expecting property name .* at character 1\): b'\{oops'")


@pytest.mark.parametrize("fmt", CODECS)
def test_not_utf8(fmt: str) -> None:
    bad(fmt, b'{"op": "\xff"}', r"not UTF-8 \(byte 0xff at position 8\)")


@pytest.mark.parametrize("fmt", CODECS)
@pytest.mark.parametrize(
    ("value", "kind"),
    [(b"[1, 2]", "list"), (b'"x"', "string"), (b"7", "number"), (b"null", "null")],
)
def test_not_an_object(fmt: str, value: bytes, kind: str) -> None:
    bad(fmt, value, f"the message is a JSON {kind}; expected an object")


@pytest.mark.parametrize("fmt", ["native", "openfga", "spicedb"])
@pytest.mark.parametrize("value", [None, b""])
def test_empty_message_is_malformed(fmt: str, value: bytes | None) -> None:
    bad(fmt, value, "the message is empty")


def test_long_message_preview_is_cut() -> None:
    text = bad("native", b"x" * 500, "not JSON")
    assert text.endswith("...")
    assert len(text) < 200


@pytest.mark.parametrize("fmt", ["native", "openfga", "spicedb"])
def test_options_refused_where_none_are_taken(fmt: str) -> None:
    with pytest.raises(InvalidInput, match=f"the {fmt} change format takes no options"):
        decode(fmt, b"{}", options={"tuple_column": "t"})


# -- native ----------------------------------------------------------------------


def test_native_touch_and_delete() -> None:
    assert decode("native", js({"op": "touch", "tuple": str(ENG_ALICE)})) == [
        Change("touch", ENG_ALICE)
    ]
    assert decode("native", js({"op": "delete", "tuple": str(ENG_OPS), "ts": None})) == [
        Change("delete", ENG_OPS)
    ]


@pytest.mark.parametrize(
    ("ts", "seconds"),
    [
        (1704067200, JAN_1),
        (1704067200.25, JAN_1 + 0.25),
        ("2024-01-01T00:00:00Z", JAN_1),
        ("2024-01-01T02:00:00+02:00", JAN_1),
        ("2024-01-01T00:00:00", JAN_1),  # no offset: UTC
        ("2024-01-01T00:00:00.123456789Z", JAN_1 + 0.123456),
    ],
)
def test_native_timestamps(ts: Any, seconds: float) -> None:
    [change] = decode("native", js({"op": "touch", "tuple": str(ENG_ALICE), "ts": ts}))
    assert change.ts == pytest.approx(seconds)


def test_native_userset_with_dots_is_canonical() -> None:
    [change] = decode("native", js({"op": "touch", "tuple": "group:eng#member@user:bob#..."}))
    assert change.tuple == parse_tuple("group:eng#member@user:bob")


def test_native_round_trip() -> None:
    for change in [
        Change("touch", ENG_ALICE),
        Change("delete", ENG_OPS, 1704067200.123),
        Change("touch", parse_tuple("acme/group:eng#member@user:*"), 0.0),
    ]:
        assert decode("native", encode_native(change)) == [change]


def test_native_round_trip_of_wide_names() -> None:
    for text in [
        "Document:Budget-2024.v1#Can-View@User:anne@example.com",
        'Doc:\u674e#\u00e9diteur@Team:"quoted"\\x#Member-Of',
        "doc:" + "x" * MAX_ID_BYTES + "#viewer@user:" + "y" * MAX_ID_BYTES,
    ]:
        change = Change("touch", parse_tuple(text))
        assert decode("native", encode_native(change)) == [change]


def test_native_encoding_is_compact() -> None:
    assert encode_native(Change("touch", ENG_ALICE, 1.5)) == (
        b'{"op":"touch","tuple":"group:eng#member@user:alice","ts":1.5}'
    )


def test_message_key_is_the_canonical_tuple() -> None:
    assert message_key(parse_tuple("group:eng#member@user:bob#...")) == (
        b"group:eng#member@user:bob"
    )
    assert message_key(ENG_OPS) == b"group:eng#member@group:ops#member"


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"tuple": "group:eng#member@user:a"}, r"missing 'op'"),
        ({"op": "upsert", "tuple": "group:eng#member@user:a"}, r"'op' is 'upsert'; expected"),
        ({"op": None, "tuple": "group:eng#member@user:a"}, r"'op' is None; expected"),
        ({"op": "touch"}, r"missing 'tuple'"),
        ({"op": "touch", "tuple": 7}, r"'tuple' is 7; expected a string"),
        (
            {"op": "touch", "tuple": "group:eng#member"},
            r"tuple: 'group:eng#member' has no '@' between the relation and the subject",
        ),
        (
            {"op": "touch", "tuple": "group:eng#member@user:a[cav]"},
            r"caveat or expiration",
        ),
        (
            {"op": "touch", "tuple": "group:eng#member@user:a", "ts": "yesterday"},
            r"'ts' is 'yesterday'; expected a number or an ISO 8601 time",
        ),
        (
            {"op": "touch", "tuple": "group:eng#member@user:a", "ts": True},
            r"'ts' is True; expected a number",
        ),
        (
            {"op": "touch", "tuple": "group:eng#member@user:a", "ts": -5},
            r"'ts' is -5; expected a time after 1970",
        ),
        (
            {"op": "touch", "tuple": "group:eng#member@user:a", "ts": 1704067200000},
            r"'ts' is 1704067200000, too large .* \(milliseconds\? divide by 1000\)",
        ),
    ],
)
def test_native_errors(doc: dict, match: str) -> None:
    bad("native", js(doc), match)


def test_native_nan_timestamp() -> None:
    bad("native", b'{"op":"touch","tuple":"group:eng#member@user:a","ts":NaN}', r"'ts' is nan")


# -- openfga ---------------------------------------------------------------------


def fga(user: str = "user:alice", operation: str = "TUPLE_OPERATION_WRITE", **extra: Any) -> dict:
    return {
        "tuple_key": {"user": user, "relation": "member", "object": "group:eng", **extra},
        "operation": operation,
        "timestamp": "2024-01-01T00:00:00Z",
    }


def test_openfga_write_and_delete() -> None:
    assert decode("openfga", js(fga())) == [Change("touch", ENG_ALICE, JAN_1)]
    assert decode("openfga", js(fga("group:ops#member", "TUPLE_OPERATION_DELETE"))) == [
        Change("delete", ENG_OPS, JAN_1)
    ]


def test_openfga_wide_names() -> None:
    doc = {
        "tuple_key": {
            "user": "Team:Eng.Core#Member-Of",
            "relation": "Can-View.All",
            "object": "Document:Budget-2024.v1@\u00e9",
        },
        "operation": "TUPLE_OPERATION_WRITE",
    }
    expected = RelationTuple(
        "Document", "Budget-2024.v1@\u00e9", "Can-View.All", "Team", "Eng.Core", "Member-Of"
    )
    assert decode("openfga", js(doc)) == [Change("touch", expected)]


def test_openfga_wildcard_and_no_timestamp() -> None:
    doc = fga("user:*")
    del doc["timestamp"]
    assert decode("openfga", js(doc)) == [Change("touch", parse_tuple("group:eng#member@user:*"))]


def test_openfga_null_condition_is_no_condition() -> None:
    assert decode("openfga", js(fga(condition=None))) == [Change("touch", ENG_ALICE, JAN_1)]


def test_openfga_response_page() -> None:
    page = {"changes": [fga(), fga("group:ops#member", "TUPLE_OPERATION_DELETE")]}
    assert decode("openfga", js(page)) == [
        Change("touch", ENG_ALICE, JAN_1),
        Change("delete", ENG_OPS, JAN_1),
    ]
    bad("openfga", js({"changes": [fga(), 3]}), r"'changes\[1\]' is 3; expected an object")
    bad("openfga", js({"changes": [{"operation": "TUPLE_OPERATION_WRITE"}]}), r"'changes\[0\]")


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"operation": "TUPLE_OPERATION_WRITE"}, r"missing 'tuple_key'"),
        ({**fga(), "tuple_key": "group:eng"}, r"'tuple_key' is 'group:eng'; expected an object"),
        (
            fga(condition={"name": "in_office", "context": {}}),
            r"tuple_key has the condition \{'name': 'in_office'.*conditional relationships "
            r"are not supported",
        ),
        (
            {**fga(), "tuple_key": {"relation": "member", "object": "group:eng"}},
            r"'tuple_key.user'",
        ),
        (
            {**fga(), "tuple_key": {"user": "user:a", "relation": 3, "object": "group:eng"}},
            r"'tuple_key.relation' is 3; expected a string",
        ),
        ({**fga(), "tuple_key": {"user": "user:a", "relation": "member"}}, r"'tuple_key.object'"),
        (
            fga(operation="TUPLE_OPERATION_UPDATE"),
            r"'operation' is 'TUPLE_OPERATION_UPDATE'; expected 'TUPLE_OPERATION_WRITE' or "
            r"'TUPLE_OPERATION_DELETE'",
        ),
        (fga(user="alice"), r"tuple_key: 'group:eng#member@alice' .*'alice' has no ':'"),
        (
            {**fga(), "tuple_key": {"user": "user:a", "relation": "mem ber", "object": "group:e"}},
            r"tuple_key: 'group:e#mem ber@user:a' contains whitespace at position 11",
        ),
        (
            {**fga(), "tuple_key": {"user": "user:a", "relation": "R" * 51, "object": "group:e"}},
            r"relation of 51 characters is over the limit of 50 \(OpenFGA's\)",
        ),
        (
            fga("group:a*b#member"),
            r"the userset's id 'a\*b' holds '\*', which a userset's id cannot",
        ),
        ({**fga(), "timestamp": "soon"}, r"'timestamp' is 'soon'"),
    ],
)
def test_openfga_errors(doc: dict, match: str) -> None:
    bad("openfga", js(doc), match)


def test_openfga_separator_in_a_field() -> None:
    # The fields join into a tuple (subject 'user:x@y') only by moving the split.
    doc = {**fga(), "tuple_key": {"user": "y", "relation": "member@user:x", "object": "group:e"}}
    msg = bad("openfga", js(doc), r"tuple_key: 'group:e#member@user:x@y': relation ")
    assert msg == (
        "openfga event: tuple_key: 'group:e#member@user:x@y': relation 'member@user:x' is "
        "not valid (it contains a separator ':', '#' or '@' that its field may not hold)"
    )


# -- spicedb ---------------------------------------------------------------------


def rel_camel(subject_id: str = "alice", **extra: Any) -> dict:
    return {
        "resource": {"objectType": "group", "objectId": "eng"},
        "relation": "member",
        "subject": {"object": {"objectType": "user", "objectId": subject_id}},
        **extra,
    }


def rel_snake(subject_type: str, subject_id: str, relation: str | None) -> dict:
    subject: dict[str, Any] = {"object": {"object_type": subject_type, "object_id": subject_id}}
    if relation is not None:
        subject["optional_relation"] = relation
    return {
        "resource": {"object_type": "group", "object_id": "eng"},
        "relation": "member",
        "subject": subject,
    }


def watch(*updates: Any, token: str = "GhUKEzE3") -> dict:
    return {"updates": list(updates), "changesThrough": {"token": token}}


def test_spicedb_many_updates_in_order() -> None:
    doc = watch(
        {"operation": "OPERATION_CREATE", "relationship": rel_camel()},
        {"operation": "OPERATION_TOUCH", "relationship": rel_snake("group", "ops", "member")},
        {"operation": "OPERATION_DELETE", "relationship": rel_camel()},
    )
    assert decode("spicedb", js(doc)) == [
        Change("touch", ENG_ALICE),
        Change("touch", ENG_OPS),
        Change("delete", ENG_ALICE),
    ]


@pytest.mark.parametrize("relation", [None, "", "..."])
def test_spicedb_plain_subject_spellings(relation: str | None) -> None:
    update = {"operation": "OPERATION_TOUCH", "relationship": rel_snake("user", "alice", relation)}
    doc = {"updates": [update], "changes_through": {"token": "x"}}
    assert decode("spicedb", js(doc)) == [Change("touch", ENG_ALICE)]


def test_spicedb_camel_optional_relation() -> None:
    relationship = rel_camel("ops")
    relationship["subject"] = {
        "object": {"objectType": "group", "objectId": "ops"},
        "optionalRelation": "member",
    }
    doc = watch({"operation": "OPERATION_TOUCH", "relationship": relationship})
    assert decode("spicedb", js(doc)) == [Change("touch", ENG_OPS)]


@pytest.mark.parametrize("size", [1000, MAX_ID_BYTES])
def test_spicedb_ids_up_to_the_limit(size: int) -> None:
    relationship = rel_camel("a" * size)
    relationship["resource"] = {"objectType": "document", "objectId": "r/_|-=+" * (size // 7)}
    [change] = decode("spicedb", _update(relationship))
    assert change.tuple.subject_id == "a" * size
    assert change.tuple.resource_id == "r/_|-=+" * (size // 7)


def test_spicedb_checkpoints_hold_no_changes() -> None:
    assert decode("spicedb", js(watch())) == []
    assert decode("spicedb", js({"changesThrough": {"token": "x"}})) == []
    assert decode("spicedb", js({"changes_through": {"token": "x"}})) == []


def test_spicedb_empty_caveat_is_no_caveat() -> None:
    doc = watch({"operation": "OPERATION_TOUCH", "relationship": rel_camel(optionalCaveat=None)})
    assert decode("spicedb", js(doc)) == [Change("touch", ENG_ALICE)]


def _update(relationship: Any, operation: Any = "OPERATION_TOUCH") -> bytes:
    return js(watch({"operation": operation, "relationship": relationship}))


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (js({"revision": "x"}), r"missing 'updates'"),
        (js({"updates": {"a": 1}}), r"'updates' is \{'a': 1\}; expected a list"),
        (js(watch(5)), r"'updates\[0\]' is 5; expected an object"),
        (
            js(watch({"relationship": rel_camel()})),
            r"'updates\[0\].operation' is absent \(protobuf JSON omits the zero value, "
            r"OPERATION_UNSPECIFIED\); expected 'OPERATION_CREATE'",
        ),
        (
            _update(rel_camel(), "OPERATION_UNSPECIFIED"),
            r"'updates\[0\].operation' is 'OPERATION_UNSPECIFIED'; expected 'OPERATION_CREATE', "
            r"'OPERATION_TOUCH' or 'OPERATION_DELETE'",
        ),
        (js(watch({"operation": "OPERATION_TOUCH"})), r"missing 'updates\[0\].relationship'"),
        (
            _update(rel_camel(optionalCaveat={"caveatName": "ip", "context": {}})),
            r"updates\[0\].relationship has a caveat \(\{'caveatName': 'ip'.*caveated and "
            r"expiring relationships are not supported",
        ),
        (
            _update(rel_camel(optional_caveat={"caveat_name": "ip"})),
            r"has a caveat",
        ),
        (
            _update(rel_camel(optionalExpiresAt="2030-01-01T00:00:00Z")),
            r"has an expiration \('2030-01-01T00:00:00Z'\)",
        ),
        (
            _update({k: v for k, v in rel_camel().items() if k != "resource"}),
            r"missing 'updates\[0\].relationship.resource'",
        ),
        (
            _update({**rel_camel(), "resource": {"objectType": "group"}}),
            r"missing 'updates\[0\].relationship.resource.objectId' \(or 'object_id'\)",
        ),
        (
            _update({**rel_camel(), "subject": {"optionalRelation": "member"}}),
            r"missing 'updates\[0\].relationship.subject.object'",
        ),
        (
            _update({**rel_camel(), "relation": ""}),
            r"has no relation between '#' and '@'",
        ),
        (
            _update({**rel_camel(), "relation": 4}),
            r"'updates\[0\].relationship.relation' is 4; expected a string",
        ),
        (
            _update(rel_camel("alice#member")),
            r"'updates\[0\].relationship.subject.object.objectId' is 'alice#member', which does "
            r"not fit in a tuple there",
        ),
        (
            _update(rel_camel("al ice")),
            r"updates\[0\].relationship: 'group:eng#member@user:al ice' contains whitespace",
        ),
        (
            _update(rel_camel("a" * (MAX_ID_BYTES + 1))),
            r"updates\[0\].relationship: 'group:eng#member@user:a+\.\.\.' subject id of 1,025 "
            r"bytes is over the limit of 1,024 \(SpiceDB's\)",
        ),
    ],
)
def test_spicedb_errors(value: bytes, match: str) -> None:
    bad("spicedb", value, match)


# -- debezium --------------------------------------------------------------------


def row(
    resource_id: Any = "eng",
    subject_id: Any = "alice",
    subject_type: str = "user",
    subject_relation: str | None = None,
) -> dict:
    return {
        "resource_type": "group",
        "resource_id": resource_id,
        "relation": "member",
        "subject_type": subject_type,
        "subject_id": subject_id,
        "subject_relation": subject_relation,
    }


def envelope(op: str, before: Any, after: Any, wrap: bool = True) -> bytes:
    payload = {"before": before, "after": after, "op": op, "ts_ms": 1704067200000}
    return js({"schema": {"type": "struct"}, "payload": payload} if wrap else payload)


@pytest.mark.parametrize("wrap", [True, False])
@pytest.mark.parametrize("op", ["c", "r"])
def test_debezium_create_and_snapshot_read(op: str, wrap: bool) -> None:
    assert decode("debezium", envelope(op, None, row(), wrap)) == [
        Change("touch", ENG_ALICE, JAN_1)
    ]


def test_debezium_delete() -> None:
    assert decode("debezium", envelope("d", row("eng", "ops", "group", "member"), None)) == [
        Change("delete", ENG_OPS, JAN_1)
    ]


def test_debezium_update_is_delete_then_touch() -> None:
    old, new = row(subject_id="alice"), row(subject_id="bob")
    assert decode("debezium", envelope("u", old, new)) == [
        Change("delete", ENG_ALICE, JAN_1),
        Change("touch", parse_tuple("group:eng#member@user:bob"), JAN_1),
    ]


def test_debezium_update_of_other_columns_is_no_change() -> None:
    old, new = {**row(), "updated_at": 1}, {**row(), "updated_at": 2}
    assert decode("debezium", envelope("u", old, new)) == []


@pytest.mark.parametrize("value", [None, b"", b'{"schema": null, "payload": null}'])
def test_debezium_tombstones(value: bytes | None) -> None:
    assert decode("debezium", value) == []


def test_debezium_integer_ids_and_missing_subject_relation() -> None:
    after = row(resource_id=42, subject_id=7)
    del after["subject_relation"]
    assert decode("debezium", envelope("c", None, after)) == [
        Change("touch", parse_tuple("group:42#member@user:7"), JAN_1)
    ]


@pytest.mark.parametrize("srel", ["", "..."])
def test_debezium_plain_subject_spellings(srel: str) -> None:
    [change] = decode("debezium", envelope("c", None, row(subject_relation=srel)))
    assert change.tuple == ENG_ALICE


def test_debezium_without_ts() -> None:
    value = js({"payload": {"before": None, "after": row(), "op": "c"}})
    assert decode("debezium", value) == [Change("touch", ENG_ALICE)]


def test_debezium_column_mapping() -> None:
    after = {
        "ns": "group",
        "oid": "eng",
        "rel": "member",
        "st": "group",
        "sid": "ops",
        "sr": "member",
    }
    options = {
        "resource_type": "ns",
        "resource_id": "oid",
        "relation": "rel",
        "subject_type": "st",
        "subject_id": "sid",
        "subject_relation": "sr",
    }
    value = envelope("c", None, after)
    assert decode("debezium", value, options=options) == [Change("touch", ENG_OPS, JAN_1)]


def test_debezium_a_subject_relation_column_named_must_be_in_the_row() -> None:
    """Named by the options, the subject relation column is one the row must have (null
    in it is a plain subject): misspelt, it read every userset row as a plain subject."""
    nested = {"oid": "eng", "rel": "member", "st": "group", "sid": "ops", "user_rel": "member"}
    options = {"resource_id": "oid", "relation": "rel", "subject_type": "st",
               "subject_id": "sid", "subject_relation": "user_relation"}  # fmt: skip
    value = envelope("c", None, {"ns": "group", **nested})
    with pytest.raises(DecodeError, match="row has no column 'user_relation'"):
        decode("debezium", value, options={"resource_type": "ns", **options})
    plain = envelope("c", None, {"ns": "group", **nested, "user_relation": None})
    [change] = decode("debezium", plain, options={"resource_type": "ns", **options})
    assert str(change.tuple) == "group:eng#member@group:ops"


def test_debezium_tuple_column_is_refused_beside_column_options() -> None:
    with pytest.raises(InvalidInput, match=r"'tuple_column' .*\['subject_id'\] would be ignored"):
        decode("debezium", envelope("c", None, {"t": str(ENG_ALICE)}),
               options={"tuple_column": "t", "subject_id": "member"})  # fmt: skip


def test_debezium_tuple_column() -> None:
    value = envelope("u", {"id": 1, "t": str(ENG_ALICE)}, {"id": 1, "t": str(ENG_OPS)})
    assert decode("debezium", value, options={"tuple_column": "t"}) == [
        Change("delete", ENG_ALICE, JAN_1),
        Change("touch", ENG_OPS, JAN_1),
    ]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"tuple_col": "t"}, r"unknown debezium option\(s\) \['tuple_col'\]; expected some of"),
        ({"relation": ""}, r"debezium option 'relation' must name a column, not ''"),
        ({"relation": 3}, r"debezium option 'relation' must name a column, not 3"),
    ],
)
def test_debezium_bad_options_are_not_decode_errors(options: dict, match: str) -> None:
    with pytest.raises(InvalidInput, match=match) as info:
        decode("debezium", envelope("c", None, row()), options=options)
    assert not isinstance(info.value, DecodeError)


@pytest.mark.parametrize(
    ("value", "match", "options"),
    [
        (js({"payload": {"after": row()}}), r"missing 'payload.op'", None),
        (js({"after": row()}), r"missing 'op'", None),
        (js({"payload": [1]}), r"'payload' is \[1\]; expected an object", None),
        (envelope("x", None, row()), r"'payload.op' is 'x'; expected 'c', 'u', 'd' or 'r'", None),
        (envelope("t", None, None), r"'payload.op' is 't' \(a truncated table\)", None),
        (envelope("c", None, None), r"op 'c' has no payload.'after' row", None),
        (
            envelope("d", None, None),
            r"op 'd' has no payload.'before' row \(for PostgreSQL, set REPLICA IDENTITY FULL\)",
            None,
        ),
        (
            envelope("u", None, row()),
            r"op 'u' has no payload.'before' row \(for PostgreSQL",
            None,
        ),
        (
            envelope("d", {**row(), "relation": None, "subject_id": None}, None),
            r"'payload.before.relation' is None; expected a string \(for PostgreSQL, set "
            r"REPLICA IDENTITY FULL\)",
            None,
        ),
        (
            envelope("c", None, "row"),
            r"'payload.after' is 'row'; expected an object",
            None,
        ),
        (
            envelope("c", None, {"id": 1}),
            r"'payload.after' row has no column 'resource_type' \(it has \['id'\]\); map the "
            r"columns with the codec options",
            None,
        ),
        (
            envelope("c", None, row(subject_id=True)),
            r"'payload.after.subject_id' is True; expected a string",
            None,
        ),
        (
            envelope("c", None, row(subject_id="a#member")),
            r"'payload.after.subject_id' is 'a#member', which does not fit in a tuple there",
            None,
        ),
        (
            envelope("c", None, row(subject_relation="mem@ber")),
            r"payload.after: 'group:eng#member@user:alice#mem@ber' relation 'mem@ber' has the "
            r"character '@'",
            None,
        ),
        (
            envelope("c", None, {"t": "group:eng"}),
            r"payload.after.t: 'group:eng' has no '#' between the resource and the relation",
            {"tuple_column": "t"},
        ),
        (
            envelope("c", None, {"t": None}),
            r"'payload.after.t' is None; expected a string",
            {"tuple_column": "t"},
        ),
        (
            js({"payload": {"op": "c", "after": row(), "ts_ms": "now"}}),
            r"'payload.ts_ms' is 'now'",
            None,
        ),
    ],
)
def test_debezium_errors(value: bytes, match: str, options: dict | None) -> None:
    bad("debezium", value, match, options)


@pytest.mark.parametrize("fmt", CODECS)
@pytest.mark.parametrize("value", [b"[" * 100_000, b'{"a":' * 100_000])
def test_json_nested_past_the_readers_depth_is_a_decode_error(fmt: str, value: bytes) -> None:
    # a poison message goes to the dead-letter topic like any undecodable one; it must
    # not escape as a RecursionError that stops the consumer on every restart
    bad(fmt, value, "the message nests JSON arrays or objects too deeply to read")


HUGE = b"1" + b"0" * 400  # an integer no float holds
BEYOND = b"1" + b"0" * 5000  # more digits than Python converts at all


@pytest.mark.parametrize(
    ("fmt", "value", "says"),
    [
        ("native", b'{"op":"touch","tuple":"group:g#member@user:a","ts":' + HUGE + b"}",
         "too large for a time"),
        ("native", b'{"op":"touch","tuple":"group:g#member@user:a","ts":' + BEYOND + b"}",
         "JSON that cannot be read"),
        ("debezium", b'{"op":"c","ts_ms":' + HUGE + b',"after":{"resource_type":"group",'
         b'"resource_id":"g","relation":"member","subject_type":"user","subject_id":"a"}}',
         "too large for a time"),
        ("spicedb", b'{"updates":[],"changesThrough":{"token":' + BEYOND + b"}}",
         "JSON that cannot be read"),
    ],
)  # fmt: skip
def test_integers_past_what_python_reads_are_decode_errors(
    fmt: str, value: bytes, says: str
) -> None:
    # each stopped the consumer with a traceback, on every restart, instead of going to
    # the dead-letter topic
    bad(fmt, value, says)


def test_a_codec_fault_is_a_decode_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(doc: object, options: object) -> object:
        raise ZeroDivisionError("a rule no codec foresaw")

    monkeypatch.setitem(codecs._DECODERS, "openfga", broken)
    bad("openfga", b"{}", r"cannot be decoded \(ZeroDivisionError: a rule no codec foresaw\)")
