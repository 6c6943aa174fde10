"""One bad item of a message through a real broker: dead-lettered alone, the rest applied.

SpiceDB Watch responses (as its HTTP gateway streams them, ``{"result": ...}``) and
OpenFGA ReadChanges pages go through a real Tansu broker into the consumer. A response
holding a caveated update among good ones applies the good ones; the caveated one goes
to the dead-letter topic as a message of its own (the same format, just that item)
with its reason, the source topic, partition and offset, and its index in the message
(``leopard.source.item``). A message malformed as a whole is dead-lettered whole, with
no item header, as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.index_model import REWRITE, build
from test_consumer import consume_until, produce, read_topic, settings

import leopard
from ingest.codecs import decode, encode_native
from ingest.codecs.fields import Change
from ingest.kafka.local_broker import LocalBroker, create_topic
from leopard.core.index import Index
from leopard.model.names import parse_tuple

pytestmark = pytest.mark.kafka


def rel(resource: str, subject: str, **extra: Any) -> dict[str, Any]:
    rtype, rid = resource.split(":")
    stype, _, rest = subject.partition(":")
    sid, _, srel = rest.partition("#")
    out: dict[str, Any] = {
        "resource": {"objectType": rtype, "objectId": rid},
        "relation": "member",
        "subject": {"object": {"objectType": stype, "objectId": sid}},
        **extra,
    }
    if srel:
        out["subject"]["optionalRelation"] = srel
    return out


def watch(*updates: dict[str, Any], token: str = "GhUKEzE3") -> bytes:
    return json.dumps(
        {"result": {"updates": list(updates), "changesThrough": {"token": token}}}
    ).encode()


def test_spicedb_item_dead_lettered_alone(broker: LocalBroker, topic: str, tmp_path: Path) -> None:
    create_topic(broker.bootstrap, f"{topic}.dlq", 1)
    path = tmp_path / "ix"
    build(path, REWRITE, ["group:base#member@user:root"], {})
    caveated = rel("group:eng", "user:bob", optionalCaveat={"caveatName": "weekdays"})
    messages = [
        (
            b"m0",
            watch(
                {"operation": "OPERATION_TOUCH", "relationship": rel("group:eng", "user:alice")},
                {"operation": "OPERATION_TOUCH", "relationship": caveated},
                # no operation: OPERATION_UNSPECIFIED, refused alone too
                {"relationship": rel("group:eng", "user:carol")},
                {
                    "operation": "OPERATION_CREATE",
                    "relationship": rel("group:eng", "group:ops#member"),
                },
            ),
            [],
        ),
        (b"m1", b"{not json", []),
        (b"m2", json.dumps({"result": {"changesThrough": {"token": "t2"}}}).encode(), []),
        (
            b"m3",
            watch(
                {"operation": "OPERATION_TOUCH", "relationship": rel("group:ops", "user:dave")},
                {"operation": 3, "relationship": rel("group:eng", "user:alice")},
            ),
            [],
        ),
    ]
    pub = produce(broker.bootstrap, topic, messages)
    stats = consume_until(path, settings(broker, topic, format="spicedb"), pub.highwater())
    assert stats.dead_letters == 3
    with Index(path) as ix:
        assert ix.position == pub.highwater()
        assert ix.check("group:ops#member", "group:eng")
        assert ix.check("user:dave", "group:eng")  # through ops
        assert not ix.check("user:alice", "group:eng")  # touched, then deleted in m3
        assert not ix.check("user:bob", "group:eng")
        assert not ix.check("user:carol", "group:eng")

    dead = read_topic(broker.bootstrap, f"{topic}.dlq")
    assert len(dead) == 3
    offsets = {key: off for (key, _, _), (_, off, _) in zip(messages, pub.entries, strict=True)}
    by_item = {}
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["leopard.source.topic"] == topic
        assert headers["leopard.source.partition"] == "0"
        assert int(headers["leopard.source.offset"]) == offsets[record.key]
        by_item[(record.key, headers.get("leopard.source.item"))] = (headers, record.value)
    assert set(by_item) == {(b"m0", "1"), (b"m0", "2"), (b"m1", None)}
    headers, value = by_item[(b"m0", "1")]
    assert headers["leopard.reason"].startswith(
        "spicedb event: updates[1].relationship has a caveat"
    )
    # the dead letter is a Watch response of that update alone, with its revision
    assert json.loads(value) == {
        "updates": [{"operation": "OPERATION_TOUCH", "relationship": caveated}],
        "changesThrough": {"token": "GhUKEzE3"},
    }
    headers, _ = by_item[(b"m0", "2")]
    assert "'updates[2].operation' is absent" in headers["leopard.reason"]
    assert "OPERATION_UNSPECIFIED" in headers["leopard.reason"]
    headers, value = by_item[(b"m1", None)]
    assert "not JSON" in headers["leopard.reason"] and value == b"{not json"


def test_openfga_page_item_dead_lettered_alone(
    broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    create_topic(broker.bootstrap, f"{topic}.dlq", 1)
    path = tmp_path / "ix"
    build(path, REWRITE, ["group:base#member@user:root"], {})

    def item(user: str, op: str | None = None, **key: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "tuple_key": {"user": user, "relation": "member", "object": "group:eng", **key},
            "timestamp": "2024-01-01T00:00:00.123456789Z",
        }
        if op is not None:
            doc["operation"] = op
        return doc

    conditional = item("user:bob", condition={"name": "in_office"})
    page = {
        # TUPLE_OPERATION_WRITE is 0: protobuf JSON omits it
        "changes": [item("user:alice"), conditional, item("group:ops#member")],
        "continuation_token": "abc",
    }
    later = {"changes": [item("user:alice", "TUPLE_OPERATION_DELETE"), item("user:erin", 0)]}
    messages = [(b"p0", json.dumps(page).encode(), []), (b"p1", json.dumps(later).encode(), [])]
    pub = produce(broker.bootstrap, topic, messages)
    stats = consume_until(path, settings(broker, topic, format="openfga"), pub.highwater())
    assert stats.dead_letters == 1
    with Index(path) as ix:
        assert ix.check("group:ops#member", "group:eng")
        assert ix.check("user:erin", "group:eng")
        assert not ix.check("user:alice", "group:eng")
        assert not ix.check("user:bob", "group:eng")
    [record] = read_topic(broker.bootstrap, f"{topic}.dlq")
    headers = {k: v.decode() for k, v in record.headers}
    assert headers["leopard.source.item"] == "1"
    assert int(headers["leopard.source.offset"]) == pub.entries[0][1]
    assert "changes[1].tuple_key has the condition" in headers["leopard.reason"]
    assert json.loads(record.value) == conditional
    with pytest.raises(Exception, match="conditional relationships are not supported"):
        decode("openfga", record.value)


SCHEMA = """use expiration
caveat is_weekday(day string) {
    day != "sat"
}
definition user {}
definition group {
    relation member: user | group#member
    relation cmember: user with is_weekday
    relation emember: user with expiration | group#member
}
definition doc {
    relation viewer: user | group#member
    permission view = viewer
}
"""


def test_changes_a_schema_refuses_are_dead_lettered_with_why(
    broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    """A change its schema's peer would refuse to write (a type or relation the schema
    does not define, a write to a permission, a subject type the relation does not
    allow) is dead-lettered with why, as an undecodable one is; the others apply."""
    create_topic(broker.bootstrap, f"{topic}.dlq", 1)
    (tmp_path / "s.zed").write_text(SCHEMA)
    path = tmp_path / "ix"
    leopard.build_index([["doc:d1#viewer@user:root"]], path, schema=tmp_path / "s.zed")
    refused = {
        b"typo": ("doc:x1#viewers@user:alice", "the schema defines no relation 'viewers' on 'doc'"),
        b"type": ("dok:x1#viewer@user:alice", "the schema defines no type 'dok'"),
        b"perm": ("doc:x1#view@user:alice", "doc#view stores no tuples (it is computed)"),
        b"subj": ("doc:x1#viewer@doc:d1", "doc#viewer does not allow subjects of type doc"),
        b"wild": ("doc:x1#viewer@user:*", "doc#viewer does not allow subjects of type user:*"),
        # a tuple without the caveat or expiration a relation asks of its subjects
        b"cav": ("group:g#cmember@user:alice", "group#cmember allows subjects of type user "
                 "only as user with is_weekday: a tuple without is refused, as SpiceDB "
                 "refuses to write it"),
        b"exp": ("group:g#emember@user:alice", "group#emember allows subjects of type user "
                 "only as user with expiration: a tuple without is refused, as SpiceDB "
                 "refuses to write it"),
    }  # fmt: skip
    good = ["doc:x1#viewer@user:bob", "group:g#member@user:carol", "doc:x1#viewer@group:g#member"]

    def touch(text: str) -> bytes:
        return encode_native(Change("touch", parse_tuple(text)))

    messages = [(k, touch(t), []) for k, (t, _) in refused.items()]
    messages += [(f"g{i}".encode(), touch(t), []) for i, t in enumerate(good)]
    pub = produce(broker.bootstrap, topic, messages)
    stats = consume_until(path, settings(broker, topic), pub.highwater())
    assert (stats.refused, stats.dead_letters) == (7, 7)
    with Index(path) as ix:
        assert ix.position == pub.highwater()
        assert ix.check("user:bob", "doc:x1#view") and ix.check("user:carol", "doc:x1#view")
        assert not ix.check("user:alice", "doc:x1#view")
    dead = {r.key: r for r in read_topic(broker.bootstrap, f"{topic}.dlq")}
    assert set(dead) == set(refused)
    for key, (text, why) in refused.items():
        reason = dict(dead[key].headers)["leopard.reason"].decode()
        assert reason == f"refused by the index's schema: {text}: {why}"
        assert decode("native", dead[key].value)[0].tuple == parse_tuple(text)  # publishable again


def test_a_refused_change_of_a_message_of_several_is_not_dead_lettered(
    broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    """A Watch response whose one update the schema refuses: its other update applies,
    and no dead letter is written (the response published again would apply that
    other update a second time, after later changes); the refusal is counted."""
    create_topic(broker.bootstrap, f"{topic}.dlq", 1)
    (tmp_path / "s.zed").write_text(SCHEMA)
    path = tmp_path / "ix"
    leopard.build_index([["doc:d1#viewer@user:root"]], path, schema=tmp_path / "s.zed")
    response = watch(
        {"operation": "OPERATION_TOUCH", "relationship": rel("group:eng", "user:alice")},
        {"operation": "OPERATION_TOUCH", "relationship": rel("group:eng", "doc:d1")},
    )
    pub = produce(broker.bootstrap, topic, [(b"w", response, [])])
    stats = consume_until(path, settings(broker, topic, format="spicedb"), pub.highwater())
    assert (stats.refused, stats.dead_letters) == (1, 0)
    with Index(path) as ix:
        assert ix.check("user:alice", "group:eng#member")
    assert read_topic(broker.bootstrap, f"{topic}.dlq", timeout=2) == []
