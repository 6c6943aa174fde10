"""The Python face: ``build_index`` and ``open_index``, as ``leopard`` exports them.

A shell like the CLI and the HTTP service: the core never imports ``ingest``, and
this module is where the snapshot readers of ``ingest`` meet the core build.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from ingest.snapshots import ReadStats, Reject, read_snapshots
from leopard.core.build import BuildReport, Position, build_from_batches, space_errors
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
    ``rejects`` (a ``#`` line with the reason, then the record's bytes as read).

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
    with _RejectsFile(rejects, on_reject) as sink:
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


class _RejectsFile:
    """Where rejected records go: ``on_reject`` and the file ``rejects``, which is
    complete (closed) once the snapshots are read, before anything is swapped in."""

    def __init__(self, path: str | Path | None, on_reject: Callable[[Any], None] | None):
        self.path = path
        self.on_reject = on_reject
        self.wanted = path is not None or on_reject is not None
        self.file: IO[bytes] | None = None

    def __enter__(self) -> _RejectsFile:
        if self.path is not None:
            with space_errors(self.path, "writing the rejected records"):
                try:
                    self.file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
                except OSError as exc:
                    raise InvalidInput(
                        f"cannot write {str(self.path)!r}: {exc.strerror or exc}"
                    ) from exc
        return self

    def write(self, reject: Reject) -> None:
        if self.file is not None:
            with space_errors(self.path or "", "writing the rejected records"):
                self.file.write(reject.entry())
        if self.on_reject is not None:
            self.on_reject(reject)

    def closed_after(self, batches: Iterable[pa.Table]) -> Iterator[pa.Table]:
        yield from batches
        self.close()

    def close(self) -> None:
        file, self.file = self.file, None
        if file is not None:
            with space_errors(self.path or "", "writing the rejected records"):
                file.close()

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(Exception):  # a failure here is already being raised
            self.close()
