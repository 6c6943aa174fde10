"""Where a Spark build's shards go: built aside, then swapped in together.

The executors build every shard in ``DIR/.staging/shard-k`` (an ordinary index
directory of its own, which no reader opens), and the driver decides afterwards:
the refusals (no tuple, ``--max-shrink`` over the shards' sums) are checked while
the live shards are still untouched, and only then are the shards swapped in. On a
local root (or ``file://``) the driver holds the root's and every shard's lock for
the whole build (``ShardSwap``) and swaps each staged generation in by a rename, all
of them once every shard is built. On a Hadoop URI there is no lock and no rename:
the staged files are copied over the shards' (``CURRENT`` last) only once every
shard is built and the refusals passed, and the staging directory is removed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from leopard.core.build import BuildReport, build_from_batches
from leopard.core.shardbuild import ShardSwap
from leopard.errors import InvalidInput
from leopard.model.config import Config
from leopard.spark.tasks import copy_tree, filesystem
from leopard.store.generations import IndexDir, refuse_shrink
from leopard.store.manifest import MANIFEST, ShardManifest, write_manifest

__all__ = [
    "STAGING",
    "check_remote_target",
    "clear_staging",
    "empty_shard",
    "is_uri",
    "local_root",
    "publish_remote",
    "refuse_remote_shrink",
    "staging_of",
    "swap_in_local",
]

#: the directory of the root the shards are built in before they are swapped in
STAGING = ".staging"


def is_uri(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def local_root(index: str) -> Path | None:
    """The local directory of ``index``, or None for a Hadoop URI."""
    if is_uri(index):
        return None
    return Path(index.removeprefix("file://")).resolve()


def staging_of(root: str) -> str:
    return f"{root.rstrip('/')}/{STAGING}"


def clear_staging(root: str) -> None:
    """Remove what a build left in ``root``'s staging directory; never raises."""
    local = local_root(root)
    if local is not None:
        shutil.rmtree(local / STAGING, ignore_errors=True)
        return
    with contextlib.suppress(Exception):
        fs, path = filesystem(staging_of(root))
        fs.delete_dir(path)


def check_remote_target(index: str, shards: int, force: bool) -> None:
    """``check_shard_target`` for a URI: a new or empty directory (but for the staging
    a failed build left), or a sharded index of as many shards (or ``force``)."""
    fs, path = filesystem(index)
    try:
        manifest = fs.get_file_info(f"{path.rstrip('/')}/{MANIFEST}")
        if manifest.type.name == "NotFound":
            inside = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
            if any(i.base_name != STAGING for i in inside):
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


def empty_shard(
    stage: str,
    shard: tuple[int, int, str],
    config: Config,
    id_order: str,
    position: dict[str, int] | None,
) -> BuildReport:
    """Shard ``k`` of ``(k, n, build id)`` built on the driver from no tuple (no row of
    the sources is its), in the staging directory ``stage``."""
    k = shard[0]
    with tempfile.TemporaryDirectory(prefix="leopard-shard-") as tmp:
        local = local_root(stage)
        dest = local / f"shard-{k}" if local is not None else Path(tmp) / "ix"
        report = build_from_batches(
            [], dest, config, shard=shard, id_order=id_order, position=position or None
        )
        if local is None:
            copy_tree(dest, f"{stage.rstrip('/')}/shard-{k}")
    return report


def swap_in_local(swap: ShardSwap, manifest: ShardManifest) -> None:
    """Every shard built in the staging directory made the live generation of its
    shard (the locks held by ``swap``), then the manifest written."""
    stage = swap.root / STAGING
    for k, d in enumerate(swap.dirs):
        swap.adopt(k, IndexDir(stage / d.path.name).current())
    swap.publish(manifest)


def refuse_remote_shrink(index: str, shards: int, indexed: int, read: int, share: float) -> None:
    """``ShardSwap.refuse_shrink`` for a URI: the live shards' counts are read from
    their build reports (``CURRENT`` is a file naming the live generation there)."""
    fs, path = filesystem(index)
    base = path.rstrip("/")
    try:
        live = fs.get_file_info(f"{base}/{MANIFEST}").type.name != "NotFound"
    except OSError as exc:
        raise InvalidInput(f"cannot look at --index {index!r}: {exc}") from None
    before: int | None = None
    if live:
        try:
            counts = []
            for k in range(shards):
                with fs.open_input_stream(f"{base}/shard-{k}/CURRENT") as f:
                    gen = f.read().decode().strip()
                with fs.open_input_stream(f"{base}/shard-{k}/{gen}/build-report.json") as f:
                    counts.append(int(json.loads(f.read())["tuples_indexed"]))
            before = sum(counts)
        except (OSError, ValueError, KeyError, TypeError):
            before = None  # a report unreadable: no share to compare with
    counted = "in the live shards (a tuple on every shard counted on each)"
    refuse_shrink(index, live, before, indexed, read, share, counted)


def publish_remote(index: str, shards: int, manifest: ShardManifest) -> None:
    """Copy each staged shard over the live one (its ``CURRENT`` file last), then the
    manifest; the staging directory is removed by the caller."""
    fs, path = filesystem(index)
    base = path.rstrip("/")
    for k in range(shards):
        src = f"{base}/{STAGING}/shard-{k}"
        found = fs.get_file_info(pafs.FileSelector(src, recursive=True))
        files = sorted(
            (f.path for f in found if f.type.name == "File"), key=lambda p: p.endswith("/CURRENT")
        )
        for f in files:
            dest = f"{base}/shard-{k}/{f[len(src) + 1 :]}"
            fs.create_dir(dest.rpartition("/")[0], recursive=True)
            fs.copy_file(f, dest)
    with tempfile.TemporaryDirectory(prefix="leopard-manifest-") as tmp:
        write_manifest(tmp, manifest)
        with fs.open_output_stream(f"{base}/{MANIFEST}") as out:
            out.write((Path(tmp) / MANIFEST).read_bytes())
