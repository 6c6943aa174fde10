"""Building a sharded index on one machine: split the tuples once, build each shard.

The tuples are read once and each batch is split by ``ShardRule`` into one Arrow IPC
file per shard (a replicated tuple goes to every file); then each shard is built from
its file as an ordinary index (``build_from_batches`` with ``shard=(k, n)``) in
``DIR/shard-k``, and the manifest is written last. The Spark engine
(``leopard.spark``) produces the same directory from a cluster.
"""

from __future__ import annotations

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
from leopard.store.manifest import ShardManifest, read_manifest, shard_dir_name, write_manifest
from leopard.store.space import space_errors

__all__ = ["build_shards", "check_shard_target", "combine_reports"]


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
        if any(root.iterdir()):
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
    **build: Any,
) -> BuildReport:
    """Build the sharded index ``root`` of ``shards`` shards from tuple batches.

    ``refuse_empty`` refuses sources without a tuple (``leopard build`` does, unless
    ``--force``); ``force`` also lets a sharded index of another number of shards be
    replaced. ``build`` goes to each shard's ``build_from_batches``."""
    started = time.perf_counter()
    root = Path(root)
    check_shard_target(root, shards, force=force)
    rule = ShardRule(config, shards)
    root.mkdir(parents=True, exist_ok=True)
    split = root / ".split"
    shutil.rmtree(split, ignore_errors=True)
    split.mkdir()
    read = replicated = 0
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
            path = root / shard_dir_name(k)
            report = build_from_batches(
                _read_split(split / f"{k}.arrow"),
                path,
                config,
                shard=(k, shards),
                rejected=rejected,
                **build,
            )
            reports.append(report)
            if on_shard is not None:
                on_shard(k, report)
        write_manifest(root, ShardManifest.new(shards, engine))  # last: every shard is built
    finally:
        shutil.rmtree(split, ignore_errors=True)
    return combine_reports(reports, read, replicated, time.perf_counter() - started)


def _read_split(path: Path) -> Iterator[pa.Table]:
    if not path.exists():  # no batch at all was read
        return
    with pa.memory_map(str(path)) as source:
        reader = ipc.open_file(source)
        for i in range(reader.num_record_batches):
            yield pa.Table.from_batches([reader.get_batch(i)])
