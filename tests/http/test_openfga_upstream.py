"""Forwarding to ``--upstream-openfga`` what the index cannot answer.

There is no OpenFGA server here. The upstream is a local HTTP server that replays
exchanges built from OpenFGA's published API definitions (``openfga/v1/
openfga_service.proto`` and ``openfga.proto`` of ``openfga/api``): for each request it
expects (method, path with the store id, a predicate on the JSON body) it answers
with a response message of the API (``CheckResponse``, ``BatchCheckResponse``,
``ListObjectsResponse``, a ``StreamedListObjectsResponse`` stream, ``ListUsersResponse``,
``ExpandResponse`` with a ``UsersetTree``) or the example error body of
``errors_ignore.proto`` (``{"code":"validation_error", "message":"Generic validation
error"}``). It records what it received, so the tests can tell that a request went on
unchanged and that one the index answers never left. The rest of the API it keeps as a
store would, in memory: ``Write`` adds and deletes tuples that ``Read`` and
``ReadChanges`` then return (``WriteResponse``, ``ReadResponse``, ``ReadChangesResponse``),
and ``CreateStore`` answers a ``CreateStoreResponse``.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
    ClientReadChangesRequest,
    ClientTuple,
    ClientWriteRequest,
)
from openfga_sdk.client.models.list_users_request import ClientListUsersRequest
from openfga_sdk.models import (
    CreateStoreRequest,
    FgaObject,
    ReadRequestTupleKey,
    UserTypeFilter,
)
from openfga_sdk.sync import OpenFgaClient
from support.http import call, leopard_serve

import leopard
from ingest.kafka.local_broker import free_port
from leopard.http.freshness import Waits
from leopard.http.openfga import OpenFga

STORE = "01HZX3Q1A2B3C4D5E6F7G8H9JK"
MODEL = """\
model
  schema 1.1

type user

type group
  relations
    define member: [user, group#member]

type doc
  relations
    define owner: [user]
    define viewer: [user, group#member] or owner
    define banned: [user]
    define can_view: viewer but not banned
"""
TUPLES = [
    "group:eng#member@user:anne",
    "doc:d1#viewer@group:eng#member",
    "doc:d1#owner@user:bob",
    "doc:d2#banned@user:anne",
]
JSON = "application/json"
OTHER_MODEL = "01GXSA8YR785C4FYS3C0RTG7B1"
_AT = "2026-01-01T00:00:00Z"


@dataclass
class Exchange:
    """One request the upstream expects, and its answer."""

    method: str
    path: str  # after /stores/{store_id}
    matches: Callable[[dict[str, Any]], bool]
    status: int
    body: bytes
    content_type: str = JSON


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


EXCHANGES = [
    # ValidationErrorMessageResponse, the example of errors_ignore.proto
    Exchange("POST", "/check", lambda b: b["tuple_key"]["relation"] == "banned_too", 400,
             _json({"code": "validation_error", "message": "Generic validation error"})),
    # CheckResponse {allowed, resolution}
    Exchange("POST", "/check", lambda b: bool(b.get("contextual_tuples")), 200,
             _json({"allowed": True, "resolution": ""})),
    Exchange("POST", "/check", lambda b: "context" in b, 200,
             _json({"allowed": True, "resolution": ""})),
    Exchange("POST", "/check", lambda b: b["tuple_key"]["relation"] == "can_view", 200,
             _json({"allowed": False, "resolution": ""})),
    Exchange("POST", "/check", lambda b: b.get("authorization_model_id") == OTHER_MODEL, 200,
             _json({"allowed": True, "resolution": ""})),
    Exchange("POST", "/check", lambda b: b.get("consistency") == "HIGHER_CONSISTENCY", 200,
             _json({"allowed": True, "resolution": ""})),
    # BatchCheckResponse {result: map<correlation_id, BatchCheckSingleResult>}
    Exchange("POST", "/batch-check", lambda b: True, 200,
             _json({"result": {"c1": {"allowed": True}, "c2": {"allowed": False}}})),
    # ListObjectsResponse {objects}
    Exchange("POST", "/list-objects", lambda b: True, 200, _json({"objects": ["doc:d9"]})),
    # StreamedListObjectsResponse, one {result: {object}} a line
    Exchange("POST", "/streamed-list-objects", lambda b: True, 200,
             b'{"result":{"object":"doc:d8"}}\n{"result":{"object":"doc:d9"}}\n'),
    # ListUsersResponse {users: [User]}, User a oneof of object, userset, wildcard
    Exchange("POST", "/list-users", lambda b: True, 200,
             _json({"users": [{"userset": {"type": "group", "id": "eng", "relation": "member"}}]})),
    # ExpandResponse {tree: UsersetTree}
    Exchange("POST", "/expand", lambda b: True, 200, _json({"tree": {"root": {
        "name": "doc:d1#viewer",
        "union": {"nodes": [
            {"name": "doc:d1#viewer", "leaf": {"users": {"users": ["group:eng#member"]}}},
            {"name": "doc:d1#viewer", "leaf": {"computed": {"userset": "doc:d1#owner"}}},
        ]},
    }}})),
]  # fmt: skip


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Replay:
    """The replaying upstream: a ThreadingHTTPServer on a free port."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.tuples: list[dict[str, str]] = []  # what Write wrote, in order
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                self._record("GET", b"")
                if self.path.split("?")[0] == f"/stores/{STORE}/changes":
                    changes = [
                        {"tuple_key": k, "operation": "TUPLE_OPERATION_WRITE", "timestamp": _AT}
                        for k in replay.tuples
                    ]
                    self._answer(200, _json({"changes": changes, "continuation_token": ""}), JSON)
                else:
                    self._answer(418, b'{"code":"unexpected","message":"not in the replay"}', JSON)

            def _record(self, method: str, body: bytes) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                replay.received.append(Received(method, self.path, headers, body))

            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._record("POST", body)
                prefix = f"/stores/{STORE}"
                if self.path == "/stores":  # CreateStoreResponse
                    made = {"id": "01J0000000000000000000000N", "name": json.loads(body)["name"],
                            "created_at": _AT, "updated_at": _AT}  # fmt: skip
                    self._answer(201, _json(made), JSON)
                    return
                if self.path == prefix + "/write":  # WriteResponse: {}
                    request = json.loads(body)
                    for key in (request.get("deletes") or {}).get("tuple_keys", []):
                        replay.tuples.remove(key)
                    replay.tuples += (request.get("writes") or {}).get("tuple_keys", [])
                    self._answer(200, b"{}", JSON)
                    return
                if self.path == prefix + "/read":  # ReadResponse {tuples: [Tuple]}
                    tuples = [{"key": k, "timestamp": _AT} for k in replay.tuples]
                    self._answer(200, _json({"tuples": tuples, "continuation_token": ""}), JSON)
                    return
                for ex in EXCHANGES:
                    if self.path == prefix + ex.path and ex.matches(json.loads(body)):
                        self._answer(ex.status, ex.body, ex.content_type)
                        return
                self._answer(418, b'{"code":"unexpected","message":"not in the replay"}', JSON)

            def _answer(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                if "gzip" in self.headers.get("Accept-Encoding", ""):  # as proxies compress
                    body = gzip.compress(body)
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Replay:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Replay]:
    with Replay() as replay:
        yield replay


#: the index the served fixture built
_INDEX: list[Path] = []


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, upstream: Replay) -> Iterator[str]:
    work = tmp_path_factory.mktemp("upstream")
    (work / "model.fga").write_text(MODEL)
    leopard.build_index([TUPLES], work / "idx", schema=work / "model.fga")
    _INDEX[:] = [work / "idx"]
    args = ("--index", str(work / "idx"), "--store-id", STORE, "--upstream-openfga", upstream.url)
    with leopard_serve(*args) as (url, _):
        yield url


@pytest.fixture
def fga(served: str, upstream: Replay) -> Iterator[OpenFgaClient]:
    upstream.received.clear()
    with OpenFgaClient(ClientConfiguration(api_url=served, store_id=STORE)) as client:
        yield client


def test_what_the_index_answers_never_leaves(fga: OpenFgaClient, upstream: Replay) -> None:
    assert fga.check(
        ClientCheckRequest(user="user:anne", relation="viewer", object="doc:d1")
    ).allowed
    assert fga.list_objects(
        ClientListObjectsRequest(user="user:anne", relation="viewer", type="doc")
    ).objects == ["doc:d1"]  # noqa: E501
    assert upstream.received == []


def test_a_request_goes_on_unchanged(served: str, upstream: Replay) -> None:
    upstream.received.clear()
    body = (
        b'{"tuple_key": {"user": "user:carl", "relation": "viewer", "object": "doc:d1"},\n'
        b' "contextual_tuples": {"tuple_keys": [{"user": "user:carl", "relation": "owner", '
        b'"object": "doc:d1"}]}}'
    )
    headers = {"Authorization": "Bearer app-token", "X-Trace": "t-1", "Content-Type": JSON}
    a = call(served, "POST", f"/stores/{STORE}/check", body, headers)
    assert (a.status, a.json) == (200, {"allowed": True, "resolution": ""})
    assert a.headers["x-leopard-answered-by"] == "upstream"
    [got] = upstream.received
    assert (got.method, got.path, got.body) == ("POST", f"/stores/{STORE}/check", body)
    assert got.headers["authorization"] == "Bearer app-token"
    assert got.headers["x-trace"] == "t-1" and got.headers["content-type"] == JSON
    assert got.headers["host"] != urlsplit_host(served)


def test_a_compressed_answer_says_so(served: str, upstream: Replay) -> None:
    """The client's Accept-Encoding goes on with the rest: an answer the upstream
    compressed reaches the client as gzip, labelled so (it came as plain JSON, which
    curl --compressed, requests and Go's net/http could not parse)."""
    body = (
        b'{"tuple_key": {"user": "user:carl", "relation": "viewer", "object": "doc:d1"},'
        b' "contextual_tuples": {"tuple_keys": [{"user": "user:carl", "relation": "owner", '
        b'"object": "doc:d1"}]}}'
    )
    for accept, encoded in (("gzip, deflate", True), ("identity", False)):
        headers = {"Content-Type": JSON, "Accept-Encoding": accept}
        a = call(served, "POST", f"/stores/{STORE}/check", body, headers)
        assert a.headers["x-leopard-answered-by"] == "upstream"
        assert a.headers.get("content-encoding") == ("gzip" if encoded else None)
        data = gzip.decompress(a.body) if encoded else a.body
        assert json.loads(data) == {"allowed": True, "resolution": ""}


def urlsplit_host(url: str) -> str:
    return url.split("://", 1)[1]


def test_check_goes_upstream_for_what_the_index_cannot_answer(
    fga: OpenFgaClient, upstream: Replay
) -> None:
    contextual = ClientCheckRequest(
        user="user:carl",
        relation="viewer",
        object="doc:d1",
        contextual_tuples=[ClientTuple(user="user:carl", relation="owner", object="doc:d1")],
    )
    assert fga.check(contextual).allowed is True  # the index alone says no
    assert fga.check(ClientCheckRequest(user="user:carl", relation="viewer", object="doc:d1",
                                        context={"ip": "10.0.0.1"})).allowed is True  # fmt: skip
    excluded = ClientCheckRequest(user="user:anne", relation="can_view", object="doc:d1")
    assert fga.check(excluded).allowed is False
    other_model = {"authorization_model_id": OTHER_MODEL}
    plain = ClientCheckRequest(user="user:carl", relation="viewer", object="doc:d1")
    assert fga.check(plain, other_model).allowed is True
    assert len(upstream.received) == 4
    assert all(r.path == f"/stores/{STORE}/check" for r in upstream.received)


@pytest.mark.parametrize("case", ["applied elsewhere", "head not reached"])
def test_higher_consistency_the_index_cannot_give_goes_upstream(
    tmp_path: Path, upstream: Replay, case: str
) -> None:
    """``HIGHER_CONSISTENCY`` goes to OpenFGA, which has every change, where this server
    cannot answer it: an index that follows a stream no consumer here applies (it cannot
    know the stream's head), or one whose own consumer does not reach the head in time
    (here its broker does not answer, so no fetch ever tells the head), which failed
    with a 503. Without the consistency it is answered from the index."""
    (tmp_path / "model.fga").write_text(MODEL)
    index = tmp_path / "idx"
    args = ("--index", str(index), "--store-id", STORE, "--upstream-openfga", upstream.url)
    if case == "applied elsewhere":
        position = {"changes:0": 4}
    else:
        position = {}
        nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
        args += ("--brokers", nowhere, "--topic", "changes")
    leopard.build_index([TUPLES], index, schema=tmp_path / "model.fga", position=position)
    key = {"user": "user:carl", "relation": "viewer", "object": "doc:d1"}
    with leopard_serve(*args) as (url, _):
        upstream.received.clear()
        a = call(url, "POST", f"/stores/{STORE}/check", json.dumps({"tuple_key": key}))
        assert (a.status, a.json["allowed"]) == (200, False)  # the index: carl is no viewer
        assert upstream.received == []
        higher = json.dumps({"tuple_key": key, "consistency": "HIGHER_CONSISTENCY"})
        a = call(url, "POST", f"/stores/{STORE}/check", higher)
        assert (a.status, a.json["allowed"]) == (200, True), a.body
        assert a.headers["x-leopard-answered-by"] == "upstream"
        assert len(upstream.received) == 1


def test_an_upstream_error_comes_back_as_it_came(served: str, upstream: Replay) -> None:
    key = {"user": "user:a", "relation": "banned_too", "object": "doc:d1"}
    a = call(served, "POST", f"/stores/{STORE}/check", json.dumps({"tuple_key": key}))
    # relation_not_found is checked here first: the model has no doc#banned_too
    assert (a.status, a.json["code"]) == (400, "relation_not_found")
    # with a context it is the upstream's to judge: its error is relayed
    body = json.dumps({"tuple_key": key, "context": {"x": 1}})
    a = call(served, "POST", f"/stores/{STORE}/check", body)
    error = {"code": "validation_error", "message": "Generic validation error"}
    assert (a.status, a.json) == (400, error)
    assert a.headers["x-leopard-answered-by"] == "upstream"


def test_a_batch_with_one_item_the_index_cannot_answer_goes_upstream_whole(
    fga: OpenFgaClient, upstream: Replay
) -> None:
    checks = [
        ClientBatchCheckItem(user="user:anne", relation=r, object=o, correlation_id=c)
        for r, o, c in (("viewer", "doc:d1", "c1"), ("can_view", "doc:d2", "c2"))
    ]
    result = {
        r.correlation_id: r.allowed
        for r in fga.batch_check(ClientBatchCheckRequest(checks=checks)).result
    }
    assert result == {"c1": True, "c2": False}
    [got] = upstream.received
    assert got.path.endswith("/batch-check") and len(json.loads(got.body)["checks"]) == 2


def test_lists_and_expand_go_upstream(fga: OpenFgaClient, upstream: Replay) -> None:
    ctx = {"hour": 10}
    question = ClientListObjectsRequest(
        user="user:anne", relation="viewer", type="doc", context=ctx
    )
    assert fga.list_objects(question).objects == ["doc:d9"]
    streamed = fga.streamed_list_objects(
        ClientListObjectsRequest(user="user:anne", relation="viewer", type="doc", context=ctx)
    )
    assert [o.object for o in streamed] == ["doc:d8", "doc:d9"]
    users = fga.list_users(
        ClientListUsersRequest(
            object=FgaObject(type="doc", id="d1"),
            relation="viewer",
            user_filters=[UserTypeFilter(type="group", relation="member")],
        )
    ).users
    assert [(u.userset.type, u.userset.id, u.userset.relation) for u in users] == [
        ("group", "eng", "member")
    ]  # noqa: E501
    tree = fga.expand(ClientExpandRequest(relation="viewer", object="doc:d1")).tree
    assert tree.root.name == "doc:d1#viewer" and len(tree.root.union.nodes) == 2
    paths = [r.path.rsplit("/", 1)[1] for r in upstream.received]
    assert paths == ["list-objects", "streamed-list-objects", "list-users", "expand"]


def test_the_stores_models_are_the_upstreams(served: str, upstream: Replay) -> None:
    """With an upstream, the listing of models and a model other than the index's are
    OpenFGA's (a model written through Leopard was 'not found' by the next read); the
    index's own model is read from the index."""
    upstream.received.clear()
    models = f"/stores/{STORE}/authorization-models"
    other = models + "/01JABCDEFGHJKMNPQRSTVWXYZ0"
    for target in (models + "?page_size=5", other):
        a = call(served, "GET", target)
        assert a.headers["x-leopard-answered-by"] == "upstream", target
    assert [(r.method, r.path) for r in upstream.received] == [
        ("GET", models + "?page_size=5"),
        ("GET", other),
    ]
    upstream.received.clear()
    with OpenFgaClient(ClientConfiguration(api_url=served, store_id=STORE)) as client:
        with leopard.open_index(_INDEX[0]) as index:
            ours = OpenFga(index, Waits(index), max_batch=1).model()
        assert ours is not None
        read = client.read_authorization_model({"authorization_model_id": ours.id})
        assert read.authorization_model.id == ours.id
    assert upstream.received == []


def test_the_rest_of_openfgas_api_goes_upstream(fga: OpenFgaClient, upstream: Replay) -> None:
    """Write, Read, ReadChanges and CreateStore: no route of the index answers them (nor
    a POST on /stores), so they go on unchanged; a write made through Leopard is read
    back through Leopard."""
    upstream.tuples.clear()
    key = {"user": "user:dora", "relation": "viewer", "object": "doc:d3"}
    fga.write(ClientWriteRequest(writes=[ClientTuple(**key)]))
    read = fga.read(ReadRequestTupleKey(object="doc:d3", relation="viewer", user="user:dora"))
    assert [(t.key.user, t.key.relation, t.key.object) for t in read.tuples] == [
        ("user:dora", "viewer", "doc:d3")
    ]
    changes = fga.read_changes(ClientReadChangesRequest(type="doc")).changes
    assert [c.tuple_key.user for c in changes] == ["user:dora"]
    assert fga.create_store(CreateStoreRequest(name="other")).name == "other"
    fga.write(ClientWriteRequest(deletes=[ClientTuple(**key)]))
    assert fga.read(ReadRequestTupleKey(object="doc:d3")).tuples == []
    sent = [(r.method, r.path.split("?")[0]) for r in upstream.received]
    prefix = f"/stores/{STORE}"
    assert sent == [
        ("POST", prefix + "/write"),
        ("POST", prefix + "/read"),
        ("GET", prefix + "/changes"),
        ("POST", "/stores"),
        ("POST", prefix + "/write"),
        ("POST", prefix + "/read"),
    ]
    assert json.loads(upstream.received[0].body)["writes"]["tuple_keys"] == [key]


def test_without_an_upstream_the_rest_is_refused_saying_so(tmp_path: Path) -> None:
    leopard.build_index([TUPLES], tmp_path / "idx")
    with leopard_serve("--index", str(tmp_path / "idx"), "--store-id", STORE) as (url, _):
        a = call(url, "POST", f"/stores/{STORE}/write", "{}")
        assert (a.status, a.json["code"]) == (404, "undefined_endpoint")
        assert "forwarded to --upstream-openfga" in a.json["message"]
        a = call(url, "POST", "/stores", json.dumps({"name": "x"}))
        said = (a.status, a.json["code"], a.headers["allow"])
        assert said == (405, "undefined_endpoint", "GET, HEAD")


def test_an_upstream_that_does_not_answer_is_a_503(tmp_path: Path) -> None:
    (tmp_path / "model.fga").write_text(MODEL)
    leopard.build_index([TUPLES], tmp_path / "idx", schema=tmp_path / "model.fga")
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        dead = f"http://127.0.0.1:{closed.server_address[1]}"
    args = ("--index", str(tmp_path / "idx"), "--store-id", STORE, "--upstream-openfga", dead)
    with leopard_serve(*args) as (url, _):
        body = json.dumps(
            {"tuple_key": {"user": "user:a", "relation": "can_view", "object": "doc:d1"}}
        )
        a = call(url, "POST", f"/stores/{STORE}/check", body)
        assert (a.status, a.json["code"]) == (503, "unavailable")
        assert dead in a.json["message"]
        # what the index answers is answered all the same
        body = json.dumps(
            {"tuple_key": {"user": "user:anne", "relation": "viewer", "object": "doc:d1"}}
        )
        assert call(url, "POST", f"/stores/{STORE}/check", body).json["allowed"] is True


def test_a_bad_upstream_url_is_refused_at_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    leopard.build_index([TUPLES], tmp_path / "idx")
    done = subprocess.run(
        [sys.executable, "-m", "leopard", "serve", "--index", str(tmp_path / "idx"),
         "--port", "0", "--upstream-openfga", "ftp://x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "--upstream-openfga" in done.stderr
