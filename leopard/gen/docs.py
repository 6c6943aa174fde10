"""The docs shape: documents in nested folders, shared with users and nested groups.

Why: a schema of SpiceDB or OpenFGA turns every (object, permission) into a set whose
members come through computed relations (``view = viewer + edit``) and arrows
(``parent->view``), so the index, its benchmarks and the comparisons with the peers
need data shaped like a shared drive, identical from run to run, at any size. What is
written, for ``spec.tuples`` tuples exactly:

* the org shape's groups (``leopard.gen.structure``, nested at most
  ``DOCS_GROUP_DEPTH`` levels, rings unless ``cycles=False``, no wildcards, no
  ``manager``) and its user memberships, about 30% of the tuples;
* folders exactly ``max_depth`` levels deep at the deepest, each picking its parent on
  the level above with a skew (``folder:f#parent@folder:g``), so a few folders have
  wide fans; an owner each, and a lognormal number of viewers and editors: users, or
  groups as ``group:g#member`` (mostly teams and smaller, popular ones far more often);
  one top folder in 50 is shared with a whole org group;
* documents in folders drawn with a skew (a few folders hold thousands), each with its
  ``parent`` and a lognormal number of viewers and editors; about 1% carry a
  ``banned`` user (half the time the owner of its top folder, who could view it), and
  with ``wildcards`` one in 2,000 is public (``@user:*``).

A typical user can view a few percent of the documents (1% at a million tuples), the
owners of the largest top folders far more.

The schema they follow is ``docs_schema`` (SpiceDB) or ``docs_model`` (the same model
in OpenFGA's DSL): every permission is a union, indexable, except
``doc#view_unbanned = view - banned``, an exclusion left for the index to refuse.

Sample names for benchmarks and tests (see ``GenReport``): document 0 sits in a
deepest folder (``deep_doc``, owned from the top by ``deep_user``); user 0 is a direct
member of one deep group only and holds no grant, so some deep document that nothing
above it shares with that group's ancestors is one user 0 cannot view
(``non_member``); ``viewer_user`` owns the top folder holding the most documents.

Speed: like the org shape, rows are drawn with numpy as integer keys (object, kind,
subject), sorted and deduplicated, and formatted column-wise with pyarrow; documents
come in chunks of at most 200,000, each with its own random stream.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from leopard.errors import InvalidInput
from leopard.gen.spec import MIN_TUPLES, GenReport, OrgSpec
from leopard.gen.structure import MEAN_GROUPS_PER_USER, ROOT, Org, build_org, pick_samples
from leopard.gen.structure import _bfs as bfs
from leopard.gen.structure import _csr as csr
from leopard.gen.write import _join as join
from leopard.gen.write import _memberships as memberships
from leopard.gen.write import _sink as sink
from leopard.model.schema import format_openfga_dsl, parse_spicedb

__all__ = ["DOCS_GROUP_DEPTH", "docs_model", "docs_schema", "generate_docs"]

DOCS_GROUP_DEPTH = 5
_MEMBER_SHARE = 0.30  # of the tuples: the groups and user memberships
_ROWS_PER_DOC = 2.4  # its parent, ~1.4 grants, a banned user now and then
_ROWS_PER_FOLDER = 3.7  # parent, owner, ~1.7 grants
_DOCS_PER_FOLDER = 10
# Constants, never derived from the machine: each chunk has its own random stream.
_CHUNK_DOCS = 200_000
_CHUNK_USERS = 100_000  # users per membership chunk, as in the org shape
_CHUNK_ROWS = 1_000_000  # folder rows formatted at a time
_PUBLIC_SHARE = 0.0005
_BANNED_SHARE = 0.01
_GROUP_SHARE = 0.2  # of the grants; the others go to users
_EDITOR_SHARE = 0.3
_WIDE_SHARE = 0.02  # of the group grants, to any group; the others to teams and smaller
_ROOT_SHARED = 0.02  # of the top folders, shared with a whole org group

# Row kinds, in the order an object's rows are written.
PARENT, OWNER, VIEWER_USER, VIEWER_GROUP, EDITOR_USER, EDITOR_GROUP, BANNED, PUBLIC = range(8)
_KINDS = 8

_SCHEMA = """\
definition {p}user {{}}

definition {p}group {{
    relation member: {p}user | {p}group#member
}}

definition {p}folder {{
    relation parent: {p}folder
    relation owner: {p}user
    relation viewer: {p}user | {p}user:* | {p}group#member
    relation editor: {p}user | {p}group#member
    permission edit = owner + editor + parent->edit
    permission view = viewer + edit + parent->view
}}

definition {p}doc {{
    relation parent: {p}folder
    relation viewer: {p}user | {p}user:* | {p}group#member
    relation editor: {p}user | {p}group#member
    relation banned: {p}user
    permission edit = editor + parent->edit
    permission view = viewer + edit + parent->view
    permission view_unbanned = view - banned
}}
"""


def docs_schema(namespace_prefix: str = "") -> str:
    """The SpiceDB schema of the docs shape (types behind ``namespace_prefix``)."""
    return _SCHEMA.format(p=namespace_prefix)


def docs_model(namespace_prefix: str = "") -> str:
    """The same model in OpenFGA's DSL (schema 1.1), printed from the SpiceDB schema."""
    return format_openfga_dsl(parse_spicedb(docs_schema(namespace_prefix), "docs.zed"))


def _folders(spec: OrgSpec, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(parent or -1, level from 1) per folder; ids go level by level, top folders first."""
    depth = spec.max_depth
    n_roots = int(np.clip(round(n**0.5 / 2), 2, 5_000))
    weights = [1.0, 1.5, 1.5, 1.2][: depth - 1]
    while len(weights) < depth - 1:
        weights.append(weights[-1] * 0.6)
    rest = max(n - n_roots, 0)
    sizes = [n_roots] + [max(1, int(rest * w / sum(weights))) for w in weights]
    parents = [np.full(n_roots, -1, np.int64)]
    prev = np.arange(n_roots)
    for size in sizes[1:]:
        start = int(prev[-1]) + 1
        parents.append(prev[(len(prev) * rng.random(size) ** 1.5).astype(np.int64)])
        prev = np.arange(start, start + size)
    level = np.repeat(np.arange(1, len(sizes) + 1), sizes)
    return np.concatenate(parents), level


def _grants(
    rng: np.random.Generator, n: int, median: float, cap: int, n_users: int, org: Org
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Viewers and editors of ``n`` objects: (object, kind, subject) rows, never user 0.

    Groups come in popularity order, mostly teams and smaller groups (level 3 and
    deeper), now and then any group (a department, a cross-functional list)."""
    counts = np.minimum(np.floor(rng.lognormal(math.log(median), 1.1, n)), cap)
    ob = np.repeat(np.arange(n), counts.astype(np.int64))
    m = len(ob)
    to_group = rng.random(m) < _GROUP_SHARE
    editor = rng.random(m) < _EDITOR_SHARE
    pool = org.extra_pool  # in popularity order
    small = pool[org.level[pool] >= min(4, int(org.level.max()))]
    wide = rng.random(m) < _WIDE_SHARE
    gid = np.where(
        wide,
        pool[(len(pool) * rng.random(m) ** 3).astype(np.int64)],
        small[(len(small) * rng.random(m) ** 2).astype(np.int64)],
    )
    uid = 1 + (rng.random(m) * (n_users - 1)).astype(np.int64)
    kind = np.where(to_group, VIEWER_GROUP, VIEWER_USER) + np.where(editor, 2, 0)
    return ob, kind, np.where(to_group, gid, uid)


def _sorted_rows(
    ob: np.ndarray, kind: np.ndarray, sid: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by (object, kind, subject), repeats dropped."""
    keys = (ob.astype(np.int64) * _KINDS + kind) * width + sid
    keys.sort()  # np.sort and a mask: np.unique (hash-based in numpy 2.3+) is slower
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    ob_kind, sid = np.divmod(keys, width)
    ob, kind = np.divmod(ob_kind, _KINDS)
    return ob, kind, sid


class _Text:
    """The text of rows: ``<object head><kind's middle><subject tail>\\n`` per row."""

    def __init__(self, spec: OrgSpec, org: Org, n_folders: int, n_users: int) -> None:
        p = spec.namespace_prefix
        self.folder_width = max(5, len(str(n_folders)))
        self.user_width = max(6, len(str(n_users)))
        self.middles = pa.array(
            [f"parent@{p}folder:f", f"owner@{p}user:u", f"viewer@{p}user:u",
             f"viewer@{p}group:", f"editor@{p}user:u", f"editor@{p}group:",
             f"banned@{p}user:u", f"viewer@{p}user:*"]
        )  # fmt: skip
        folder_ids = _padded(np.arange(n_folders), self.folder_width)
        user_ids = _padded(np.arange(n_users), self.user_width)
        groups = pa.array(org.names, pa.string())
        self.tails = pa.concat_arrays(
            [
                pc.binary_join_element_wise(folder_ids, "\n", ""),
                pc.binary_join_element_wise(user_ids, "\n", ""),
                pc.binary_join_element_wise(groups, "#member\n", ""),
                pa.array(["\n"]),
            ]
        )
        users, groups_at = n_folders, n_folders + n_users
        self.offset = np.array(
            [0, users, users, groups_at, users, groups_at, users, groups_at + len(org.names)]
        )
        self.folder_heads = pc.binary_join_element_wise(f"{p}folder:f", folder_ids, "#", "")

    def rows(
        self, heads: pa.Array, ob: np.ndarray, kind: np.ndarray, sid: np.ndarray
    ) -> memoryview:
        tail = self.offset[kind] + sid  # a PUBLIC row's subject is 0
        return join(heads.take(pa.array(ob)), self.middles.take(pa.array(kind)),
                    self.tails.take(pa.array(tail)))  # fmt: skip


def _padded(ids: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(pc.cast(pa.array(ids), pa.string()), width, "0")


def generate_docs(
    spec: OrgSpec,
    out: BinaryIO | str | Path,
    *,
    progress: Callable[[int], None] | None = None,
) -> GenReport:
    """Write the docs shape: ``spec.tuples`` tuples (exactly) to ``out``; report on them.

    ``out`` is a binary file object or a path; a path ending in ``.gz`` is gzipped.
    ``progress`` is called after each block with the number of tuples written so far.
    """
    if spec.shape != "docs":
        raise InvalidInput(f"shape={spec.shape!r}: generate_docs writes the docs shape")
    t0 = time.perf_counter()
    p = spec.namespace_prefix
    member_budget = int(_MEMBER_SHARE * spec.tuples)
    inner = OrgSpec(
        tuples=max(MIN_TUPLES, member_budget),
        seed=spec.seed,
        cycles=spec.cycles,
        wildcards=False,
        rewrites=False,
        max_depth=min(spec.max_depth, DOCS_GROUP_DEPTH),
        namespace_prefix=p,
    )
    org = build_org(inner)
    leaf = pick_samples(org, inner.max_depth)[0]  # user 0's only group
    n_groups = len(org.names)
    nested = len(org.parent)
    n_users = max(20, int((member_budget - nested) / MEAN_GROUPS_PER_USER))
    docs_budget = spec.tuples - member_budget
    per_doc = _ROWS_PER_DOC + _ROWS_PER_FOLDER / _DOCS_PER_FOLDER
    n_folders = max(2 * spec.max_depth + 2, int(docs_budget / per_doc / _DOCS_PER_FOLDER))
    rng = np.random.default_rng([spec.seed, 2])
    parent, level = _folders(spec, rng, n_folders)
    n_folders = len(parent)
    text = _Text(spec, org, n_folders, n_users)
    width = max(n_folders, n_users, n_groups) + 1

    # Folder rows: parent, owner, viewers and editors, and the top folders' org groups.
    ob, kind, sid = _grants(rng, n_folders, 1.2, 500, n_users, org)
    owner = 1 + ((n_users - 1) * rng.random(n_folders) ** 2).astype(np.int64)
    roots = np.flatnonzero(parent < 0)
    orgs = np.flatnonzero(org.tree_parent == 0)  # the org groups, below the root
    shared = roots[rng.random(len(roots)) < _ROOT_SHARED]
    child = np.flatnonzero(parent >= 0)
    kinds = [np.full(len(child), PARENT), np.full(n_folders, OWNER), kind,
             np.full(len(shared), VIEWER_GROUP)]  # fmt: skip
    f_ob, f_kind, f_sid = _sorted_rows(
        np.concatenate([child, np.arange(n_folders), ob, shared]),
        np.concatenate(kinds),
        np.concatenate([parent[child], owner, sid, orgs[shared % len(orgs)]]),
        width,
    )
    if nested + n_users + len(f_ob) >= spec.tuples:
        raise InvalidInput(
            f"tuples={spec.tuples!r} is too few for max_depth={spec.max_depth}: the "
            f"groups and folders alone take over {nested + n_users + len(f_ob):,} tuples"
        )
    f_group = (f_kind == VIEWER_GROUP) | (f_kind == EDITOR_GROUP)
    # Folders that a group above user 0's one group can view: they and all below them.
    above = bfs(*csr(org.child, org.parent, n_groups), leaf)[0]
    shut = np.zeros(n_folders, bool)
    shut[f_ob[f_group][above[f_sid[f_group]]]] = True
    top_owner = owner.copy()  # the owner of each folder's top folder
    for lvl in range(2, spec.max_depth + 1):
        ids = np.flatnonzero(level == lvl)
        shut[ids] |= shut[parent[ids]]
        top_owner[ids] = top_owner[parent[ids]]

    seen = np.zeros(n_groups, bool)  # groups named by some tuple
    seen[f_sid[f_group]] = True
    written = n_bytes = 0
    counts = {"grants": int((f_kind != PARENT).sum()), "banned": 0, "public": 0, "docs": 0}
    with sink(out) as write:

        def emit(buf: memoryview, lines: int) -> None:
            nonlocal written, n_bytes
            write(buf)
            written += lines
            n_bytes += len(buf)
            if progress is not None:
                progress(written)

        # -- groups: nesting, then memberships, as the org shape draws them ------------
        group_heads = pc.binary_join_element_wise(
            f"{p}group:", pa.array(org.names, pa.string()), f"#member@{p}group:", ""
        )
        group_tails = text.tails[n_folders + n_users : n_folders + n_users + n_groups]
        emit(
            join(group_heads.take(pa.array(org.parent)), group_tails.take(pa.array(org.child))),
            nested,
        )
        seen[org.parent] = seen[org.child] = True
        member_heads = pc.binary_join_element_wise(
            f"{p}group:", pa.array(org.names, pa.string()), f"#member@{p}user:u", ""
        )
        user_tails = text.tails[n_folders : n_folders + n_users]
        member_edges = 0
        for chunk, first in enumerate(range(0, n_users, _CHUNK_USERS)):
            n = min(_CHUNK_USERS, n_users - first)
            grp, lu, _ = memberships(inner, org, chunk, n, leaf)
            emit(
                join(member_heads.take(pa.array(grp)), user_tails.take(pa.array(lu + first))),
                len(grp),
            )
            seen[grp] = True
            member_edges += len(grp)

        # -- folders ----------------------------------------------------------------------
        for lo in range(0, len(f_ob), _CHUNK_ROWS):
            part = slice(lo, lo + _CHUNK_ROWS)
            emit(
                text.rows(text.folder_heads, f_ob[part], f_kind[part], f_sid[part]), len(f_ob[part])
            )

        # -- documents, chunk by chunk, until the budget is spent -----------------------
        budget = spec.tuples - written
        if budget <= 0:  # memberships drew more than ever expected
            raise InvalidInput(f"tuples={spec.tuples!r} is too few for the docs shape")
        doc_width = max(6, len(str(spec.tuples)))
        pool = rng.permutation(n_folders)  # folders in popularity order
        deepest = np.flatnonzero(level == spec.max_depth)
        deep_folder = int(deepest[rng.integers(len(deepest))])
        docs_in = np.zeros(n_folders, np.int64)
        non_member: tuple[str, str] | None = None
        chunk = 0
        while budget > 0:
            n = min(_CHUNK_DOCS, max(1_000, int(2 * budget / _ROWS_PER_DOC)))
            crng = np.random.default_rng([spec.seed, 3, chunk])
            folder = pool[(n_folders * crng.random(n) ** 2).astype(np.int64)]
            g_ob, g_kind, g_sid = _grants(crng, n, 1.0, 200, n_users, org)
            banned = np.flatnonzero(crng.random(n) < _BANNED_SHARE)
            public = np.flatnonzero(crng.random(n) < (_PUBLIC_SHARE if spec.wildcards else 0))
            if chunk == 0:
                folder[0] = deep_folder
                public = public[public != 0]
                if spec.wildcards:
                    public = np.union1d(public, [min(1, n - 1)])
            # Half the banned users are the owner of the top folder: they could view it.
            banned_user = np.where(
                crng.random(len(banned)) < 0.5,
                top_owner[folder[banned]],
                1 + (crng.random(len(banned)) * (n_users - 1)).astype(np.int64),
            )
            kinds = [np.full(n, PARENT), g_kind, np.full(len(banned), BANNED),
                     np.full(len(public), PUBLIC)]  # fmt: skip
            ob, kind, sid = _sorted_rows(
                np.concatenate([np.arange(n), g_ob, banned, public]),
                np.concatenate(kinds),
                np.concatenate([folder, g_sid, banned_user, np.zeros(len(public), np.int64)]),
                width,
            )
            if len(ob) > budget:
                ob, kind, sid = ob[:budget], kind[:budget], sid[:budget]
            n_docs = int(ob[-1]) + 1
            first = counts["docs"]
            heads = pc.binary_join_element_wise(
                f"{p}doc:d", _padded(np.arange(first, first + n_docs), doc_width), "#", ""
            )
            emit(text.rows(heads, ob, kind, sid), len(ob))
            is_group = (kind == VIEWER_GROUP) | (kind == EDITOR_GROUP)
            seen[sid[is_group]] = True
            docs_in += np.bincount(folder[:n_docs], minlength=n_folders)
            counts["grants"] += int(((kind >= VIEWER_USER) & (kind <= EDITOR_GROUP)).sum())
            counts["banned"] += int((kind == BANNED).sum())
            counts["public"] += int((kind == PUBLIC).sum())
            if chunk == 0:
                shut_doc = shut[folder[:n_docs]].copy()
                shut_doc[ob[is_group][above[sid[is_group]]]] = True
                shut_doc[ob[kind == PUBLIC]] = True
                open_docs = np.flatnonzero(~shut_doc)
                if len(open_docs):
                    d = int(open_docs[np.argmax(level[folder[open_docs]])])
                    non_member = (f"{p}user:u{0:0{text.user_width}d}",
                                  f"{p}doc:d{d:0{doc_width}d}")  # fmt: skip
            counts["docs"] += n_docs
            budget -= len(ob)
            chunk += 1

    # Documents below each folder, summed up the levels, for the top folders' owners.
    below = docs_in.copy()
    for lvl in range(spec.max_depth, 1, -1):
        ids = np.flatnonzero(level == lvl)
        np.add.at(below, parent[ids], below[ids])
    top = int(roots[np.argmax(below[roots])])
    chain_top = deep_folder
    while parent[chain_top] >= 0:
        chain_top = int(parent[chain_top])

    def user(u: int) -> str:
        return f"{p}user:u{u:0{text.user_width}d}"

    return GenReport(
        tuples=written,
        users=n_users,
        groups=int(seen.sum()),
        member_edges=member_edges,
        nested_edges=nested,
        wildcards=counts["public"],
        cycles=org.cycles,
        max_depth=spec.max_depth,
        seconds=time.perf_counter() - t0,
        bytes=n_bytes,
        deep_user=user(int(owner[chain_top])),
        deep_levels=spec.max_depth,
        largest_group=f"{p}group:{ROOT}",
        non_member=non_member,
        spec=asdict(spec),
        folders=n_folders,
        docs=counts["docs"],
        grant_tuples=counts["grants"],
        banned_tuples=counts["banned"],
        deep_doc=f"{p}doc:d{0:0{doc_width}d}",
        viewer_user=user(int(owner[top])),
        viewer_docs=int(below[top]),
    )
