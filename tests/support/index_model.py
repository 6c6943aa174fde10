"""The incremental layer's model for tests: expected answers after a batch of changes, and a
comparison of every query of an index with the BFS oracle."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from leopard.core.batches import table_from_tuples
from leopard.core.build import build_from_batches
from leopard.core.index import Index
from leopard.errors import InvalidInput
from leopard.model.config import Config
from leopard.model.names import RelationTuple, format_tuple, parse_tuple
from support.oracle import NotASet, Oracle

TOPIC = "changes"

# A union rewrite: ``group#member`` fed by the stored relations member and manager.
REWRITE = Config.model_validate(
    {
        "sets": [
            {"namespace": "group", "relation": "member", "from": ["member", "manager"]},
            {"namespace": "team", "relation": "member"},
        ]
    }
)

# -- the model ------------------------------------------------------------------------


def sources_of(config: Config, group: str) -> list[str]:
    """The stored relations that feed the set ``group`` (``ns:id#set``)."""
    obj, _, set_rel = group.partition("#")
    ns = obj.split(":", 1)[0]
    for s in config.sets or ():
        if s.namespace == ns and s.relation == set_rel:
            return s.sources
    return [set_rel]


def edges_of(config: Config, t: RelationTuple) -> list[tuple[str, str | None]]:
    """``(group, nested set or None)`` for each set a stored tuple feeds."""
    out: list[tuple[str, str | None]] = []
    srel = t.subject_relation
    nested = srel is not None and config.is_set(t.subject_type, srel)
    for set_rel in config.feeds(t.resource_type, t.relation):
        child = f"{t.subject_type}:{t.subject_id}#{srel}" if nested else None
        out.append((f"{t.resource_type}:{t.resource_id}#{set_rel}", child))
    return out


def groups_named(config: Config, t: RelationTuple) -> set[str]:
    """The groups a fed tuple names: its resource's sets, and a nested subject set."""
    return {g for edge in edges_of(config, t) for g in edge if g is not None}


class Model:
    """The set of stored tuples, and the names of groups the index knows.

    ``known`` follows the index's rule for group names: every group of the current
    tuples (a group emptied by deletes answers as unknown, before compaction too).
    """

    def __init__(self, config: Config, tuples: Iterable[RelationTuple] = ()) -> None:
        self.config = config
        self.tuples: set[RelationTuple] = set(tuples)
        self.known: set[str] = set()
        # how many current tuples name each group: ``known`` is those named at all,
        # kept up to date change by change (recounting every tuple after every
        # change made long streams quadratic)
        self._named: Counter[str] = Counter()
        self.rebased()

    def rebased(self) -> None:
        """A build or compaction: the index knows exactly the groups of the tuples."""
        self._named = Counter(g for t in self.tuples for g in groups_named(self.config, t))
        self.known = set(self._named)

    def apply(self, changes: Iterable[tuple[str, RelationTuple]]) -> None:
        """Apply one batch: the last change of each tuple wins (a touch overtaken by a
        delete in the same batch never happened, so it names no group either)."""
        last: dict[RelationTuple, str] = {}
        for op, t in changes:
            last[t] = op
        named, known = self._named, self.known
        for t, op in last.items():
            if op == "touch" and t not in self.tuples:
                self.tuples.add(t)
                for g in groups_named(self.config, t):
                    named[g] += 1
                    known.add(g)
            elif op != "touch" and t in self.tuples:
                self.tuples.discard(t)
                # an emptied group answers as unknown, as after a rebuild
                for g in groups_named(self.config, t):
                    named[g] -= 1
                    if not named[g]:
                        del named[g]
                        known.discard(g)

    def oracle(self) -> Oracle:
        """The BFS oracle of the tuples, with the lingering group names as empty groups."""
        o = Oracle(sorted(self.tuples, key=format_tuple), self.config)
        for g in self.known - o.groups:
            o.groups.add(g)
            o.children[g] = set()
            o.leaves[g] = set()
        return o


# -- comparing every query ------------------------------------------------------------

EXTRA_SUBJECTS = (
    "user:zz",
    "user:*",
    "service:*",
    "group:zz#member",
    "group:a#owner",
    "user:a#...",
)
EXTRA_GROUPS = ("group:zz#member", "group:a", "group:a#owner", "team:a", "doc:a")


def universe(
    oracle: Oracle, limit: int | None = None, exclude: Iterable[str] = ()
) -> tuple[list[str], list[str]]:
    """Subjects and groups to ask about; ``limit`` keeps a deterministic sample of each.

    ``exclude`` names subjects not to ask about (see ``compare_all``).
    """
    leaves = sorted(oracle.leaf_names())
    subjects = set(leaves) | set(oracle.groups) | set(EXTRA_SUBJECTS)
    subjects -= set(exclude)
    for leaf in leaves[:5]:
        if "#" not in leaf:
            subjects.add(leaf + "#...")
    groups = set(oracle.groups) | set(EXTRA_GROUPS)
    for g in sorted(oracle.groups)[:5]:
        groups.add(g.split("#", 1)[0])
    s, g = sorted(subjects), sorted(groups)
    if limit is not None:
        s, g = s[:: max(1, len(s) // limit)], g[:: max(1, len(g) // limit)]
    return s, g


def _fail(what: str, bad: Sequence[str]) -> None:
    if bad:
        raise AssertionError(f"{len(bad)} wrong answers of {what}:\n" + "\n".join(bad[:12]))


def resolvable(ix: Index, oracle: Oracle, groups: list[str]) -> list[str]:
    """Groups the model resolves; the others must be refused by the index."""
    ok = []
    for g in groups:
        try:
            oracle.full_group(g)
        except NotASet:
            with pytest.raises(InvalidInput):
                ix.check("user:a", g)
            with pytest.raises(InvalidInput):
                ix.members_of(g)
            continue
        ok.append(g)
    return ok


def compare_all(
    ix: Index, oracle: Oracle, *, sample: int | None = None, exclude: Iterable[str] = ()
) -> None:
    """Every query of a universe of names, index against oracle.

    ``sample`` asks about that many subjects and groups instead of all of them;
    ``exclude`` leaves out subjects whose answer depends on batch boundaries that the
    caller cannot know (a group emptied by deletes, see the module docstring).
    """
    subjects, groups = universe(oracle, sample, exclude)
    groups = resolvable(ix, oracle, groups)
    bad = []
    answers = ix.check_many([(s, g) for s in subjects for g in groups])
    for (s, g), got in zip(((s, g) for s in subjects for g in groups), answers, strict=True):
        if oracle.check(s, g) != got:
            bad.append(f"  check({s!r}, {g!r}): expected {not got}, index said {got}")
    _fail("check", bad)
    for s in subjects:
        exp, got = oracle.groups_of(s), ix.groups_of(s)
        if exp != got:
            bad.append(f"  groups_of({s!r}): expected {exp}, index said {got}")
    _fail("groups_of", bad)
    for g in groups:
        everyone = oracle.members_of(g)
        got_all = ix.members_of(g)
        if got_all != everyone:
            bad.append(f"  members_of({g!r}): expected {everyone}, index said {got_all}")
            continue
        afters = ["A", "user:zz"] + everyone[:1] + everyone[len(everyone) // 2 :][:1]
        for limit, after in [(1, None), (2, None), *((2, a) for a in afters), (None, "service")]:
            exp = oracle.members_of(g, limit=limit, after=after)
            got = ix.members_of(g, limit=limit, after=after)
            if exp != got:
                bad.append(f"  members_of({g!r}, {limit}, {after!r}): {exp} != {got}")
        pages: list[str] = []
        after = None
        for _ in range(len(everyone) + 1):
            page = ix.members_of(g, limit=3, after=after)
            if not page:
                break
            pages += page
            after = page[-1]
        if pages != everyone:
            bad.append(f"  members_of({g!r}) in pages of 3: {pages} != {everyone}")
    _fail("members_of", bad)
    for s in subjects:
        for g in groups:
            expected = oracle.explain_length(s, g)
            chain = ix.explain(s, g)
            if expected is None or chain is None:
                if expected is not None or chain is not None:
                    bad.append(f"  explain({s!r}, {g!r}): expected length {expected}, got {chain}")
                continue
            problem = oracle.chain_problem(s, g, chain)
            if problem or len(chain) != expected:
                bad.append(f"  explain({s!r}, {g!r}) = {chain}: {problem or expected}")
    _fail("explain", bad)


# -- building ---------------------------------------------------------------------------


def build(path: Path, config: Config, lines: Iterable[str], position: dict[str, int]) -> None:
    tuples = [parse_tuple(line) for line in lines]
    build_from_batches([table_from_tuples(tuples)], path, config, position=position)


def changes(*lines: str) -> list[tuple[str, RelationTuple]]:
    """``+tuple``/``-tuple`` lines as ``(op, tuple)`` changes."""
    return [("touch" if ln[0] == "+" else "delete", parse_tuple(ln[1:])) for ln in lines]


# -- the state machine --------------------------------------------------------------------
