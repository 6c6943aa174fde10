"""Hypothesis strategies for random group graphs and the configurations that read them.

Random tuples over a small alphabet already collide often (the same group under
several names, the same tuple twice), but the shapes that break closure code are
too rare to leave to luck, so ``graphs`` injects them explicitly:

* chains up to 30 groups deep, which may run into the random part or each other;
* cycles of 1 to 6 groups (a cycle of one is a self-loop);
* a fan: one group with up to 50 children, leaves or nested groups;
* duplicates: a tuple written twice, and ``user:a#...`` beside ``user:a``;
* wildcards (``user:*``), opaque usersets of unindexed relations
  (``group:x#owner``), tuples of unindexed relations (skipped by the build) and
  tenant-prefixed namespaces (``acme/group``).

Three configurations cover the default (every ``ns#member``), union rewrites
(``group#member`` fed by ``member`` and ``manager``; ``team#member`` fed only by
``direct_member``) and a namespace with two sets (so ``group:x`` alone is ambiguous).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from hypothesis import strategies as st

from leopard.model.config import Config


def preload_failure_reporter() -> None:
    """Import hypothesis' failure patcher now, with its DeprecationWarning silenced.

    When a test fails, hypothesis' pytest plugin imports ``hypothesis.extra._patching``
    (through libcst, which builds ``mypy_extensions.TypedDict`` classes: a
    DeprecationWarning). Under ``filterwarnings = error`` that import raises inside
    the report hook and the failure shows up as an INTERNALERROR with no falsifying
    example. Importing it here first keeps failures readable. The proper fix is an
    ``ignore`` entry for that warning in pyproject's filterwarnings.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import hypothesis.extra._patching  # noqa: F401
        except ImportError:  # libcst missing: the plugin skips patches quietly
            pass


preload_failure_reporter()

__all__ = [
    "preload_failure_reporter",
    "CONFIGS",
    "GROUP_NAMESPACES",
    "LEAF_NAMESPACES",
    "RELATIONS",
    "SMALL_IDS",
    "Graph",
    "graphs",
    "tuple_lines",
]

GROUP_NAMESPACES = ("group", "team", "acme/group")
LEAF_NAMESPACES = ("user", "service", "acme/user")
RELATIONS = ("member", "manager", "viewer", "owner", "direct_member")
# Few ids so that names collide; a few with the odd characters ids may hold and
# with an upper-case letter (sorts before lower case), to exercise name order.
SMALL_IDS = ("a", "b", "c", "d", "A", "a-b", "e@x.com")

DEFAULT = Config()
UNION = Config.model_validate(
    {
        "sets": [
            {"namespace": "group", "relation": "member", "from": ["member", "manager"]},
            # fed only by another relation: team:x#member tuples are skipped, yet
            # team:x#member as a subject is a nested set
            {"namespace": "team", "relation": "member", "from": ["direct_member"]},
            {"namespace": "acme/group", "relation": "member", "from": ["member", "manager"]},
        ]
    }
)
TWO_SETS = Config.model_validate(
    {
        "sets": [
            {"namespace": "group", "relation": "member", "from": ["member", "manager"]},
            {"namespace": "group", "relation": "viewer", "from": ["viewer", "member"]},
            {"namespace": "team", "relation": "member", "from": ["member"]},
            {"namespace": "acme/group", "relation": "member"},
        ]
    }
)
CONFIGS = {"default": DEFAULT, "union": UNION, "two_sets": TWO_SETS}


@dataclass(frozen=True)
class Graph:
    """A generated input: the configuration name and the tuple lines, in input order."""

    config_name: str
    lines: tuple[str, ...]

    @property
    def config(self) -> Config:
        return CONFIGS[self.config_name]


def _feeding(config: Config, ns: str) -> list[str]:
    """Stored relations of ``ns`` that feed some set (never empty for group namespaces)."""
    return [r for r in RELATIONS if config.feeds(ns, r)] or ["member"]


def _sets(config: Config, ns: str) -> list[str]:
    return list(config.sets_of(ns)) or ["member"]


@st.composite
def _group_id(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(SMALL_IDS) | st.builds(lambda i: f"n{i}", st.integers(0, 40)))


@st.composite
def _resource(
    draw: st.DrawFn, config: Config, ns: str | None = None, oid: str | None = None
) -> str:
    """``ns:id#rel`` with a relation that feeds a set."""
    ns = ns or draw(st.sampled_from(GROUP_NAMESPACES))
    oid = oid or draw(_group_id())
    return f"{ns}:{oid}#{draw(st.sampled_from(_feeding(config, ns)))}"


@st.composite
def _nested(draw: st.DrawFn, config: Config, ns: str | None = None, oid: str | None = None) -> str:
    """A userset subject naming an indexed set."""
    ns = ns or draw(st.sampled_from(GROUP_NAMESPACES))
    oid = oid or draw(_group_id())
    return f"{ns}:{oid}#{draw(st.sampled_from(_sets(config, ns)))}"


def _leaf() -> st.SearchStrategy[str]:
    """A leaf subject: plain, ``#...``, wildcard or an opaque userset."""
    ns = st.sampled_from(LEAF_NAMESPACES)
    ids = st.sampled_from(SMALL_IDS)
    return st.one_of(
        st.builds(lambda n, i: f"{n}:{i}", ns, ids),
        st.builds(lambda n, i: f"{n}:{i}#...", ns, ids),
        st.builds(lambda n: f"{n}:*", st.sampled_from(LEAF_NAMESPACES + GROUP_NAMESPACES)),
        st.builds(
            lambda n, i, r: f"{n}:{i}#{r}",
            st.sampled_from(GROUP_NAMESPACES),
            ids,
            st.sampled_from(("owner", "viewer", "manager")),
        ),
        st.builds(lambda n, i: f"{n}:{i}", st.sampled_from(GROUP_NAMESPACES), ids),
    )


@st.composite
def _random_tuple(draw: st.DrawFn, config: Config) -> str:
    """Anything: fed or not, nested or leaf, of any relation."""
    ns = draw(st.sampled_from(GROUP_NAMESPACES + ("doc",)))
    oid = draw(st.sampled_from(SMALL_IDS))
    rel = draw(st.sampled_from(RELATIONS))
    subject = draw(
        st.one_of(
            _leaf(),
            _nested(config),
            st.builds(
                lambda n, i, r: f"{n}:{i}#{r}",
                st.sampled_from(GROUP_NAMESPACES),
                st.sampled_from(SMALL_IDS),
                st.sampled_from(RELATIONS),
            ),
        )
    )
    return f"{ns}:{oid}#{rel}@{subject}"


@st.composite
def _chain(draw: st.DrawFn, config: Config) -> list[str]:
    """``g0 ⊃ g1 ⊃ ... ⊃ gk`` with a leaf at the bottom, up to 30 groups.

    Shortcut edges (``gi ⊃ gj``, j > i + 1) make paths of unequal length to the same
    group, the case where only a breadth-first ``explain`` finds the shortest chain;
    back edges turn part of the chain into a cycle. Leaves may hang midway too.
    """
    length = draw(st.integers(2, 30))
    start = draw(st.integers(0, 10))
    nodes = [(draw(st.sampled_from(GROUP_NAMESPACES)), f"n{start + i}") for i in range(length)]
    if draw(st.booleans()):  # hang the chain below a group of the random part
        nodes[0] = (nodes[0][0], draw(st.sampled_from(SMALL_IDS)))
    out = [
        f"{draw(_resource(config, *parent))}@{draw(_nested(config, *child))}"
        for parent, child in zip(nodes, nodes[1:], strict=False)
    ]
    bottom = nodes[-1]
    out.append(f"{draw(_resource(config, *bottom))}@{draw(_leaf())}")
    position = st.integers(0, length - 1)
    for i, j in draw(st.lists(st.tuples(position, position), max_size=3)):
        out.append(f"{draw(_resource(config, *nodes[i]))}@{draw(_nested(config, *nodes[j]))}")
    for i in draw(st.lists(position, max_size=2)):
        out.append(f"{draw(_resource(config, *nodes[i]))}@{draw(_leaf())}")
    return out


@st.composite
def _cycle(draw: st.DrawFn, config: Config) -> list[str]:
    """A ring of 1 to 6 groups (1 is a self-loop), maybe with a leaf and an exit."""
    nodes = draw(
        st.lists(
            st.tuples(st.sampled_from(GROUP_NAMESPACES), _group_id()),
            min_size=1,
            max_size=6,
            unique=True,
        )
    )
    out = [
        f"{draw(_resource(config, *parent))}@{draw(_nested(config, *child))}"
        for parent, child in zip(nodes, nodes[1:] + nodes[:1], strict=True)
    ]
    if draw(st.booleans()):
        out.append(f"{draw(_resource(config, *draw(st.sampled_from(nodes))))}@{draw(_leaf())}")
    if draw(st.booleans()):
        out.append(
            f"{draw(_resource(config, *draw(st.sampled_from(nodes))))}@{draw(_nested(config))}"
        )
    return out


@st.composite
def _fan(draw: st.DrawFn, config: Config) -> list[str]:
    """One group with up to 50 direct children: leaves, nested groups, or both."""
    width = draw(st.integers(1, 50))
    parent = draw(_resource(config))
    kind = draw(st.sampled_from(("leaves", "groups", "mixed")))
    out = []
    for k in range(width):
        nested = kind == "groups" or (kind == "mixed" and k % 2 == 1)
        ns = ("group", "team", "acme/group")[k % 3] if nested else ("user", "acme/user")[k % 2]
        out.append(
            f"{parent}@{ns}:f{k}#{_sets(config, ns)[0]}" if nested else f"{parent}@{ns}:f{k}"
        )
    if kind != "leaves" and draw(st.booleans()):
        # give some children members of their own
        for k in draw(st.lists(st.integers(0, width - 1), max_size=5)):
            ns = ("group", "team", "acme/group")[k % 3]
            out.append(f"{draw(_resource(config, ns, f'f{k}'))}@{draw(_leaf())}")
    return out


@st.composite
def _duplicated(draw: st.DrawFn, lines: list[str]) -> list[str]:
    """``lines`` with some tuples repeated and some plain subjects also written with ``#...``."""
    if not lines:
        return lines
    out = list(lines)
    picks = draw(st.lists(st.sampled_from(lines), max_size=5))
    for line in picks:
        subject = line.split("#", 1)[1].split("@", 1)[1]
        if draw(st.booleans()) and "#" not in subject and not subject.endswith(":*"):
            out.append(line + "#...")
        else:
            out.append(line)
    return out


@st.composite
def graphs(draw: st.DrawFn, *, max_random: int = 25, config_name: str | None = None) -> Graph:
    """A random graph with injected chains, cycles, a fan and duplicates, shuffled."""
    name = config_name or draw(st.sampled_from(sorted(CONFIGS)))
    config = CONFIGS[name]
    lines: list[str] = draw(st.lists(_random_tuple(config), max_size=max_random))
    for _ in range(draw(st.integers(0, 2))):
        lines += draw(_chain(config))
    for _ in range(draw(st.integers(0, 2))):
        lines += draw(_cycle(config))
    if draw(st.booleans()):
        lines += draw(_fan(config))
    lines = draw(_duplicated(lines))
    lines = draw(st.permutations(lines))
    return Graph(name, tuple(lines))


def tuple_lines(config: Config) -> st.SearchStrategy[str]:
    """Single random tuple lines (for tests that build their own graphs)."""
    return _random_tuple(config)
