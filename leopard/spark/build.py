"""``build_on_spark``: a sharded index built by a Spark cluster.

The result is the directory ``leopard.core.shardbuild.build_shards`` makes on one
machine (``shards.json`` and ``shard-K/``, each an ordinary index of what shard K
holds), so ``leopard.open_index`` and the shard servers read it alike. The steps:

1. **read** (one task per file): text, OpenFGA CSV, JSON and JSON lines (gzip
   recognised) by Leopard's own readers in the executors; Parquet with the OpenFGA
   CSV's columns by Spark's reader, each row checked as a CSV row is;
2. **place** (Spark SQL): a row's shard is ``pmod(crc32(sns || ':' || sid), N)`` (the
   CRC-32 of zlib that ``ShardRule`` uses); a row every shard holds (a userset subject,
   a wildcard, a tuple an arrow reads: ``ShardRule``'s rule, restated in SQL) is
   exploded to all N shards;
3. **shuffle** so that each task holds one shard: rows are hash-partitioned on a key
   chosen per shard so that Spark's partitioner (``pmod(murmur3(key), N)``) sends
   shard K's rows to partition K;
4. **build** (one task per shard): ``build_from_batches(..., shard=(k, N))`` over the
   shard's rows as they stream in: interning, condensation, closures and the
   shard's sets on the executor (the graph of sets is on every shard by design);
5. the driver checks the refusals (no tuple, ``--max-shrink``) on the totals, swaps
   every shard in, and writes the manifest last, so a reader that finds it finds every
   shard.

Where the shards go: into ``DIR/.staging/shard-k`` first (``leopard.spark.target``),
then swapped in together, so a failed or refused build leaves the live index as it
was. When ``DIR`` is a local path or a ``file://`` URI (on a cluster, a file system
every executor mounts at that path) the executors build there directly and the
driver, holding the root's and every shard's lock, renames each into place;
otherwise (``s3a://``, ``hdfs://``, anything ``pyarrow.fs`` reaches) each shard is
built in a local temporary directory and copied there, the ``CURRENT`` symlink as a
file naming the live generation (object stores hold no symlinks; recreate the link
after downloading). Only local paths and ``file://`` URIs are tested here: this
machine has no S3 or HDFS server.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import pyarrow.fs as pafs

from ingest.snapshots import SCHEMA, detect_format
from ingest.snapshots.openfga import CSV_COLUMNS
from ingest.snapshots.sources import check_readable
from leopard.core.build import BuildReport
from leopard.core.shardbuild import ShardSwap, check_shard_target, combine_reports
from leopard.errors import InvalidInput
from leopard.model.config import Config
from leopard.model.shards import ShardRule, check_shards
from leopard.spark.session import driver_errors, pyspark_modules, spark_session, stage_progress
from leopard.spark.target import (
    check_remote_target,
    clear_staging,
    empty_shard,
    is_uri,
    local_root,
    publish_remote,
    refuse_remote_shrink,
    staging_of,
    swap_in_local,
)
from leopard.spark.tasks import (
    EVERY_ROW,
    REPORT_SCHEMA,
    SHARD,
    build_shard_tasks,
    check_rows,
    filesystem,
    read_files,
)
from leopard.store.manifest import ShardManifest, new_build_id

__all__ = ["build_on_spark", "SPARK_FORMATS"]

#: what ``format`` may force: today's snapshot formats and Parquet
SPARK_FORMATS = ("text", "csv", "json", "jsonl", "parquet")


def build_on_spark(
    sources: list[str],
    index: str,
    config: Config,
    *,
    shards: int,
    master: str = "local[*]",
    format: str | None = None,
    skip_invalid: bool = False,
    force: bool = False,
    max_shrink: float = 0.5,
    wait: bool | float = False,
    id_order: str = "dfs",
    position: dict[str, int] | None = None,
    on_progress: Callable[[str], None] | None = None,
    session: Any = None,
) -> BuildReport:
    """Build the sharded index ``index`` of ``shards`` shards from ``sources`` on Spark.

    ``sources``: files (a ``.parquet`` file or directory is Parquet, other names
    decide their format as ``leopard build`` does; ``format`` forces one of
    ``SPARK_FORMATS``) as local paths or Hadoop URIs. A malformed record raises
    InvalidInput naming its file and line (Parquet: row) unless ``skip_invalid``,
    which counts it in ``rejected``. ``master`` is Spark's (``local[N]``,
    ``spark://host:7077``, ``k8s://...``); ``session`` an existing SparkSession to use
    instead (not stopped at the end). ``on_progress`` hears the steps and each stage's
    tasks. The target must be new, empty, or a sharded index of as many shards.
    ``position`` is the change-stream position the sources reflect, recorded in every
    shard (each shard's consumer starts there).

    As ``build_index`` does, the build refuses (the live index untouched) sources that
    hold or index no tuple, or that index more than ``max_shrink`` (a share) fewer
    tuples than the live shards, counted over all shards, unless ``force``. A local
    index is locked (root and shards) for the whole build: another build or
    compaction at work makes this one fail before Spark starts, or with ``wait`` wait
    for it (True: as long as it takes; or seconds).
    """
    started = time.perf_counter()
    check_shards(shards, "--shards")
    if format is not None and format not in SPARK_FORMATS:
        raise InvalidInput(f"unknown snapshot format {format!r}; expected one of {SPARK_FORMATS}")
    if not sources:
        raise InvalidInput("give at least one source to build from")
    if not 0 <= max_shrink <= 1:
        raise InvalidInput(f"max_shrink is a share between 0 and 1, not {max_shrink!r}")
    say = on_progress or (lambda _msg: None)
    files, parquet = _plan_sources(sources, format)
    local = local_root(index)
    swap = None
    if local is not None:
        check_shard_target(local, shards, force=force)
        swap = ShardSwap(local, shards, wait)
        root = str(local)
    else:
        check_remote_target(index, shards, force)
        root = index
    rule = ShardRule(config, shards)

    with contextlib.ExitStack() as stack:
        if swap is not None:
            stack.enter_context(swap)
            assert local is not None
            check_shard_target(local, shards, force=force)  # again, under the lock
        clear_staging(root)
        stack.callback(clear_staging, root)
        stage = staging_of(root)
        build_id = new_build_id()  # in every shard's header and the manifest
        reports, read, rejected, replicated = _run(
            spark_args=(master, session, on_progress),
            files=files,
            parquet=parquet,
            skip_invalid=skip_invalid,
            rule=rule,
            config=config,
            stage=stage,
            id_order=id_order,
            position=position,
            build_id=build_id,
        )
        for k in range(shards):
            if k not in reports:  # no row at all reached shard k: it holds nothing
                reports[k] = empty_shard(stage, (k, shards, build_id), config, id_order, position)
        if read == 0 and not force:
            raise InvalidInput("the sources hold no tuple: nothing to build the shards from")
        ordered = [reports[k] for k in range(shards)]
        if not force:
            indexed = sum(r.tuples_indexed for r in ordered)
            if swap is not None:
                swap.refuse_shrink(indexed, read, max_shrink)
            else:
                refuse_remote_shrink(index, shards, indexed, read, max_shrink)
        say("swapping the shards in and writing the manifest")
        manifest = ShardManifest.new(shards, "spark", master=master, build=build_id)
        if swap is not None:
            swap_in_local(swap, manifest)
        else:
            publish_remote(index, shards, manifest)
    for r in ordered:
        r.rejected = rejected
    return combine_reports(ordered, read, replicated, time.perf_counter() - started)


def _run(
    *,
    spark_args: tuple[str, Any, Callable[[str], None] | None],
    files: list[tuple[str, str, str]],
    parquet: list[str],
    skip_invalid: bool,
    rule: ShardRule,
    config: Config,
    stage: str,
    id_order: str,
    position: dict[str, int] | None,
    build_id: str,
) -> tuple[dict[int, BuildReport], int, int, int]:
    """Spark's part: every shard that any row reaches built in ``stage``. Returns the
    reports by shard and the rows read, rejected and replicated."""
    master, session, on_progress = spark_args
    say = on_progress or (lambda _msg: None)
    shards = rule.shards
    say(f"starting Spark on {master}")
    with spark_session(master, session) as spark, stage_progress(spark, on_progress):
        _, F = pyspark_modules()
        say(f"reading {len(files) + len(parquet)} source(s) and building {shards} shard(s)")
        with driver_errors("reading the sources"), warnings.catch_warnings():
            # pyspark warns about pandas versions it was not tested with; Arrow is used
            warnings.simplefilter("ignore", FutureWarning)
            tuples = _read(spark, F, files, parquet, skip_invalid)
            placed = _place(spark, F, tuples, rule)
            built = placed.mapInArrow(
                functools.partial(
                    build_shard_tasks,
                    shards=shards,
                    config_json=config.to_json(),
                    root=stage,
                    id_order=id_order,
                    position_json=json.dumps(position or {}),
                    build_id=build_id,
                ),
                _ddl(REPORT_SCHEMA),
            )
        with driver_errors("building the shards"):
            rows = built.collect()
    reports: dict[int, BuildReport] = {}
    read = rejected = replicated = 0
    for row in rows:
        reports[row["shard"]] = BuildReport(**json.loads(row["report"]))
        read += row["rows"]
        rejected += row["rejected"]
        replicated += row["replicated"]
    return reports, read, rejected, replicated


# -- sources -----------------------------------------------------------------------------


def _plan_sources(
    sources: list[str], format: str | None
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """``(files read by Leopard's readers as (name, where, format), Parquet paths)``,
    every one checked for existence before Spark starts."""
    files: list[tuple[str, str, str]] = []
    parquet: list[str] = []
    for given in sources:
        if not isinstance(given, str) or not given or given == "-":
            raise InvalidInput(f"a Spark source must be a path or a URI, not {given!r}")
        for source in _files_of(given, format):
            _plan_one(source, format, files, parquet)
    return files, parquet


def _files_of(source: str, format: str | None) -> list[str]:
    """``source``, or the files under it when it is a directory that is not Parquet
    (names starting with ``.`` or ``_``, such as Spark's ``_SUCCESS``, left out), sorted."""
    fmt = format or ("parquet" if source.rstrip("/").endswith(".parquet") else None)
    if fmt == "parquet":
        return [source]  # a Parquet directory is one dataset, read by Spark
    if is_uri(source):
        fs, path = filesystem(source)
        try:
            if fs.get_file_info(path).type.name != "Directory":
                return [source]
            found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        except OSError as exc:
            raise InvalidInput(f"cannot read {source!r}: {exc}") from None
        base = path.rstrip("/")
        names = [
            f.path[len(base) + 1 :]
            for f in found
            if f.type.name == "File" and not f.base_name.startswith((".", "_"))
        ]
        out = [source.rstrip("/") + "/" + n for n in sorted(names)]
    else:
        local = source.removeprefix("file://")
        if not os.path.isdir(local):
            return [source]
        out = []
        for root, dirs, names in os.walk(local):
            dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
            out += [os.path.join(root, n) for n in names if not n.startswith((".", "_"))]
        out.sort()
    if not out:
        raise InvalidInput(f"the directory {source!r} holds no snapshot file")
    return out


def _plan_one(
    source: str,
    format: str | None,
    files: list[tuple[str, str, str]],
    parquet: list[str],
) -> None:
    """Check that ``source`` can be read and add it to ``files`` or ``parquet``."""
    fmt = format or ("parquet" if source.rstrip("/").endswith(".parquet") else None)
    if is_uri(source):
        fs, path = filesystem(source)
        try:
            info = fs.get_file_info(path)
        except OSError as exc:
            raise InvalidInput(f"cannot read {source!r}: {exc}") from None
        if info.type.name == "NotFound":
            raise InvalidInput(f"cannot read {source!r}: No such file or directory")
        where = source
    else:
        where = os.path.abspath(source.removeprefix("file://"))
        if fmt != "parquet":
            check_readable(source.removeprefix("file://"))
        elif not os.path.exists(where):
            raise InvalidInput(f"cannot read {source!r}: No such file or directory")
    if fmt == "parquet":
        parquet.append(source if is_uri(source) else "file://" + where)
    else:
        files.append((source, where, fmt or detect_format(source)))


def _ddl(schema: Any) -> str:
    kinds = {"string": "string", "int32": "int", "int64": "bigint"}
    return ", ".join(f"{f.name} {kinds[str(f.type)]}" for f in schema)


def _read(
    spark: Any, F: Any, files: list[tuple[str, str, str]], parquet: list[str], skip: bool
) -> Any:
    """One DataFrame of the tuple columns (and the read tasks' counts rows)."""
    parts = []
    if files:
        ids = spark.range(len(files), numPartitions=len(files))
        reader = functools.partial(read_files, sources=files, skip_invalid=skip)
        parts.append(ids.mapInArrow(reader, _ddl(SCHEMA)))
    if parquet:
        raw = spark.read.parquet(*parquet)
        missing = [c for c in CSV_COLUMNS if c not in raw.columns]
        if missing:
            raise InvalidInput(
                f"the Parquet sources {parquet!r} have no column {missing[0]!r} (expected "
                f"{','.join(CSV_COLUMNS)}; condition_name is optional), got {raw.columns}"
            )
        cond = F.col("condition_name") if "condition_name" in raw.columns else F.lit(None)
        rows = raw.select(
            *[F.col(c).cast("string").alias(c) for c in CSV_COLUMNS],
            cond.cast("string").alias("condition_name"),
            F.col("_metadata.file_path").alias("file"),
            F.col("_metadata.row_index").alias("row"),
        )
        checker = functools.partial(check_rows, skip_invalid=skip)
        parts.append(rows.mapInArrow(checker, _ddl(SCHEMA)))
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


def _place(spark: Any, F: Any, tuples: Any, rule: ShardRule) -> Any:
    """The rows tagged with their shard, those of every shard exploded, and
    partitioned so that partition K holds exactly shard K's rows."""
    n = rule.shards
    every = F.col("srel").isNotNull() | (F.col("sid") == F.lit("*"))
    if rule.arrow_relations:
        pairs = sorted(f"{t}#{r}" for t, r in rule.arrow_relations)
        every = every | F.concat(F.col("rns"), F.lit("#"), F.col("rel")).isin(pairs)
    leaf = F.pmod(
        F.crc32(F.concat(F.col("sns"), F.lit(":"), F.col("sid")).cast("binary")), F.lit(n)
    ).cast("int")
    shards = (
        F.when(F.col("rns").isNull(), F.array(F.lit(0)))  # a counts row: see tasks._counts
        .when(every, F.sequence(F.lit(0), F.lit(n - 1)))
        .otherwise(F.array(leaf))
    )
    keys = _partition_keys(spark, F, n)
    tagged = tuples.withColumn(EVERY_ROW, every).withColumn(SHARD, F.explode(shards))
    tagged = tagged.withColumn(
        "_pkey", F.element_at(F.array(*[F.lit(k) for k in keys]), F.col(SHARD) + 1)
    )
    return tagged.repartition(n, "_pkey").drop("_pkey")


def _partition_keys(spark: Any, F: Any, n: int) -> list[int]:
    """For each shard K, an int key that Spark's hash partitioner sends to partition K:
    it computes ``pmod(hash(key), n)`` (Murmur3, seed 42, as the SQL ``hash``)."""
    found: dict[int, int] = {}
    start = 0
    while len(found) < n:
        size = 64 * n
        rows = (
            spark.range(start, start + size)
            .select(
                F.col("id").cast("int").alias("k"),
                F.expr(f"pmod(hash(cast(id as int)), {n})").alias("p"),
            )
            .collect()
        )
        for r in rows:
            found.setdefault(r["p"], r["k"])
        start += size
    return [found[k] for k in range(n)]
