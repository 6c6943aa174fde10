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
5. the driver writes the manifest last, so a reader that finds it finds every shard.

Where the shards go: straight into ``DIR/shard-k`` when ``DIR`` is a local path or a
``file://`` URI (on a cluster, a file system every executor mounts at that path);
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
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from ingest.snapshots import SCHEMA, detect_format
from ingest.snapshots.openfga import CSV_COLUMNS
from ingest.snapshots.sources import check_readable
from leopard.core.build import BuildReport, build_from_batches
from leopard.core.shardbuild import check_shard_target, combine_reports
from leopard.errors import InvalidInput
from leopard.model.config import Config
from leopard.model.shards import ShardRule, check_shards
from leopard.spark.session import driver_errors, pyspark_modules, spark_session, stage_progress
from leopard.spark.tasks import (
    EVERY_ROW,
    REPORT_SCHEMA,
    SHARD,
    build_shard_tasks,
    check_rows,
    copy_tree,
    filesystem,
    read_files,
)
from leopard.store.manifest import MANIFEST, ShardManifest, read_manifest, write_manifest

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
    """
    started = time.perf_counter()
    check_shards(shards, "--shards")
    if format is not None and format not in SPARK_FORMATS:
        raise InvalidInput(f"unknown snapshot format {format!r}; expected one of {SPARK_FORMATS}")
    if not sources:
        raise InvalidInput("give at least one source to build from")
    say = on_progress or (lambda _msg: None)
    files, parquet = _plan_sources(sources, format)
    local_root = _local_root(index)
    if local_root is not None:
        check_shard_target(local_root, shards, force=force)
        local_root.mkdir(parents=True, exist_ok=True)
        root = str(local_root)
    else:
        _check_remote_target(index, shards, force)
        root = index
    rule = ShardRule(config, shards)

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
                    root=root,
                    id_order=id_order,
                    position_json=json.dumps(position or {}),
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
    for k in range(shards):
        if k not in reports:  # no row at all reached shard k: it holds nothing
            reports[k] = _empty_shard(root, k, shards, config, id_order, position)
    if read == 0 and not force:
        raise InvalidInput("the sources hold no tuple: nothing to build the shards from")
    say("writing the manifest")
    _write_manifest(root, ShardManifest.new(shards, "spark", master=master))
    ordered = [reports[k] for k in range(shards)]
    for r in ordered:
        r.rejected = rejected
    return combine_reports(ordered, read, replicated, time.perf_counter() - started)


# -- sources -----------------------------------------------------------------------------


def _is_uri(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def _local_root(index: str) -> Path | None:
    """The local directory of ``index``, or None for a Hadoop URI."""
    if _is_uri(index):
        return None
    return Path(index.removeprefix("file://")).resolve()


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
    if _is_uri(source):
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
    if _is_uri(source):
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
        parquet.append(source if _is_uri(source) else "file://" + where)
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


# -- the target --------------------------------------------------------------------------


def _check_remote_target(index: str, shards: int, force: bool) -> None:
    """``check_shard_target`` for a URI: a new or empty directory, or a sharded index
    of as many shards (or ``force``)."""
    fs, path = filesystem(index)
    try:
        manifest = fs.get_file_info(f"{path.rstrip('/')}/{MANIFEST}")
        if manifest.type.name == "NotFound":
            inside = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
            if inside:
                raise InvalidInput(
                    f"--index {index!r} is not empty and is not a sharded index: build the "
                    "shards in a new directory"
                )
            return
        with fs.open_input_stream(f"{path.rstrip('/')}/{MANIFEST}") as f:
            held = json.loads(f.read()).get("shards")
    except OSError as exc:
        raise InvalidInput(f"cannot look at --index {index!r}: {exc}") from None
    if held != shards and not force:
        raise InvalidInput(
            f"--index {index!r} holds {held} shards, not {shards}: build in a new directory "
            "(or pass --force to replace them)"
        )


def _empty_shard(
    root: str, k: int, shards: int, config: Config, id_order: str, position: dict[str, int] | None
) -> BuildReport:
    """Shard ``k`` built on the driver from no tuple (no row of the sources is its)."""
    with tempfile.TemporaryDirectory(prefix="leopard-shard-") as tmp:
        local = _local_root(root)
        dest = local / f"shard-{k}" if local is not None else Path(tmp) / "ix"
        report = build_from_batches(
            [], dest, config, shard=(k, shards), id_order=id_order, position=position or None
        )
        if local is None:
            copy_tree(dest, f"{root.rstrip('/')}/shard-{k}")
    return report


def _write_manifest(root: str, manifest: ShardManifest) -> None:
    local = _local_root(root)
    if local is not None:
        write_manifest(local, manifest)
        assert read_manifest(local) is not None
        return
    with tempfile.TemporaryDirectory(prefix="leopard-manifest-") as tmp:
        write_manifest(tmp, manifest)
        fs, path = filesystem(root)
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(fs.open_output_stream(f"{path.rstrip('/')}/{MANIFEST}"))
            out.write((Path(tmp) / MANIFEST).read_bytes())
