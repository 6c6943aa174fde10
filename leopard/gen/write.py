"""Writing an org: the structure's tuples, then user memberships chunk by chunk.

Speed: the group structure (a few percent of the tuples) is built once in memory;
user memberships are then drawn in chunks of at most 100,000 users, each with its own
random stream and sized from the spec alone, so memory stays flat and the output does
not depend on the machine. Lines are formatted column-wise with pyarrow (take
precomputed ``group:…#member@user:u`` heads, join them with zero-padded user ids) and
written as one buffer per chunk.
"""

from __future__ import annotations

import gzip
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from leopard.errors import InvalidInput
from leopard.gen.spec import GenReport, OrgSpec
from leopard.gen.structure import (
    MANAGER,
    MEAN_GROUPS_PER_USER,
    ROOT,
    Org,
    build_org,
    pick_samples,
)

__all__ = ["generate"]

# Users per membership chunk (about ten tuples each). A constant, never derived from
# the machine, because each chunk has its own random stream: changing it changes output.
_CHUNK_USERS = 100_000
_MANAGER_SHARE = 0.10  # of users, who hold ``manager`` on their primary team


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
    if spec.shape != "org":
        raise InvalidInput(f"shape={spec.shape!r}: leopard.gen.generate writes it")
    t0 = time.perf_counter()
    org = build_org(spec)
    leaf, deep_group, deep_levels, non_member = pick_samples(org, spec.max_depth)
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
    id_width = max(6, len(str(int(1.5 * spec.tuples / MEAN_GROUPS_PER_USER))))

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
            n_users = min(_CHUNK_USERS, max(1_000, int(2 * budget / MEAN_GROUPS_PER_USER)))
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
        manager_tuples=managers + int((org.rel == MANAGER).sum()),
        bytes=n_bytes,
        deep_user=deep_user if deep_group is not None else None,
        deep_group=gname(deep_group),
        deep_levels=deep_levels,
        largest_group=f"{ns_group}:{ROOT}",
        non_member=(deep_user, f"{ns_group}:{org.names[non_member]}")
        if non_member is not None
        else None,
        spec=asdict(spec),
    )


def _memberships(
    spec: OrgSpec, org: Org, chunk: int, n: int, leaf: int
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
