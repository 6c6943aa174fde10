"""Property tests: every query of a real on-disk index against the plain BFS model.

Each example generates a graph (``tests/strategies.py``), builds a real RocksDB
index from it and the model of ``tests/oracle.py`` from the same tuples, then asks
both every question over a universe of names: all groups and subjects of the
graph under every spelling (``ns:id``, ``ns:id#...``, full set names), plus
well-formed names the index has never seen. Hypothesis and function-scoped
fixtures do not mix, so each example makes its own temporary directory.

A build costs about a tenth of a second here (RocksDB writes, flushes and the
compaction), more than all the queries of an example together, so example counts
are chosen to keep this file near a minute on two cores.

``oracle`` and ``strategies`` are imported as top-level modules: ``tests/`` has no
``__init__.py``, so pytest puts it on ``sys.path`` (rootdir-relative imports).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.oracle import NotASet, Oracle
from support.strategies import CONFIGS, Graph, graphs

import leopard
from leopard.core.batches import table_from_tuples
from leopard.core.build import build_from_batches
from leopard.core.index import Index
from leopard.core.interning import GroupNames
from leopard.errors import InvalidInput, InvalidTuple, LeopardError
from leopard.model.config import Config
from leopard.model.names import MAX_TUPLE_BYTES, parse_object, parse_subject, parse_tuple

SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}

# Well-formed names that the generated graphs never (or only by chance) contain.
EXTRA_SUBJECTS = (
    "user:zz",  # unknown, but a member wherever user:* is
    "service:q",
    "acme/user:zz",
    "nosuch:q",  # a namespace nothing mentions
    "nosuch:*",
    "user:*",
    "service:*",
    "group:*",
    "group:zz",
    "group:a",  # a plain subject in a group namespace is a leaf
    "group:zz#member",  # an indexed set that is nowhere in the index
    "group:a#member",
    "group:a#viewer",
    "group:a#owner",  # an opaque userset (no config indexes owner)
    "group:zz#owner",
    "user:a#member",  # a set under the default config, opaque otherwise
    "team:a#...",
    "user:*#...",  # the wildcard itself
)
EXTRA_GROUPS = (
    "group:zz#member",
    "group:zz",
    "group:a",
    "group:a#viewer",  # a set only under the two-set config
    "group:a#owner",  # never a set: InvalidInput
    "team:a",
    "acme/group:a",
    "doc:a",  # no sets in doc under a custom config: InvalidInput
    "doc:a#member",
    "user:a",
    "user:zz#member",
)
ABSENT_NAMES = ("", "A", "group:", "user:a0", "user:zzz", "zzz", "user:f1~")


def build(
    graph: Graph, path: Path, *, id_order: str = "dfs", batches: int = 1, fold: int = 0
) -> leopard.BuildReport:
    """Build from the graph's tuples cut into ``batches`` tables; with ``fold``, the
    group names waiting are folded (on the build's worker thread) every ``fold``."""
    table = table_from_tuples([parse_tuple(line) for line in graph.lines])
    size = max(1, -(-table.num_rows // batches))
    tables = [table.slice(at, size) for at in range(0, table.num_rows, size)] or [table]
    saved = GroupNames.FOLD, GroupNames.SPREAD
    if fold:
        GroupNames.FOLD, GroupNames.SPREAD = fold, 0
    try:
        return build_from_batches(tables, path, graph.config, id_order=id_order)
    finally:
        GroupNames.FOLD, GroupNames.SPREAD = saved


def universe(oracle: Oracle) -> tuple[list[str], list[str]]:
    """Subject and group names to ask about: every spelling of the graph's names, and more."""
    subjects = set(oracle.leaf_names()) | set(oracle.groups) | set(EXTRA_SUBJECTS)
    for leaf in oracle.leaf_names():
        if "#" not in leaf:
            subjects.add(leaf + "#...")
    groups = set(oracle.groups) | set(EXTRA_GROUPS)
    for g in oracle.groups:
        groups.add(g.split("#", 1)[0])  # short form: fine, or ambiguous (two sets)
    return sorted(subjects), sorted(groups)


def _mismatches(what: str, pairs: Iterable[tuple[object, object, object]]) -> None:
    bad = [(q, exp, got) for q, exp, got in pairs if exp != got]
    if bad:
        lines = [f"  {what}{q}: expected {exp!r}, index said {got!r}" for q, exp, got in bad[:10]]
        raise AssertionError(f"{len(bad)} wrong answers of {what}:\n" + "\n".join(lines))


def valid_groups(ix: Index, oracle: Oracle, groups: list[str], probe: str) -> list[str]:
    """The groups the model can resolve; for the rest, assert that the index refuses them."""
    ok = []
    for g in groups:
        try:
            oracle.full_group(g)
        except NotASet:
            for call in (
                lambda g=g: ix.check(probe, g),
                lambda g=g: ix.members_of(g),
                lambda g=g: ix.explain(probe, g),
            ):
                with pytest.raises(InvalidInput):
                    call()
            continue
        ok.append(g)
    return ok


def compare_checks(ix: Index, oracle: Oracle, subjects: list[str], groups: list[str]) -> None:
    _mismatches(
        "check",
        (((s, g), oracle.check(s, g), ix.check(s, g)) for s in subjects for g in groups),
    )


def compare_groups_of(ix: Index, oracle: Oracle, subjects: list[str]) -> None:
    _mismatches("groups_of", (((s,), oracle.groups_of(s), ix.groups_of(s)) for s in subjects))


def compare_members_of(ix: Index, oracle: Oracle, groups: list[str]) -> None:
    results = []
    leaves = sorted(oracle.leaf_names())
    elsewhere = [leaves[0], leaves[len(leaves) // 2], leaves[-1]] if leaves else []
    for g in groups:
        everyone = oracle.members_of(g)
        results.append(((g,), everyone, ix.members_of(g)))
        afters: list[str] = [*ABSENT_NAMES[1:], *elsewhere]
        if everyone:
            afters += [everyone[0], everyone[len(everyone) // 2], everyone[-1]]
            afters.append(everyone[len(everyone) // 2] + "0")  # between two names, maybe
        for limit in (0, 1, 3, None):
            for after in (None, *afters):
                results.append(
                    (
                        (g, limit, after),
                        oracle.members_of(g, limit=limit, after=after),
                        ix.members_of(g, limit=limit, after=after),
                    )
                )
        # walk the pages: concatenated they must be the whole list, in order
        pages: list[str] = []
        after = None
        for _ in range(len(everyone) + 2):
            page = ix.members_of(g, limit=2, after=after)
            if not page:
                break
            pages += page
            after = page[-1]
        results.append(((g, "pages of 2"), everyone, pages))
    _mismatches("members_of", results)


def compare_explain(ix: Index, oracle: Oracle, subjects: list[str], groups: list[str]) -> None:
    bad = []
    for s in subjects:
        for g in groups:
            expected = oracle.explain_length(s, g)
            chain = ix.explain(s, g)
            if expected is None or chain is None:
                if expected is not None or chain is not None:
                    bad.append(f"  explain({s!r}, {g!r}): expected length {expected}, got {chain}")
                continue
            problem = oracle.chain_problem(s, g, chain)
            if problem:
                bad.append(f"  explain({s!r}, {g!r}) = {chain}: {problem}")
            elif len(chain) != expected:
                bad.append(f"  explain({s!r}, {g!r}) = {chain}: a shortest chain has {expected}")
    if bad:
        raise AssertionError(f"{len(bad)} wrong explanations:\n" + "\n".join(bad[:10]))


def compare_report(report: leopard.BuildReport, oracle: Oracle, graph: Graph) -> None:
    assert report.tuples_read == len(graph.lines)
    assert report.rejected == 0
    assert report.tuples_indexed == oracle.indexed
    assert sum(report.skipped.values()) == oracle.skipped, report.skipped
    assert report.groups == len(oracle.groups)
    assert report.subjects == len(oracle.leaf_names())
    assert report.nested_edges == sum(len(c) for c in oracle.children.values())
    assert report.member_edges == sum(len(m) for m in oracle.leaves.values())


def compare_everything(ix: Index, oracle: Oracle) -> None:
    subjects, groups = universe(oracle)
    groups = valid_groups(ix, oracle, groups, subjects[0])
    compare_checks(ix, oracle, subjects, groups)
    compare_groups_of(ix, oracle, subjects)
    compare_members_of(ix, oracle, groups)
    compare_explain(ix, oracle, subjects, groups)


# -- the main property --------------------------------------------------------------------


@settings(max_examples=70, **SETTINGS)
@given(
    graph=graphs(),
    id_order=st.sampled_from(["dfs", "input"]),
    batches=st.integers(1, 4),
    fold=st.sampled_from([0, 1, 5]),
)
def test_every_query_matches_the_model(
    graph: Graph, id_order: str, batches: int, fold: int
) -> None:
    oracle = Oracle(graph.lines, graph.config)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ix"
        report = build(graph, path, id_order=id_order, batches=batches, fold=fold)
        compare_report(report, oracle, graph)
        with leopard.open_index(path) as ix:
            compare_everything(ix, oracle)


# -- narrower properties ------------------------------------------------------------------


@settings(max_examples=10, **SETTINGS)
@given(graph=graphs(max_random=15))
def test_both_id_orders_answer_alike(graph: Graph) -> None:
    oracle = Oracle(graph.lines, graph.config)
    subjects, groups = universe(oracle)
    answers = []
    with tempfile.TemporaryDirectory() as tmp:
        for order in ("dfs", "input"):
            path = Path(tmp) / order
            build(graph, path, id_order=order)
            with Index(path) as ix:
                groups_ok = valid_groups(ix, oracle, groups, subjects[0])
                answers.append(
                    (
                        [ix.check(s, g) for s in subjects for g in groups_ok],
                        [ix.groups_of(s) for s in subjects],
                        [ix.members_of(g) for g in groups_ok],
                        [len(ix.explain(s, g) or ()) for s in subjects for g in groups_ok],
                    )
                )
    assert answers[0] == answers[1]


@settings(max_examples=10, **SETTINGS)
@given(graph=graphs(max_random=15), data=st.data())
def test_check_many_is_check_in_order(graph: Graph, data: st.DataObject) -> None:
    oracle = Oracle(graph.lines, graph.config)
    subjects, groups = universe(oracle)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ix"
        build(graph, path)
        with Index(path) as ix:
            groups = valid_groups(ix, oracle, groups, subjects[0])
            pairs = data.draw(
                st.lists(st.tuples(st.sampled_from(subjects), st.sampled_from(groups)), max_size=60)
            )
            expected = [oracle.check(s, g) for s, g in pairs]
            assert ix.check_many(pairs) == expected
            assert ix.check_many(iter(pairs)) == expected  # any iterable of pairs
            assert ix.check_many(p for p in pairs) == expected
            assert ix.check_many([]) == []
            ix.warm()
            assert ix.check_many(pairs) == expected  # resolves the groups
            assert ix.check_many(pairs) == expected  # the in-memory path throughout
            assert [ix.check(s, g) for s, g in pairs] == expected


@settings(max_examples=8, **SETTINGS)
@given(graph=graphs(max_random=15))
def test_reopen_gives_the_same_answers(graph: Graph) -> None:
    oracle = Oracle(graph.lines, graph.config)
    subjects, groups = universe(oracle)

    def answers(ix: Index) -> tuple[object, ...]:
        ok = valid_groups(ix, oracle, groups, subjects[0])
        return (
            [ix.check(s, g) for s in subjects for g in ok],
            [ix.groups_of(s) for s in subjects],
            [ix.members_of(g) for g in ok],
            [ix.members_of(g, limit=2, after="user:b") for g in ok],
            [ix.explain(s, g) for s in subjects for g in ok],
        )

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ix"
        build(graph, path)
        ix = leopard.open_index(path)
        first = answers(ix)
        ix.close()
        with leopard.open_index(str(path)) as again:  # a str path works the same
            assert answers(again) == first
            assert again.config == graph.config
            compare_checks(again, oracle, subjects, valid_groups(again, oracle, groups, "user:a"))


@settings(max_examples=6, **SETTINGS)
@given(old=graphs(max_random=10), new=graphs(max_random=10))
def test_rebuild_in_place_replaces_the_old_index(old: Graph, new: Graph) -> None:
    oracle = Oracle(new.lines, new.config)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ix"
        build(old, path)
        build(new, path)
        with Index(path) as ix:
            compare_everything(ix, oracle)


@settings(max_examples=8, **SETTINGS)
@given(graph=graphs(max_random=15))
def test_build_index_from_lines(graph: Graph) -> None:
    """The front door: ``leopard.build_index`` over iterables of tuple lines."""
    oracle = Oracle(graph.lines, graph.config)
    half = len(graph.lines) // 2
    sources = [list(graph.lines[:half]), iter(graph.lines[half:])]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ix"
        report = leopard.build_index(sources, path, graph.config, force=True)  # may be empty
        compare_report(report, oracle, graph)
        with leopard.open_index(path) as ix:
            compare_everything(ix, oracle)


# -- hand-written cases the strategies reach only by luck --------------------------------


CASES = {
    "self loop": ["group:a#member@group:a#member", "group:a#member@user:x"],
    "two cycles joined": [
        "group:a#member@group:b#member",
        "group:b#member@group:a#member",
        "group:b#member@group:c#member",
        "group:c#member@group:d#member",
        "group:d#member@group:c#member",
        "group:d#member@user:x",
        "group:a#member@user:*",
    ],
    "diamond": [
        "group:top#member@group:l#member",
        "group:top#member@group:r#member",
        "group:l#member@group:bottom#member",
        "group:r#member@group:bottom#member",
        "group:bottom#member@user:x",
        "group:bottom#member@user:x#...",
        "group:r#member@user:x",
    ],
    "only skipped tuples": ["doc:a#viewer@user:x", "group:a#owner@user:y"],
    "empty": [],
    "opaque and wildcard leaves": [
        "group:a#member@group:b#owner",
        "group:a#member@service:*",
        "group:b#member@group:a#member",
        "acme/group:t#member@group:a#member",
        "acme/group:t#member@acme/user:*",
    ],
    "a subject id with @": ["group:e@x.com#member@user:anne@example.com"],
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_hand_written_graphs(name: str, config_name: str, tmp_path: Path) -> None:
    graph = Graph(config_name, tuple(CASES[name]))
    oracle = Oracle(graph.lines, graph.config)
    report = build(graph, tmp_path / "ix")
    compare_report(report, oracle, graph)
    with Index(tmp_path / "ix") as ix:
        compare_everything(ix, oracle)


def test_the_model_itself_on_a_known_graph() -> None:
    """The oracle must be right for the comparisons to mean anything."""
    o = Oracle(CASES["two cycles joined"], Config())
    assert o.check("user:x", "group:a") and o.check("user:x", "group:c#member")
    assert o.check("user:anyone", "group:a") and o.check("user:anyone", "group:b")
    assert not o.check("user:anyone", "group:c")
    assert not o.check("service:s", "group:a")
    assert o.check("group:d#member", "group:a") and not o.check("group:a#member", "group:d")
    assert o.check("group:c#member", "group:c")
    assert not o.check("group:zz#member", "group:zz")
    assert o.groups_of("user:x") == [f"group:{c}#member" for c in "abcd"]
    assert o.groups_of("user:q") == ["group:a#member", "group:b#member"]
    assert o.members_of("group:a") == ["user:*", "user:x"]
    assert o.members_of("group:a", limit=1, after="user:*") == ["user:x"]
    assert o.explain_length("user:x", "group:a") == 1  # group:a holds user:*
    assert o.explain_length("user:x", "group:b") == 2
    assert o.explain_length("group:d#member", "group:a") == 4
    assert o.explain_length("group:a#member", "group:a") == 1
    assert o.explain_length("user:x", "group:d") == 1
    assert o.explain_length("user:q", "group:c") is None
    assert o.chain_problem("user:x", "group:a", ["group:a#member", "group:c#member"])
    assert o.chain_problem("user:x", "group:b", ["group:a#member"])
    assert o.chain_problem("user:x", "group:c", ["group:c#member"])
    good = ["group:a#member", "group:b#member", "group:c#member", "group:d#member"]
    assert o.chain_problem("user:x", "group:a", good) is None
    with pytest.raises(NotASet):
        o.full_group("group:a#owner")


def test_the_strategies_reach_the_hard_shapes() -> None:
    """Deep chains, cycles, self-loops, wide fans, wildcards, opaque usersets, duplicates."""
    seen: set[str] = set()

    # derandomized: the same 200 graphs every run, so this can never flake
    @settings(max_examples=200, database=None, derandomize=True, **SETTINGS)
    @given(graphs())
    def look(graph: Graph) -> None:
        o = Oracle(graph.lines, graph.config)
        lines = list(graph.lines)
        if len(lines) != len(set(lines)):
            seen.add("duplicate")
        if any(line.endswith("#...") for line in lines):
            seen.add("#...")
        if any(line.endswith(":*") for line in lines):
            seen.add("wildcard")
        if o.skipped:
            seen.add("skipped")
        if any("#" in leaf for leaf in o.leaf_names()):
            seen.add("opaque")
        if any(g in c for g, c in o.children.items()):
            seen.add("self-loop")
        if any(g in o.reach(c) for g, cs in o.children.items() for c in cs if c != g):
            seen.add("cycle")
        if any(len(c) + len(o.leaves[g]) >= 40 for g, c in o.children.items()):
            seen.add("wide fan")
        if _depth(o) >= 20:
            seen.add("deep chain")
        if any(ns + ":" in line for line in lines for ns in ("acme/group",)):
            seen.add("tenant")
        if graph.config_name != "default" and any("#manager@" in line for line in lines):
            seen.add("union")
        if graph.config_name == "union" and any(
            line.startswith("team:") and "#direct_member@" in line for line in lines
        ):
            seen.add("set fed by another relation")

    look()
    assert seen == {
        "duplicate",
        "#...",
        "wildcard",
        "skipped",
        "opaque",
        "self-loop",
        "cycle",
        "wide fan",
        "deep chain",
        "tenant",
        "union",
        "set fed by another relation",
    }


def _depth(o: Oracle) -> int:
    """Groups on the longest simple downward path from any group (bounded search)."""
    best = 0
    for start in o.groups:
        frontier = {start}
        seen = {start}
        depth = 1
        while frontier:
            frontier = {c for g in frontier for c in o.children[g]} - seen
            seen |= frontier
            if frontier:
                depth += 1
        best = max(best, depth)
    return best


# -- malformed names ----------------------------------------------------------------------


BAD_NAMES = [
    "",
    "user",
    "user:",
    ":a",
    "us@er:a",
    "user:a b",
    "user:a#",
    "user:a#mem@ber",
    "user:a#mem ber",
    "user:a\n",
    "user:a:b:c!",
    "acme:x/user:a",
    "group:a#member@user:b",
]
BAD_SUBJECTS = [*BAD_NAMES, "user:*#member", "user:a#member#member"]
BAD_GROUPS = [*BAD_NAMES, "group:*", "group:*#member", "group:a#..."]


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory) -> Iterable[Index]:
    path = tmp_path_factory.mktemp("bad") / "ix"
    build(Graph("default", tuple(CASES["two cycles joined"])), path)
    with Index(path) as ix:
        yield ix


@pytest.mark.parametrize("name", BAD_SUBJECTS)
def test_malformed_subjects_are_refused(small_index: Index, name: str) -> None:
    for call in (
        lambda: small_index.check(name, "group:a"),
        lambda: small_index.check_many([("user:x", "group:a"), (name, "group:a")]),
        lambda: small_index.groups_of(name),
        lambda: small_index.explain(name, "group:a"),
        lambda: small_index.check(name, "group:zz"),  # an unknown group does not hide it
    ):
        with pytest.raises(LeopardError) as info:
            call()
        assert type(info.value) is not LeopardError
        assert str(info.value)


@pytest.mark.parametrize("name", BAD_GROUPS)
def test_malformed_groups_are_refused(small_index: Index, name: str) -> None:
    for call in (
        lambda: small_index.check("user:x", name),
        lambda: small_index.members_of(name),
        lambda: small_index.members_of(name, limit=1, after="user:a"),
        lambda: small_index.explain("user:x", name),
    ):
        with pytest.raises(LeopardError) as info:
            call()
        assert type(info.value) is not LeopardError
        assert str(info.value)


def test_names_over_the_size_limit_are_refused(small_index: Index) -> None:
    """``parse_subject``/``parse_object`` refuse names over MAX_TUPLE_BYTES; so must queries."""
    subject = "user:" + "x" * MAX_TUPLE_BYTES
    group = "group:" + "x" * MAX_TUPLE_BYTES
    with pytest.raises(InvalidTuple):
        parse_subject(subject)
    with pytest.raises(InvalidTuple):
        parse_object(group)
    with pytest.raises(InvalidTuple):
        small_index.check(subject, "group:a")
    with pytest.raises(InvalidTuple):
        small_index.groups_of(subject)
    with pytest.raises(InvalidTuple):
        small_index.check("user:x", group)
    with pytest.raises(InvalidTuple):
        small_index.members_of(group)


@pytest.mark.parametrize("value", [None, 1, b"user:x", ("user", "x")])
def test_names_that_are_not_strings_are_refused(small_index: Index, value: object) -> None:
    with pytest.raises(InvalidInput):
        small_index.check(value, "group:a")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        small_index.check("user:x", value)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        small_index.groups_of(value)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        small_index.members_of(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("limit", "after"), [(-1, None), (1.5, None), ("3", None), (None, ""), (None, 3)]
)
def test_bad_paging_arguments_are_refused(small_index: Index, limit: object, after: object) -> None:
    with pytest.raises(InvalidInput):
        small_index.members_of("group:a", limit=limit, after=after)  # type: ignore[arg-type]
