"""Reading sets through both layers: the incremental overlay over the base.

The base is an immutable RocksDB written by a build or a compaction. The
incremental layer holds whole replacement sets for everything changed since the
base (never diffs), so a read is: the overlay's copy if it has one, else the base's.
The overlay is small by construction (compaction folds it away past a threshold),
so readers hold it in memory: a lookup costs one dict probe before the RocksDB get.

Ids: groups and subjects keep their base ids; ones first seen in the stream get
ids after the base's. Base subject ids follow name order, which makes a page of
``members_of`` a range of ids; subjects added later are merged in by name.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pyroaring import BitMap

from leopard.errors import StorageError
from leopard.model.config import Config
from leopard.model.tokens import encode_token
from leopard.store.generations import IndexDir, base_of, delta_of, dir_size, report_of
from leopard.store.layout import (
    FAMILIES,
    FORMAT_KEY,
    GROUPS_KEY,
    META_KEY,
    NEW_GROUP_PREFIX,
    NEXT_SUBJECT_KEY,
    POSITION_KEY,
    SEQ_KEY,
    SET_FAMILIES,
    check_format,
    decode_int,
    decode_meta,
    decode_names,
    decode_position,
    gkey,
    m2g_groups,
    m2g_id,
    split_m2g,
)
from leopard.store.rocks import RocksDB, list_families

__all__ = ["SetReader", "Overlay", "Updates", "open_delta", "load_overlay"]

#: the sets a batch replaced, by family and key (None: absent now)
Updates = dict[str, dict[bytes, bytes | None]]
Listener = Callable[[Updates], None]


def open_delta(
    generation: Path, *, read_only: bool, secondary: str | None = None
) -> RocksDB | None:
    """The incremental layer's RocksDB of a generation (None if read-only and absent)."""
    path = delta_of(generation)
    if not read_only:
        return RocksDB(path, read_only=False, cache_bytes=64 << 20)
    for attempt in range(_READ_ATTEMPTS):
        if not (path / "CURRENT").exists():
            return None
        try:
            # A writer opening the delta for the first time creates the database
            # before its column families; until they all exist it has written
            # nothing, and a read-only open naming them all would fail.
            if not set(list_families(path)).issuperset(FAMILIES):
                return None
            return RocksDB(path, read_only=True, cache_bytes=64 << 20, secondary=secondary)
        except Exception as exc:
            # A read-only open reads the list of live files from the MANIFEST, and a
            # writer in another process (the consumer) may delete some of them
            # meanwhile, flushing or compacting: "Corruption: Can't access ...sst".
            # That passes; the next attempt reads the new list.
            if attempt == _READ_ATTEMPTS - 1:
                if isinstance(exc, StorageError):
                    raise
                raise StorageError(
                    f"cannot read the incremental layer at {str(path)!r}: {exc}"
                ) from exc
            time.sleep(0.01 * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


_READ_ATTEMPTS = 6  # about 0.3 s of retries in all


def load_overlay(db: RocksDB, overlay: Overlay) -> None:
    """Read a whole incremental layer into memory."""
    for family in SET_FAMILIES:
        fam = overlay.sets.setdefault(family, {})
        for key, value in db.family(family).items():
            fam[key] = value
    raw = db.get(POSITION_KEY)
    if raw:
        overlay.position = decode_position(raw)
    raw = db.get(NEXT_SUBJECT_KEY)
    overlay.next_subject = decode_int(raw) if raw else None
    overlay.seq = decode_int(db.get(SEQ_KEY))
    overlay.group_names = [value.decode() for _, value in db.scan(NEW_GROUP_PREFIX)]


_EMPTY = BitMap()


def _clamp(bm: BitMap, lo: int, hi: int) -> BitMap:
    """The elements ``lo <= x < hi`` of a bitmap."""
    if hi <= lo or not bm:
        return BitMap()
    i = bm.rank(lo - 1) if lo > 0 else 0
    j = bm.rank(hi - 1)
    return bm[i:j]


class Overlay:
    """Sets changed since the base, as raw serialized bytes, by family and key.

    ``None`` as a value means "absent in the new state" (a subject with no groups
    left); a missing key means "unchanged, read the base".
    """

    def __init__(self) -> None:
        self.sets: dict[str, dict[bytes, bytes | None]] = {}
        self.group_names: list[str] = []  # groups added after the base, in id order
        self.group_ids: dict[str, int] = {}
        self.next_subject: int | None = None
        self.position: dict[str, int] = {}
        self.seq = 0

    def get(self, family: str, key: bytes) -> tuple[bool, bytes | None]:
        fam = self.sets.get(family)
        if fam is None or key not in fam:
            return False, None
        return True, fam[key]

    def size(self) -> int:
        return sum(len(f) for f in self.sets.values())


class SetReader:
    """Reads every family through the overlay, then the base."""

    def __init__(
        self,
        path: Path,
        generation: Path,
        base: RocksDB,
        meta: dict[str, Any],
        *,
        lock: threading.RLock | None = None,
    ) -> None:
        self.path = path
        self.generation = generation
        self.base = base
        self.meta = meta
        self.config = Config.model_validate(meta.get("config", {}))
        self.base_groups: list[str] = decode_names(base.get(GROUPS_KEY))
        self.base_group_ids = {n: i for i, n in enumerate(self.base_groups)}
        self.base_subjects = int(meta.get("subjects", 0))
        self.overlay = Overlay()
        self.overlay.position = dict(meta.get("position", {}))
        # Queries take it, and apply_overlay takes it to install a batch, so a query
        # never sees half a batch; an Index passes its own, shared by every
        # generation it serves in turn.
        self.lock = lock if lock is not None else threading.RLock()
        self._secondary: tuple[RocksDB, str] | None = None
        self._token = ""
        self._token_key: tuple[int, int] | None = None
        self.listeners: list[Listener] = []
        self._families = {name: base.family(name) for name in SET_FAMILIES}

    @classmethod
    def open(cls, path: str | Path, *, lock: threading.RLock | None = None) -> SetReader:
        p = Path(path)
        gen = IndexDir(p).current()
        base = RocksDB(base_of(gen), read_only=True, cache_bytes=1 << 30)
        try:
            check_format(base.get(FORMAT_KEY), str(p))
            meta = decode_meta(base.get(META_KEY))
        except BaseException:
            base.close()
            raise
        reader = cls(p, gen, base, meta, lock=lock)
        reader._load_delta()
        return reader

    def _load_delta(self) -> None:
        delta = open_delta(self.generation, read_only=True)
        if delta is None:
            return
        try:
            fresh = Overlay()
            fresh.position = dict(self.meta.get("position", {}))
            load_overlay(delta, fresh)
        finally:
            delta.close()
        self._install(fresh)

    def _install(self, fresh: Overlay) -> None:
        for i, name in enumerate(fresh.group_names):
            fresh.group_ids[name] = len(self.base_groups) + i
        with self.lock:
            self.overlay = fresh
        for listener in self.listeners:
            listener({})

    def close(self) -> None:
        self.base.close()
        if self._secondary is not None:
            db, scratch = self._secondary
            self._secondary = None
            db.close()
            shutil.rmtree(scratch, ignore_errors=True)

    # -- versions -----------------------------------------------------------------------

    def version_key(self) -> tuple[str, int]:
        return (self.generation.name, self.overlay.seq)

    def refresh(self) -> bool:
        """Re-read an incremental layer that another process writes; whether it changed.

        A secondary RocksDB instance follows the writer's log, so a poll that finds
        nothing new costs a catch-up and one read, not a reopening of the database.
        """
        delta = self._follower()
        if delta is None:
            return False
        delta.catch_up()
        seq = decode_int(delta.get(SEQ_KEY))
        if seq == self.overlay.seq:
            return False
        fresh = Overlay()
        fresh.position = dict(self.meta.get("position", {}))
        load_overlay(delta, fresh)
        self._install(fresh)
        return True

    def _follower(self) -> RocksDB | None:
        if self._secondary is None:
            scratch = tempfile.mkdtemp(prefix="leopard-follow-")
            try:
                db = open_delta(self.generation, read_only=True, secondary=scratch)
            except BaseException:
                shutil.rmtree(scratch, ignore_errors=True)
                raise
            if db is None:
                shutil.rmtree(scratch, ignore_errors=True)
                return None
            self._secondary = (db, scratch)
        return self._secondary[0]

    def next_subject(self) -> int:
        n = self.overlay.next_subject
        return self.base_subjects if n is None else n

    def apply_overlay(
        self,
        updates: Updates,
        new_groups: list[str],
        next_subject: int,
        position: dict[str, int],
        seq: int,
    ) -> None:
        """Install one persisted batch in memory, atomically for readers holding the lock."""
        ov = self.overlay
        with self.lock:
            for family, entries in updates.items():
                ov.sets.setdefault(family, {}).update(entries)
            first = self.group_count()
            for i, name in enumerate(new_groups):
                ov.group_names.append(name)
                ov.group_ids[name] = first + i
            ov.next_subject = next_subject
            ov.position = position
            ov.seq = seq
            for listener in self.listeners:
                listener(updates)

    @property
    def position(self) -> dict[str, int]:
        return self.overlay.position

    def token(self) -> str:
        # encoding costs more than a check; a token changes only with the overlay
        key = (id(self.overlay), self.overlay.seq)
        if self._token_key != key:
            self._token = encode_token(self.position)
            self._token_key = key
        return self._token

    # -- raw reads ----------------------------------------------------------------------

    def _get(self, family: str, key: bytes) -> bytes | None:
        hit, value = self.overlay.get(family, key)
        if hit:
            return value
        return self._families[family].get(key)

    def raw(self, family: str, key: bytes) -> bytes | None:
        return self._get(family, key)

    def raw_many(self, family: str, keys: list[bytes]) -> list[bytes | None]:
        """``raw`` of many keys: the overlay's entries, the rest with one multi-get."""
        fam = self.overlay.sets.get(family) or {}
        out: list[bytes | None] = [fam.get(k) for k in keys]
        missing = [i for i, k in enumerate(keys) if k not in fam]
        if missing:
            values = self._families[family].get_many([keys[i] for i in missing])
            for i, value in zip(missing, values, strict=True):
                out[i] = value
        return out

    def bitmap(self, family: str, gid: int) -> BitMap:
        raw = self._get(family, gkey(gid))
        return BitMap.deserialize(raw) if raw else _EMPTY

    def m2g(self, subject: str) -> tuple[int, BitMap] | None:
        """The id and direct groups of a leaf subject, or None when unknown."""
        raw = self._get("m2g", subject.encode())
        if not raw:
            return None
        return split_m2g(raw)

    def m2g_groups(self, subject: str) -> BitMap | None:
        """Just the direct groups of a leaf subject (the hot path of ``check``)."""
        key = subject.encode()
        fam = self.overlay.sets.get("m2g")
        raw = fam[key] if fam is not None and key in fam else self._families["m2g"].get(key)
        return m2g_groups(raw) if raw else None

    def m2g_groups_many(self, subjects: list[str]) -> dict[str, BitMap | None]:
        """``m2g_groups`` of many subjects with one RocksDB multi-get."""
        raws = self.raw_many("m2g", [name.encode() for name in subjects])
        return {
            name: m2g_groups(raw) if raw else None for name, raw in zip(subjects, raws, strict=True)
        }

    # -- names --------------------------------------------------------------------------

    def group_id(self, name: str) -> int | None:
        gid = self.base_group_ids.get(name)
        if gid is None:
            gid = self.overlay.group_ids.get(name)
        return gid

    def group_name(self, gid: int) -> str:
        n = len(self.base_groups)
        return self.base_groups[gid] if gid < n else self.overlay.group_names[gid - n]

    def group_names(self, gids: Iterable[int]) -> list[str]:
        names = self.base_groups
        n = len(names)
        extra = self.overlay.group_names
        return [names[g] if g < n else extra[g - n] for g in gids]

    def group_count(self) -> int:
        return len(self.base_groups) + len(self.overlay.group_names)

    def subject_name(self, sid: int) -> str:
        raw = self._get("sname", gkey(sid))
        if raw is None:
            raise StorageError(f"index at {self.path} has no name for subject id {sid}")
        return raw.decode()

    def _first_base_id_after(self, after: str) -> int:
        """The smallest base subject id whose name sorts after ``after``."""
        for key, value in self._families["m2g"].items(start=after.encode()):
            if key.decode() > after:
                return m2g_id(value)
        return self.base_subjects

    def subject_page(self, members: BitMap, *, limit: int | None, after: str | None) -> list[str]:
        """Names of ``members`` in name order, after ``after``, at most ``limit``."""
        nb = self.base_subjects
        base_part = _clamp(members, 0, nb)
        new_part = members - base_part
        if after is not None:
            start = self._first_base_id_after(after)
            base_part = _clamp(base_part, start, nb)
        new_names = sorted(self.subject_name(s) for s in new_part)
        if after is not None:
            new_names = [n for n in new_names if n > after]
        take = base_part if limit is None else base_part[:limit]
        base_names = [self.subject_name(s) for s in take]
        if not new_names:
            return base_names
        merged = sorted(base_names + new_names)
        return merged if limit is None else merged[:limit]

    # -- stats --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        report_path = report_of(self.generation)
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        return {
            "path": str(self.path),
            "generation": self.generation.name,
            "format_version": self.meta.get("format_version"),
            "groups": self.group_count(),
            "subjects": self.next_subject(),
            "base_groups": len(self.base_groups),
            "base_subjects": self.base_subjects,
            "overlay_sets": self.overlay.size(),
            "position": dict(self.position),
            "version": self.token(),
            "bytes_on_disk": dir_size(self.generation),
            "config": json.loads(self.config.to_json()),
            "build": report,
        }
