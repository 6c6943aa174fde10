"""The offline build: tuple batches in, a RocksDB base layer out.

Input is a stream of Arrow tables with the string columns ``rns, rid, rel, sns, sid,
srel`` (``srel`` null for a plain subject), as the snapshot readers yield them. The
work is columnar wherever it can be (Arrow compute for classification and string
keys, numpy for grouping), because Python-level loops over 10M tuples cost seconds;
the loops that remain run once per group or once per subject.

Steps:
1. classify each tuple by the set configuration: a nesting edge (its subject is a
   userset of an indexed set), a leaf membership, or skipped (counted by reason);
2. intern names: groups get dense numbers, leaf subjects get ids in name order
   (so that ``members_of`` pages in id order are pages in name order);
3. collapse cycles, number groups depth-first so related groups are close, and
   compute GROUP2GROUP in one pass (``leopard.model.closure``; ancestors are found by
   walking the parent edges up when asked);
4. write every set to a fresh generation and swap it in (``leopard.store``).

Past the memory budget (``memory``), the leaf memberships of step 1 go to disk as they
are read and their families are written a range of subjects, then of sets, at a time
(``leopard.core.spill``); the index written is the same.

One build or compaction writes an index directory at a time (its lock is taken
before anything is read). A build that would replace the live index with an empty
one, or with one that lost more than ``max_shrink`` of its indexed tuples, stops
after reading and leaves the live index alone. A full disk ends the build with one
``StorageError`` naming the directory and the space free, the new generation
removed.
"""

from __future__ import annotations

import functools
import gc
import json
import shutil
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from leopard.core.collect import (
    Collector,
    concat,
    edges_of,
    member_edges,
    prefetch,
    support_masks,
)
from leopard.core.edgekeys import (
    bitmaps_by_head,
    derived_edges,
    derived_support,
    distinct_heads,
    largest_candidates,
    largest_group,
    remap,
    resource_nodes,
    transposed,
)
from leopard.core.forked import Child
from leopard.core.forked import fork as _fork
from leopard.core.spill import (
    Spill,
    default_memory,
    member_probes,
    peak_memory,
    put_subjects,
    release_memory,
    write_sets,
    write_subjects,
)
from leopard.errors import InvalidInput
from leopard.model.closure import Graph, condense, depths, dfs_order
from leopard.model.config import Config
from leopard.model.layered import serialized_closures
from leopard.model.setcodec import pack
from leopard.store.generations import IndexDir, base_of, dir_size, report_of
from leopard.store.layout import (
    FORMAT_VERSION,
    RESOURCE_KEY,
    base_header,
)
from leopard.store.rocks import RocksDB
from leopard.store.space import space_errors
from leopard.store.writers import BaseWriter, id_keys

__all__ = ["BuildReport", "build_from_batches", "Position"]

_FORK_SUBJECTS = 50_000  # below this, writing the subjects is not worth a process

Position = dict[str, int]  # "topic:partition" -> next offset to consume


@dataclass
class BuildReport:
    """What a build read, indexed and skipped, and what it produced."""

    tuples_read: int = 0
    tuples_indexed: int = 0  # records indexed, repeats included
    duplicates: int = 0  # of those, records repeating one before (indexed once)
    rejected: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    groups: int = 0
    subjects: int = 0
    member_edges: int = 0
    nested_edges: int = 0
    derived_edges: int = 0  # edges between sets a schema's computed and arrow feeds derive
    not_indexed: dict[str, str] = field(default_factory=dict)  # schema sets refused, and why
    wildcards: int = 0
    opaque_usersets: int = 0
    largest_group: str | None = None
    largest_group_members: int = 0
    deepest_nesting: int = 0
    cycles_collapsed: int = 0
    groups_in_cycles: int = 0
    bytes_on_disk: int = 0
    seconds: float = 0.0
    id_order: str = "dfs"
    phases: dict[str, float] = field(default_factory=dict)
    #: a sharded build: the number of shards, and the tuples read that went to every
    #: shard (the graph's; counted once per shard in the sums above)
    shards: int = 0
    replicated: int = 0
    #: the memory budget (bytes), the leaf-membership rows spilled to disk to stay
    #: within it and the subject ranges they were worked in; the process's peak memory
    memory_budget: int = 0
    spilled_rows: int = 0
    subject_ranges: int = 0
    peak_memory: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_from_batches(
    batches: Iterable[pa.Table],
    path: str | Path | IndexDir,
    config: Config,
    *,
    position: Position | None = None,
    id_order: str = "dfs",
    rejected: Callable[[], int] | None = None,
    on_phase: Callable[[str], None] | None = None,
    max_shrink: float | None = None,
    wait: bool | float = False,
    source_state: dict[str, dict[str, Any]] | None = None,
    shard: tuple[int, int] | tuple[int, int, str] | None = None,
    memory: int | None = None,
    publish: bool = True,
) -> BuildReport:
    """Build an index at ``path`` from tuple batches and swap it in.

    ``id_order`` is ``"dfs"`` (related groups get nearby ids) or ``"input"`` (first
    appearance), kept for measuring what the ordering buys. With ``max_shrink`` (a
    share, 0.5 for half) the build refuses, after reading, to index no tuple at all
    or to lose more than that share of the live generation's indexed tuples; None
    checks neither (compaction). ``wait`` is how long to wait for the directory's
    lock: False not at all, True as long as it takes, or seconds. ``path`` may be an
    ``IndexDir`` whose lock the caller already holds. ``position`` and
    ``source_state`` are where the change stream resumes (a compaction carries them
    over from the incremental layer it folds). ``shard`` (``(k, n)``) marks the index
    as shard ``k`` of ``n`` of a sharded index (``leopard.model.shards``): the batches
    hold only what that shard holds, and the changes applied to it later are filtered
    the same way. ``memory`` is the budget in bytes (default: half the machine's)
    beyond which the leaf memberships spill to disk (``leopard.core.spill``).
    ``publish`` False builds the generation but does not swap it in: it stays
    prepared, the lock held (``path`` is then the caller's ``IndexDir``, whose
    ``prepared`` names it), for the caller to ``publish`` or ``abandon``. A sharded
    build swaps in no shard before every shard is built, or none if one fails.
    """
    if id_order not in ("dfs", "input"):
        raise InvalidInput(f"id_order must be 'dfs' or 'input', not {id_order!r}")
    started = time.perf_counter()
    report = BuildReport(id_order=id_order, memory_budget=memory or default_memory())
    phases: dict[str, float] = {}
    mark = started

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 3)
        mark = now
        if on_phase is not None:
            on_phase(name)

    if not publish and not isinstance(path, IndexDir):
        raise InvalidInput("publish=False needs path as an IndexDir, to publish it from")
    index_dir = path if isinstance(path, IndexDir) else IndexDir(path)
    with space_errors(index_dir.path, "starting a new generation"):
        tmp = index_dir.prepare(wait)
    writing = False  # reading is done: a full disk from here on is the index's
    child: Child | None = None  # the forked subject writer, until it has been waited for
    # Millions of short-lived ints and bytes would trigger a full collection again
    # and again; nothing built here forms reference cycles.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        col = Collector(config)
        spill = Spill(tmp / "spill", report.memory_budget, index_dir.path)
        try:
            for part in prefetch(batches, prepare=col.prepare):
                col.absorb(part)
                spill.absorb(col)
            spill.finish(col)
            positions = col.finish()
            if spill.rows:  # the spilled rows are name positions still
                spill.positions = positions
            del positions
        finally:
            col.close()
        release_memory()  # what reading freed, kept by Arrow's pool and the C heap
        phase("read")
        if max_shrink is not None and col.indexed == 0:
            index_dir.refuse_shrink(0, col.read, max_shrink, why=none_indexed(config, col))
        # an edge row per set a record feeds; fewer distinct edges (and sources) are repeats
        edge_rows = spill.rows + sum(len(a) for a in (*col.m_group, *col.n_parent))
        writing = True

        n_groups = len(col.group_names)
        n_leaves = len(col.leaf_names)
        n_p, n_c = concat(col.n_parent), concat(col.n_child)
        nested = edges_of(n_p, n_c, concat(col.n_flag, bool))
        col.n_parent = col.n_child = col.n_flag = []
        derived, derived_counts = derived_edges(col)
        # leaf ids in name order, so pages of members_of are id ranges
        leaf_names = col.leaf_names
        by_name = pc.sort_indices(leaf_names).to_numpy()
        leaf_id = np.empty(n_leaves, dtype=np.int64)
        leaf_id[by_name] = np.arange(n_leaves, dtype=np.int64)
        phase("intern")

        # -- closure: over the edges of tuples and the edges a schema derives -------
        down_tmp = nested[0]
        # (duplicates are dropped by Graph.from_edges; np.union1d hashes, many times slower)
        every = np.concatenate((down_tmp, derived)) if len(derived) else down_tmp
        graph = Graph.from_edges(
            n_groups,
            (every >> np.uint64(32)).astype(np.int64),
            (every & np.uint64(0xFFFFFFFF)).astype(np.int64),
        )
        del every
        cond = condense(graph)
        # With a schema: the tier of every set, and the group tier's ids first
        is_resource = resource_nodes(config, col.group_names)
        resource = None
        if is_resource is not None:
            comp_first = cond.first_members()
            resource = is_resource[comp_first].tolist() if len(comp_first) else []
        if id_order == "dfs":
            new_id = dfs_order(cond, skip=resource)
            if is_resource is not None:
                # resources after the groups, by name: an object's sets side by side,
                # and a folder's next to its subfolders' (names share their prefix)
                res_nodes = np.flatnonzero(is_resource)
                by_name_ = pc.sort_indices(pc.take(col.group_names, pa.array(res_nodes)))
                start = n_groups - len(res_nodes)
                new_id[res_nodes[by_name_.to_numpy()]] = np.arange(start, n_groups)
        else:
            new_id = np.arange(n_groups, dtype=np.int64)
            if is_resource is not None:
                new_id = np.argsort(np.argsort(is_resource * n_groups + new_id, kind="stable"))
        # the leaf memberships wait for the final ids: then one sort orders them
        member = member_edges(col, new_id, leaf_id)
        by_leaf = member[0]
        # as UTF-8 bytes, the form the subject families store (no str made and encoded)
        # (spilled: a range of subjects' at a time, as their memberships are written)
        names_sorted = [] if spill.rows else _names(leaf_names, by_name)
        phase("order")

        order = np.argsort(new_id)
        comp_of = cond.comp[order].tolist()  # component of each final id

        # MEMBER2GROUP (a million or more keys) is written by a child process while
        # this one does GROUP2GROUP, the edges and the subjects' names: pyroaring holds
        # the GIL, so threads would not help.
        sst_dir = tmp / "sst"
        sst_dir.mkdir()
        writer = BaseWriter(sst_dir)
        spilled = None
        if spill.rows:  # a range of subjects at a time, before the closures are held
            probes = member_probes(col, new_id, leaf_id)
            names = (leaf_names, by_name)
            spilled = write_subjects(spill, writer, (new_id, leaf_id), names, probes)
            member = spilled.fed
            del probes, names
            phase("spilled subjects")
        elif n_leaves >= _FORK_SUBJECTS:
            child = _fork(functools.partial(_write_subjects, writer, by_leaf, names_sorted, True))
        if child is None and spilled is None:
            _write_subjects(writer, by_leaf, names_sorted, False)
        del by_leaf

        g2g, g2g_sizes = serialized_closures(cond, new_id, resource=resource, graph=graph)
        depth = depths(cond)
        phase("closure")
        if spilled is not None:
            # the closures go to their file before the memberships by set are worked
            reach = {}
            if spilled.edges:
                most_direct = int(np.argmax(spilled.sizes))
                reach = largest_candidates(cond, g2g, g2g_sizes, new_id, comp_of, most_direct)
            _write_closures(writer, "g2g", g2g, comp_of)
            g2g = []
            write_sets(spilled, writer, reach)
            report.spilled_rows, report.subject_ranges = spill.rows, spilled.ranges
            phase("spilled sets")

        names_in_order = pc.take(col.group_names, pa.array(order)).to_pylist()
        down = remap(down_tmp, new_id, new_id, swap=False)
        up = remap(down_tmp, new_id, new_id, swap=True)
        by_group = transposed(member[0], n_leaves, n_groups) if spilled is None else None
        support, more = support_masks(col, nested, member, new_id, leaf_id)
        distinct = len(down_tmp) + (len(member[0]) if spilled is None else spilled.edges) + more
        # exact where each record feeds one set (a relation feeding several: not counted)
        duplicates = edge_rows - distinct if edge_rows == col.indexed else 0
        if max_shrink is not None:
            index_dir.refuse_shrink(col.indexed, col.read, max_shrink, duplicates)
        subjects = distinct_heads(member[0]) if spilled is None else member[0][:0]
        del leaf_names
        d_down = remap(derived, new_id, new_id, swap=False)
        d_up = remap(derived, new_id, new_id, swap=True)
        d_support = derived_support(derived, derived_counts, new_id)
        del member, nested
        phase("edges")

        # -- write --------------------------------------------------------------
        if spilled is None:
            _write_closures(writer, "g2g", g2g, comp_of)
        families = (
            ("child", down),
            ("parent", up),
            *((("g2m", by_group),) if by_group is not None else ()),
            ("dchild", d_down),
            ("dparent", d_up),
        )
        for family, keys in families:
            with writer.family(family) as w:
                for heads, values in bitmaps_by_head(keys):
                    w.put_many(id_keys(heads), values)
        for family, pairs in (("support", support), ("dsupport", d_support)):
            with writer.family(family) as w:
                w.put_many([k for k, _ in pairs], [v for _, v in pairs])
        # the subjects' names are written here, their MEMBER2GROUP values by the child:
        # so the two processes' shares of the writing come out about even (spilled:
        # both were written a range at a time)
        if spilled is None:
            with writer.family("sname") as w:
                for start in range(0, len(subjects), _KEYS_AT_ONCE):
                    ids = subjects[start : start + _KEYS_AT_ONCE]
                    w.put_many(id_keys(ids), [names_sorted[i] for i in ids.tolist()])
        del names_sorted, subjects
        phase("write groups")

        if spilled is None:
            assert by_group is not None
            n_member = len(by_group[2])
            largest_of = largest_group(cond, g2g, g2g_sizes, new_id, comp_of, by_group)
        else:
            n_member, largest_of = spilled.edges, spilled.largest
        largest_gid, largest_n = largest_of
        largest = names_in_order[largest_gid] if largest_gid >= 0 else None
        if child is not None:
            waited, child = child, None
            waited.wait()
        phase("write subjects")

        report.tuples_read = col.read
        report.tuples_indexed, report.duplicates = col.indexed, duplicates
        report.skipped = dict(col.skipped.most_common())
        report.rejected = rejected() if rejected else 0
        report.groups = n_groups
        report.subjects = n_leaves
        report.member_edges = int(n_member)
        report.nested_edges = int(len(down))
        report.derived_edges = int(len(d_down))
        plan = config.plan
        if plan is not None:
            report.not_indexed = {f"{t}#{r}": why for (t, r), why in sorted(plan.refused.items())}
        report.wildcards = col.wildcards
        report.opaque_usersets = col.opaque
        report.largest_group = largest
        report.largest_group_members = largest_n
        report.deepest_nesting = max(depth) if depth else 0
        report.cycles_collapsed = cond.cycles
        report.groups_in_cycles = cond.in_cycles

        meta = {
            "format_version": FORMAT_VERSION,
            "config": json.loads(config.to_json()),
            "position": dict(position or {}),
            "source_state": dict(source_state or {}),
            "groups": n_groups,
            "subjects": n_leaves,
            "built_at": time.time(),
            "id_order": id_order,
        }
        if shard is not None:
            # (k, n), and the build's id that ShardedIndex holds every shard to
            meta["shard"] = [int(shard[0]), int(shard[1]), *(str(s) for s in shard[2:3])]
        db = RocksDB(base_of(tmp), read_only=False, bulk=True)
        try:
            writer.store(db)
            for key, value in base_header(names_in_order, meta):  # with their checksum
                db.put(key, value)
            if is_resource is not None:
                ids = np.flatnonzero(is_resource[order]).astype(np.uint32)
                db.put(RESOURCE_KEY, BitMap(array("I", ids.tobytes())).serialize())
            db.flush()
        finally:
            db.close()
        shutil.rmtree(sst_dir, ignore_errors=True)
        shutil.rmtree(spill.directory, ignore_errors=True)
        phase("ingest")
        report.bytes_on_disk = dir_size(tmp)
        report.peak_memory = peak_memory()
        report.phases = phases
        report.seconds = round(time.perf_counter() - started, 3)
        _write_report(tmp, report)
        if publish:
            index_dir.publish(tmp)
    except BaseException as exc:
        # Stop the child before removing its directory (and so that it is no zombie).
        # A failure of either is noted on the original error, which is the one raised.
        try:
            if child is not None:
                child.kill()
        except Exception as cleanup:
            exc.add_note(f"stopping the subject writer failed too: {cleanup!r}")
        try:
            index_dir.abandon(tmp)
        except Exception as cleanup:
            exc.add_note(f"removing the new generation failed too: {cleanup!r}")
        error = index_dir.no_space(exc, tmp) if writing else None
        if error is not None:
            raise error from exc
        raise
    finally:
        if gc_was_enabled:
            gc.enable()
    return report


#: keys written per ``put_many`` of a closure family (bounds the lists held at once)
_KEYS_AT_ONCE = 1 << 20


def _write_closures(
    writer: BaseWriter, family: str, serialized: list[bytes], comp_of: list[int]
) -> None:
    """One closure family: every group gets its component's set (compact where
    smaller: ``setcodec.pack``)."""
    with writer.family(family, file_only=False) as w:
        for start in range(0, len(comp_of), _KEYS_AT_ONCE):
            comps = comp_of[start : start + _KEYS_AT_ONCE]
            values = [pack(serialized[c]) for c in comps]
            w.put_many(id_keys(np.arange(start, start + len(comps))), values)


def _write_subjects(
    writer: BaseWriter, by_leaf: np.ndarray, names: list[bytes], file_only: bool
) -> None:
    """MEMBER2GROUP, in subject id (= name) order."""
    with writer.family("m2g", file_only=file_only) as m2g:
        put_subjects(m2g, by_leaf, names, 0)


def _names(leaf_names: pa.Array, by_name: np.ndarray) -> list[bytes]:
    """The leaves' names in id (= name) order, as UTF-8 bytes."""
    return pc.take(leaf_names, pa.array(by_name)).cast(pa.binary()).to_pylist()  # type: ignore[no-any-return]


def none_indexed(config: Config, col: Collector, shown: int = 3) -> str | None:
    """Why no record read was indexed, when records were read: the configuration
    matches none of them (the commonest reasons it skipped them); else None."""
    if not col.skipped:
        return None
    source = config.schema_source
    what = f"the schema {config.origin}" if source else f"the set configuration {config.origin}"
    reasons = [f"{n:,}: {why}" for why, n in col.skipped.most_common(shown)]
    if len(col.skipped) > shown:
        reasons.append(f"and {len(col.skipped) - shown} more reasons")
    return (
        f"{what} indexes none of the {col.read:,} tuples read (skipped {'; '.join(reasons)}); "
        "check it against the snapshots"
    )


def _write_report(tmp: Path, report: BuildReport) -> None:
    report_of(tmp).write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True))
