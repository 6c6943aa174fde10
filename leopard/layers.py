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
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pyroaring import BitMap
from rocksdict import Rdict

from leopard.config import Config
from leopard.errors import StorageError
from leopard.storage import (
    FAMILIES,
    SET_FAMILIES,
    IndexDir,
    dir_size,
    gkey,
    iter_family,
    open_db,
    read_meta,
)
from leopard.tokens import encode_token

__all__ = ["SetReader", "Overlay", "open_delta", "load_overlay"]

Listener = Callable[[dict[str, dict[bytes, bytes | None]]], None]


def open_delta(generation: Path, *, read_only: bool, secondary: str | None = None) -> Rdict | None:
    """The incremental layer's RocksDB of a generation (None if read-only and absent)."""
    path = generation / "delta"
    if not read_only:
        return open_db(path, read_only=False, cache_bytes=64 << 20)
    for attempt in range(_READ_ATTEMPTS):
        if not (path / "CURRENT").exists():
            return None
        try:
            # A writer opening the delta for the first time creates the database
            # before its column families; until they all exist it has written
            # nothing, and a read-only open naming them all would fail.
            if not set(Rdict.list_cf(str(path))).issuperset(FAMILIES):
                return None
            return open_db(path, read_only=True, cache_bytes=64 << 20, secondary=secondary)
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


def load_overlay(db: Rdict, overlay: Overlay) -> None:
    """Read a whole incremental layer into memory."""
    for family in SET_FAMILIES:
        fam = overlay.sets.setdefault(family, {})
        for key, value in iter_family(db, family):
            fam[key] = value
    raw = db.get(b"position")
    if raw:
        overlay.position = json.loads(raw.decode())
    raw = db.get(b"next_subject")
    overlay.next_subject = int(raw.decode()) if raw else None
    raw = db.get(b"seq")
    overlay.seq = int(raw.decode()) if raw else 0
    names = []
    it = db.iter()
    it.seek(b"group:")
    while it.valid() and it.key().startswith(b"group:"):
        names.append(it.value().decode())
        it.next()
    overlay.group_names = names


_U32 = struct.Struct(">I")
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

    def __init__(self, path: Path, generation: Path, base: Rdict, meta: dict[str, Any]) -> None:
        self.path = path
        self.generation = generation
        self.base = base
        self.meta = meta
        self.config = Config.model_validate(meta.get("config", {}))
        names_raw = base.get(b"groups") or b""
        self.base_groups: list[str] = names_raw.decode().split("\n") if names_raw else []
        self.base_group_ids = {n: i for i, n in enumerate(self.base_groups)}
        self.base_subjects = int(meta.get("subjects", 0))
        self.overlay = Overlay()
        self.overlay.position = dict(meta.get("position", {}))
        self.lock = threading.RLock()
        self._secondary: tuple[Rdict, str] | None = None
        self._token = ""
        self._token_key: tuple[int, int] | None = None
        self.listeners: list[Listener] = []
        self._families = {name: base.get_column_family(name) for name in SET_FAMILIES}

    @classmethod
    def open(cls, path: str | Path) -> SetReader:
        p = Path(path)
        gen = IndexDir(p).current()
        base = open_db(gen / "base", read_only=True, cache_bytes=1 << 30)
        try:
            meta = read_meta(base, str(p))
        except BaseException:
            base.close()
            raise
        reader = cls(p, gen, base, meta)
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
        try:
            self.base.close()
        except Exception:  # closing twice is harmless
            pass
        if self._secondary is not None:
            db, scratch = self._secondary
            self._secondary = None
            try:
                db.close()
            except Exception:
                pass
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
        try:
            delta.try_catch_up_with_primary()
            raw = delta.get(b"seq")
        except Exception as exc:
            raise StorageError(f"cannot follow the incremental layer: {exc}") from exc
        seq = int(raw.decode()) if raw else 0
        if seq == self.overlay.seq:
            return False
        fresh = Overlay()
        fresh.position = dict(self.meta.get("position", {}))
        load_overlay(delta, fresh)
        self._install(fresh)
        return True

    def _follower(self) -> Rdict | None:
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
        updates: dict[str, dict[bytes, bytes | None]],
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
        try:
            return self._families[family].get(key)
        except Exception as exc:
            raise StorageError(f"read of {family} from {self.path} failed: {exc}") from exc

    def raw(self, family: str, key: bytes) -> bytes | None:
        return self._get(family, key)

    def raw_many(self, family: str, keys: list[bytes]) -> list[bytes | None]:
        """``raw`` of many keys: the overlay's entries, the rest with one multi-get."""
        fam = self.overlay.sets.get(family) or {}
        out: list[bytes | None] = [fam.get(k) for k in keys]
        missing = [i for i, k in enumerate(keys) if k not in fam]
        if missing:
            try:
                values = self._families[family].get([keys[i] for i in missing])
            except Exception as exc:
                raise StorageError(f"read of {family} from {self.path} failed: {exc}") from exc
            for i, value in zip(missing, values or [None] * len(missing), strict=True):
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
        return _U32.unpack_from(raw)[0], BitMap.deserialize(raw[4:])

    def m2g_groups(self, subject: str) -> BitMap | None:
        """Just the direct groups of a leaf subject (the hot path of ``check``)."""
        key = subject.encode()
        fam = self.overlay.sets.get("m2g")
        raw = fam[key] if fam is not None and key in fam else self._families["m2g"].get(key)
        return BitMap.deserialize(raw[4:]) if raw else None

    def m2g_groups_many(self, subjects: list[str]) -> dict[str, BitMap | None]:
        """``m2g_groups`` of many subjects with one RocksDB multi-get."""
        raws = self.raw_many("m2g", [name.encode() for name in subjects])
        return {
            name: BitMap.deserialize(raw[4:]) if raw else None
            for name, raw in zip(subjects, raws, strict=True)
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
        it = self._families["m2g"].iter()
        it.seek(after.encode())
        while it.valid():
            key = it.key()
            if key.decode() > after:
                return _U32.unpack_from(it.value())[0]
            it.next()
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
        report_path = self.generation / "build-report.json"
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
