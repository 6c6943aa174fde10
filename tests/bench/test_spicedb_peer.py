"""SpiceDB embedded, through bench.spicedb_peer, agrees with a hand-written BFS.

Why: SpiceDB is our second oracle, so before its answers judge the index they are
judged themselves, on a graph small enough to check by hand: nesting three deep, a
wildcard, managers feeding the set (the union rewrite), managers that are sets, and a
duplicate spelled ``#...``. The BFS below is the expectation; SpiceDB must match it for
every user and group, through check, lookup_resources and lookup_subjects.

Skipped only when SpiceDB is not installed (scripts/install-spicedb installs it; CI runs
that script, so these tests run there).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for `bench`

from bench.spicedb_peer import (  # noqa: E402
    SpiceDBPeer,
    SpiceDBPeerError,
    default_schema,
    missing_reason,
)
from leopard.model.names import parse_tuple  # noqa: E402

_MISSING = missing_reason()
pytestmark = [
    pytest.mark.spicedb,
    pytest.mark.skipif(
        _MISSING is not None,
        reason=f"SpiceDB not installed ({_MISSING}); see scripts/install-spicedb",
    ),
]

PLAIN = [
    "group:eng#member@user:alice",
    "group:eng#member@user:alice#...",  # the same relationship: must not be sent twice
    "group:eng#member@group:backend#member",
    "group:backend#member@user:bob",
    "group:backend#member@group:db#member",
    "group:db#member@user:carol",
    "group:everyone#member@user:*",
    "group:company#member@group:everyone#member",
    "group:company#member@group:eng#member",
    "group:lonely#member@user:frank",
]
MANAGERS = [
    "group:db#manager@user:dave",  # dave is in db's set, so in backend's and eng's too
    "group:eng#manager@user:erin",  # erin is in eng only
    "group:ops#manager@group:eng#member",  # a set managing: all of eng is in ops
    "group:ops#member@user:gina",
]
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "gina", "zoe"]  # zoe: only via *


def groups_of(tuples: list[str]) -> list[str]:
    return sorted({f"{t.resource_type}:{t.resource_id}" for t in map(parse_tuple, tuples)})


class Bfs:
    """The plain model: a group's set is fed by ``member`` and ``manager``; a nested
    subject ``group:x#member`` stands for x's whole set; ``user:*`` admits every user."""

    def __init__(self, tuples: list[str]) -> None:
        self.children: dict[str, set[str]] = {}
        self.leaves: dict[str, set[str]] = {}
        for t in map(parse_tuple, tuples):
            assert t.relation in ("member", "manager")
            g = f"{t.resource_type}:{t.resource_id}"
            if t.subject_relation == "member":
                self.children.setdefault(g, set()).add(f"{t.subject_type}:{t.subject_id}")
            else:
                self.leaves.setdefault(g, set()).add(f"{t.subject_type}:{t.subject_id}")

    def below(self, group: str) -> Iterator[str]:
        """Every group whose set is inside ``group``'s, ``group`` itself first."""
        seen, todo = {group}, deque([group])
        while todo:
            g = todo.popleft()
            yield g
            for c in self.children.get(g, ()):
                if c not in seen:
                    seen.add(c)
                    todo.append(c)

    def members(self, group: str) -> set[str]:
        return {s for g in self.below(group) for s in self.leaves.get(g, ())}

    def check(self, user: str, group: str) -> bool:
        return bool(self.members(group) & {user, "user:*"})


def assert_agrees(peer: SpiceDBPeer, tuples: list[str]) -> None:
    bfs = Bfs(tuples)
    groups = groups_of(tuples)
    for name in USERS:
        user = f"user:{name}"
        expected = [g for g in groups if bfs.check(user, g)]
        assert [g for g in groups if peer.check(user, g)] == expected, user
        assert peer.lookup_resources(user, timeout=30) == expected, user
    for g in groups:
        assert peer.lookup_subjects(g, timeout=30) == sorted(bfs.members(g)), g
        for nested in groups:
            if nested != g:  # a set inside another: group:x#member as the subject
                want = nested in bfs.below(g)
                assert peer.check(f"{nested}#member", g) == want, (nested, g)


def test_hand_checked_expectation() -> None:
    """The BFS itself, on a few answers worked out by hand from the tuples above."""
    bfs = Bfs(PLAIN + MANAGERS)
    assert bfs.check("user:dave", "group:eng")  # manager of db, db inside backend inside eng
    assert bfs.check("user:erin", "group:ops")  # manager of eng, eng's set manages ops
    assert not bfs.check("user:erin", "group:backend")
    assert bfs.check("user:zoe", "group:company")  # through everyone's wildcard
    assert not bfs.check("user:zoe", "group:eng")
    assert bfs.check("user:gina", "group:ops")
    assert not bfs.check("user:gina", "group:eng")  # eng is inside ops, not ops inside eng
    assert bfs.check("user:gina", "group:company")  # company holds everyone, hence user:*


def test_plain_schema_matches_bfs() -> None:
    with SpiceDBPeer() as peer:
        assert peer.load(PLAIN, batch=3) == len(PLAIN) - 1  # the #... repeat fell in one batch
        assert_agrees(peer, PLAIN)


def test_rewrite_schema_matches_bfs() -> None:
    with SpiceDBPeer(rewrites=True) as peer:
        assert peer.load(PLAIN + MANAGERS) == len(PLAIN + MANAGERS) - 1
        assert_agrees(peer, PLAIN + MANAGERS)


def test_writes_are_seen_by_the_next_check() -> None:
    with SpiceDBPeer() as peer:
        assert not peer.check("user:zoe", "group:eng")
        peer.load(["group:eng#member@user:zoe"])
        assert peer.check("user:zoe", "group:eng")
        peer.fully_consistent = True
        assert peer.check("user:zoe", "group:eng")


def test_refusals_carry_spicedbs_own_message() -> None:
    """Not the wrapper's ctypes ``ArgumentError: argument 1: TypeError: wrong type``."""
    with pytest.raises(SpiceDBPeerError, match="parse error in `schema`") as bad_schema:
        SpiceDBPeer(schema="definition group { relation member: user }")
    assert bad_schema.value.code == "InvalidArgument"
    with SpiceDBPeer() as peer:  # the plain schema has no manager relation
        with pytest.raises(SpiceDBPeerError, match="tuples 1..1: .*manager") as bad_write:
            peer.load(["group:eng#manager@user:erin"])
        assert bad_write.value.code == "FailedPrecondition"


def test_cycles_hit_spicedbs_depth_limit() -> None:
    """The known limit: a check in a cycle that finds nobody fails instead of saying no."""
    cycle = [
        "group:a#member@group:b#member",
        "group:b#member@group:a#member",
        "group:b#member@user:u",
    ]
    with SpiceDBPeer() as peer:
        peer.load(cycle)
        assert peer.check("user:u", "group:a")
        with pytest.raises(SpiceDBPeerError, match="max depth exceeded"):
            peer.check("user:v", "group:a")


def test_default_schema_maps_the_union_onto_a_permission() -> None:
    assert "relation member: user | user:* | group#member" in default_schema(rewrites=False)
    rewritten = default_schema(rewrites=True)
    assert "permission member = direct_member + manager" in rewritten
    assert "relation member" not in rewritten
