"""The Python face: ``build_index`` and ``open_index``, as ``leopard`` exports them.

A shell like the CLI and the HTTP service: the core never imports ``ingest``, and
this module is where the snapshot readers of ``ingest`` meet the core build.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ingest.snapshots import ReadStats, read_snapshots
from ingest.snapshots.rejects import RejectsFile
from leopard.core.build import BuildReport, Position, build_from_batches
from leopard.core.index import Index
from leopard.core.shardbuild import build_shards
from leopard.core.sharded import ShardedIndex, open_any
from leopard.core.spill import batch_rows, memory_bytes
from leopard.errors import InvalidInput
from leopard.model.config import Config, load_config, schema_config

__all__ = ["build_index", "open_index"]


def build_index(
    sources: Sequence[str | Path | Iterable[str]] | str | Path,
    path: str | Path,
    config: Config | str | Path | None = None,
    *,
    format: str | None = None,
    skip_invalid: bool = False,
    on_reject: Callable[[Any], None] | None = None,
    rejects: str | Path | None = None,
    position: Position | None = None,
    progress: Callable[[int], None] | None = None,
    id_order: str = "dfs",
    force: bool = False,
    max_shrink: float = 0.5,
    wait: bool | float = False,
    schema: str | Path | None = None,
    only: Sequence[str] = (),
    shards: int | None = None,
    memory: float | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> BuildReport:
    """Build an index at ``path`` from snapshot files (or iterables of tuple lines).

    ``config`` is a Config, a path to a TOML set configuration, or None for the
    default (every namespace's ``member``); or ``schema`` names a SpiceDB schema
    (``.zed``) or OpenFGA model (``.fga``, ``.json``) whose union-only relations and
    permissions are the sets (``only``: just these ``type#relation`` sets and what they
    depend on); giving both is an error. A malformed record raises InvalidInput
    naming its file and line unless ``skip_invalid``, which indexes everything valid
    and hands every rejected record to ``on_reject`` and writes it to the file
    ``rejects``, which once its records are fixed is a snapshot of their format: text
    (each record after a ``#`` line with its reason), CSV (the snapshot's header
    first), a JSON array or JSON lines; for the last three the reasons go to
    ``<rejects>.reasons``, one line a record (``ingest.snapshots.rejects``, whose
    ``rejects_targets`` names the files, one a format when the snapshots mix them).

    The build refuses (InvalidInput, the live index untouched) to index no tuple at
    all, or to replace the live index with one that lost more than ``max_shrink``
    (a share: 0.5 is half) of its indexed tuples, unless ``force``. One build or
    compaction writes a directory at a time: another one at work makes this one fail
    at once, or with ``wait`` wait for it (True: as long as it takes; or seconds).

    With ``shards`` (a number), ``path`` becomes a sharded index: that many ordinary
    indexes, each holding the graph of sets and its share of the subjects, and a
    manifest (see ``leopard.model.shards``); ``open_index`` opens it as one. The
    refusals count over all shards, and no shard is swapped in before every shard is
    built (``leopard.core.shardbuild.ShardSwap``).

    ``memory`` (GiB; default: half the machine's) is the budget beyond which the
    build spills its leaf memberships to disk and writes them a range of subjects at
    a time (``leopard.core.spill``): what grows with the tuples stays within it.
    ``on_phase`` is called with the name of each phase of a build as it ends (of
    each shard's build, with ``shards``).
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    budget = None if memory is None else memory_bytes(memory, "memory")
    if not 0 <= max_shrink <= 1:
        raise InvalidInput(f"max_shrink is a share between 0 and 1, not {max_shrink!r}")
    if schema is not None:
        if config is not None:
            raise InvalidInput("give either a set configuration or a schema, not both")
        cfg = schema_config(schema, only)
    elif only:
        raise InvalidInput("only narrows a schema: give the schema too")
    else:
        cfg = config if isinstance(config, Config) else load_config(config)
    stats = ReadStats()
    with RejectsFile(rejects, sources, format, on_reject) as sink:
        batches = read_snapshots(
            sources,
            format=format,
            skip_invalid=skip_invalid,
            on_reject=sink.write if sink.wanted else None,
            stats=stats,
            progress=progress,
            batch_rows=batch_rows(budget),
        )
        if shards is not None:
            return build_shards(
                sink.closed_after(batches),
                path,
                cfg,
                shards,
                rejected=lambda: stats.rejected,
                position=position,
                id_order=id_order,
                wait=wait,
                force=force,
                refuse_empty=not force,
                max_shrink=None if force else max_shrink,
                memory=budget,
                on_phase=on_phase,
            )
        return build_from_batches(
            sink.closed_after(batches),
            path,
            cfg,
            position=position,
            id_order=id_order,
            rejected=lambda: stats.rejected,
            max_shrink=None if force else max_shrink,
            wait=wait,
            memory=budget,
            on_phase=on_phase,
        )


def open_index(path: str | Path) -> Index | ShardedIndex:
    """Open the index at ``path`` for queries (a sharded index as one: every shard,
    each query routed as a router would route it)."""
    return open_any(path)
