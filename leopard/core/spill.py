"""A build within a memory budget: leaf memberships spill to disk and are worked a
range of subjects at a time.

An in-memory build holds every leaf membership row several times over at its peak
(name positions as read, then keys sorted and deduplicated, then regrouped by set):
about 90 bytes a row on the generated org (8.9 GiB at 100M tuples). Memberships are
nearly all of the tuples, so they are what grows with the data; names, sets and
closures grow with the subjects and the sets. Given a budget (``leopard build
--memory``), the build estimates what the rows read so far will cost; once that
passes a share of the budget, it writes them to disk as they come instead:

1. **read**: the collector's rows (name positions), a chunk at a time, to ``spill/``;
2. **route**: each chunk keyed by final ids (subject, set, first-source flag as the
   in-memory build keys them), sorted, and appended to the file of its subject range
   (``ranges``, each small enough to work within the budget);
3. **subjects**: one range at a time, in id order: its keys deduplicated, MEMBER2GROUP
   and the subjects' names written, every edge routed again, keyed by set, to the
   file of its set range, and the first-source flags the support masks ask for read;
4. **sets**: one range at a time: GROUP2MEMBER written, and the leaf members below
   the candidates for the largest set counted.

What it writes is what an in-memory build writes, byte for byte (the tests compare
both). The budget does not bound what grows with the subjects and the sets (their
names, the map from name positions to ids, the closures) nor the rows of a set's
sources after its first (support masks): a budget below those is exceeded, and the
build says by how much in its report (``peak_memory``).
"""

from __future__ import annotations

import ctypes
import math
import os
import resource
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from leopard.core.collect import Collector, concat, distinct_flagged, sort_keys
from leopard.core.edgekeys import bitmaps_by_head, distinct_heads, leaves_below, split_sorted
from leopard.errors import InvalidInput, StorageError
from leopard.store.space import space_errors
from leopard.store.writers import BaseWriter, FamilyWriter, id_keys

__all__ = [
    "MEMORY_ENV",
    "Members",
    "Spill",
    "batch_rows",
    "default_memory",
    "member_probes",
    "memory_bytes",
    "peak_memory",
    "put_subjects",
    "release_memory",
    "write_sets",
    "write_subjects",
]

GiB = 1 << 30
#: peak bytes of an in-memory build per leaf-membership row (generated org: 8.9 GiB
#: at 100M tuples, 1.4 GiB at 10M)
_ROW_PEAK = 90
#: spill once the rows read would cost this share of the budget in memory
_SPILL_AT = 0.75
#: bytes a row costs on the collector's lists (two int64 positions and a flag)
_ROW_HELD = 17
#: once spilling, a chunk is written when the rows held pass budget / _CHUNKS
_CHUNKS = 32
#: bytes a row costs while its range is worked (keys, sort, dedup, serialized sets)
_ROW_WORK = 128
#: the share of the budget a range's work may take
_WORK_SHARE = 0.25
_MAX_RANGES = 4096
_LOW = np.uint64(0xFFFFFFFF)


#: the environment variable that sets every build's budget (GiB) where none is given,
#: the compactions a consumer starts included
MEMORY_ENV = "LEOPARD_MEMORY"


def default_memory() -> int:
    """``$LEOPARD_MEMORY`` GiB; else half the memory of the machine, or of the control
    group the build runs in."""
    given = os.environ.get(MEMORY_ENV, "").strip()
    if given:
        return memory_bytes(given, MEMORY_ENV)
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        limit = "max"
    if limit.isdigit():
        total = min(total, int(limit))
    return total // 2


def memory_bytes(gib: float | str, where: str) -> int:
    """``gib`` GiB (a number, or its text) as bytes; InvalidInput naming ``where`` and
    the value unless it is a positive amount."""
    try:
        amount = float(gib)
    except (TypeError, ValueError):
        amount = math.nan
    if not (math.isfinite(amount) and amount > 0):
        raise InvalidInput(f"{where}: a memory budget is a number of GiB above 0, not {gib!r}")
    return max(1, int(amount * GiB))


def batch_rows(budget: int | None) -> int:
    """Rows per batch read within ``budget``: reading holds about 1 KiB a row in
    flight (batches being parsed, classified and absorbed; 1M-row batches came to
    1.0-1.3 GiB resident at 40M tuples), a sixth of the budget at most, from 64Ki
    rows to 1Mi (the default)."""
    if budget is None:
        return 1 << 20
    return max(1 << 16, min(1 << 20, budget // (6 << 10)))


def peak_memory() -> int:
    """This process's peak resident memory so far, in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _ranges(rows: int, budget: int, limit: int) -> int:
    """How many ranges ``rows`` rows are worked in, at most ``limit`` (and 1)."""
    wanted = math.ceil(rows * _ROW_WORK / max(1.0, budget * _WORK_SHARE))
    return max(1, min(wanted, limit, _MAX_RANGES))


class Spill:
    """The leaf-membership rows of a build, on disk once they would not fit."""

    def __init__(self, directory: Path, budget: int, where: Path | None = None) -> None:
        self.directory = directory
        self.budget = budget
        #: what a full disk is said to be under (the index directory)
        self.where = where or directory
        self.chunks: list[tuple[Path, int]] = []
        self.rows = 0  # rows on disk
        #: what ``Collector.finish`` gives: the maps of name positions to ids
        self.positions: tuple[np.ndarray, ...] = ()

    def absorb(self, col: Collector) -> None:
        """After each batch: the collector's rows go to disk once spilling has begun
        and a chunk's worth waits, or when they would cost more than the budget allows."""
        held = sum(len(a) for a in col.m_group)
        if not held:
            return
        if self.chunks:
            if held * _ROW_HELD >= self.budget / _CHUNKS:
                self._write(col)
        elif held * _ROW_PEAK >= self.budget * _SPILL_AT:
            self._write(col)

    def finish(self, col: Collector) -> None:
        """Once spilling: the rows still held go to disk too."""
        if self.chunks and col.m_group:
            self._write(col)

    def _write(self, col: Collector) -> None:
        group, leaf, flag = concat(col.m_group), concat(col.m_leaf), concat(col.m_flag, bool)
        col.m_group, col.m_leaf, col.m_flag = [], [], []
        path = self.directory / f"rows-{len(self.chunks):06d}"
        with space_errors(self.where, "spilling leaf memberships"):
            self.directory.mkdir(exist_ok=True)
            with open(path, "wb") as out:
                out.write(group.astype("<i8").tobytes())
                out.write(leaf.astype("<i8").tobytes())
                out.write(flag.astype(np.uint8).tobytes())
        self.chunks.append((path, len(group)))
        self.rows += len(group)
        del group, leaf, flag
        release_memory()

    def _read(self, path: Path, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raw = np.fromfile(path, dtype=np.uint8)
        if len(raw) != 17 * n:
            raise StorageError(
                f"spilled leaf memberships {path} hold {len(raw)} bytes where {n} rows "
                f"take {17 * n}: the file changed under the build; build again"
            )
        group = raw[: 8 * n].view("<i8")
        leaf = raw[8 * n : 16 * n].view("<i8")
        return group, leaf, raw[16 * n :].view(bool)


@dataclass
class Members:
    """What the spilled rows came to: the support masks' first-source flags (the
    probes, sorted, and whether a first source feeds each), the leaf members per set
    id, the distinct edges, the subject ranges, the edges by set (``write_sets``
    takes them) and the largest set by leaf members below it (once taken)."""

    fed: tuple[np.ndarray, np.ndarray]
    sizes: np.ndarray
    ranges: int
    sets: _Ranges
    edges: int = 0
    largest: tuple[int, int] = (-1, 0)


def member_probes(col: Collector, new_id: np.ndarray, leaf_id: np.ndarray) -> np.ndarray:
    """The leaf edges, sorted and distinct (``subject<<32|group``, final ids), of the
    rows of a set's sources after its first: those whose support mask needs to know
    whether a first source feeds them too (``support_masks``)."""
    rows = [(g[~nested], o[~nested]) for g, nested, o, _ in col.extra_bits]
    if not rows:
        return np.zeros(0, np.uint64)
    leaf = leaf_id[concat([o for _, o in rows])].astype(np.uint64)
    group = new_id[concat([g for g, _ in rows])].astype(np.uint64)
    return np.unique((leaf << np.uint64(32)) | group)


def put_subjects(m2g: FamilyWriter, keys: np.ndarray, names: list[bytes], first: int) -> None:
    """MEMBER2GROUP of sorted distinct ``subject<<32|group`` keys, in subject id (=
    name) order; ``names[i]`` is the name of subject ``first + i``."""
    for heads, groups in bitmaps_by_head(keys):
        ids = id_keys(heads)
        encoded = [names[sid - first] for sid in heads.tolist()]
        # a MEMBER2GROUP value is the subject's id, then its groups (``m2g_value``)
        m2g.put_many(encoded, [k + g for k, g in zip(ids, groups, strict=True)])


def write_subjects(
    spill: Spill,
    writer: BaseWriter,
    ids: tuple[np.ndarray, np.ndarray],
    names: tuple[pa.Array, np.ndarray],
    probes: np.ndarray,
) -> Members:
    """MEMBER2GROUP and the subjects' names from the spilled rows (steps 2 and 3);
    the edges wait, by set, for ``write_sets``.

    ``spill.positions`` take name positions to collector ids (groups, leaves), ``ids``
    collector ids to final ids; ``names`` are the leaf names and their order (final id -> leaf);
    ``probes`` the sorted distinct ``subject<<32|group`` edges whose first-source flag
    the support masks need.
    """
    new_id, leaf_id = ids
    leaf_names, by_name = names
    n_groups, n_leaves = len(new_id), len(leaf_id)
    g_of, l_of = spill.positions
    spill.positions = ()  # the caller holds them no more: they go once they are keys
    group_of = new_id[g_of].astype(np.uint64) << np.uint64(1)  # name position -> key part
    leaf_of = leaf_id[l_of].astype(np.uint64) << np.uint64(33)
    del g_of, l_of
    release_memory()
    subject_files = _Ranges(spill, "subjects", n_leaves, 33)
    for path, n in spill.chunks:
        group, leaf, flag = spill._read(path, n)
        key = np.take(leaf_of, leaf)
        key |= np.take(group_of, group)
        key |= flag
        del group, leaf, flag
        path.unlink()
        sort_keys(key)
        subject_files.append(key)
    del group_of, leaf_of
    release_memory()

    out = Members(
        fed=(probes, np.zeros(len(probes), dtype=bool)),
        sizes=np.zeros(n_groups, dtype=np.int64),
        ranges=subject_files.count,
        sets=_Ranges(spill, "sets", n_groups, 32),
    )
    with writer.family("m2g", file_only=True) as m2g, writer.family("sname") as sname:
        for k, key in subject_files.each():
            if not len(key):
                continue
            edge, by_first = distinct_flagged(key)
            del key
            lo, hi = subject_files.bounds(k)
            span = np.array([lo, hi], dtype=np.uint64) << np.uint64(32)
            a, b = np.searchsorted(probes, span).tolist()
            pos = np.searchsorted(edge, probes[a:b])
            out.fed[1][a:b] = by_first[np.minimum(pos, len(edge) - 1)]
            del by_first
            order = pa.array(by_name[lo:hi])
            range_names = pc.take(leaf_names, order).cast(pa.binary()).to_pylist()
            put_subjects(m2g, edge, range_names, lo)
            subjects = distinct_heads(edge)
            sname.put_many(id_keys(subjects), [range_names[i - lo] for i in subjects.tolist()])
            del range_names, subjects
            # (not a bincount over every set: that would cost the sets at every range)
            gids, counts = np.unique((edge & _LOW).astype(np.int64), return_counts=True)
            out.sizes[gids] += counts
            swapped = (edge & _LOW) << np.uint64(32) | (edge >> np.uint64(32))
            del edge, gids, counts
            swapped.sort()
            out.sets.append(swapped)
            out.edges += len(swapped)
            release_memory()
    return out


def write_sets(members: Members, writer: BaseWriter, reach: dict[int, np.ndarray]) -> None:
    """GROUP2MEMBER from the edges ``write_subjects`` left by set (step 4), and the
    largest of the sets in ``reach`` (each with the sets below it) by leaf members."""
    below = {gid: BitMap() for gid in reach}
    with writer.family("g2m", file_only=True) as g2m:
        for _, key in members.sets.each():
            sort_keys(key)
            split = split_sorted(key)
            for heads, values in bitmaps_by_head(split):
                g2m.put_many(id_keys(heads), values)
            for gid, groups in reach.items():
                below[gid] |= BitMap(array("I", leaves_below(split, groups).tobytes()))
            del key, split
            release_memory()
    best = max(below, key=lambda gid: (len(below[gid]), -gid), default=-1)
    members.largest = (best, len(below[best]) if best >= 0 else 0)


def release_memory() -> None:
    """Give the memory freed since back to the system: Arrow's pool keeps what it
    freed, and so does the C heap, until asked (after reading 40M tuples, 1.2 GiB
    resident of which 0.5 GiB was held and nothing else in use)."""
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


class _Ranges:
    """Files of sorted uint64 keys, one per range of the ids in their high bits: as
    many ranges as the spilled rows need to be worked within the budget."""

    def __init__(self, spill: Spill, name: str, ids: int, shift: int) -> None:
        self.directory = spill.directory
        self.where = spill.where
        self.name = name
        self.count = count = _ranges(spill.rows, spill.budget, ids)
        self.shift = np.uint64(shift)
        self.starts = np.asarray([k * ids // count for k in range(count + 1)], dtype=np.int64)
        self.keys = (self.starts[1:-1].astype(np.uint64)) << self.shift

    def bounds(self, k: int) -> tuple[int, int]:
        return int(self.starts[k]), int(self.starts[k + 1])

    def path(self, k: int) -> Path:
        return self.directory / f"{self.name}-{k:05d}"

    def append(self, key: np.ndarray) -> None:
        """Append sorted ``key`` to the files of their ranges."""
        cuts = [0, *np.searchsorted(key, self.keys).tolist(), len(key)]
        with space_errors(self.where, "spilling leaf memberships"):
            for k in range(self.count):
                if cuts[k + 1] > cuts[k]:
                    with open(self.path(k), "ab") as out:
                        out.write(key[cuts[k] : cuts[k + 1]].astype("<u8").tobytes())

    def each(self) -> Iterator[tuple[int, np.ndarray]]:
        """Each range's keys, in order (its file removed once read)."""
        for k in range(self.count):
            path = self.path(k)
            if path.exists():
                key = np.fromfile(path, dtype="<u8")
                path.unlink()
            else:
                key = np.zeros(0, np.uint64)
            yield k, key
