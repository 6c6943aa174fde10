"""Tests of the synthetic org generator: the promises benchmarks and comparisons rely on.

Each property is checked on the text actually written, with plain Python graph walks
as the oracle, never with the generator's own bookkeeping.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tomllib
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from leopard.errors import InvalidInput
from leopard.gen import GenReport, OrgSpec, config_toml, generate
from leopard.model.config import Config
from leopard.model.names import RelationTuple, parse_tuple

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gen-org"


@dataclass
class Org:
    """A generated org read back from its text."""

    report: GenReport
    text: bytes
    tuples: list[RelationTuple]
    children: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    direct: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    wildcard_groups: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)

    def reach(self, group: str) -> dict[str, int]:
        """Every group nested in ``group`` (itself included) with its fewest hops."""
        dist = {group: 0}
        todo = deque([group])
        while todo:
            g = todo.popleft()
            for c in self.children.get(g, ()):
                if c not in dist:
                    dist[c] = dist[g] + 1
                    todo.append(c)
        return dist

    def levels_of(self, user: str, group: str) -> int | None:
        """Fewest nesting levels through which ``user`` is in ``group``; None if not."""
        hops = [
            d
            for g, d in self.reach(group).items()
            if user in self.direct.get(g, ()) or g in self.wildcard_groups
        ]
        return min(hops) if hops else None


def make_org(spec: OrgSpec) -> Org:
    buf = io.BytesIO()
    report = generate(spec, buf)
    text = buf.getvalue()
    org = Org(report, text, [parse_tuple(line) for line in text.decode().splitlines()])
    for t in org.tuples:
        group = f"{t.resource_type}:{t.resource_id}"
        subject = f"{t.subject_type}:{t.subject_id}"
        if t.subject_relation == "member":
            org.children[group].add(subject)
        elif t.is_wildcard:
            org.wildcard_groups.add(group)
        else:
            org.direct[group].add(subject)
            org.users.add(subject)
    return org


@pytest.fixture(scope="module")
def org() -> Org:
    return make_org(OrgSpec(tuples=30_000, seed=11))


@pytest.fixture(scope="module")
def dag() -> Org:
    return make_org(OrgSpec(tuples=30_000, seed=11, cycles=False))


def find_cycle(children: dict[str, set[str]]) -> list[str] | None:
    """A cycle of nested groups, or None (iterative three-colour DFS)."""
    colour: dict[str, int] = {}  # 1 on the stack, 2 done
    for root in list(children):
        if root in colour:
            continue
        colour[root] = 1
        path = [root]
        stack = [iter(sorted(children.get(root, ())))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                colour[path.pop()] = 2
                stack.pop()
            elif colour.get(nxt) == 1:
                return path[path.index(nxt) :]
            elif nxt not in colour:
                colour[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(children.get(nxt, ()))))
    return None


def longest_chain(children: dict[str, set[str]]) -> int:
    """Nesting edges on the longest path of a DAG."""
    memo: dict[str, int] = {}
    order: list[str] = []
    seen: set[str] = set()
    for root in children:  # iterative post-order, so deep chains need no recursion
        stack = [(root, False)]
        while stack:
            g, done = stack.pop()
            if done:
                order.append(g)
            elif g not in seen:
                seen.add(g)
                stack.append((g, True))
                stack.extend((c, False) for c in children.get(g, ()) if c not in seen)
    for g in order:
        memo[g] = max((memo[c] + 1 for c in children.get(g, ())), default=0)
    return max(memo.values(), default=0)


# -- output format ------------------------------------------------------------------


def test_same_spec_gives_identical_bytes(org: Org) -> None:
    again = io.BytesIO()
    generate(OrgSpec(tuples=30_000, seed=11), again)
    assert again.getvalue() == org.text
    other = io.BytesIO()
    generate(OrgSpec(tuples=30_000, seed=12), other)
    assert other.getvalue() != org.text


@pytest.mark.parametrize("n", [1_000, 4_321, 50_000])
def test_tuple_count_is_within_two_percent(n: int) -> None:
    buf = io.BytesIO()
    report = generate(OrgSpec(tuples=n, seed=3, max_depth=6), buf)
    lines = buf.getvalue().count(b"\n")
    assert abs(lines - n) <= 0.02 * n
    assert report.tuples == lines


def test_every_line_parses_and_none_repeats(org: Org) -> None:
    assert len(org.tuples) == org.report.tuples
    assert len(set(org.tuples)) == len(org.tuples)
    assert org.text.endswith(b"\n")
    assert {t.resource_type for t in org.tuples} == {"group"}
    assert {t.subject_type for t in org.tuples} == {"group", "user"}


def test_report_matches_the_text(org: Org) -> None:
    r = org.report
    nested = sum(len(c) for c in org.children.values())
    assert r.nested_edges == nested
    assert r.wildcards == len(org.wildcard_groups) > 0
    assert r.member_edges == sum(len(u) for u in org.direct.values())
    assert r.users == len(org.users)
    groups = set(org.children) | set(org.direct) | org.wildcard_groups
    groups |= {c for cs in org.children.values() for c in cs}
    assert r.groups == len(groups)
    assert r.manager_tuples == sum(t.relation == "manager" for t in org.tuples)
    assert r.bytes == len(org.text)
    assert json.loads(json.dumps(r.to_dict()))["tuples"] == r.tuples


def test_namespace_prefix_and_gzip(tmp_path: Path) -> None:
    spec = OrgSpec(tuples=2_000, seed=5, namespace_prefix="acme/")
    plain, packed = tmp_path / "org.txt", tmp_path / "org.txt.gz"
    generate(spec, plain)
    generate(spec, str(packed))
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    for line in plain.read_text().splitlines():
        t = parse_tuple(line)
        assert t.resource_type == "acme/group"
        assert t.subject_type in ("acme/group", "acme/user")


def test_progress_counts_up_to_the_total() -> None:
    seen: list[int] = []
    generate(OrgSpec(tuples=5_000), io.BytesIO(), progress=seen.append)
    assert seen == sorted(seen)
    assert seen[-1] == 5_000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tuples": 999},
        {"tuples": 100_000_001},
        {"tuples": 1_000, "max_depth": 0},
        {"tuples": 1_000, "seed": -1},
        {"tuples": 1_000, "namespace_prefix": "acme"},
        {"tuples": 1_000, "namespace_prefix": "Ac@me/"},
    ],
)
def test_bad_specs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        OrgSpec(**kwargs)  # type: ignore[arg-type]


# -- shape ----------------------------------------------------------------------------


def test_without_cycles_the_nesting_is_a_dag_of_the_asked_depth(dag: Org) -> None:
    assert find_cycle(dag.children) is None
    assert dag.report.cycles == 0
    assert longest_chain(dag.children) == dag.report.max_depth == 15


def test_shallower_max_depth_is_respected() -> None:
    shallow = make_org(OrgSpec(tuples=5_000, seed=2, cycles=False, max_depth=4))
    assert longest_chain(shallow.children) == 4


def test_with_cycles_there_are_rings_and_a_self_loop(org: Org) -> None:
    assert org.report.cycles > 0
    assert find_cycle(org.children) is not None
    assert any(g in cs for g, cs in org.children.items())


def test_wildcards_can_be_turned_off(org: Org) -> None:
    assert any(t.subject_id == "*" for t in org.tuples)
    tame = make_org(OrgSpec(tuples=5_000, wildcards=False))
    assert not tame.wildcard_groups
    assert tame.report.wildcards == 0


def test_rewrites_emit_manager_and_the_config_reads_them(org: Org) -> None:
    managers = [t for t in org.tuples if t.relation == "manager"]
    assert managers and len(managers) < len(org.tuples) // 20  # most tuples use member
    assert any(t.subject_relation == "member" for t in managers)  # nested via manager
    assert any(t.subject_relation is None for t in managers)  # users as managers
    config = Config.model_validate(tomllib.loads(config_toml(OrgSpec(tuples=1_000))))
    assert config.feeds("group", "manager") == ("member",)
    assert config.feeds("group", "member") == ("member",)

    plain = make_org(OrgSpec(tuples=5_000, rewrites=False, namespace_prefix="t/"))
    assert {t.relation for t in plain.tuples} == {"member"}
    plain_spec = OrgSpec(tuples=1_000, rewrites=False, namespace_prefix="t/")
    config = Config.model_validate(tomllib.loads(config_toml(plain_spec)))
    assert config.feeds("t/group", "manager") == ()
    assert config.feeds("t/group", "member") == ("member",)


def test_deep_user_is_a_member_only_through_three_levels_or_more(org: Org) -> None:
    r = org.report
    assert r.deep_user is not None and r.deep_group is not None
    levels = org.levels_of(r.deep_user, r.deep_group)
    assert levels is not None and levels >= 3
    assert levels == r.deep_levels


def test_non_member_pair_is_not_a_membership(org: Org) -> None:
    assert org.report.non_member is not None
    user, group = org.report.non_member
    assert user in org.users
    assert org.levels_of(user, group) is None


def test_largest_group_holds_every_user_through_nesting(org: Org) -> None:
    reach = org.reach(org.report.largest_group)
    members = set().union(*(org.direct.get(g, set()) for g in reach))
    assert members == org.users
    assert not org.direct.get(org.report.largest_group)  # all of them via nesting


def test_memberships_and_group_sizes_are_heavy_tailed(org: Org) -> None:
    per_user: dict[str, int] = defaultdict(int)
    for users in org.direct.values():
        for u in users:
            per_user[u] += 1
    counts = sorted(per_user.values())
    assert counts[len(counts) // 2] >= 3 and counts[-1] >= 25  # a few to dozens
    sizes = sorted(len(u) for u in org.direct.values())
    assert sizes[-1] >= 10 * sizes[len(sizes) // 2]
    fans = sorted(len(c) for c in org.children.values())
    assert fans[-1] >= 10 * fans[len(fans) // 2]


# -- the script -----------------------------------------------------------------------


def test_script_help_has_an_example() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True
    )
    assert "--tuples" in done.stdout and "Example" in done.stdout


def test_script_writes_tuples_config_and_json(tmp_path: Path) -> None:
    out, cfg = tmp_path / "org.txt", tmp_path / "org.toml"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "-n", "1000", "--seed", "7", "--out", str(out),
         "--config-out", str(cfg), "--no-rewrites", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert report["tuples"] == 1000 == len(out.read_text().splitlines())
    assert 'from = ["member"]' in cfg.read_text()
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "-n", "10", "--out", str(out)], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "tuples=10" in bad.stderr
