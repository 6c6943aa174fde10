"""The Python face: ``build_index`` and ``open_index``, as ``leopard`` exports them.

A shell like the CLI and the HTTP service: the core never imports ``ingest``, and
this module is where the snapshot readers of ``ingest`` meet the core build.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ingest.snapshots import ReadStats, read_snapshots
from leopard.core.build import BuildReport, Position, build_from_batches
from leopard.core.index import Index
from leopard.model.config import Config, load_config

__all__ = ["build_index", "open_index"]


def build_index(
    sources: Sequence[str | Path | Iterable[str]] | str | Path,
    path: str | Path,
    config: Config | str | Path | None = None,
    *,
    format: str | None = None,
    skip_invalid: bool = False,
    on_reject: Callable[[Any], None] | None = None,
    position: Position | None = None,
    progress: Callable[[int], None] | None = None,
    id_order: str = "dfs",
) -> BuildReport:
    """Build an index at ``path`` from snapshot files (or iterables of tuple lines).

    ``config`` is a Config, a path to a TOML set configuration, or None for the
    default (every namespace's ``member``). A malformed record raises InvalidInput
    naming its file and line unless ``skip_invalid``, which indexes everything valid
    and hands every rejected record to ``on_reject``.
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    cfg = config if isinstance(config, Config) else load_config(config)
    stats = ReadStats()
    batches = read_snapshots(
        sources,
        format=format,
        skip_invalid=skip_invalid,
        on_reject=on_reject,
        stats=stats,
        progress=progress,
    )
    return build_from_batches(
        batches,
        path,
        cfg,
        position=position,
        id_order=id_order,
        rejected=lambda: stats.rejected,
    )


def open_index(path: str | Path) -> Index:
    """Open the index at ``path`` for queries."""
    return Index(path)
