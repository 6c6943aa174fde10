"""Damaging an index on disk for real: values written over, bytes of files overwritten,
files cut short, ``CURRENT`` pointed elsewhere.

The tests of damage (``tests/core/test_damage.py``, ``tests/cli/test_verify.py``) build
a small index with these helpers, break one thing and assert the one clear error.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyroaring import BitMap

import leopard
from leopard.core.incremental import DeltaWriter
from leopard.core.index import Index
from leopard.gen import OrgSpec, docs_schema, generate
from leopard.model.names import parse_tuple
from leopard.model.setcodec import pack
from leopard.store.generations import IndexDir, base_of, delta_of
from leopard.store.layout import CHECKSUM_KEY, META_KEY, gkey, m2g_value
from leopard.store.rocks import RocksDB

# a cycle (eng <-> backend), nesting three deep, a wildcard
ORG = [
    "group:all#member@group:eng#member",
    "group:all#member@user:carol",
    "group:eng#member@user:alice",
    "group:eng#member@group:backend#member",
    "group:backend#member@user:bob",
    "group:backend#member@group:eng#member",
    "group:sales#member@user:*",
]
# every answer of ORG that the tests ask
_EVERYONE = ["group:all#member", "group:backend#member", "group:eng#member", "group:sales#member"]
GROUPS_OF = {
    "user:alice": _EVERYONE,
    "user:bob": _EVERYONE,
    "user:carol": ["group:all#member", "group:sales#member"],
}


def build_small(path: Path, lines: list[str] | None = None) -> Path:
    leopard.build_index([lines or ORG], path)
    return path


def build_big(path: Path, subjects: int = 50_000) -> Path:
    """An index whose m2g and sname span many blocks: ``user:u000000`` on, in 50
    groups all nested in ``group:all``."""
    lines = [f"group:g{i % 50}#member@user:u{i:06d}" for i in range(subjects)]
    lines += [f"group:all#member@group:g{j}#member" for j in range(50)]
    leopard.build_index([lines], path)
    return path


def base_dir(path: Path) -> Path:
    return base_of(IndexDir(path).current())


def delta_dir(path: Path) -> Path:
    return delta_of(IndexDir(path).current())


def group_id(path: Path, name: str) -> int:
    with Index(path) as ix:
        gid = ix.reader.group_id(name)
    assert gid is not None, name
    return gid


def subject_id(path: Path, name: str) -> int:
    with Index(path) as ix:
        found = ix.reader.m2g(name)
    assert found is not None, name
    return found[0]


@contextmanager
def writable(db_path: Path) -> Iterator[RocksDB]:
    """A database of the index opened read-write; flushed and closed after."""
    db = RocksDB(db_path, read_only=False)
    try:
        yield db
        db.flush()
    finally:
        db.close()


def put(db_path: Path, family: str, key: bytes, value: bytes) -> None:
    """Write ``value`` over the value of ``family`` at ``key``."""
    with writable(db_path) as db:
        batch = db.batch()
        if family == "default":
            batch.put_default(key, value)
        else:
            batch.put(family, key, value)
        db.write(batch)


def delete(db_path: Path, key: bytes) -> None:
    """Remove a key of the default family."""
    with writable(db_path) as db:
        db.raw.delete(key)


def value_of(db_path: Path, key: bytes, family: str = "default") -> bytes | None:
    db = RocksDB(db_path)
    try:
        return db.get(key) if family == "default" else db.family(family).get(key)
    finally:
        db.close()


def drop_checksum(path: Path) -> None:
    """Make the index look as one built before the base recorded checksums."""
    base = base_dir(path)
    raw = value_of(base, META_KEY)
    assert raw is not None
    meta = json.loads(raw)
    del meta["checksum"]
    put(base, "default", META_KEY, json.dumps(meta, sort_keys=True).encode())
    delete(base, CHECKSUM_KEY)


def table_file(db_path: Path, first_key: bytes, entries: int | None = None) -> Path:
    """The table file (SST) of a database whose keys start at ``first_key`` (and that
    holds ``entries`` keys)."""
    db = RocksDB(db_path)
    try:
        files = [
            f
            for f in db.raw.live_files()
            if f["start_key"] == first_key and entries in (None, f["num_entries"])
        ]
    finally:
        db.close()
    assert len(files) == 1, files
    return db_path / files[0]["name"].lstrip("/")


def overwrite_middle(file: Path, count: int = 64) -> None:
    """Overwrite ``count`` bytes in the middle of a file (a block of it goes bad)."""
    size = file.stat().st_size
    with open(file, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(b"\xa5" * count)


def copy_index(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def log_of(db_path: Path) -> Path:
    """The one non-empty write-ahead log of a database."""
    logs = [p for p in db_path.glob("*.log") if p.stat().st_size]
    assert len(logs) == 1, logs
    return logs[0]


def truncate(file: Path, size: int) -> None:
    os.truncate(file, size)


# -- a schema's derived edges -------------------------------------------------------------


def build_docs(path: Path, tuples: int = 2_000, seed: int = 3) -> tuple[Path, list[str]]:
    """An index of documents in nested folders (``leopard gen --shape docs``) built
    with its schema, and its tuples."""
    buf = io.BytesIO()
    generate(OrgSpec(tuples=tuples, seed=seed, shape="docs", max_depth=5, cycles=False), buf)
    lines = buf.getvalue().decode().splitlines()
    schema = path.parent / f"{path.name}.zed"
    schema.write_text(docs_schema())
    leopard.build_index([lines], path, schema=schema)
    return path, lines


def arrow_tuples(lines: list[str]) -> dict[str, str]:
    """``doc:X`` -> ``folder:F`` of every ``doc:X#parent@folder:F``, for documents
    with another tuple too (their computed feeds' edges stay when the arrow goes)."""
    parents = {}
    for line in lines:
        head, _, subject = line.partition("@")
        obj, _, relation = head.partition("#")
        if obj.startswith("doc:") and relation == "parent":
            parents[obj] = subject
    others = {line.partition("#")[0] for line in lines if "#parent@" not in line}
    return {doc: folder for doc, folder in sorted(parents.items()) if doc in others}


def make_delta(path: Path) -> Path:
    """The delta of the index, made by a change of its own (a new group)."""
    with Index(path) as ix:
        writer = DeltaWriter(ix.reader)
        writer.apply([("touch", parse_tuple("group:new#member@user:zed"))], {"t:0": 1})
        writer.close()
    return delta_dir(path)


def set_value(bm: BitMap) -> bytes:
    return pack(bm.serialize())


def drop_member(path: Path, group: str, subject: str) -> None:
    """``subject`` taken out of ``group``'s members in the delta, ``g2m`` and ``m2g``
    alike (kept mirrors of each other), and nothing else: what a missed flip of the
    incremental layer leaves (the derived edges the tuple fed stay)."""
    delta = make_delta(path)
    with Index(path) as ix:
        gid = ix.reader.group_id(group)
        found = ix.reader.m2g(subject)
        assert gid is not None and found is not None
        sid, groups = found
        members = BitMap(ix.reader.bitmap("g2m", gid))
    members.discard(sid)
    put(delta, "g2m", gkey(gid), set_value(members))
    put(delta, "m2g", subject.encode(), m2g_value(sid, BitMap(groups) - BitMap([gid])))


def move_derived_edge(path: Path, parent: str, child: str, *, add: bool) -> Path:
    """The derived edge ``parent -> child`` added (or taken away) in the delta with its
    mirror, and ``parent``'s closure made again to match (no set includes ``parent``):
    only the derivation itself is wrong. Returns the delta."""
    delta = make_delta(path)
    with Index(path) as ix:
        r = ix.reader
        p, c = r.group_id(parent), r.group_id(child)
        assert p is not None and c is not None
        assert not r.bitmap("dparent", p) and not r.bitmap("parent", p)
        kids, parents = BitMap(r.bitmap("dchild", p)), BitMap(r.bitmap("dparent", c))
        assert (c in kids) != add
        if add:
            kids.add(c)
            parents.add(p)
        else:
            kids.discard(c)
            parents.discard(p)
        # a resource set's closure: its own id and the closures of what it holds
        closure = BitMap.union(BitMap([p]), *(r.bitmap("g2g", k) for k in kids))
    put(delta, "dchild", gkey(p), set_value(kids))
    put(delta, "dparent", gkey(c), set_value(parents))
    put(delta, "g2g", gkey(p), set_value(closure))
    return delta
