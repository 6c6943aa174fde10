"""Deterministic synthetic organisations: users and nested groups as relation tuples.

Why: the index, the benchmarks and the side-by-side runs against SpiceDB need data
shaped like a real directory, at sizes from a thousand to a hundred million tuples,
identical from run to run so that numbers can be compared across machines and commits.
Hand-written fixtures miss the shapes that make group indexing hard, so this module
builds them on purpose:

* a hierarchy ``all-employees`` → orgs → departments → teams → squads → pods, exactly
  ``max_depth`` nesting levels deep at its deepest, with heavy-tailed fan-outs (a few
  departments own hundreds of teams);
* project, mailing-list, cross-functional and access groups that nest under the
  hierarchy and cross-link to several groups deeper down (some to hundreds);
* users directly in one primary team plus a lognormal number of other groups, drawn
  with a Zipf-like popularity, so a few groups hold a good share of all users directly;
* ``-leads`` groups nested through the ``manager`` relation and ~10% of users who are
  ``manager`` of their team (``rewrites``), a few ``@user:*`` groups (``wildcards``),
  and a handful of 2–5 group rings plus one self-loop (``cycles``).

Every nested edge goes from a group of lower *level* to one of higher level, except
the deliberate ring and self-loop edges; that is what makes ``cycles=False`` a DAG and
bounds the longest nesting chain by ``max_depth``.

Speed: the group structure (a few percent of the tuples) is built once in memory;
user memberships are then drawn in chunks of at most 100,000 users, each with its own
random stream and sized from the spec alone, so memory stays flat and the output does
not depend on the machine. Lines are
formatted column-wise with pyarrow (take precomputed ``group:…#member@user:u`` heads,
join them with zero-padded user ids) and written as one buffer per chunk.
"""

from __future__ import annotations

import gzip
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from leopard.errors import InvalidInput
from leopard.model.names import TENANT_PREFIX_RE

__all__ = ["OrgSpec", "GenReport", "generate", "config_toml", "format_report"]

MIN_TUPLES = 1_000
MAX_TUPLES = 100_000_000
MAX_DEPTH_LIMIT = 64

# Users per membership chunk (about ten tuples each). A constant, never derived from
# the machine, because each chunk has its own random stream: changing it changes output.
_CHUNK_USERS = 100_000
_MEAN_GROUPS_PER_USER = 10.0  # 1 primary team + floor(lognormal(ln 7, 0.8)) others
_MANAGER_SHARE = 0.10  # of users, who hold ``manager`` on their primary team
_N_RINGS = 5
_ROOT = "all-employees"
_WILDCARD_GROUPS = ("everyone-ro", "public-docs", "all-readers")
_ORGS = (
    "eng", "sales", "ops", "finance", "legal", "hr", "marketing", "support", "research",
    "security", "design", "data", "infra", "product", "it", "facilities", "comms",
    "policy", "partners", "growth", "cloud", "mobile", "ads", "devrel",
)  # fmt: skip
_LEVEL_KINDS = {2: "dept", 3: "team", 4: "squad"}  # deeper levels are "pod"
_OTHER_KINDS = ("proj", "list", "xfn", "acl", "oncall")

_MEMBER, _MANAGER = 0, 1


@dataclass(frozen=True)
class OrgSpec:
    """What to generate. The same spec always gives byte-identical output."""

    tuples: int
    seed: int = 0
    cycles: bool = True
    wildcards: bool = True
    rewrites: bool = True
    max_depth: int = 15
    namespace_prefix: str = ""

    def __post_init__(self) -> None:
        if not MIN_TUPLES <= self.tuples <= MAX_TUPLES:
            raise InvalidInput(f"tuples={self.tuples!r}: expected {MIN_TUPLES:,} to {MAX_TUPLES:,}")
        if not 1 <= self.max_depth <= MAX_DEPTH_LIMIT:
            raise InvalidInput(f"max_depth={self.max_depth!r}: expected 1 to {MAX_DEPTH_LIMIT}")
        if self.seed < 0:
            raise InvalidInput(f"seed={self.seed!r}: expected a non-negative integer")
        if not TENANT_PREFIX_RE.fullmatch(self.namespace_prefix):
            raise InvalidInput(
                f"namespace_prefix={self.namespace_prefix!r}: expected '' or tenant "
                "segments ending in '/', such as 'acme/'"
            )


@dataclass
class GenReport:
    """What was written, with a few names worth querying.

    ``deep_user`` is a member of ``deep_group`` only through ``deep_levels`` (≥ 3)
    levels of nesting: its one direct group lies that many hops below. It is None when
    ``max_depth`` < 3. ``non_member`` is a (user, group) pair that is not a membership.
    """

    tuples: int
    users: int
    groups: int
    member_edges: int
    nested_edges: int
    wildcards: int
    cycles: int
    max_depth: int
    seconds: float
    manager_tuples: int = 0
    bytes: int = 0
    deep_user: str | None = None
    deep_group: str | None = None
    deep_levels: int | None = None
    largest_group: str = ""
    non_member: tuple[str, str] | None = None
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def lines_per_second(self) -> float:
        return self.tuples / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lines_per_second"] = round(self.lines_per_second)
        d["non_member"] = list(self.non_member) if self.non_member else None
        return d


def config_toml(spec: OrgSpec) -> str:
    """The TOML set configuration that makes Leopard read the relations generated."""
    sources = '["member", "manager"]' if spec.rewrites else '["member"]'
    return (
        f"# Leopard set configuration for gen-org output (rewrites={spec.rewrites}).\n"
        "[[sets]]\n"
        f'namespace = "{spec.namespace_prefix}group"\n'
        'relation = "member"\n'
        f"from = {sources}\n"
    )


def format_report(report: GenReport) -> str:
    """A few aligned lines for a terminal."""
    rows = [
        ("tuples", f"{report.tuples:,}"),
        ("users", f"{report.users:,}"),
        ("groups", f"{report.groups:,}"),
        ("member edges", f"{report.member_edges:,} ({report.manager_tuples:,} manager)"),
        ("nested edges", f"{report.nested_edges:,}"),
        ("wildcards", f"{report.wildcards:,}"),
        ("cycles", f"{report.cycles:,}"),
        ("max depth", str(report.max_depth)),
        ("largest group", report.largest_group),
    ]
    if report.deep_user:
        rows.append(
            ("deep member", f"{report.deep_user} in {report.deep_group} "
             f"({report.deep_levels} levels down)")
        )  # fmt: skip
    if report.non_member:
        rows.append(("non-member", f"{report.non_member[0]} not in {report.non_member[1]}"))
    rows.append(
        ("time", f"{report.seconds:.2f} s, {report.lines_per_second:,.0f} lines/s, "
         f"{report.bytes / 1e6:,.1f} MB")
    )  # fmt: skip
    return "\n".join(f"{k:<14} {v}" for k, v in rows)


# -- the group structure -------------------------------------------------------------


@dataclass
class _Org:
    names: list[str]
    level: np.ndarray  # per group; nested DAG edges always go to a higher level
    parent: np.ndarray  # nested edges, deduplicated, sorted by (parent, child)
    child: np.ndarray
    rel: np.ndarray  # _MEMBER or _MANAGER per nested edge
    wildcard_groups: np.ndarray
    primary_pool: np.ndarray  # groups a user's primary team is drawn from
    extra_pool: np.ndarray  # other groups, in popularity order
    cycles: int
    tree_parent: np.ndarray  # per group: its hierarchy parent, or -1
    deepest: np.ndarray  # hierarchy nodes at level max_depth


def _build_org(spec: OrgSpec) -> _Org:
    rng = np.random.default_rng([spec.seed, 0])
    depth = spec.max_depth
    est_users = max(20, int(0.95 * spec.tuples / _MEAN_GROUPS_PER_USER))
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

    names: list[str] = [_ROOT, *_WILDCARD_GROUPS]
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
        add_edges(parents, ids, _MEMBER)
        hier_by_level.append(ids)
        prev, prev_org = ids, org

    # Leads groups of the orgs and departments, nested with the manager relation, and
    # one fan group holding them all.
    rel_mgr = _MANAGER if spec.rewrites else _MEMBER
    led = np.concatenate(hier_by_level[: min(2, depth - 1)]) if depth >= 2 else np.array([])
    if len(led):
        leads = np.arange(len(names), len(names) + len(led))
        names += [f"{names[g]}-leads" for g in led.tolist()]
        levels += [levels[g] + 1 for g in led.tolist()]
        add_edges(led, leads, rel_mgr)
        all_leads = len(names)
        names.append("all-leads")
        levels.append(1)
        add_edges(np.full(len(leads), all_leads), leads, _MEMBER)

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
        add_edges(by_level[pos], other[has_parent], _MEMBER)
        # Cross links to a heavy-tailed number of deeper groups (a few hundred at most).
        n_links = np.minimum(np.floor(rng.lognormal(math.log(2.0), 1.0, n_other)), 2000)
        n_links = n_links.astype(np.int64)
        src = np.repeat(other, n_links)
        lo = start[np.repeat(other_level, n_links) + 1]
        pos = lo + (rng.random(len(src)) * (n_groups - lo)).astype(np.int64)
        add_edges(src, by_level[pos], _MEMBER)

    if spec.wildcards:
        wildcard_groups = np.arange(1, 1 + len(_WILDCARD_GROUPS))
    else:
        # The same groups hold every org instead of every user.
        wildcard_groups = np.array([], np.int64)
        for w in range(1, 1 + len(_WILDCARD_GROUPS)):
            add_edges(np.full(n_orgs, w), hier_by_level[0], _MEMBER)

    n_cycles = 0
    if spec.cycles:
        # Rings and the self-loop go last so that deduplication keeps the DAG edge
        # (and its relation) wherever a ring edge repeats one.
        for _ in range(_N_RINGS):
            k = int(rng.integers(2, 6))
            ring = start[1] + rng.choice(n_groups - start[1], size=k, replace=False)
            ring = by_level[ring]
            add_edges(ring, np.roll(ring, -1), _MEMBER)
        loop = by_level[start[1] + rng.integers(0, n_groups - start[1])]
        add_edges(np.array([loop]), np.array([loop]), _MEMBER)
        n_cycles = _N_RINGS + 1

    p = np.concatenate([e[0] for e in edges])
    c = np.concatenate([e[1] for e in edges])
    r = np.concatenate([e[2] for e in edges])
    _, first = np.unique(p * n_groups + c, return_index=True)

    eligible = by_level[start[1] :]  # everything but the root and the wildcard groups
    primary = np.concatenate(hier_by_level[min(1, depth - 1) :])
    return _Org(
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


def _pick_samples(org: _Org, depth: int) -> tuple[int, int | None, int | None, int | None]:
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


# -- writing -------------------------------------------------------------------------


def _join(*parts: Any) -> memoryview:
    """Concatenate string columns element-wise; the result's data buffer is the text."""
    joined = pc.binary_join_element_wise(*parts, "")
    offsets = np.frombuffer(joined.buffers()[1], np.int32, len(joined) + 1, joined.offset * 4)
    return memoryview(joined.buffers()[2])[offsets[0] : offsets[-1]]


@contextmanager
def _sink(out: BinaryIO | str | Path) -> Iterator[Callable[[memoryview], object]]:
    """A ``write(buffer)`` for ``out``. A ``.gz`` path is compressed (level 1) on a
    second thread, since zlib releases the GIL, so formatting and deflating overlap."""
    if not isinstance(out, str | Path):
        yield out.write
        return
    path = Path(out)
    if path.suffix != ".gz":
        with open(path, "wb") as f:
            yield f.write
        return
    q: queue.Queue[memoryview | None] = queue.Queue(maxsize=2)
    errors: list[BaseException] = []

    def drain(f: BinaryIO) -> None:
        while (buf := q.get()) is not None:
            if not errors:
                try:
                    f.write(buf)
                except BaseException as exc:  # re-raised on the caller's thread
                    errors.append(exc)

    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz:
        worker = threading.Thread(target=drain, args=(gz,), name="gen-org-gzip", daemon=True)
        worker.start()

        def put(buf: memoryview) -> None:
            if errors:
                raise errors[0]
            q.put(buf)

        try:
            yield put
        finally:
            q.put(None)
            worker.join()
        if errors:
            raise errors[0]


def generate(
    spec: OrgSpec,
    out: BinaryIO | str | Path,
    *,
    progress: Callable[[int], None] | None = None,
) -> GenReport:
    """Write ``spec.tuples`` tuples (exactly) to ``out``, one per line; report on them.

    ``out`` is a binary file object or a path; a path ending in ``.gz`` is gzipped.
    ``progress`` is called after each chunk with the number of tuples written so far.
    """
    t0 = time.perf_counter()
    org = _build_org(spec)
    leaf, deep_group, deep_levels, non_member = _pick_samples(org, spec.max_depth)
    n_groups = len(org.names)
    nested = len(org.parent)
    if spec.tuples <= nested + len(org.wildcard_groups):
        raise InvalidInput(
            f"tuples={spec.tuples!r} is too few for max_depth={spec.max_depth}: the group "
            f"structure alone takes {nested + len(org.wildcard_groups):,} tuples"
        )
    ns_group, ns_user = f"{spec.namespace_prefix}group", f"{spec.namespace_prefix}user"
    rel_names = ("member", "manager" if spec.rewrites else "member")

    names = pa.array(org.names, pa.string())
    # Heads indexed by group + relation * n_groups.
    group_heads = pa.concat_arrays(
        [pc.binary_join_element_wise(f"{ns_group}:", names, f"#{r}@", "") for r in rel_names]
    )
    user_heads = pa.concat_arrays(
        [
            pc.binary_join_element_wise(f"{ns_group}:", names, f"#{r}@{ns_user}:u", "")
            for r in rel_names
        ]
    )
    group_subjects = pc.binary_join_element_wise(f"{ns_group}:", names, "#member\n", "")
    id_width = max(6, len(str(int(1.5 * spec.tuples / _MEAN_GROUPS_PER_USER))))

    seen = np.zeros(n_groups, bool)
    written = n_bytes = 0
    with _sink(out) as write:

        def emit(buf: memoryview, lines: int) -> None:
            nonlocal written, n_bytes
            write(buf)
            written += lines
            n_bytes += len(buf)
            if progress is not None:
                progress(written)

        emit(
            _join(
                group_heads.take(pa.array(org.parent + org.rel.astype(np.int64) * n_groups)),
                group_subjects.take(pa.array(org.child)),
            ),
            nested,
        )
        seen[org.parent] = seen[org.child] = True
        wild = "".join(
            f"{ns_group}:{org.names[g]}#member@{ns_user}:*\n" for g in org.wildcard_groups
        ).encode()
        emit(memoryview(wild), len(org.wildcard_groups))
        seen[org.wildcard_groups] = True

        budget = spec.tuples - written
        users = managers = 0
        chunk = 0
        while budget > 0:
            # Sized from the budget left (about twice the users needed), capped, so a
            # small output does not draw a full chunk.
            n_users = min(_CHUNK_USERS, max(1_000, int(2 * budget / _MEAN_GROUPS_PER_USER)))
            grp, lu, is_mgr = _memberships(spec, org, chunk, n_users, leaf)
            if len(grp) > budget:
                grp, lu, is_mgr = grp[:budget], lu[:budget], is_mgr[:budget]
                n_users = int(lu[-1]) + 1
            first_user = users
            uids = pa.array(np.arange(first_user, first_user + n_users))
            tails = pc.binary_join_element_wise(
                pc.utf8_lpad(pc.cast(uids, pa.string()), id_width, "0"), "\n", ""
            )
            emit(
                _join(
                    user_heads.take(pa.array(grp + is_mgr.astype(np.int64) * n_groups)),
                    tails.take(pa.array(lu)),
                ),
                len(grp),
            )
            seen[grp] = True
            budget -= len(grp)
            users += n_users
            managers += int(is_mgr.sum())
            chunk += 1

    def gname(g: int | None) -> str | None:
        return None if g is None else f"{ns_group}:{org.names[g]}"

    deep_user = f"{ns_user}:u{0:0{id_width}d}"
    return GenReport(
        tuples=written,
        users=users,
        groups=int(seen.sum()),
        member_edges=written - nested - len(org.wildcard_groups),
        nested_edges=nested,
        wildcards=len(org.wildcard_groups),
        cycles=org.cycles,
        max_depth=spec.max_depth,
        seconds=time.perf_counter() - t0,
        manager_tuples=managers + int((org.rel == _MANAGER).sum()),
        bytes=n_bytes,
        deep_user=deep_user if deep_group is not None else None,
        deep_group=gname(deep_group),
        deep_levels=deep_levels,
        largest_group=f"{ns_group}:{_ROOT}",
        non_member=(deep_user, f"{ns_group}:{org.names[non_member]}")
        if non_member is not None
        else None,
        spec=asdict(spec),
    )


def _memberships(
    spec: OrgSpec, org: _Org, chunk: int, n: int, leaf: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Direct memberships of a chunk of ``n`` users: (group, user offset, is manager).

    Rows come sorted by user, each user's primary team first, so truncating the last
    chunk anywhere still leaves every emitted user inside ``all-employees``.
    """
    rng = np.random.default_rng([spec.seed, 1, chunk])
    extra = np.minimum(np.floor(rng.lognormal(math.log(7.0), 0.8, n)), 120).astype(np.int64)
    pool = org.primary_pool
    primary = pool[(len(pool) * rng.random(n) ** 1.5).astype(np.int64)]
    manager = rng.random(n) < _MANAGER_SHARE
    if chunk == 0:  # user 0 is the sample deep member: one plain membership only
        extra[0], primary[0], manager[0] = 0, leaf, False

    pool = org.extra_pool
    lu = np.repeat(np.arange(n), extra)
    grp = pool[(len(pool) * rng.random(len(lu)) ** 3).astype(np.int64)]
    # Key per row: user, then 0 for the primary team (also when drawn again) or
    # group + 1; sorting and dropping repeats dedups and puts the primary first.
    sub = np.where(grp == primary[lu], 0, grp + 1)
    width = len(org.names) + 1
    keys = np.concatenate([np.arange(n) * width, lu * width + sub])
    keys.sort()  # np.sort and a mask: np.unique (hash-based in numpy 2.3+) is slower
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    lu, sub = keys // width, keys % width
    grp = np.where(sub == 0, primary[lu], sub - 1)
    is_mgr = (sub == 0) & manager[lu] & spec.rewrites
    return grp, lu, is_mgr


# -- change streams ----------------------------------------------------------------------


def generate_changes(
    snapshot: str | Path,
    count: int,
    *,
    seed: int = 0,
    nested_fraction: float = 0.0,
    delete_fraction: float = 0.5,
) -> list[str]:
    """``+tuple``/``-tuple`` change lines against an existing snapshot, for demos and benches.

    Deletes remove tuples that the snapshot holds; touches add new users to existing
    groups, or (``nested_fraction``) new nesting edges between existing groups, which
    may close cycles. Deterministic by seed.
    """
    import random

    import pyarrow.csv as pacsv

    table = pacsv.read_csv(
        str(snapshot),
        read_options=pacsv.ReadOptions(column_names=["line"]),
        parse_options=pacsv.ParseOptions(delimiter="\x1f", quote_char=False),
        convert_options=pacsv.ConvertOptions(column_types={"line": pa.string()}),
    )
    lines = table.column("line")
    is_nested = pc.match_substring(lines, "#member@group:")
    nested = pc.filter(lines, is_nested)
    member = pc.filter(lines, pc.and_(pc.invert(is_nested), pc.match_substring(lines, "#member@")))
    rng = random.Random(seed)
    groups = sorted(
        {t.split("#", 1)[0] for t in rng.sample(nested.to_pylist(), min(5000, len(nested)))}
    )
    if not groups:
        groups = sorted({t.split("#", 1)[0] for t in member[:1000].to_pylist()})
    out: list[str] = []
    n_nested = int(count * nested_fraction)
    n_member = count - n_nested
    for kind, n, pool in (("member", n_member, member), ("nested", n_nested, nested)):
        deletes = int(n * delete_fraction)
        if deletes and len(pool):
            picks = [int(i) for i in np.random.default_rng(seed).integers(0, len(pool), deletes)]
            out += ["-" + pool[i].as_py() for i in picks]
        for i in range(n - deletes):
            g = rng.choice(groups)
            if kind == "member":
                out.append(f"+{g}#member@user:stream-{seed}-{i}")
            else:
                out.append(f"+{g}#member@{rng.choice(groups)}#member")
    rng.shuffle(out)
    return out
