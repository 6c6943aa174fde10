"""Schemas with computed usersets and arrows, against the plain BFS oracle.

Hypothesis draws a small SpiceDB schema (each type has a tupleset relation of plain
objects, a relation of users, wildcards and usersets, and two permissions that are
unions of relations, earlier permissions and arrows, the arrows often recursive:
folders in folders, cycles through arrows included), and random tuples over a few
objects of each type (some of a subject type their relation does not allow). The index
built from them, and then changed by random batches (with compactions and reopens
between them), must answer ``check``, ``groups_of``, ``members_of`` and ``explain``
exactly as the oracle of ``tests/support/oracle.py`` does on the same tuples.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from support.held import held
from support.oracle import NotASet, Oracle

import leopard
import leopard.core.build as build_module
from leopard.core.compact import compact
from leopard.core.incremental import DeltaWriter
from leopard.core.index import Index
from leopard.errors import InvalidInput
from leopard.model import bitpack, layered
from leopard.model.config import schema_config
from leopard.model.names import parse_tuple

TYPES = ("ta0", "ta1", "ta2")
OBJECTS = 3  # objects per type
USERS = ("user:a", "user:b", "user:c")


@st.composite
def schemas(draw: st.DrawFn) -> tuple[str, bool]:
    """SpiceDB schema text; whether one permission is an exclusion (not indexable)."""
    n_types = draw(st.integers(1, 3))
    types = TYPES[:n_types]
    lines = ["definition user {}"]
    excluded = False
    for t in types:
        parents = draw(st.lists(st.sampled_from(types), min_size=1, max_size=2, unique=True))
        # usersets name only rel1, which allows no wildcard: SpiceDB refuses a wildcard
        # included through another relation; the wildcard lives in rel2
        usersets = [f"{u}#rel1" for u in types]
        allowed = draw(st.lists(st.sampled_from(["user", *usersets]), min_size=1, unique=True))
        terms0 = ["rel1", "rel2", "rel0->perm0", "rel0->rel1"]
        p0 = draw(st.lists(st.sampled_from(terms0), min_size=1, unique=True))
        terms1 = ["perm0", "rel1", "rel0->perm1", "rel0->perm0"]
        p1 = draw(st.lists(st.sampled_from(terms1), min_size=1, unique=True))
        op = " + "
        if draw(st.integers(0, 5)) == 0 and len(p1) > 1:
            op, excluded = " - ", True
        lines += [
            f"definition {t} {{",
            f"  relation rel0: {' | '.join(parents)}",
            f"  relation rel1: {' | '.join(allowed)}",
            "  relation rel2: user | user:*",
            f"  permission perm0 = {' + '.join(p0)}",
            f"  permission perm1 = {op.join(p1)}",
            "}",
        ]
    return "\n".join(lines) + "\n", excluded


def tuples_for(types: list[str]) -> st.SearchStrategy[str]:
    objects = [f"{t}:o{i}" for t in types for i in range(OBJECTS)]
    subjects = [
        *USERS,
        "user:*",
        *objects,
        *(f"{o}#{r}" for o in objects for r in ("rel1", "perm0")),
    ]
    return st.builds(
        lambda o, r, s: f"{o}#{r}@{s}",
        st.sampled_from(objects),
        st.sampled_from(["rel0", "rel1"]),
        st.sampled_from(subjects),
    )


def _sets(types: list[str]) -> list[str]:
    objects = [f"{t}:o{i}" for t in types for i in range(OBJECTS)]
    return [f"{o}#{r}" for o in objects for r in ("rel0", "rel1", "perm0", "perm1")]


def compare(ix: Index, oracle: Oracle, types: list[str]) -> None:
    objects = [f"{t}:o{i}" for t in types for i in range(OBJECTS)]
    sets = _sets(types)
    subjects = [
        *USERS,
        "user:z",
        "user:*",
        *(f"{o}#{r}" for o in objects for r in ("rel1", "perm0")),
    ]
    for group in sets:
        try:
            want_members = oracle.members_of(group)
        except NotASet:
            with pytest.raises(InvalidInput, match="not indexed"):
                ix.check("user:a", group)
            continue
        assert ix.members_of(group) == want_members, group
        for subject in subjects:
            want = oracle.check(subject, group)
            assert ix.check(subject, group) == want, (subject, group)
            chain = ix.explain(subject, group)
            assert (chain is not None) == want, (subject, group, chain)
            if chain is not None:
                problem = oracle.chain_problem(subject, group, chain)
                assert problem is None, problem
                assert len(chain) == oracle.explain_length(subject, group)
    indexed = [g for g in sets if _is_set(oracle, g)]
    for subject in subjects:
        assert ix.groups_of(subject) == oracle.groups_of(subject), subject
        pairs = [(subject, g) for g in indexed]
        assert ix.check_many(pairs) == [oracle.check(s, g) for s, g in pairs], subject


def _is_set(oracle: Oracle, group: str) -> bool:
    try:
        oracle.full_group(group)
    except NotASet:
        return False
    return True


def _types_of(text: str) -> list[str]:
    return [t for t in TYPES if f"definition {t} " in text]


def schema_case(data: st.DataObject, directory: Path) -> tuple[list[str], list[str], Any]:
    """A drawn schema (written to ``directory``) and tuples for it, at least one: the
    schema's types, the tuple lines and the configuration."""
    text, _ = data.draw(schemas())
    types = _types_of(text)
    lines = data.draw(st.lists(tuples_for(types), max_size=40))
    assume(lines)
    schema_file = directory / "schema.zed"
    schema_file.write_text(text)
    return types, lines, schema_config(schema_file)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_built_index_answers_as_the_oracle(tmp_path_factory, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    text, _ = data.draw(schemas())
    types = _types_of(text)
    lines = data.draw(st.lists(tuples_for(types), max_size=40))
    path = tmp_path_factory.mktemp("ix")
    schema_file = path / "schema.zed"
    schema_file.write_text(text)
    config = schema_config(schema_file)
    assume(lines)
    # half the time, the build's bulk paths in small pieces: every layer of resource
    # closures by numpy, bitmaps serialized a few values and keys written a few at a
    # time (at their defaults, a graph this small takes the one-at-a-time paths)
    small = data.draw(st.booleans())
    saved = (layered.NARROW, bitpack._CHUNK, build_module._KEYS_AT_ONCE)
    if small:
        layered.NARROW, bitpack._CHUNK, build_module._KEYS_AT_ONCE = 1, 4, 3
    try:
        report = leopard.build_index([lines], path / "idx", config, force=True)
    finally:
        layered.NARROW, bitpack._CHUNK, build_module._KEYS_AT_ONCE = saved
    oracle = Oracle(lines, config)
    assert report.tuples_indexed == oracle.indexed
    with leopard.open_index(path / "idx") as ix:
        compare(ix, oracle, types)
        # in memory: a check resolves each set once, then answers from what it held
        ix.warm()
        compare(ix, oracle, types)
        compare(ix, oracle, types)
        # what the lockless path answers alone (resource-tier sets, wildcards, sets as
        # subjects), and that it answers at all once the checks above held the sets
        answered = 0
        held_subjects = [key.decode() for key in ix._c.subjects or ()]
        for subject in [*USERS, "user:z", "user:*", *held_subjects]:
            for group in (g for g in _sets(types) if _is_set(oracle, g)):
                found = held(ix, subject, group)
                if found is not None:
                    answered += 1
                    assert found == oracle.check(subject, group), (subject, group)
        assert answered > 0 or not held_subjects


class SchemaMachine(RuleBasedStateMachine):
    """Random batches of changes, compactions and reopens, checked after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.ix: Index | None = None
        self.writer: DeltaWriter | None = None
        self.counter = itertools.count()

    @initialize(data=st.data())
    def start(self, data: st.DataObject) -> None:
        text, _ = data.draw(schemas())
        self.types = _types_of(text)
        self.strategy = tuples_for(self.types)
        base = data.draw(st.lists(self.strategy, min_size=1, max_size=25))
        self.dir = Path(TMP.mktemp("machine"))
        schema_file = self.dir / "schema.zed"
        schema_file.write_text(text)
        self.config = schema_config(schema_file)
        self.path = self.dir / "idx"
        leopard.build_index([base], self.path, self.config, force=True)
        self.tuples = set(base)
        self._open()

    def _open(self) -> None:
        self.ix = Index(self.path)
        self.writer = DeltaWriter(self.ix.reader)

    def _close(self) -> None:
        assert self.ix is not None and self.writer is not None
        self.writer.close()
        self.ix.close()

    @rule(data=st.data())
    def batch(self, data: st.DataObject) -> None:
        assert self.writer is not None
        changes = []
        for _ in range(data.draw(st.integers(1, 6))):
            if self.tuples and data.draw(st.booleans()):
                line = data.draw(st.sampled_from(sorted(self.tuples)))
                changes.append(("delete", parse_tuple(line)))
                self.tuples.discard(line)
            else:
                line = data.draw(self.strategy)
                changes.append(("touch", parse_tuple(line)))
                self.tuples.add(line)
        self.writer.apply(changes)

    @rule()
    def compact_and_reopen(self) -> None:
        self._close()
        compact(self.path)
        self._open()

    @rule()
    def reopen(self) -> None:
        self._close()
        self._open()

    @rule()
    def warm(self) -> None:
        """Hold the base in memory: the checks after it take the in-memory paths, and
        from the second on answer from the sets the first resolved, through changes."""
        assert self.ix is not None
        self.ix.warm()

    @invariant()
    def answers_as_the_oracle(self) -> None:
        if self.ix is not None:
            compare(self.ix, Oracle(sorted(self.tuples), self.config), self.types)

    def teardown(self) -> None:
        if self.ix is not None:
            self._close()


TMP: pytest.TempPathFactory


@pytest.fixture(autouse=True)
def _tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    global TMP
    TMP = tmp_path_factory


@pytest.mark.slow
def test_changes_compactions_and_reopens_answer_as_the_oracle() -> None:
    SchemaMachine.TestCase.settings = settings(
        max_examples=25, stateful_step_count=8, deadline=None
    )
    SchemaMachine.TestCase().runTest()
