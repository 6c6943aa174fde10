"""The HTTP query service, against a real uvicorn server on a real port.

Most tests share one server per module (uvicorn in a thread of this process, on a
port the kernel picked), with small limits so that the batch cap and the body limit
are cheap to hit. The freshness test runs ``leopard serve`` as a child process with
the consumer following a topic of the session's local broker, publishes, and reads
its own write with the returned token. An OpenAPI-driven fuzz (schemathesis, over
the document the server itself serves) checks that no request gets a 500.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from support.http import (
    MAX_BATCH,
    MAX_BODY,
    TOKEN,
    build_small_index,
    call,
    leopard_serve,
    parse_metrics,
    q,
    running_server,
    wait_until,
)

import leopard
from ingest.codecs import Change
from ingest.consumer import ChangeConsumer, ConsumerSettings
from ingest.kafka.local_broker import LocalBroker
from ingest.kafka.publish import publish
from leopard.client import Client
from leopard.errors import HTTP_ERRORS
from leopard.http import schemas as S
from leopard.http.app import LeopardService
from leopard.http.openapi import ROUTES
from leopard.http.server import listen
from leopard.model.names import parse_tuple
from leopard.model.tokens import encode_token
from leopard.model.zedtoken import encode_zedtoken


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_small_index(tmp_path_factory.mktemp("http") / "idx")


@pytest.fixture(scope="module")
def served(index_dir: Path) -> Iterator[tuple[str, LeopardService]]:
    with leopard.open_index(index_dir) as ix:
        app = LeopardService(ix, max_batch=MAX_BATCH, max_body=MAX_BODY)
        with running_server(app) as url:
            yield url, app


@pytest.fixture(scope="module")
def base(served: tuple[str, LeopardService]) -> str:
    return served[0]


@pytest.fixture(scope="module")
def auth_base(index_dir: Path) -> Iterator[str]:
    with leopard.open_index(index_dir) as ix:
        with running_server(LeopardService(ix, auth_token=TOKEN)) as url:
            yield url


# -- every endpoint ----------------------------------------------------------------------


def test_check_answers_nested_and_wildcard_membership(base: str) -> None:
    cases = [
        ("user:alice", "group:eng", True),
        ("user:bob", "group:all#member", True),  # two levels down
        ("user:carol+x", "group:eng", True),  # '+' survives the query string
        ("user:dave", "group:eng", False),
        ("user:erin", "group:cyc2", True),  # through the cycle
        ("user:nobody-at-all", "group:public", True),  # the wildcard
        ("group:backend#member", "group:all", True),  # a nested set
        ("user:alice", "group:no-such-group", False),
    ]
    for subject, group, expected in cases:
        a = call(base, "GET", "/v1/check?" + q(subject=subject, group=group))
        assert a.status == 200, a.body
        assert a.headers["content-type"] == "application/json"
        assert a.json["member"] is expected, (subject, group)
        assert a.json["token"].startswith("v1.")
        assert (
            a.body
            == S.CheckResult(member=expected, token=a.json["token"])
            .model_dump_json(exclude_none=True)
            .encode()
        )
    # however the names are escaped, or not
    for query in (
        "subject=user:bob&group=group:all%23member",
        "subject=user%3abob&group=group%3Aall#member".replace("#", "%23"),
        "group=group%3Aall&subject=user%3Abob",
        "subject=%75ser%3Abob&group=group:all",
    ):
        a = call(base, "GET", "/v1/check?" + query)
        assert (a.status, a.json["member"]) == (200, True), query
    a = call(base, "GET", "/v1/check?subject=user+bob&group=group:all")  # '+' is a space
    assert a.status == 400 and "user bob" in a.json["detail"], a.body


def test_batch_check_answers_in_order(base: str) -> None:
    checks = [
        {"subject": "user:alice", "group": "group:all"},
        {"subject": "user:dave", "group": "group:eng"},
        {"subject": "user:bob", "group": "group:backend"},
    ]
    a = call(base, "POST", "/v1/check", json.dumps({"checks": checks}))
    assert a.status == 200, a.body
    assert a.json["results"] == [True, False, True]
    assert call(base, "POST", "/v1/check", '{"checks": []}').json["results"] == []
    fresh = json.dumps({"checks": checks, "at_least": a.json["token"], "max_wait": 0.5})
    assert call(base, "POST", "/v1/check", fresh).json["results"] == [True, False, True]


def test_groups(base: str) -> None:
    a = call(base, "GET", "/v1/groups?" + q(subject="user:bob"))
    assert a.status == 200
    assert a.json["groups"] == [
        "group:all#member",
        "group:backend#member",
        "group:eng#member",
        "group:public#member",  # through the wildcard
    ]
    assert call(base, "GET", "/v1/groups?subject=user:ghost").json["groups"] == [
        "group:public#member"
    ]
    assert call(base, "GET", "/v1/groups?subject=robot:ghost").json["groups"] == []


def test_members_paginate_with_next(base: str) -> None:
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        params = {"group": "group:big", "limit": "10"}
        if after is not None:
            params["after"] = after
        a = call(base, "GET", "/v1/members?" + q(**params))
        assert a.status == 200, a.body
        pages += 1
        seen += a.json["members"]
        after = a.json["next"]
        if after is None:
            break
        assert after == a.json["members"][-1]
    assert pages == 3
    assert seen == [f"user:m{i:02d}" for i in range(25)]
    # an exact fit has no next page
    a = call(base, "GET", "/v1/members?" + q(group="group:big", limit="25"))
    assert len(a.json["members"]) == 25 and a.json["next"] is None
    # the default page holds them all
    assert len(call(base, "GET", "/v1/members?group=group:big").json["members"]) == 25
    a = call(base, "GET", "/v1/members?" + q(group="group:public"))
    assert a.json["members"] == ["user:*"]


def test_explain(base: str) -> None:
    a = call(base, "GET", "/v1/explain?" + q(subject="user:bob", group="group:all"))
    assert a.json == {
        "member": True,
        "chain": ["group:all#member", "group:eng#member", "group:backend#member"],
        "token": a.json["token"],
    }
    a = call(base, "GET", "/v1/explain?" + q(subject="user:dave", group="group:eng"))
    assert a.json["member"] is False and a.json["chain"] is None


def test_version_health_and_readiness(base: str, index_dir: Path) -> None:
    a = call(base, "GET", "/v1/version")
    assert a.status == 200
    with leopard.open_index(index_dir) as ix:
        assert a.json == {"token": ix.version, "position": {}}
    # a token the index has reached is answered at once
    a = call(base, "GET", "/v1/version?" + q(at_least=a.json["token"]))
    assert a.status == 200
    assert call(base, "GET", "/healthz").json == {"status": "ok"}
    a = call(base, "GET", "/readyz")
    assert a.status == 200
    assert a.json["ready"] is True and a.json["reasons"] == [] and a.json["lag"] is None


# -- errors ------------------------------------------------------------------------------

TOO_MANY = json.dumps({"checks": [{"subject": "user:a", "group": "group:b"}] * (MAX_BATCH + 1)})
ERRORS = [
    # (method, target, body, status, error code, a piece of the detail)
    ("GET", "/v1/check?" + q(subject="alice", group="group:eng"), None, 400, "invalid_tuple",
     "'alice'"),
    ("GET", "/v1/check?" + q(subject="user:alice", group="eng"), None, 400, "invalid_tuple",
     "'eng'"),
    ("GET", "/v1/check?" + q(subject="user:a", group="group:eng#owner"), None, 400,
     "invalid_input", "'group:eng#owner'"),
    ("GET", "/v1/check?subject=user:alice", None, 400, "invalid_request", "'group' is missing"),
    ("GET", "/v1/check?subject=user:a&group=group:b&subjet=x", None, 400, "invalid_request",
     "'subjet'"),
    ("GET", "/v1/check?subject=user:a&subject=user:b&group=group:b", None, 400,
     "invalid_request", "'subject' is given twice"),
    ("GET", "/v1/check?subject=user:%ff&group=group:b", None, 400, "invalid_request", "UTF-8"),
    ("GET", "/v1/check?subject=&group=group:b", None, 400, "invalid_request", "'subject'"),
    ("GET", "/v1/check?subject=user:a&group=group:b&max_wait=99", None, 400, "invalid_request",
     "'max_wait' = '99'"),
    ("GET", "/v1/check?subject=user:a&group=group:b&max_wait=nan", None, 400,
     "invalid_request", "'max_wait'"),
    ("GET", "/v1/check?subject=user:a&group=group:b&at_least=garbage", None, 400,
     "invalid_input", "'garbage'"),
    ("GET", "/v1/members?group=group:big&limit=0", None, 400, "invalid_request", "'limit'"),
    ("GET", "/v1/members?group=group:big&limit=ten", None, 400, "invalid_request", "'ten'"),
    ("GET", "/v1/members?group=group:big&limit=10001", None, 400, "invalid_request", "10000"),
    ("GET", "/v1/groups?" + q(subject="user:a#B@d"), None, 400, "invalid_tuple", "'user:a#B@d'"),
    ("GET", "/v1/explain?subject=user:a", None, 400, "invalid_request", "'group'"),
    ("GET", "/v1/check?" + "x" * 20_000, None, 414, "uri_too_long", "20,000"),
    ("POST", "/v1/check", "not json", 400, "invalid_request", "not valid JSON"),
    ("POST", "/v1/check", "", 400, "invalid_request", "not valid JSON"),
    ("POST", "/v1/check", '{"checks": "x"}', 400, "invalid_request", "'checks'"),
    ("POST", "/v1/check", '{"checks": [{"subject": 1, "group": "group:g"}]}', 400,
     "invalid_request", "'checks.0.subject'"),
    ("POST", "/v1/check", '{"checks": [], "extra": 1}', 400, "invalid_request", "'extra'"),
    ("POST", "/v1/check", '{"checks": [{"subject": "user:a", "group": "group:g", "x": 1}]}',
     400, "invalid_request", "'checks.0.x'"),
    ("POST", "/v1/check", '{"checks": [{"subject": "user:a", "group": ""}]}', 400,
     "invalid_request", "'checks.0.group'"),
    ("POST", "/v1/check", '{"checks": [{"subject": "user:a"}]}', 400, "invalid_request",
     "'checks.0.group' is missing"),
    ("POST", "/v1/check", '{"checks": [["user:a", "group:g"]]}', 400, "invalid_request",
     "'checks.0'"),
    ("POST", "/v1/check", '[{"subject": "user:a", "group": "group:g"}]', 400, "invalid_request",
     "body"),
    ("POST", "/v1/check", '{"checks": [], "max_wait": -1}', 400, "invalid_request",
     "'max_wait'"),
    ("POST", "/v1/check", '{"checks": [{"subject": "bad", "group": "group:g"}]}', 400,
     "invalid_tuple", "'bad'"),
    ("POST", "/v1/check", TOO_MANY, 413, "batch_too_large", f"at most {MAX_BATCH}"),
    ("POST", "/v1/check", "x" * (MAX_BODY + 1), 413, "body_too_large", f"{MAX_BODY:,}"),
    ("GET", "/v1/nope", None, 404, "not_found", "'/v1/nope'"),
    ("GET", "/", None, 404, "not_found", "/openapi.json"),
    ("DELETE", "/v1/check", None, 405, "method_not_allowed", "GET, HEAD, POST"),
    ("POST", "/v1/groups", "{}", 405, "method_not_allowed", "GET"),
    ("PUT", "/healthz", None, 405, "method_not_allowed", "GET"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "target", "body", "status", "code", "detail"),
    ERRORS,
    ids=[f"{m} {t[:40]} -> {s} {c}" for m, t, _, s, c, _ in ERRORS],
)
def test_errors_name_the_bad_value(
    base: str, method: str, target: str, body: str | None, status: int, code: str, detail: str
) -> None:
    a = call(base, method, target, body)
    assert a.status == status, a.body
    assert a.headers["content-type"] == "application/json"
    assert a.json["error"] == code
    assert detail in a.json["detail"], a.json["detail"]
    if status == 405:
        assert a.headers["allow"] in a.json["detail"]


@pytest.mark.parametrize(
    "target",
    ["/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/check?subject=user:a&group=group:eng",
     "/.well-known/authzen-configuration", "/stores"],
)  # fmt: skip
def test_head_is_answered_wherever_get_is(base: str, target: str) -> None:
    """RFC 9110 9.1: as GET, its headers and no body (probes and balancers use HEAD); the
    connection stays usable for the next request."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", target)
        got = conn.getresponse()
        body = got.read()
        conn.request("HEAD", target)
        head = conn.getresponse()
        assert (head.status, head.read()) == (got.status, b"")
        if target != "/metrics":  # (which counts the GET just made)
            assert head.getheader("content-length") == str(len(body))
        assert head.getheader("content-type") == got.getheader("content-type")
        conn.request("GET", "/healthz")  # nothing of a body left on the connection
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_body_limit_holds_without_content_length(base: str) -> None:
    """A chunked body has no Content-Length to refuse early: it is counted as it comes."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        chunks = (b"x" * 1000 for _ in range(20))
        conn.request("POST", "/v1/check", body=chunks, encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 413
        assert json.loads(resp.read())["error"] == "body_too_large"
    finally:
        conn.close()


def test_stale_at_least_is_503_with_the_current_token(base: str, index_dir: Path) -> None:
    future = encode_token({"changes:0": 10**9})
    started = time.monotonic()
    a = call(base, "GET", "/v1/check?" + q(subject="user:a", group="group:eng", at_least=future,
                                            max_wait="0.3"))  # fmt: skip
    waited = time.monotonic() - started
    assert a.status == 503
    with leopard.open_index(index_dir) as ix:
        assert a.json["token"] == ix.version
    assert a.json["error"] == "stale" and future in a.json["detail"]
    assert 0.25 < waited < 5
    body = json.dumps({"checks": [], "at_least": future, "max_wait": 0})
    assert call(base, "POST", "/v1/check", body).status == 503


SCHEMA = """\
definition user {}

definition doc {
    relation viewer: user
    permission view = viewer
}
"""


@pytest.fixture(scope="module")
def followed_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An index of a schema that follows topic ``changes`` (one partition, at 0)."""
    directory = tmp_path_factory.mktemp("followed")
    (directory / "docs.zed").write_text(SCHEMA)
    leopard.build_index([["doc:d1#viewer@user:anne"]], directory / "idx",
                        schema=directory / "docs.zed", position={"changes:0": 0})  # fmt: skip
    with leopard.open_index(directory / "idx") as ix:
        with running_server(LeopardService(ix)) as url:
            yield url


def test_a_version_of_a_stream_the_index_has_not_applied_is_named_after_the_wait(
    base: str, followed_base: str
) -> None:
    """A version of a topic the index has applied nothing of, or a SpiceDB ZedToken at
    an index that holds no SpiceDB revision: either may yet be reached (a consumer of
    several topics applies one first; a bridged topic brings the revision with its
    first markers), so it is waited for; the 503 after the wait names what the token
    asks for and what the index follows."""
    other = encode_token({"other-topic:0": 1})
    zed = encode_zedtoken("1700000000000000000")
    for url, token, says in (
        (
            followed_base,
            other,
            ["topic 'other-topic' (other-topic:0)", "it follows topic 'changes'"],
        ),
        (followed_base, zed, ["holds no SpiceDB revision", "topic 'changes'"]),
        (base, zed, ["holds no SpiceDB revision"]),
    ):
        started = time.monotonic()
        a = call(url, "GET", "/v1/check?" + q(subject="user:anne", group="doc:d1#view",
                                               at_least=token, max_wait="0.3"))  # fmt: skip
        assert time.monotonic() - started >= 0.25
        assert (a.status, a.json["error"]) == (503, "stale"), a.body
        assert all(part in a.json["detail"] for part in says), a.json["detail"]


def test_a_partition_not_seen_of_a_followed_topic_is_waited_for(followed_base: str) -> None:
    """A partition the followed topic may have gained is read from its start once
    assigned: a version of it is waited for, then 503 saying nothing of it was applied."""
    unseen = encode_token({"changes:5": 1})
    started = time.monotonic()
    a = call(followed_base, "GET", "/v1/check?" + q(subject="user:anne", group="doc:d1#view",
                                                     at_least=unseen, max_wait="0.3"))  # fmt: skip
    assert time.monotonic() - started >= 0.25
    assert (a.status, a.json["error"]) == (503, "stale"), a.body
    assert "applied nothing of changes:5" in a.json["detail"]


def test_groups_of_a_type_the_schema_does_not_define_is_400(followed_base: str) -> None:
    """As an unknown permission is: a typo must not pass for "in no group"."""
    a = call(followed_base, "GET", "/v1/groups?" + q(subject="user:anne", type="dco"))
    assert (a.status, a.json["error"]) == (400, "invalid_input"), a.body
    assert "'dco'" in a.json["detail"] and "doc, user" in a.json["detail"]
    a = call(followed_base, "GET", "/v1/groups?" + q(subject="user:anne", type="doc"))
    assert (a.status, a.json["groups"]) == (200, ["doc:d1#view", "doc:d1#viewer"]), a.body
    a = call(followed_base, "GET", "/v1/groups?" + q(subject="user:anne", type="user"))
    assert (a.status, a.json["groups"]) == (200, []), a.body


def test_a_waiting_request_does_not_block_others(base: str) -> None:
    future = encode_token({"changes:0": 10**9})
    waiter = threading.Thread(
        target=call, args=(base, "GET", "/v1/version?" + q(at_least=future, max_wait="3"))
    )
    waiter.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert call(base, "GET", "/v1/check?subject=user:alice&group=group:eng").status == 200
    assert time.monotonic() - started < 2.0  # not held up behind the 3 s wait
    waiter.join()


# -- auth --------------------------------------------------------------------------------


def test_bearer_token(auth_base: str) -> None:
    target = "/v1/check?subject=user:alice&group=group:eng"
    a = call(auth_base, "GET", target)
    assert a.status == 401 and a.json["error"] == "unauthorized"
    assert a.headers["www-authenticate"].startswith("Bearer")
    for wrong in ("Bearer nope", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", ""):
        a = call(auth_base, "GET", target, headers={"Authorization": wrong})
        assert a.status == 401, wrong
        assert "invalid_token" in a.headers["www-authenticate"] or not wrong
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert call(auth_base, "GET", target, headers=ok).json["member"] is True
    assert (
        call(auth_base, "GET", target, headers={"authorization": f"bearer {TOKEN}"}).status == 200
    )
    # probes stay open; everything else, unknown routes included, needs the token
    assert call(auth_base, "GET", "/healthz").status == 200
    assert call(auth_base, "GET", "/readyz").status == 200
    for path in ("/metrics", "/openapi.json", "/v1/version", "/no-such-route"):
        assert call(auth_base, "GET", path).status == 401, path
    assert call(auth_base, "GET", "/no-such-route", headers=ok).status == 404
    doc = call(auth_base, "GET", "/openapi.json", headers=ok).json
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["paths"]["/healthz"]["get"]["security"] == []


def test_the_authorization_header_given_twice_is_refused(auth_base: str) -> None:
    """Two Authorization headers are refused whatever their values: a proxy in front
    may judge one and this server the other."""
    good, bad = f"Bearer {TOKEN}", "Bearer nope"
    parts = urlsplit(auth_base)
    for first, second in ((good, bad), (bad, good), (good, good)):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.putrequest("GET", "/v1/check?subject=user:alice&group=group:eng")
            conn.putheader("Authorization", first)
            conn.putheader("Authorization", second)
            conn.endheaders()
            resp = conn.getresponse()
            answer = json.loads(resp.read())
        finally:
            conn.close()
        assert resp.status == 400, (first, second, answer)
        assert answer["error"] == "invalid_request"
        assert "Authorization header is given more than once" in answer["detail"]
    # once is still fine
    a = call(auth_base, "GET", "/v1/check?subject=user:alice&group=group:eng",
             headers={"Authorization": good})  # fmt: skip
    assert a.status == 200


# -- metrics and the OpenAPI document ----------------------------------------------------


def test_metrics_parse_and_count(base: str, index_dir: Path) -> None:
    for _ in range(3):
        call(base, "GET", "/v1/check?subject=user:alice&group=group:eng")
    call(base, "GET", "/v1/check?subject=bad&group=group:eng")
    a = call(base, "GET", "/metrics")
    assert a.status == 200
    assert a.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_metrics(a.body.decode())
    requests = {
        (lbl["endpoint"], lbl["method"], lbl["status"]): v
        for lbl, v in samples["leopard_http_requests_total"]
    }
    assert requests[("/v1/check", "GET", "200")] >= 3
    assert requests[("/v1/check", "GET", "400")] >= 1
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for lbl, v in samples["leopard_http_request_duration_seconds_bucket"]:
        buckets.setdefault((lbl["endpoint"], lbl["method"]), []).append((float(lbl["le"]), v))
    counts = {
        (lbl["endpoint"], lbl["method"]): v
        for lbl, v in samples["leopard_http_request_duration_seconds_count"]
    }
    for key, series in buckets.items():
        assert [le for le, _ in series] == sorted(le for le, _ in series)
        assert series[-1][0] == math.inf
        values = [v for _, v in series]
        assert values == sorted(values), key  # cumulative
        assert values[-1] == counts[key]
    with leopard.open_index(index_dir) as ix:
        stats = ix.stats()
    assert samples["leopard_index_groups"] == [({}, stats["groups"])]
    assert samples["leopard_index_subjects"] == [({}, stats["subjects"])]
    assert samples["leopard_index_bytes_on_disk"][0][1] > 0
    assert "leopard_consumer_lag" not in samples  # no consumer in this server


def test_metrics_carry_the_process_gc_and_platform_collectors(base: str) -> None:
    samples = parse_metrics(call(base, "GET", "/metrics").body.decode())
    started = samples["process_start_time_seconds"]
    assert len(started) == 1 and 0 < started[0][1] <= time.time()
    assert samples["process_resident_memory_bytes"][0][1] > 0
    assert samples["process_cpu_seconds_total"][0][1] > 0
    assert {lbl["generation"] for lbl, _ in samples["python_gc_collections_total"]} == {
        "0",
        "1",
        "2",
    }
    assert "python_gc_objects_collected_total" in samples
    (info,) = samples["python_info"]
    assert info[0]["version"] == ".".join(map(str, sys.version_info[:3])) and info[1] == 1


def test_every_error_code_of_the_table_is_in_the_schema() -> None:
    """An error answer is serialized through ErrorBody: each code must be allowed there."""
    assert {code for _, code in HTTP_ERRORS.values()} <= set(S.ERROR_CODES)


def test_openapi_lists_every_route_and_matches_the_models(
    served: tuple[str, LeopardService],
) -> None:
    base, app = served
    doc = call(base, "GET", "/openapi.json").json
    assert doc == app.openapi
    assert doc["openapi"].startswith("3.1")
    listed = {(path, m.upper()) for path, ops in doc["paths"].items() for m in ops}
    assert listed == {(r.path, r.method) for r in ROUTES}
    schemas = doc["components"]["schemas"]
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc))
    assert refs and all(name in schemas for name in refs)
    assert schemas["CheckBatchRequest"]["properties"]["checks"]["maxItems"] == MAX_BATCH
    check = doc["paths"]["/v1/check"]["get"]
    params = {p["name"]: p for p in check["parameters"]}
    assert params["subject"]["required"] and params["group"]["required"]
    assert params["at_least"]["schema"] == {"type": "string", "minLength": 1}
    assert {"400", "503", "500"} <= set(check["responses"])
    # What the connection protocol answers before the app, on any route: a head too
    # large or too slow, a body too slow, too many connections (and a failing store).
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert {"408", "431", "503"} <= set(op["responses"]), (path, method)
    ready_503 = doc["paths"]["/readyz"]["get"]["responses"]["503"]["content"]
    assert len(ready_503["application/json"]["schema"]["oneOf"]) == 2
    assert "security" not in doc  # no token configured
    try:
        from openapi_spec_validator import validate
    except ImportError:  # pragma: no cover - comes with schemathesis
        return
    validate(doc)


# -- an OpenAPI-driven fuzz --------------------------------------------------------------

try:
    import schemathesis
except ImportError:  # pragma: no cover - a dev dependency
    schemathesis = None

if schemathesis is not None:
    from hypothesis import HealthCheck, settings
    from schemathesis.checks import (
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    @pytest.fixture
    def api_schema(base: str) -> Any:
        return schemathesis.openapi.from_url(f"{base}/openapi.json")

    @schemathesis.pytest.from_fixture("api_schema").parametrize()
    @settings(
        max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def test_no_request_gets_a_500(case: Any, base: str) -> None:
        """Valid and invalid requests generated from /openapi.json: no 500, and every
        answer has a documented status and fits its documented schema."""
        # A generated token may lie in the future: keep its wait short.
        for params in (case.query, case.body):
            wait = params.get("max_wait") if isinstance(params, dict) else None
            if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > 0.2:
                params["max_wait"] = 0.2
        case.call_and_validate(
            base_url=base,
            checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
        )

else:  # pragma: no cover

    def test_no_request_gets_a_500() -> None:
        pytest.skip("schemathesis is not installed")


# -- freshness end to end, through the local broker --------------------------------------


@pytest.mark.kafka
def test_read_your_own_write_through_the_broker(
    broker: LocalBroker, topic: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    idx = build_small_index(tmp_path / "idx")
    with leopard_serve("--index", str(idx), "--brokers", broker.bootstrap, "--topic", topic) as (
        url,
        proc,
    ):
        client = Client(url)
        request.addfinalizer(client.close)
        assert client.check("user:newbie", "group:eng") is False
        # nothing applied yet, but the server follows the topic (--topic): the 503 for
        # a version of another topic says so (one of this topic is waited for: below)
        elsewhere = encode_token({f"{topic}-elsewhere:0": 1})
        a = call(url, "GET", "/v1/version?" + q(at_least=elsewhere, max_wait="0.3"))
        assert (a.status, a.json["error"]) == (503, "stale"), a.body
        assert f"it follows topic {topic!r}" in a.json["detail"]
        written = publish(
            [Change("touch", parse_tuple("group:backend#member@user:newbie"))],
            broker.bootstrap,
            topic,
        )
        # The consumer joins its group (~1 s with the local broker) and applies it.
        assert client.check("user:newbie", "group:all", at_least=written.token, max_wait=20)
        assert client.last_token is not None
        assert client.wait_for(written.token) == client.version
        assert client.position == written.position
        # a token from the future: 503 with the version reached
        future = encode_token({k: v + 1000 for k, v in written.position.items()})
        a = call(url, "GET", "/v1/check?" + q(subject="user:newbie", group="group:eng",
                                               at_least=future, max_wait="0.2"))  # fmt: skip
        assert a.status == 503
        assert a.json["token"] == client.version == written.token
        # ready once the consumer has fetched and keeps up; metrics show it
        ready = wait_until(lambda: call(url, "GET", "/readyz").json["ready"])
        assert ready, call(url, "GET", "/readyz").json
        assert call(url, "GET", "/readyz").json["lag"] == 0
        samples = parse_metrics(call(url, "GET", "/metrics").body.decode())
        offsets = {lbl["topic"]: v for lbl, v in samples["leopard_index_applied_offset"]}
        assert offsets == {topic: written.position[f"{topic}:0"]}
        assert samples["leopard_consumer_running"] == [({}, 1.0)]
        assert samples["leopard_consumer_dead_letters_total"] == [({}, 0.0)]
        assert samples["leopard_consumer_changes_refused_total"] == [({}, 0.0)]
        assert samples["leopard_consumer_changes_skipped_total"] == [({}, 0.0)]
        assert samples["leopard_consumer_changes_total"][0][1] >= 1
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down (stopping the consumer after its batch), then re-raises
        # the signal so that a supervisor sees how the process ended.
        assert proc.wait(20) in (0, -signal.SIGTERM)
        assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
    # the consumer persisted what it applied: a fresh reader sees the write
    with leopard.open_index(idx) as ix:
        assert ix.check("user:newbie", "group:eng")


@pytest.mark.kafka
def test_without_a_consumer_the_server_follows_another_process(
    broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    """Served alone, the index is re-read; at_least waits for another process's writes."""
    idx = build_small_index(tmp_path / "idx")
    with leopard.open_index(idx) as ix:
        with running_server(LeopardService(ix, refresh_interval=5.0)) as url:
            written = publish(
                [Change("touch", parse_tuple("group:sales#member@user:zoe"))],
                broker.bootstrap,
                topic,
            )
            consumer = ChangeConsumer(idx, ConsumerSettings(brokers=broker.bootstrap,
                                                            topics=[topic]))  # fmt: skip
            worker = threading.Thread(target=consumer.run, kwargs={"idle_exit": 3.0})
            worker.start()
            try:
                with Client(url) as client:
                    assert client.check(
                        "user:zoe", "group:all", at_least=written.token, max_wait=20
                    )
            finally:
                consumer.stop()
                worker.join(30)


def test_serve_refuses_a_bad_start(tmp_path: Path, index_dir: Path) -> None:
    """Startup errors are one line and exit status 1, as for every command."""
    from click.testing import CliRunner

    from leopard.cli.serve import serve_command

    runner = CliRunner()
    r = runner.invoke(serve_command, ["--index", str(tmp_path / "none")])
    assert r.exit_code == 1 and "Error" in r.output
    (tmp_path / "empty").write_text("\n")
    r = runner.invoke(
        serve_command, ["--index", str(index_dir), "--auth-token-file", str(tmp_path / "empty")]
    )
    assert r.exit_code == 1 and "is empty" in r.output
    r = runner.invoke(serve_command, ["--index", str(index_dir), "--topic", "t"])
    assert r.exit_code == 2 and "--topic needs --brokers" in r.output
    with socket_taken() as port:
        r = runner.invoke(serve_command, ["--index", str(index_dir), "--port", str(port)])
    assert r.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in r.output


@contextlib.contextmanager
def socket_taken() -> Iterator[int]:
    sock = listen("127.0.0.1", 0)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_only_the_server_module_loads_uvicorn() -> None:
    code = (
        "import sys, leopard.http.app; assert 'uvicorn' not in sys.modules\n"
        "import leopard.http.server; assert 'uvicorn' in sys.modules"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_leopard_command_has_serve() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "leopard", "serve", "--help"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "--auth-token-file" in r.stdout and "--brokers" in r.stdout
