"""Userset subjects as the peers count them, asked of the peers themselves.

``leopard.core.usersets``: a userset is in every set of its own object whose relation
includes it through computed terms, whether or not the object has a tuple (both
peers); a namespace's wildcard holds usersets with SpiceDB and not with OpenFGA. Each
case is built from the SpiceDB schema and from the OpenFGA model, and every check is
asked of Leopard, of SpiceDB embedded and of OpenFGA's engine (``fga model test``),
with the resource lookups (``groups_of`` with a type and permission) too. ``explain``
finds a chain exactly when ``check`` says yes.
"""

from __future__ import annotations

from pathlib import Path

from support.fga import fga_run
from support.spicedb_schema import SpiceDBOracle

import leopard

EVERYONE_ZED = """definition user {
    relation friend: user
}
definition group {
    relation member: user | user:*
    relation manager: user
    permission everyone = member + manager
}
definition doc {
    relation viewer: user | user:* | user#friend | group#everyone
    permission view = viewer
}
"""

EVERYONE_FGA = """model
  schema 1.1
type user
  relations
    define friend: [user]
type group
  relations
    define member: [user, user:*]
    define manager: [user]
    define everyone: member or manager
type doc
  relations
    define viewer: [user, user:*, user#friend, group#everyone]
    define view: viewer
"""

# group:g has no tuple of its own, group:h has one; doc:d4 and group:pub are public
TUPLES = [
    "doc:d1#viewer@group:g#everyone",
    "doc:d2#viewer@group:h#everyone",
    "group:h#manager@user:x",
    "doc:d4#viewer@user:*",
    "group:pub#member@user:*",
    "user:u2#friend@user:u1",
]

CHECKS = [
    ("group:g#member", "doc:d1#view"),
    ("group:g#member", "group:g#everyone"),
    ("group:g#everyone", "doc:d1#view"),
    ("group:h#member", "doc:d2#view"),
    ("group:h#member", "group:h#everyone"),
    ("group:h#manager", "doc:d1#view"),
    ("group:new#member", "group:new#member"),
    ("group:new#member", "group:new#everyone"),
    ("group:new#everyone", "group:new#member"),
    ("user:u1", "doc:d4#view"),
    ("user:u1#friend", "doc:d4#view"),
    ("user:u9#friend", "group:pub#member"),
    ("group:g#member", "group:pub#member"),
    ("group:h#member", "doc:d4#view"),
]

LOOKUPS = [
    ("group:g#member", "doc", "view"),
    ("group:g#member", "group", "everyone"),
    ("group:new#member", "group", "everyone"),
    ("user:u1#friend", "doc", "view"),
    ("user:u1#friend", "group", "member"),
]


def _build(tmp_path: Path, text: str, suffix: str, lines: list[str] = TUPLES) -> Path:
    schema = tmp_path / f"schema{suffix}"
    schema.write_text(text)
    tuples = tmp_path / "tuples.txt"
    tuples.write_text("\n".join(lines) + "\n")
    index = tmp_path / f"ix{suffix.replace('.', '-')}"
    leopard.build_index([tuples], index, schema=schema)
    return index


def _leopard(index: Path, warm: bool) -> tuple[list[bool], list[set[str]]]:
    with leopard.open_index(index) as ix:
        if warm:
            ix.warm()
        checks = [ix.check(s, g) for s, g in CHECKS]
        assert ix.check_many(CHECKS) == checks
        for (s, g), found in zip(CHECKS, checks, strict=True):
            assert (ix.explain(s, g) is not None) == found, (s, g)
            steps = ix.explain(s, g, steps=True)
            assert (steps is not None) == found, (s, g)
        lookups = [
            {n.rpartition("#")[0] for n in ix.groups_of(s, type=t, permission=p)}
            for s, t, p in LOOKUPS
        ]
    return checks, lookups


def test_usersets_answer_as_spicedb(tmp_path: Path) -> None:
    index = _build(tmp_path, EVERYONE_ZED, ".zed")
    with SpiceDBOracle(EVERYONE_ZED, TUPLES) as peer:
        want = [peer.check(s, *g.rsplit("#", 1)) for s, g in CHECKS]
        want_lookups = [peer.lookup_resources(t, p, s) for s, t, p in LOOKUPS]
    assert any(want) and not all(want)
    for warm in (False, True):
        checks, lookups = _leopard(index, warm)
        assert checks == want
        assert lookups == want_lookups


def test_usersets_answer_as_openfga(tmp_path: Path) -> None:
    index = _build(tmp_path, EVERYONE_FGA, ".fga")
    run = fga_run(
        EVERYONE_FGA,
        TUPLES,
        [(s, g.rsplit("#", 1)[1], g.rsplit("#", 1)[0]) for s, g in CHECKS],
        list_objects=[(s, p, t) for s, t, p in LOOKUPS],
    )
    want = list(run.checks)
    assert any(want) and not all(want)
    for warm in (False, True):
        checks, lookups = _leopard(index, warm)
        assert checks == want
        assert lookups == [set(found) for found in run.list_objects]


# SpiceDB takes a wildcard through a userset of the relation's own definition (one of
# another definition it refuses), and answers through it
OWN_WILDCARD_ZED = """definition user {}
definition doc {
    relation viewer: doc#member | doc#mid | user
    relation mid: doc#member
    relation member: user | user:*
    permission view = viewer
}
"""
OWN_WILDCARD_TUPLES = [
    "doc:d#viewer@doc:e#member",
    "doc:e#member@user:*",
    "doc:f#viewer@doc:g#mid",
    "doc:g#mid@doc:h#member",
    "doc:h#member@user:ann",
    "doc:x#viewer@user:bob",
]
OWN_WILDCARD_USERS = ["user:ann", "user:bob", "user:zed"]


def test_a_wildcard_through_a_userset_of_its_own_definition_answers_as_spicedb(
    tmp_path: Path,
) -> None:
    index = _build(tmp_path, OWN_WILDCARD_ZED, ".zed", OWN_WILDCARD_TUPLES)
    docs = sorted({t.split("#")[0] for t in OWN_WILDCARD_TUPLES})
    asked = [(u, f"{d}#{p}") for u in OWN_WILDCARD_USERS for d in docs for p in ("view", "mid")]
    with SpiceDBOracle(OWN_WILDCARD_ZED, OWN_WILDCARD_TUPLES) as peer:
        want = [peer.check(s, *g.rsplit("#", 1)) for s, g in asked]
        want_lookups = [peer.lookup_resources("doc", "view", u) for u in OWN_WILDCARD_USERS]
    assert any(want) and not all(want)
    with leopard.open_index(index) as ix:
        for warm in (False, True):
            if warm:
                ix.warm()
            assert [ix.check(s, g) for s, g in asked] == want
            lookups = [
                {n.rpartition("#")[0] for n in ix.groups_of(u, type="doc", permission="view")}
                for u in OWN_WILDCARD_USERS
            ]
            assert lookups == want_lookups
