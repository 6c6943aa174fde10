"""The manifest of a sharded index: which directories hold its shards.

A sharded index is a directory holding ``shards.json`` and one ordinary index
directory per shard (``shard-0``, ``shard-1``, ...), each with its own generations,
incremental layer and stream position. The manifest is JSON with a format version::

    {"format_version": 1, "kind": "leopard-shards", "shards": 4,
     "placement": "crc32", "dirs": ["shard-0", ...], "engine": "local", "built_at": ...}

It is written once the shards are built (atomically: a temporary file renamed over
it), so a reader that finds it finds every shard. A build names itself with an id
(``extra.build``), which each shard's header holds too (the third item of its
``shard``, kept by compactions): the shards are swapped in one after another, so a
reader that finds a shard of another build than the manifest's has opened them while a
build was swapping them in (or after one was killed doing so), and must not answer.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leopard.errors import IndexNotFound, StorageError
from leopard.model.shards import check_shards

__all__ = [
    "MANIFEST",
    "MANIFEST_VERSION",
    "ShardManifest",
    "new_build_id",
    "read_manifest",
    "shard_dir_name",
    "write_manifest",
]

MANIFEST = "shards.json"
MANIFEST_VERSION = 1
_KIND = "leopard-shards"


def shard_dir_name(k: int) -> str:
    return f"shard-{k}"


@dataclass(frozen=True)
class ShardManifest:
    """What ``shards.json`` says."""

    shards: int
    dirs: tuple[str, ...]
    engine: str = "local"
    built_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, shards: int, engine: str, **extra: Any) -> ShardManifest:
        check_shards(shards)
        dirs = tuple(shard_dir_name(k) for k in range(shards))
        return cls(shards, dirs, engine, time.time(), dict(extra))

    def to_json(self) -> str:
        return json.dumps(
            {
                "format_version": MANIFEST_VERSION,
                "kind": _KIND,
                "shards": self.shards,
                "placement": "crc32",
                "dirs": list(self.dirs),
                "engine": self.engine,
                "built_at": self.built_at,
                **({"extra": self.extra} if self.extra else {}),
            },
            indent=2,
            sort_keys=True,
        )

    @property
    def build(self) -> str | None:
        """The id of the build that wrote it (None before builds had one)."""
        found = self.extra.get("build")
        return found if isinstance(found, str) else None

    def shard_paths(self, root: str | Path) -> list[Path]:
        return [Path(root) / d for d in self.dirs]


def new_build_id() -> str:
    """A sharded build's id, for its manifest and every shard's header."""
    return uuid.uuid4().hex


def read_manifest(root: str | Path) -> ShardManifest | None:
    """The manifest of the sharded index at ``root``; None when ``root`` holds none
    (an ordinary index, or nothing). StorageError naming the file when it is damaged."""
    path = Path(root) / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise IndexNotFound(f"no index at {str(root)!r}: not a directory") from None
    except OSError as exc:
        raise StorageError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StorageError(f"{str(path)!r} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != _KIND:
        raise StorageError(f"{str(path)!r} is not the manifest of a sharded Leopard index")
    version = doc.get("format_version")
    if version != MANIFEST_VERSION:
        raise StorageError(
            f"{str(path)!r} is of manifest format {version!r}; this Leopard reads "
            f"format {MANIFEST_VERSION}"
        )
    if doc.get("placement") != "crc32":
        raise StorageError(f"{str(path)!r}: unknown placement {doc.get('placement')!r}")
    try:
        shards = check_shards(doc.get("shards"), f"{path}: shards")
    except Exception as exc:
        raise StorageError(str(exc)) from None
    dirs = doc.get("dirs")
    if (
        not isinstance(dirs, list)
        or len(dirs) != shards
        or not all(isinstance(d, str) and d and "/" not in d and d not in (".", "..") for d in dirs)
    ):
        raise StorageError(f"{str(path)!r}: 'dirs' must name {shards} shard directories")
    return ShardManifest(
        shards,
        tuple(dirs),
        str(doc.get("engine", "local")),
        float(doc.get("built_at", 0.0)),
        dict(doc.get("extra", {})),
    )


def write_manifest(root: str | Path, manifest: ShardManifest) -> None:
    """Write ``root/shards.json`` atomically."""
    root = Path(root)
    tmp = root / (MANIFEST + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(manifest.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / MANIFEST)
    except OSError as exc:
        where = str(root / MANIFEST)
        raise StorageError(f"cannot write {where!r}: {exc.strerror or exc}") from None
