"""The group structure of a synthetic org, built once in memory, and its sample names.

The hierarchy ``all-employees`` → orgs → departments → teams → squads → pods is exactly
``max_depth`` nesting levels deep at its deepest, with heavy-tailed fan-outs; project,
mailing-list, cross-functional and access groups nest under it and cross-link deeper
down; ``-leads`` groups nest through ``manager``; the rings and the self-loop are added
last. Every nested edge goes from a group of lower *level* to one of higher level,
except the ring and self-loop edges. The structure is a few percent of the tuples; the
user memberships drawn against it are in ``leopard.gen.write``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from leopard.gen.spec import OrgSpec

__all__ = ["MANAGER", "MEAN_GROUPS_PER_USER", "MEMBER", "ROOT", "Org", "build_org", "pick_samples"]

MEAN_GROUPS_PER_USER = 10.0  # 1 primary team + floor(lognormal(ln 7, 0.8)) others
_N_RINGS = 5
ROOT = "all-employees"
_WILDCARD_GROUPS = ("everyone-ro", "public-docs", "all-readers")
_ORGS = (
    "eng", "sales", "ops", "finance", "legal", "hr", "marketing", "support", "research",
    "security", "design", "data", "infra", "product", "it", "facilities", "comms",
    "policy", "partners", "growth", "cloud", "mobile", "ads", "devrel",
)  # fmt: skip
_LEVEL_KINDS = {2: "dept", 3: "team", 4: "squad"}  # deeper levels are "pod"
_OTHER_KINDS = ("proj", "list", "xfn", "acl", "oncall")

MEMBER, MANAGER = 0, 1


@dataclass
class Org:
    names: list[str]
    level: np.ndarray  # per group; nested DAG edges always go to a higher level
    parent: np.ndarray  # nested edges, deduplicated, sorted by (parent, child)
    child: np.ndarray
    rel: np.ndarray  # MEMBER or MANAGER per nested edge
    wildcard_groups: np.ndarray
    primary_pool: np.ndarray  # groups a user's primary team is drawn from
    extra_pool: np.ndarray  # other groups, in popularity order
    cycles: int
    tree_parent: np.ndarray  # per group: its hierarchy parent, or -1
    deepest: np.ndarray  # hierarchy nodes at level max_depth


def build_org(spec: OrgSpec) -> Org:
    rng = np.random.default_rng([spec.seed, 0])
    depth = spec.max_depth
    est_users = max(20, int(0.95 * spec.tuples / MEAN_GROUPS_PER_USER))
    # Floors keep tiny outputs from collapsing into one chain that reaches everything.
    n_hier = max(est_users // 10, 2 * depth + 4)
    n_other = max(est_users // 10, depth + 4)

    # Hierarchy level sizes: a few orgs, the bulk at levels 3-5, halving below that,
    # and at least one group on every level so the deepest chain is exactly max_depth.
    n_orgs = int(np.clip(round(n_hier**0.3), 2, len(_ORGS)))
    weights = [8.0, 40.0, 60.0, 40.0, 20.0]
    while len(weights) < depth - 1:
        weights.append(weights[-1] / 2)
    weights = weights[: depth - 1]
    rest = max(n_hier - 1 - n_orgs, 0)
    sizes = [n_orgs] + [max(1, int(rest * w / sum(weights))) for w in weights]

    names: list[str] = [ROOT, *_WILDCARD_GROUPS]
    levels: list[int] = [0] * len(names)
    edges: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add_edges(p: np.ndarray, c: np.ndarray, rel: int) -> None:
        edges.append((p.astype(np.int64), c.astype(np.int64), np.full(len(p), rel, np.uint8)))

    # Each node picks its parent on the level above with a skew (u ** 2.5), so a few
    # parents get wide fans and many nodes stay leaves at every level.
    prev = np.array([0])
    prev_org = np.array([-1])
    hier_by_level: list[np.ndarray] = []
    for lvl, size in enumerate(sizes, start=1):
        ids = np.arange(len(names), len(names) + size)
        if lvl == 1:
            parents = np.zeros(size, np.int64)
            org = np.arange(size)
            names += [_ORGS[i] for i in range(size)]
        else:
            pick = (len(prev) * rng.random(size) ** 2.5).astype(np.int64)
            parents, org = prev[pick], prev_org[pick]
            kind = _LEVEL_KINDS.get(lvl, "pod")
            names += [
                f"{_ORGS[o]}-{kind}-{g}" for o, g in zip(org.tolist(), ids.tolist(), strict=True)
            ]
        levels += [lvl] * size
        add_edges(parents, ids, MEMBER)
        hier_by_level.append(ids)
        prev, prev_org = ids, org

    # Leads groups of the orgs and departments, nested with the manager relation, and
    # one fan group holding them all.
    rel_mgr = MANAGER if spec.rewrites else MEMBER
    led = np.concatenate(hier_by_level[: min(2, depth - 1)]) if depth >= 2 else np.array([])
    if len(led):
        leads = np.arange(len(names), len(names) + len(led))
        names += [f"{names[g]}-leads" for g in led.tolist()]
        levels += [levels[g] + 1 for g in led.tolist()]
        add_edges(led, leads, rel_mgr)
        all_leads = len(names)
        names.append("all-leads")
        levels.append(1)
        add_edges(np.full(len(leads), all_leads), leads, MEMBER)

    # Project-like groups: low levels mostly, so they can hold deeper groups.
    other = np.arange(len(names), len(names) + n_other)
    kinds = rng.integers(0, len(_OTHER_KINDS), n_other)
    names += [f"{_OTHER_KINDS[k]}-{g}" for k, g in zip(kinds.tolist(), other.tolist(), strict=True)]
    if depth >= 2:
        other_level = 1 + ((depth - 1) * rng.random(n_other) ** 2).astype(np.int64)
        other_level = np.minimum(other_level, depth - 1)
    else:
        other_level = np.ones(n_other, np.int64)
    levels += other_level.tolist()

    level = np.array(levels, np.int16)
    n_groups = len(names)
    tree_parent = np.full(n_groups, -1, np.int64)
    tree_parent[np.concatenate(hier_by_level)] = np.concatenate(
        [e[0] for e in edges[: len(hier_by_level)]]
    )
    by_level = np.argsort(level, kind="stable")
    start = np.searchsorted(level[by_level], np.arange(depth + 2))

    if depth >= 2:
        # One parent on the level right above for 60% of those at level >= 2.
        has_parent = (other_level >= 2) & (rng.random(n_other) < 0.6)
        lv = other_level[has_parent]
        lo, hi = start[lv - 1], start[lv]
        pos = lo + (rng.random(len(lv)) * (hi - lo)).astype(np.int64)
        add_edges(by_level[pos], other[has_parent], MEMBER)
        # Cross links to a heavy-tailed number of deeper groups (a few hundred at most).
        n_links = np.minimum(np.floor(rng.lognormal(math.log(2.0), 1.0, n_other)), 2000)
        n_links = n_links.astype(np.int64)
        src = np.repeat(other, n_links)
        lo = start[np.repeat(other_level, n_links) + 1]
        pos = lo + (rng.random(len(src)) * (n_groups - lo)).astype(np.int64)
        add_edges(src, by_level[pos], MEMBER)

    if spec.wildcards:
        wildcard_groups = np.arange(1, 1 + len(_WILDCARD_GROUPS))
    else:
        # The same groups hold every org instead of every user.
        wildcard_groups = np.array([], np.int64)
        for w in range(1, 1 + len(_WILDCARD_GROUPS)):
            add_edges(np.full(n_orgs, w), hier_by_level[0], MEMBER)

    n_cycles = 0
    if spec.cycles:
        # Rings and the self-loop go last so that deduplication keeps the DAG edge
        # (and its relation) wherever a ring edge repeats one.
        for _ in range(_N_RINGS):
            k = int(rng.integers(2, 6))
            ring = start[1] + rng.choice(n_groups - start[1], size=k, replace=False)
            ring = by_level[ring]
            add_edges(ring, np.roll(ring, -1), MEMBER)
        loop = by_level[start[1] + rng.integers(0, n_groups - start[1])]
        add_edges(np.array([loop]), np.array([loop]), MEMBER)
        n_cycles = _N_RINGS + 1

    p = np.concatenate([e[0] for e in edges])
    c = np.concatenate([e[1] for e in edges])
    r = np.concatenate([e[2] for e in edges])
    _, first = np.unique(p * n_groups + c, return_index=True)

    eligible = by_level[start[1] :]  # everything but the root and the wildcard groups
    primary = np.concatenate(hier_by_level[min(1, depth - 1) :])
    return Org(
        names=names,
        level=level,
        parent=p[first],
        child=c[first],
        rel=r[first],
        wildcard_groups=wildcard_groups,
        primary_pool=rng.permutation(primary),
        extra_pool=rng.permutation(eligible),
        cycles=n_cycles,
        tree_parent=tree_parent,
        deepest=rng.permutation(hier_by_level[-1]),
    )


def _csr(src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(src, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n))])
    return indptr, dst[order]


def _bfs(indptr: np.ndarray, nbrs: np.ndarray, src: int, dst: int = -1) -> tuple[np.ndarray, int]:
    """Level-synchronous BFS from ``src``: (reached mask, hops to ``dst`` or -1)."""
    seen = np.zeros(len(indptr) - 1, bool)
    seen[src] = True
    frontier = np.array([src])
    hops = 0
    while len(frontier):
        if dst >= 0 and seen[dst]:
            return seen, hops
        lo, hi = indptr[frontier], indptr[frontier + 1]
        lens = hi - lo
        idx = np.repeat(lo - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
        nxt = np.unique(nbrs[idx])
        frontier = nxt[~seen[nxt]]
        seen[frontier] = True
        hops += 1
    return seen, -1


def pick_samples(org: Org, depth: int) -> tuple[int, int | None, int | None, int | None]:
    """User 0's single team, a group ≥ 3 hops above it (and the distance), a non-member.

    User 0 is made a direct member of nothing but ``leaf``, so every group that
    cannot reach ``leaf`` (and holds no wildcard) is a group user 0 is not in.
    """
    n = len(org.names)
    down = _csr(org.parent, org.child, n)
    leaf = int(org.deepest[0])
    deep_group = deep_levels = None
    if depth >= 3:
        top_level = 1 if depth >= 4 else 0
        for cand in org.deepest[:50].tolist():
            g = cand
            while org.level[g] > top_level:
                g = int(org.tree_parent[g])
            _, dist = _bfs(*down, g, cand)
            if dist >= 3:
                leaf, deep_group, deep_levels = cand, g, dist
                break
    above, _ = _bfs(*_csr(org.child, org.parent, n), leaf)
    above[org.wildcard_groups] = True
    # Prefer a team (it has direct members); any other group will do.
    candidates = np.concatenate([org.primary_pool, org.extra_pool])
    candidates = candidates[~above[candidates]]
    non_member = int(candidates[0]) if len(candidates) else None
    return leaf, deep_group, deep_levels, non_member
