"""A shard of a sharded index served alone refuses what it cannot answer alone.

A shard holds the whole graph of sets but the direct sets of its own subjects only
(``crc32(ns:id) mod N``): asked about a plain subject placed on another shard, it
used to answer ``false`` (``allowed: false``, ``decision: false``) in silence. Now
``leopard serve --shard K`` refuses such a question, naming the subject, its shard
and this one, on every face; its own subjects are answered as before, and the router
in front of every shard (which asks each shard only about its own subjects, and
fans ``/v1/members`` and usersets out to all) answers everything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.http import call, leopard_serve, q

import leopard
from leopard.model.routing import shard_of

SHARDS = 3
USERS = [f"user:u{i}" for i in range(12)]
STORE = "01HZX3Q1A2B3C4D5E6F7G8H9JK"

pytestmark = pytest.mark.slow


def _on_shard(k: int) -> str:
    return next(u for u in USERS if shard_of(u, SHARDS) == k)


def _build(tmp_path: Path) -> Path:
    snapshot = tmp_path / "t.txt"
    snapshot.write_text(
        "".join(f"group:eng#member@{u}\n" for u in USERS) + "group:all#member@group:eng#member\n"
    )
    root = tmp_path / "ix"
    leopard.build_index([snapshot], root, shards=SHARDS)
    return root


def _serve_shard(root: Path, k: int) -> object:
    return leopard_serve(
        "--index", str(root), "--shard", str(k), "--workers", "1", "--store-id", STORE
    )


def _fga_check(url: str, user: str) -> tuple[int, dict[str, object]]:
    body = {"tuple_key": {"user": user, "relation": "member", "object": "group:all"}}
    a = call(url, "POST", f"/stores/{STORE}/check", json.dumps(body))
    return a.status, json.loads(a.body)


def _evaluation(url: str, user: str) -> tuple[int, bytes]:
    body = {
        "subject": {"type": "user", "id": user.split(":", 1)[1]},
        "action": {"name": "member"},
        "resource": {"type": "group", "id": "all"},
    }
    a = call(
        url,
        "POST",
        "/access/v1/evaluation",
        json.dumps(body),
        {"Content-Type": "application/json"},
    )
    return a.status, a.body


OTHER, OWN = _on_shard(2), _on_shard(0)
SAID = f"{OTHER} is placed on shard 2 of 3, this index is shard 0"


@pytest.fixture(scope="module")
def shard0(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Shard 0 of 3 served alone; ``OTHER`` is placed on shard 2, ``OWN`` on shard 0."""
    with _serve_shard(_build(tmp_path_factory.mktemp("alone")), 0) as (url, _):  # type: ignore[attr-defined]
        yield url


def test_v1_questions_about_another_shards_subject_are_refused(shard0: str) -> None:
    for target in (
        "/v1/check?" + q(subject=OTHER, group="group:all"),
        "/v1/groups?" + q(subject=OTHER),
        "/v1/explain?" + q(subject=OTHER, group="group:all"),
    ):
        a = call(shard0, "GET", target)
        assert a.status == 400 and SAID in a.json["detail"], (target, a.body)
    checks = [{"subject": s, "group": "group:all"} for s in (OWN, OTHER)]
    a = call(shard0, "POST", "/v1/check", json.dumps({"checks": checks}))
    assert a.status == 400 and SAID in a.json["detail"], a.body


def test_an_openfga_check_of_another_shards_subject_is_refused(shard0: str) -> None:
    status, fga = _fga_check(shard0, OTHER)
    assert status == 400 and SAID in str(fga["message"]), fga


def test_an_authzen_evaluation_of_another_shards_subject_is_refused(shard0: str) -> None:
    status, text = _evaluation(shard0, OTHER)
    assert status == 400 and SAID in text.decode(), text


def test_openfga_list_users_is_refused_by_a_shard_alone(shard0: str) -> None:
    users = {
        "object": {"type": "group", "id": "all"},
        "relation": "member",
        "user_filters": [{"type": "user"}],
    }
    a = call(shard0, "POST", f"/stores/{STORE}/list-users", json.dumps(users))
    assert a.status == 400 and "needs every shard" in a.body.decode(), a.body


def test_a_shard_alone_answers_its_own_subjects_as_before(shard0: str) -> None:
    a = call(shard0, "GET", "/v1/check?" + q(subject=OWN, group="group:all"))
    assert a.status == 200 and a.json["member"] is True, a.body
    a = call(shard0, "GET", "/v1/groups?" + q(subject=OWN))
    assert a.json["groups"] == ["group:all#member", "group:eng#member"], a.body
    status, fga = _fga_check(shard0, OWN)
    assert status == 200 and fga["allowed"] is True, fga
    assert _evaluation(shard0, OWN) == (200, b'{"decision":true}')
    # a userset, a wildcard and the members of a set are asked of every shard by the
    # router, which joins the answers: still answered
    a = call(shard0, "GET", "/v1/check?" + q(subject="group:eng#member", group="group:all"))
    assert a.status == 200 and a.json["member"] is True, a.body
    a = call(shard0, "GET", "/v1/check?" + q(subject="user:*", group="group:all"))
    assert a.status == 200 and a.json["member"] is False, a.body
    a = call(shard0, "GET", "/v1/members?" + q(group="group:all"))
    assert a.status == 200 and OWN in a.json["members"], a.body


def test_the_router_answers_every_subject_from_shards_served_alone(tmp_path: Path) -> None:
    root = _build(tmp_path)
    with (
        _serve_shard(root, 0) as (u0, _),  # type: ignore[attr-defined]
        _serve_shard(root, 1) as (u1, _),  # type: ignore[attr-defined]
        _serve_shard(root, 2) as (u2, _),  # type: ignore[attr-defined]
    ):
        given = [a for k, u in enumerate((u0, u1, u2)) for a in ("--shard-url", f"{k}={u}")]
        with leopard_serve("--route", *given) as (router, _):
            for user in USERS:
                a = call(router, "GET", "/v1/check?" + q(subject=user, group="group:all"))
                assert a.status == 200 and a.json["member"] is True, (user, a.body)
                a = call(router, "GET", "/v1/explain?" + q(subject=user, group="group:all"))
                assert a.status == 200 and a.json["member"] is True, (user, a.body)
            batch = {"checks": [{"subject": u, "group": "group:all"} for u in USERS]}
            a = call(router, "POST", "/v1/check", json.dumps(batch))
            assert a.status == 200 and a.json["results"] == [True] * len(USERS), a.body
            a = call(router, "GET", "/v1/members?" + q(group="group:all", limit="100"))
            assert a.status == 200 and a.json["members"] == sorted(USERS), a.body
