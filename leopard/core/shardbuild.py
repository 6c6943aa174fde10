"""Building a sharded index on one machine: split the tuples once, build each shard.

The tuples are read once and each batch is split by ``ShardRule`` into one Arrow IPC
file per shard (a replicated tuple goes to every file); then each shard is built from
its file as an ordinary index (``build_from_batches`` with ``shard=(k, n)``) in
``DIR/shard-k``, and the manifest is written last. The Spark engine
(``leopard.spark``) produces the same directory from a cluster.

A reader answers from each shard's live generation, so shards swapped in one by one
as they are built would, if a later one failed, answer from two snapshots at once
(one subject's groups from the new, another's from the old). ``ShardSwap`` holds the
root's lock for the whole build (one ``.split`` per root: two builds at once would
split into each other's files) and every shard's, keeps each shard's new generation
prepared but not live, and swaps them in only once all are built and the refusals
(``--max-shrink``, nothing indexed) passed on the totals; a failure before that
abandons them all and the live index stays as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc

from leopard.core.build import BuildReport, build_from_batches
from leopard.errors import InvalidInput
from leopard.model.config import Config
from leopard.model.shards import ShardRule, check_shards
from leopard.store.generations import DirLock, IndexDir, refuse_shrink
from leopard.store.manifest import (
    MANIFEST,
    ShardManifest,
    new_build_id,
    read_manifest,
    shard_dir_name,
    write_manifest,
)
from leopard.store.space import space_errors

__all__ = ["ShardSwap", "build_shards", "check_shard_target", "combine_reports"]

_SHARD_DIR = re.compile(r"^shard-\d+$")
#: what a sharded build leaves in the root before its manifest: its lock, the split
#: files (``build_shards``) or shards built aside (``leopard.spark``), a manifest
#: half written
_ROOT_ENTRIES = frozenset({"LOCK", ".split", ".staging", MANIFEST + ".tmp"})


def check_shard_target(root: Path, shards: int, *, force: bool = False) -> None:
    """Refuse to build ``shards`` shards over something else at ``root``: an ordinary
    index, or a sharded one of another number of shards (its shards would mix)."""
    check_shards(shards, "--shards")
    if not root.exists():
        return
    if not root.is_dir():
        raise InvalidInput(f"--index {str(root)!r} is not a directory")
    manifest = read_manifest(root)
    if manifest is None:
        if any(not _left_by_a_build(entry) for entry in root.iterdir()):
            raise InvalidInput(
                f"--index {str(root)!r} is not empty and is not a sharded index: build the "
                "shards in a new directory"
            )
        return
    if manifest.shards != shards and not force:
        raise InvalidInput(
            f"--index {str(root)!r} holds {manifest.shards} shards, not {shards}: build "
            "in a new directory (or pass --force to replace them)"
        )


def _left_by_a_build(entry: Path) -> bool:
    """Whether ``entry`` of a root without a manifest is what a sharded build that
    failed (or was killed) before writing it left: a retry builds over it."""
    if entry.name in _ROOT_ENTRIES:
        return True
    return (
        _SHARD_DIR.match(entry.name) is not None
        and entry.is_dir()
        and not entry.is_symlink()
        and IndexDir(entry).foreign_entry(current=True) is None  # swapped in, or not yet
    )


class ShardSwap:
    """The locks of a sharded build of ``root``, and its shards swapped in together.

    Entered, it holds the root's lock, then every shard directory's (``wait`` as for
    one index: False, True, or seconds in all). Each shard is built into
    ``dirs[k]`` unpublished (``build_from_batches(..., publish=False)``, or ``adopt``
    a generation built elsewhere); ``publish`` swaps them all in and writes the
    manifest. Left without ``publish`` (a failure, a refusal), every prepared
    generation is abandoned: no shard changed. Each swap is a rename and a symlink;
    only a failure among those (after every shard was built) can still leave shards
    of two snapshots, and the error then says so.
    """

    def __init__(self, root: Path, shards: int, wait: bool | float = False) -> None:
        self.root = root
        self.wait = wait
        self.root_lock = DirLock(root)
        self.dirs = [IndexDir(root / shard_dir_name(k)) for k in range(shards)]

    def __enter__(self) -> ShardSwap:
        deadline = None
        if not isinstance(self.wait, bool):
            deadline = time.monotonic() + float(self.wait)
        try:
            self.root_lock.acquire(self.wait)
            for d in self.dirs:  # what is left of the wait (a message says what each waited)
                d.acquire(self._left(deadline))
        except BaseException:
            self._let_go()
            raise
        return self

    def _left(self, deadline: float | None) -> bool | float:
        if deadline is None:
            return self.wait
        return max(0.0, deadline - time.monotonic())

    def __exit__(self, *exc_info: object) -> None:
        self._let_go()

    def _let_go(self) -> None:
        for d in self.dirs:
            if d.prepared is not None:
                d.abandon(d.prepared)  # and its lock
            d.release()
        self.root_lock.release()

    def adopt(self, k: int, generation: Path) -> None:
        """Make ``generation`` (a complete one, built aside on the same file system)
        shard ``k``'s prepared generation."""
        d = self.dirs[k]
        with space_errors(d.path, "starting a new generation"):
            tmp = d.prepare()
            tmp.rmdir()
            os.replace(generation, tmp)

    def refuse_shrink(self, indexed: int, read: int, max_shrink: float) -> None:
        """``IndexDir.refuse_shrink`` over the shards' sums: ``indexed`` (every
        shard's, a replicated tuple once per shard) against the same sum over the live
        shards' build reports (when every shard has one)."""
        live = read_manifest(self.root) is not None
        before: int | None = None
        if live:
            counts = [(d.live_report() or {}).get("tuples_indexed") for d in self.dirs]
            if all(isinstance(c, int) for c in counts):
                before = sum(c for c in counts if isinstance(c, int))
        counted = "in the live shards (a tuple on every shard counted on each)"
        refuse_shrink(str(self.root), live, before, indexed, read, max_shrink, counted)

    def publish(self, manifest: ShardManifest) -> None:
        """Swap every shard's prepared generation in, then write the manifest."""
        missing = [k for k, d in enumerate(self.dirs) if d.prepared is None]
        if missing:
            raise AssertionError(f"shards {missing} of {str(self.root)!r} were not built")
        done = 0
        try:
            for d in self.dirs:
                assert d.prepared is not None
                d.publish(d.prepared)
                done += 1
            write_manifest(self.root, manifest)  # last: every shard is built
        except BaseException as exc:
            if done:
                exc.add_note(
                    f"{done} of {len(self.dirs)} shards of {str(self.root)!r} were swapped "
                    "in before this failed: rebuild the index"
                )
            raise


def combine_reports(
    reports: list[BuildReport], read: int, replicated: int, seconds: float
) -> BuildReport:
    """One report for the whole sharded index: ``read`` tuples read once, of which
    ``replicated`` went to every shard. Counts are the shards' sums (a replicated tuple
    counts on every shard), but those of the graph of sets, which every shard holds:
    ``groups`` is the most one shard holds."""
    out = BuildReport(
        tuples_read=read,
        seconds=round(seconds, 3),
        shards=len(reports),
        replicated=replicated,
    )
    for r in reports:
        out.tuples_indexed += r.tuples_indexed
        out.duplicates += r.duplicates
        out.subjects += r.subjects
        out.member_edges += r.member_edges
        out.bytes_on_disk += r.bytes_on_disk
        out.spilled_rows += r.spilled_rows
        out.subject_ranges = max(out.subject_ranges, r.subject_ranges)
        out.memory_budget = max(out.memory_budget, r.memory_budget)
        out.peak_memory = max(out.peak_memory, r.peak_memory)
        out.rejected = max(out.rejected, r.rejected)
        for k, v in r.skipped.items():
            out.skipped[k] = max(out.skipped.get(k, 0), v)
        if r.largest_group_members > out.largest_group_members:
            out.largest_group, out.largest_group_members = r.largest_group, r.largest_group_members
    if reports:
        first = reports[0]
        # the graph is on every shard: its figures are one shard's
        out.groups = max(r.groups for r in reports)
        out.nested_edges = first.nested_edges
        out.derived_edges = first.derived_edges
        out.deepest_nesting = max(r.deepest_nesting for r in reports)
        out.cycles_collapsed = first.cycles_collapsed
        out.groups_in_cycles = first.groups_in_cycles
        out.wildcards = first.wildcards
        out.opaque_usersets = first.opaque_usersets
        out.not_indexed = first.not_indexed
        out.id_order = first.id_order
    out.phases = {f"shard {k}": r.seconds for k, r in enumerate(reports)}
    return out


def build_shards(
    batches: Iterable[pa.Table],
    root: str | Path,
    config: Config,
    shards: int,
    *,
    engine: str = "local",
    rejected: Callable[[], int] | None = None,
    on_shard: Callable[[int, BuildReport], None] | None = None,
    force: bool = False,
    refuse_empty: bool = False,
    max_shrink: float | None = None,
    wait: bool | float = False,
    **build: Any,
) -> BuildReport:
    """Build the sharded index ``root`` of ``shards`` shards from tuple batches.

    ``refuse_empty`` refuses sources without a tuple (``leopard build`` does, unless
    ``--force``); ``force`` also lets a sharded index of another number of shards be
    replaced. ``max_shrink`` (a share) refuses, once every shard is built and before
    any is swapped in, to index no tuple or to lose more than that share of the live
    sharded index's tuples, counted over all shards; None checks neither. ``wait``
    is how long to wait for the root's and the shards' locks (``IndexDir.acquire``).
    ``build`` goes to each shard's ``build_from_batches``."""
    started = time.perf_counter()
    root = Path(root)
    check_shard_target(root, shards, force=force)
    rule = ShardRule(config, shards)
    split = root / ".split"
    read = replicated = 0
    build_id = new_build_id()  # in every shard and the manifest (ShardedIndex checks)
    with ShardSwap(root, shards, wait) as swap:
        # again, under the lock: a build waited for may have changed what is there
        check_shard_target(root, shards, force=force)
        shutil.rmtree(split, ignore_errors=True)
        split.mkdir()
        try:
            with space_errors(root, "splitting the tuples by shard"):
                writers: list[Any] = []
                try:
                    for batch in batches:
                        read += batch.num_rows
                        placed = rule.placed(batch)
                        replicated += int((placed == -1).sum())
                        for k in range(shards):
                            rows = batch.filter(pa.array((placed == -1) | (placed == k)))
                            if not writers:
                                writers = [
                                    ipc.new_file(str(split / f"{j}.arrow"), batch.schema)
                                    for j in range(shards)
                                ]
                            if rows.num_rows:
                                writers[k].write_table(rows)
                finally:
                    for w in writers:
                        w.close()
            if read == 0 and refuse_empty:
                raise InvalidInput("the sources hold no tuple: nothing to build the shards from")
            reports = []
            for k in range(shards):
                report = build_from_batches(
                    _read_split(split / f"{k}.arrow"),
                    swap.dirs[k],
                    config,
                    shard=(k, shards, build_id),
                    rejected=rejected,
                    publish=False,
                    **build,
                )
                reports.append(report)
                if on_shard is not None:
                    on_shard(k, report)
        finally:
            shutil.rmtree(split, ignore_errors=True)
        if max_shrink is not None:
            swap.refuse_shrink(sum(r.tuples_indexed for r in reports), read, max_shrink)
        swap.publish(ShardManifest.new(shards, engine, build=build_id))
    return combine_reports(reports, read, replicated, time.perf_counter() - started)


def _read_split(path: Path) -> Iterator[pa.Table]:
    if not path.exists():  # no batch at all was read
        return
    with pa.memory_map(str(path)) as source:
        reader = ipc.open_file(source)
        for i in range(reader.num_record_batches):
            yield pa.Table.from_batches([reader.get_batch(i)])
