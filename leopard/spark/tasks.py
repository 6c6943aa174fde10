"""What the executors run: reading sources into tuple batches, and building shards.

These functions are handed to ``mapInArrow``: Spark pickles the function (by its
module and name: executors need leopard installed) and the small settings bound to it
with ``functools.partial`` (file names, the configuration as JSON, numbers). The
tuples themselves travel as Arrow record batches, never pickled.

* ``read_files``: one task per file, read by Leopard's own snapshot readers
  (``ingest.snapshots.read_snapshots``: text, OpenFGA CSV, JSON, JSON lines, gzip),
  so a malformed record is refused with the same ``FILE:LINE: reason`` as on one
  machine. Local paths are opened directly; Hadoop URIs through ``pyarrow.fs``.
* ``check_rows``: Parquet rows with the OpenFGA CSV's columns, each checked exactly as
  a CSV row (``columns_record``) and refused as ``FILE: row N: reason``.
* ``build_shard_tasks``: the rows of one shard (each tagged with its shard number),
  streamed into ``build_from_batches`` as one machine builds a shard. Partitioning
  puts exactly one shard in each task; should a task receive more (a partitioner
  that does not behave as expected), the other shards' rows are spilled to local
  Arrow files and built after, so nothing is lost or mixed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.ipc as ipc

from ingest.snapshots import SCHEMA, ReadStats, read_snapshots
from ingest.snapshots.openfga import CSV_COLUMNS, columns_record
from ingest.snapshots.records import Bad
from ingest.snapshots.sources import MEMORY_NAME
from leopard.core.batches import COLUMNS, table_from_tuples
from leopard.core.build import build_from_batches
from leopard.errors import InvalidInput
from leopard.model.config import Config
from leopard.spark.session import task_errors
from leopard.store.manifest import shard_dir_name

__all__ = [
    "REPORT_SCHEMA",
    "EVERY_ROW",
    "SHARD",
    "build_shard_tasks",
    "check_rows",
    "copy_tree",
    "filesystem",
    "read_files",
]

#: the column of a row's shard (an int) beside the tuple columns, and the one that says
#: the row is replicated on every shard (counted once, on shard 0's rows)
SHARD = "shard"
EVERY_ROW = "every"
#: what a build task returns: one row per shard it built
REPORT_SCHEMA = pa.schema(
    [
        ("shard", pa.int32()),
        ("report", pa.string()),
        ("rows", pa.int64()),
        ("rejected", pa.int64()),
        ("replicated", pa.int64()),
    ]
)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's file system and path for a URI (``s3a://`` and ``s3n://`` are ``s3://``
    to pyarrow) or a local path."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).resolve())
    scheme, rest = uri.split("://", 1)
    if scheme in ("s3a", "s3n"):
        uri = "s3://" + rest
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInput(f"cannot reach {uri!r}: {exc}") from None


def copy_tree(local: Path, uri: str) -> None:
    """Copy the directory ``local`` to ``uri`` file by file. Object stores hold no
    symlinks: a symlink (an index's ``CURRENT``) is written as a file holding its
    target's name."""
    fs, base = filesystem(uri)
    for path in sorted(local.rglob("*")):
        rel = path.relative_to(local).as_posix()
        dest = f"{base.rstrip('/')}/{rel}"
        if path.is_symlink():
            with fs.open_output_stream(dest) as out:
                out.write(str(path.readlink()).encode())
        elif path.is_dir():
            fs.create_dir(dest, recursive=True)
        elif path.is_file() and path.name != "LOCK":
            with open(path, "rb") as src, fs.open_output_stream(dest) as out:
                shutil.copyfileobj(src, out, 8 << 20)


# -- reading ----------------------------------------------------------------------------


def _counts(rows: int, rejected: int) -> pa.RecordBatch:
    """The counts row a read task ends with (marked by a null ``rns``). It is placed on
    shard 0 and its build task hands the sums back with its report: counted once per
    successful task (an accumulator updated in a transformation counts a retried task
    twice), and without reading the sources a second time."""
    cols = {c: pa.nulls(1, pa.string()) for c in COLUMNS}
    cols["rid"] = pa.array([f"{rows}:{rejected}"], pa.string())
    return pa.RecordBatch.from_pydict(cols, schema=SCHEMA)


def read_files(
    batches: Iterator[pa.RecordBatch],
    *,
    sources: list[tuple[str, str, str]],
    skip_invalid: bool,
) -> Iterator[pa.RecordBatch]:
    """For each file number in ``batches`` (column ``id``), the tuples of
    ``sources[id]`` = ``(name as given, where to open it, format)``, then a counts row."""
    for batch in batches:
        for i in batch.column("id").to_pylist():
            name, where, fmt = sources[i]
            stats = ReadStats()
            rows = 0
            with task_errors():
                for table in _read_one(name, where, fmt, skip_invalid, stats):
                    rows += table.num_rows
                    yield from table.cast(SCHEMA).to_batches()
            yield _counts(rows, stats.rejected)


def _read_one(
    name: str, where: str, fmt: str, skip_invalid: bool, stats: ReadStats
) -> Iterator[pa.Table]:
    if "://" not in where:
        yield from read_snapshots(
            [where], format=fmt, skip_invalid=skip_invalid, stats=stats, batch_rows=1 << 16
        )
        return
    fs, path = filesystem(where)
    try:
        stream = fs.open_input_stream(path, compression=None)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"cannot read {name!r}: {exc}") from None
    try:
        with stream:
            yield from read_snapshots(
                [stream], format=fmt, skip_invalid=skip_invalid, stats=stats, batch_rows=1 << 16
            )
    except InvalidInput as exc:  # a stream is "<memory>" to the reader: name the file
        text = str(exc)
        raise InvalidInput(
            name + text[len(MEMORY_NAME) :] if text.startswith(MEMORY_NAME) else text
        ) from None


def check_rows(
    batches: Iterator[pa.RecordBatch], *, skip_invalid: bool
) -> Iterator[pa.RecordBatch]:
    """Parquet rows (the OpenFGA CSV's columns, ``condition_name`` or null, ``file``,
    ``row``) as tuple batches, each row checked as a CSV row is; then a counts row."""
    rows = rejected = 0
    with task_errors():
        for batch in batches:
            cols = [batch.column(c).to_pylist() for c in CSV_COLUMNS]
            conds = batch.column("condition_name").to_pylist()
            files = batch.column("file").to_pylist()
            numbers = batch.column("row").to_pylist()
            good = []
            for j in range(batch.num_rows):
                values = [c[j] if c[j] is not None else "" for c in cols]
                text = ",".join(values)
                result = columns_record(values, conds[j], text)
                if isinstance(result, Bad):
                    if not skip_invalid:
                        raise InvalidInput(f"{files[j]}: row {numbers[j] + 1}: {result.reason}")
                    rejected += 1
                    continue
                good.append(result)
            rows += len(good)
            if good:
                yield from table_from_tuples(good).to_batches()
    yield _counts(rows, rejected)


# -- building ---------------------------------------------------------------------------


def build_shard_tasks(
    batches: Iterator[pa.RecordBatch],
    *,
    shards: int,
    config_json: str,
    root: str,
    id_order: str,
    build_id: str,
    position_json: str = "{}",
) -> Iterator[pa.RecordBatch]:
    """Build every shard whose rows are in ``batches`` (tagged by ``SHARD``) as
    ``root/shard-k``; yield ``(k, report JSON, rows read, rejected)`` per shard built
    (the counts of the read tasks' counts rows this task received, on one of its rows)."""
    with task_errors():
        config = Config.from_json(config_json)
        position = json.loads(position_json) or None

        def build(rows: Iterator[pa.Table], k: int) -> str:
            return _build(rows, (k, shards, build_id), config, root, id_order, position)

        spill_dir = Path(tempfile.mkdtemp(prefix="leopard-spill-"))
        try:
            splitter = _Splitter(batches, spill_dir)
            first = splitter.first_shard()
            if first is None:
                return
            built = [(first, build(splitter.rows_of_first(), first))]
            for k, path in splitter.spilled():
                built.append((k, build(_read_ipc(path), k)))
            n = len(built)
            yield pa.RecordBatch.from_pydict(
                {
                    "shard": [k for k, _ in built],
                    "report": [r for _, r in built],
                    "rows": [splitter.rows] + [0] * (n - 1),
                    "rejected": [splitter.rejected] + [0] * (n - 1),
                    "replicated": [splitter.replicated] + [0] * (n - 1),
                },
                schema=REPORT_SCHEMA,
            )
        finally:
            shutil.rmtree(spill_dir, ignore_errors=True)


def _build(
    rows: Iterator[pa.Table],
    shard: tuple[int, int, str],
    config: Config,
    root: str,
    id_order: str,
    position: dict[str, int] | None,
) -> str:
    k = shard[0]
    if "://" not in root or root.startswith("file://"):
        dest = Path(root.removeprefix("file://")) / shard_dir_name(k)
        report = build_from_batches(
            rows, dest, config, shard=shard, id_order=id_order, position=position
        )
        return json.dumps(report.to_dict())
    staging = Path(tempfile.mkdtemp(prefix=f"leopard-shard-{k}-"))
    try:
        report = build_from_batches(
            rows, staging / "ix", config, shard=shard, id_order=id_order, position=position
        )
        copy_tree(staging / "ix", f"{root.rstrip('/')}/{shard_dir_name(k)}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return json.dumps(report.to_dict())


class _Splitter:
    """The rows of a task by shard: the first shard's streamed, any other's spilled."""

    def __init__(self, batches: Iterator[pa.RecordBatch], spill_dir: Path) -> None:
        self.batches = iter(batches)
        self.dir = spill_dir
        self.first: int | None = None
        self.pending: pa.RecordBatch | None = None
        self.writers: dict[int, Any] = {}
        self.rows = self.rejected = 0  # the sums of the counts rows
        self.replicated = 0  # rows of every shard, counted among shard 0's

    def first_shard(self) -> int | None:
        for batch in self.batches:
            if batch.num_rows:
                self.pending = batch
                self.first = int(batch.column(SHARD)[0].as_py())
                return self.first
        return None

    def rows_of_first(self) -> Iterator[pa.Table]:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            yield from self._split(pending)
        for batch in self.batches:
            yield from self._split(batch)
        for w in self.writers.values():
            w.close()

    def _split(self, batch: pa.RecordBatch) -> Iterator[pa.Table]:
        table = pa.Table.from_batches([batch])
        counts = pc.is_null(table["rns"])
        if pc.any(counts).as_py():
            for text in table.filter(counts)["rid"].to_pylist():
                rows, rejected = text.split(":")
                self.rows += int(rows)
                self.rejected += int(rejected)
            table = table.filter(pc.invert(counts))
        shard = table[SHARD].to_numpy()
        every = table[EVERY_ROW].fill_null(False).to_numpy(zero_copy_only=False)
        self.replicated += int((every & (shard == 0)).sum())
        table = table.select(list(COLUMNS)).cast(SCHEMA)
        mine = shard == self.first
        if mine.all():
            yield table
            return
        if mine.any():
            yield table.filter(pa.array(mine))
        for k in np.unique(shard[~mine]).tolist():
            part = table.filter(pc.equal(pa.array(shard), k))
            if k not in self.writers:
                self.writers[k] = ipc.new_file(str(self.dir / f"{k}.arrow"), SCHEMA)
            self.writers[k].write_table(part)

    def spilled(self) -> list[tuple[int, Path]]:
        return [(k, self.dir / f"{k}.arrow") for k in sorted(self.writers)]


def _read_ipc(path: Path) -> Iterator[pa.Table]:
    with pa.memory_map(str(path)) as source:
        reader = ipc.open_file(source)
        for i in range(reader.num_record_batches):
            yield pa.Table.from_batches([reader.get_batch(i)])
