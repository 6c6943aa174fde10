"""``leopard build`` and ``leopard compact``: writing a new base generation.

``build`` reads snapshot files through ``leopard.api.build_index`` (the snapshot
readers load pyarrow, which is why the query commands live elsewhere); ``compact``
folds the incremental layer into a new base with ``leopard.core.compact``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import time
from typing import Any

import click

from ingest.snapshots.rejects import rejects_targets
from leopard.api import build_index
from leopard.cli.options import (
    fail_cleanly,
    format_report,
    index_option,
    json_option,
    need_index,
    parse_position,
    upstream_options,
    wait_option,
)
from leopard.core.compact import compact as run_compaction
from leopard.core.spill import memory_bytes
from leopard.model.config import load_config, schema_config
from leopard.spark import SPARK_FORMATS, build_on_spark

__all__ = ["build", "compact"]

memory_option = click.option(
    "--memory",
    type=click.FloatRange(min=0, min_open=True),
    metavar="GiB",
    help="Memory budget [default: $LEOPARD_MEMORY, which the compactions of 'consume' and "
    "'serve' follow too; else half the machine's]. Past it, the leaf memberships "
    "(most of the tuples) spill to disk and are written a range of subjects at a time; "
    "names, sets and closures stay in memory (a generated org needs 1.5 GiB at 40M "
    "tuples, 4 at 100M). The report gives the peak.",
)


@click.command()
@click.argument("snapshots", nargs=-1, metavar="SNAPSHOT...")
@index_option
@click.option(
    "from_source",
    "--from",
    metavar="spicedb:TARGET|openfga:URL",
    help="Instead of snapshot files, read SpiceDB's schema and every relationship at one "
    "revision from its API (TARGET: any gRPC target, 127.0.0.1:50051, unix:///s.sock), or "
    "an OpenFGA store's latest model and every tuple (with --store-id); the index records "
    "where the changes go on, and 'leopard follow' goes on from there.",
)
@upstream_options
@click.option(
    "--store-id", metavar="ID", help="With --from openfga:URL: the OpenFGA store to read."
)
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="TOML set configuration."
)
@click.option(
    "--schema",
    "schema_path",
    type=click.Path(dir_okay=False),
    help="A SpiceDB schema (.zed) or OpenFGA model (.fga DSL, .json): every relation and "
    "permission that is a union becomes an indexed set (not with --config).",
)
@click.option(
    "--only",
    metavar="TYPE#PERMISSION,...",
    help="With --schema: index just these sets and what they depend on.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(SPARK_FORMATS)),
    help="Snapshot format (default: from each file's extension; parquet: --engine spark).",
)
@click.option("--skip-invalid", is_flag=True, help="Index every valid record; count the rest.")
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, writable=True),
    help="With --skip-invalid: write the rejected records here as a snapshot of their format "
    "that builds once they are fixed: text, each line as read after a '#' line with its "
    "reason; CSV, each record as read after the snapshot's header; JSON, one array of the "
    "elements (re-serialized, one a line); JSON lines, each line as read. For CSV, JSON and "
    "JSON lines the reasons go to FILE.reasons ('record N (source SNAPSHOT:LINE): reason'). "
    "Snapshots of several formats: each other format's records go to FILE.txt, "
    ".csv, .json or .jsonl. The report names every file written.",
)
@click.option(
    "--position",
    metavar="TOPIC:PART=OFFSET,...",
    multiple=True,
    callback=lambda ctx, param, given: ",".join(given) or None,
    help="Change-stream position the snapshot reflects; the consumer starts there "
    "(repeat it, or join partitions with commas).",
)
@click.option(
    "--id-order",
    type=click.Choice(["dfs", "input"]),
    default="dfs",
    show_default=True,
    help="Group id assignment: depth-first (related groups nearby) or first appearance.",
)
@click.option(
    "--max-shrink",
    type=click.FloatRange(0, 100),
    default=50,
    show_default=True,
    metavar="PERCENT",
    help="Refuse to replace the live index with one that lost more than PERCENT% of its "
    "indexed tuples (compaction is exempt).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Build even an empty index (no tuple indexed), or one that shrank past --max-shrink.",
)
@click.option(
    "--shards",
    type=int,
    metavar="N",
    help="Build a sharded index of N shards (DIR/shard-K and a manifest): each holds the "
    "graph of sets and its share of the subjects.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "spark"]),
    default="local",
    show_default=True,
    help="Build here, or on Spark (pip install 'leopard-index[spark]'; 1 shard unless --shards).",
)
@click.option(
    "--master",
    metavar="URL",
    help="With --engine spark: Spark's master, local[N] | spark://HOST:7077 | k8s://URL "
    "[default: local[*]].",
)
@memory_option
@wait_option
@json_option
@fail_cleanly
def build(
    snapshots: tuple[str, ...],
    index_path: str | None,
    from_source: str | None,
    source_key: str | None,
    source_tls: bool | None,
    store_id: str | None,
    config_path: str | None,
    schema_path: str | None,
    only: str | None,
    fmt: str | None,
    skip_invalid: bool,
    rejects: str | None,
    position: str | None,
    id_order: str,
    max_shrink: float,
    force: bool,
    wait: bool,
    as_json: bool,
    shards: int | None = None,
    engine: str = "local",
    master: str | None = None,
    memory: float | None = None,
) -> None:
    """Build an index from snapshot files and swap it in atomically.

    SNAPSHOT is a file of tuples (text, OpenFGA CSV, JSON or JSONL; .gz is read
    transparently) or - for stdin. A malformed record stops the build with
    FILE:LINE unless --skip-invalid.

    A snapshot that indexes no tuple (an empty file, comments only, a failed
    export) is refused, even for a first build, and so is one that indexes more
    than --max-shrink percent fewer tuples than the live index: the live index
    stays. --force builds them anyway. One build or compaction writes an index
    directory at a time; another one at work makes this one fail at once, or wait
    for it with --wait.

    \b
    With --schema, the schema's permissions are indexed as written; those it cannot
    index (an intersection, an exclusion, .all(), caveats, or anything depending on
    those) are listed in the report with the reason, and queries on them are refused.

    \b
    Example:
      leopard build org.txt.gz extra.csv --index ./idx --config sets.toml
      leopard build dump.txt --index ./idx --skip-invalid --rejects rejects.txt
      leopard build docs.txt --index ./idx --schema docs.zed --only doc#view
      leopard build --index ./idx --from spicedb:127.0.0.1:50051 --source-key KEY
      leopard build --index ./idx --from openfga:http://127.0.0.1:8080 --store-id 01HZ...

    \b
    Sharded, on one machine or on Spark (on Spark, SNAPSHOT may also be a Hadoop URI,
    a directory, whose files are all read, or .parquet files or directories with the
    OpenFGA CSV's columns):
      leopard build org.txt --index ./sharded --shards 4
      leopard build org.txt --index ./sharded --engine spark --shards 4 --master local[2]
      leopard build s3a://dumps/tuples.parquet --index ./sharded --engine spark \\
          --shards 16 --master spark://spark-master:7077
    """
    index_dir = need_index(index_path)
    if from_source:
        refused = {
            "SNAPSHOT": snapshots,
            "--config": config_path,
            "--schema": schema_path,
            "--format": fmt,
            "--skip-invalid": skip_invalid,
            "--rejects": rejects,
            "--position": position,
            "--shards": shards,
            "--engine spark": engine == "spark",
            "--master": master,
        }
        # --shards 0 is refused too (it is a value given, not a truth)
        given = [
            name
            for name, value in refused.items()
            if (value is not None if name == "--shards" else value)
        ]
        if given:
            raise click.UsageError(f"--from reads the schema and data itself: drop {given}")
        # by name: only a build from an upstream loads grpc (the [grpc] extra)
        importlib.import_module("leopard.cli.bootstrap").build_from(
            from_source,
            index_dir,
            key=source_key,
            tls=source_tls,
            only=_only_sets(only),
            max_shrink=None if force else max_shrink / 100,
            wait=wait,
            as_json=as_json,
            store_id=store_id,
            memory=None if memory is None else memory_bytes(memory, "--memory"),
        )
        return
    if store_id:
        raise click.UsageError("--store-id needs --from openfga:URL")
    if source_key is not None or source_tls is not None:
        said = (
            "--source-key"
            if source_key is not None
            else f"--source-{'tls' if source_tls else 'insecure'}"
        )
        raise click.UsageError(f"{said} needs --from spicedb:TARGET")
    if master is not None and engine != "spark":
        raise click.UsageError("--master needs --engine spark")
    if engine == "spark":
        if memory is not None:
            raise click.UsageError(
                "--memory bounds a local build; on Spark, give the executors' memory "
                "(spark.executor.memory) instead"
            )
        _build_on_spark(
            snapshots,
            index_dir,
            config_path,
            schema_path,
            only,
            fmt,
            skip_invalid,
            rejects,
            position,
            id_order,
            force,
            max_shrink,
            wait,
            shards,
            master or "local[*]",
            as_json,
        )
        return
    if fmt == "parquet":
        raise click.UsageError("--format parquet needs --engine spark")
    if not snapshots:
        raise click.UsageError("give SNAPSHOT files, or --from an upstream")
    if config_path and schema_path:
        raise click.UsageError("give --config or --schema, not both")
    if only and not schema_path:
        raise click.UsageError("--only needs --schema")
    only_sets = _only_sets(only)
    if rejects and not skip_invalid:
        raise click.UsageError("--rejects needs --skip-invalid")
    if rejects:
        at, index_at = os.path.realpath(rejects), os.path.realpath(index_dir)
        if at == index_at or at.startswith(index_at + os.sep):
            raise click.UsageError(
                f"--rejects {rejects!r} is the index directory {index_dir!r} or in it: name "
                "the rejects file another way"
            )
    pos = parse_position(position)
    total = sum(os.path.getsize(s) for s in snapshots if s != "-" and os.path.isfile(s))
    show = sys.stderr.isatty() and total > 0 and not as_json
    bar_context: Any = (
        click.progressbar(length=total, label="reading", file=sys.stderr, show_eta=True)
        if show
        else contextlib.nullcontext()
    )
    with bar_context as bar:
        report = build_index(
            list(snapshots),
            index_dir,
            config_path,
            schema=schema_path,
            only=only_sets,
            format=fmt,
            skip_invalid=skip_invalid,
            rejects=rejects,
            position=pos,
            progress=bar.update if bar is not None else None,
            id_order=id_order,
            force=force,
            max_shrink=max_shrink / 100,
            wait=wait,
            shards=shards,
            memory=memory,
            on_phase=_PhaseLog() if show else None,
        )
    targets = rejects_targets(rejects, list(snapshots), fmt) if rejects else {}
    if as_json:
        out = report.to_dict()
        if rejects:
            out["rejects_files"] = [
                {"format": t.format, "file": t.path, "reasons": t.reasons} for t in targets.values()
            ]
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(format_report(report.to_dict(), index_dir))
    for target in targets.values():
        click.echo(f"  rejects written to {target.describe()}")


class _PhaseLog:
    """Each phase, as it ends, on stderr (a terminal's): a large build spends minutes
    after the reading bar is full, and a compaction shows no bar."""

    def __init__(self, first: str = "\n") -> None:
        self.mark = time.perf_counter()
        self.lead = first  # before the first line: ends the reading bar's line

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        click.echo(f"{self.lead}{name}: {now - self.mark:.1f} s", err=True)
        self.lead = ""
        self.mark = now


def _build_on_spark(
    snapshots: tuple[str, ...],
    index_dir: str,
    config_path: str | None,
    schema_path: str | None,
    only: str | None,
    fmt: str | None,
    skip_invalid: bool,
    rejects: str | None,
    position: str | None,
    id_order: str,
    force: bool,
    max_shrink: float,
    wait: bool,
    shards: int | None,
    master: str,
    as_json: bool,
) -> None:
    """``build --engine spark``: the same options (--max-shrink and --wait as a local
    build's), the shards built by Spark."""
    if not snapshots:
        raise click.UsageError("give SNAPSHOT files (paths or URIs) to build from")
    if config_path and schema_path:
        raise click.UsageError("give --config or --schema, not both")
    if only and not schema_path:
        raise click.UsageError("--only needs --schema")
    if rejects:
        raise click.UsageError("--engine spark counts rejected records; --rejects is local only")
    only_sets = _only_sets(only)
    config = schema_config(schema_path, only_sets) if schema_path else load_config(config_path)
    show = sys.stderr.isatty() and not as_json
    report = build_on_spark(
        list(snapshots),
        index_dir,
        config,
        shards=1 if shards is None else shards,
        master=master,
        format=fmt,
        skip_invalid=skip_invalid,
        force=force,
        max_shrink=max_shrink / 100,
        wait=wait,
        id_order=id_order,
        position=parse_position(position),
        on_progress=(lambda msg: click.echo(msg, err=True)) if show else None,
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(format_report(report.to_dict(), index_dir))


@click.command()
@index_option
@memory_option
@wait_option
@json_option
@fail_cleanly
def compact(index_path: str | None, wait: bool, as_json: bool, memory: float | None = None) -> None:
    """Fold the incremental layer into a new base and swap it in.

    Runs beside a live index: queries and a consumer in other processes keep going
    (the consumer resumes from the new base's position). A build or compaction at
    work makes it fail at once, or wait for it with --wait.

    \b
    Example:
      leopard compact --index ./idx
    """
    index_dir = need_index(index_path)
    budget = None if memory is None else memory_bytes(memory, "--memory")
    phases = _PhaseLog(first="") if sys.stderr.isatty() and not as_json else None
    report = run_compaction(index_dir, wait=wait, memory=budget, on_phase=phases)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(format_report(report.to_dict(), index_dir))


def _only_sets(only: str | None) -> list[str]:
    """The sets ``--only`` names (none given: every set); UsageError if it names none."""
    if only is None:
        return []
    sets = [s.strip() for s in only.split(",") if s.strip()]
    if not sets:
        raise click.UsageError(f"--only {only!r} names no set; give TYPE#PERMISSION[,...]")
    return sets
