"""Reading sets through both layers: the incremental overlay over the base.

The base is an immutable RocksDB written by a build or a compaction. The
incremental layer holds whole replacement sets for everything changed since the
base (never diffs), so a read is: the overlay's copy if it has one, else the base's.
The overlay is small by construction (compaction folds it away past a threshold),
so readers hold it in memory: a lookup costs one dict probe before the RocksDB get.

Ids: groups and subjects keep their base ids; ones first seen in the stream get
ids after the base's. Base subject ids follow name order, which makes a page of
``members_of`` a range of ids; subjects added later are merged in by name.

Every value is checked where it is read: a damaged one raises ``StorageError`` naming
the family, the key and the database, never reads as an absent or empty set.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pyroaring import BitMap

from leopard.core.overlay import Overlay, Updates, load_overlay, open_delta
from leopard.errors import StorageError
from leopard.model.config import Config
from leopard.model.setcodec import load
from leopard.model.tokens import encode_token
from leopard.store.generations import IndexDir, base_of, delta_of, dir_size, report_of
from leopard.store.layout import (
    BASE_KEYS,
    RESOURCE_KEY,
    SEQ_KEY,
    SET_FAMILIES,
    BadValue,
    check_header,
    damaged,
    decode_bitmap,
    decode_name,
    encode_int,
    gid_of,
    gkey,
    m2g_groups,
    m2g_id,
    mask_of,
    split_m2g,
)
from leopard.store.rocks import RocksDB
from leopard.store.scratch import Scratch

__all__ = ["SetReader", "Overlay", "Updates", "open_delta", "load_overlay"]

Listener = Callable[[Updates], None]
_T = TypeVar("_T")


_EMPTY = BitMap()
_EVERY_GROUP = ("g2g",)  # families with a value for every group


class SetReader:
    """Reads every family through the overlay, then the base."""

    def __init__(
        self,
        path: Path,
        generation: Path,
        base: RocksDB,
        meta: dict[str, Any],
        *,
        groups: list[str],
        lock: threading.RLock | None = None,
    ) -> None:
        self.path = path
        self.generation = generation
        self.base = base
        self.meta = meta
        self.config = Config.model_validate(meta.get("config", {}))
        self.base_groups: list[str] = groups
        self.base_group_ids = {n: i for i, n in enumerate(self.base_groups)}
        # ids of a schema's resource-tier sets (see leopard.model.plan.Plan.group_tier):
        # the base's as the build stored them, and those added since, by their names
        raw = base.get(RESOURCE_KEY)
        self.base_resource_ids = (
            self.decode("default", RESOURCE_KEY, raw, decode_bitmap) if raw else BitMap()
        )
        self.resource_ids = BitMap(self.base_resource_ids)
        # the base's first resource-tier id (the build numbers the group tier first; no
        # resource tier: the base's group count), and the tier as that one span of ids
        # (first, end) when it is one, so that a check tells a tier by comparing
        # (held_meets); None: by resource_ids
        tier = self.base_resource_ids
        self.first_resource_id = int(tier.min()) if tier else len(groups)
        span = (self.first_resource_id, len(groups))
        self.resource_span = span if len(tier) == span[1] - span[0] else None
        self.base_subjects = int(meta.get("subjects", 0))
        self.overlay = Overlay()
        self.overlay.position = dict(meta.get("position", {}))
        self.overlay.source_state = dict(meta.get("source_state", {}))
        # Queries take it, and apply_overlay takes it to install a batch, so a query
        # never sees half a batch; an Index passes its own, shared by every
        # generation it serves in turn.
        self.lock = lock if lock is not None else threading.RLock()
        # Odd while a batch is being installed: a check that takes no lock
        # (``Index.check``) reads it before and after, and takes the lock when it moved.
        self.epoch = 0
        self._secondary: tuple[RocksDB, Scratch] | None = None
        self._token = ""
        self._token_key: tuple[int, int] | None = None
        self.listeners: list[Listener] = []
        self._families = {name: base.family(name) for name in SET_FAMILIES}

    @classmethod
    def open(cls, path: str | Path, *, lock: threading.RLock | None = None) -> SetReader:
        p = Path(path)
        directory = IndexDir(p)
        directory.tidy()  # leftovers of crashed builds, when no build runs
        gen = directory.current()
        base = RocksDB(base_of(gen), read_only=True, cache_bytes=1 << 30)
        try:
            header = {key: base.get(key) for key in BASE_KEYS}
            meta, groups = check_header(header, p, base.where)
            reader = cls(p, gen, base, meta, groups=groups, lock=lock)
            reader._load_delta()
        except BaseException:
            base.close()
            raise
        return reader

    def _load_delta(self) -> None:
        delta = open_delta(self.generation, read_only=True)
        if delta is None:
            return
        try:
            fresh = Overlay()
            fresh.position = dict(self.meta.get("position", {}))
            fresh.source_state = dict(self.meta.get("source_state", {}))
            load_overlay(delta, fresh, index=self.path, first_group=len(self.base_groups))
        finally:
            delta.close()
        self._install(fresh)

    def _install(self, fresh: Overlay) -> None:
        resource = BitMap(self.base_resource_ids)
        for i, name in enumerate(fresh.group_names):
            fresh.group_ids[name] = len(self.base_groups) + i
            if self.is_resource_name(name):
                resource.add(len(self.base_groups) + i)
        with self._installing():
            self.overlay = fresh
            self.resource_ids = resource
            for listener in self.listeners:  # before a query can see the layer
                listener({})

    @contextmanager
    def _installing(self) -> Iterator[None]:
        """Hold the lock, the epoch odd: a check without the lock (``Index.check``)
        that read the epoch before sees it moved after."""
        with self.lock:
            self.epoch += 1
            try:
                yield
            finally:
                self.epoch += 1

    def close(self) -> None:
        self.base.close()
        if self._secondary is not None:
            db, scratch = self._secondary
            self._secondary = None
            db.close()
            scratch.remove()

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
        seq = delta.get(SEQ_KEY)  # damaged: not equal, and load_overlay says what
        if (b"0" if seq is None else seq) == encode_int(self.overlay.seq):
            return False
        fresh = Overlay()
        fresh.position = dict(self.meta.get("position", {}))
        fresh.source_state = dict(self.meta.get("source_state", {}))
        load_overlay(delta, fresh, index=self.path, first_group=len(self.base_groups))
        self._install(fresh)
        return True

    def _follower(self) -> RocksDB | None:
        if self._secondary is None:
            scratch = Scratch("leopard-follow-")  # removed at close, or swept once dead
            try:
                db = open_delta(self.generation, read_only=True, secondary=scratch.path)
            except BaseException:
                scratch.remove()
                raise
            if db is None:
                scratch.remove()
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
        source_state: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Install one persisted batch in memory, atomically for readers holding the lock."""
        ov = self.overlay
        with self._installing():
            for family, entries in updates.items():
                ov.sets.setdefault(family, {}).update(entries)
            first = self.group_count()
            for i, name in enumerate(new_groups):
                ov.group_names.append(name)
                ov.group_ids[name] = first + i
                if self.is_resource_name(name):
                    self.resource_ids.add(first + i)
            ov.next_subject = next_subject
            ov.position = position
            if source_state is not None:
                ov.source_state = source_state
            ov.seq = seq
            for listener in self.listeners:
                listener(updates)

    def is_resource_name(self, name: str) -> bool:
        """Whether a set name is of a schema's resource tier (no schema: never)."""
        plan = self.config.plan
        if plan is None:
            return False
        obj, _, relation = name.rpartition("#")
        return plan.is_resource(obj[: obj.index(":")], relation)

    @property
    def position(self) -> dict[str, int]:
        """Per partition, the next offset to apply (the position the writer resumes at)."""
        return self.overlay.position

    @property
    def source_state(self) -> dict[str, dict[str, Any]]:
        return self.overlay.source_state

    @property
    def gaps(self) -> dict[str, str]:
        """Partitions stopped at a gap in their log: partition -> what the gap is."""
        return self.overlay.source_state.get("gaps", {})

    def served_position(self) -> dict[str, int]:
        """The position answers reflect: without partitions stopped at a gap, whose
        versions cannot be vouched for (a token naming one is never reached)."""
        gaps = self.overlay.source_state.get("gaps")
        position = self.overlay.position
        if not gaps:
            return position
        return {k: v for k, v in position.items() if k not in gaps}

    def token(self) -> str:
        # encoding costs more than a check; a token changes only with the overlay
        key = (id(self.overlay), self.overlay.seq)
        if self._token_key != key:
            self._token = encode_token(self.served_position())
            self._token_key = key
        return self._token

    # -- raw reads ----------------------------------------------------------------------

    def damage(
        self, family: str, key: bytes, reason: object, *, in_base: bool | None = None
    ) -> StorageError:
        """The error of a damaged value, naming its database (by default the delta if it has it)."""
        if in_base is None:
            in_base = not self.overlay.get(family, key)[0]
        where = self.base.where if in_base else delta_of(self.generation)
        return damaged(self.path, where, family, key, reason)

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

    def decode(
        self,
        family: str,
        key: bytes,
        raw: bytes,
        decoder: Callable[[bytes], _T],
        *,
        in_base: bool | None = None,
    ) -> _T:
        """``decoder(raw)`` of a value of ``family`` at ``key``; StorageError if damaged."""
        try:
            return decoder(raw)
        except BadValue as exc:
            raise self.damage(family, key, exc, in_base=in_base) from None

    def bitmap(self, family: str, gid: int) -> BitMap:
        """A group's set of ``family`` (never change the result); absent: empty."""
        key = gkey(gid)
        raw = self._get(family, key)
        if raw:
            try:
                return load(raw)
            except Exception:  # ValueError; set_value says why
                pass
        return self.set_value(family, key, raw)

    def bitmaps(self, family: str, gids: Iterable[int]) -> list[BitMap]:
        """``bitmap`` of many groups, read with one multi-get."""
        keys = [gkey(g) for g in gids]
        out = []
        for key, raw in zip(keys, self.raw_many(family, keys), strict=True):
            try:
                out.append(load(raw) if raw else self.set_value(family, key, raw))
            except Exception:  # ValueError; set_value says why
                out.append(self.set_value(family, key, raw))
        return out

    def set_value(self, family: str, key: bytes, raw: bytes | None) -> BitMap:
        """The set of a value read with ``raw``/``raw_many`` (None: empty, unless required)."""
        if raw is None:
            if family not in _EVERY_GROUP or gid_of(key) >= self.group_count():
                return _EMPTY
            raise self.damage(family, key, "no value (every group has one)")
        return self.decode(family, key, raw, decode_bitmap)

    def m2g(self, subject: str) -> tuple[int, BitMap] | None:
        """The id and direct groups of a leaf subject, or None when unknown."""
        key = subject.encode("utf-8", "surrogatepass")  # lone surrogates: never stored
        raw = self._get("m2g", key)
        return None if raw is None else self.decode("m2g", key, raw, split_m2g)

    def m2g_groups(self, subject: str) -> BitMap | None:
        """Just the direct groups of a leaf subject (the hot path of ``check``)."""
        key = subject.encode("utf-8", "surrogatepass")  # lone surrogates: never stored
        fam = self.overlay.sets.get("m2g")
        raw = fam[key] if fam is not None and key in fam else self._families["m2g"].get(key)
        if raw is None:
            return None
        try:
            return m2g_groups(raw)
        except BadValue as exc:
            raise self.damage("m2g", key, exc) from None

    def m2g_groups_many(self, subjects: list[str]) -> dict[str, BitMap | None]:
        """``m2g_groups`` of many subjects with one RocksDB multi-get."""
        keys = [name.encode("utf-8", "surrogatepass") for name in subjects]
        raws = self.raw_many("m2g", keys)
        return {
            name: None if raw is None else self.decode("m2g", key, raw, m2g_groups)
            for name, key, raw in zip(subjects, keys, raws, strict=True)
        }

    def mask(self, key: bytes, raw: bytes | None) -> int | None:
        """The support mask of a value read with ``raw``/``raw_many`` (None: no entry;
        the delta writes an empty value over an entry it drops, the base never does)."""
        if raw is None or (not raw and self.overlay.get("support", key)[0]):
            return None
        return self.decode("support", key, raw, mask_of)

    # -- names --------------------------------------------------------------------------

    def group_id(self, name: str) -> int | None:
        gid = self.base_group_ids.get(name)
        if gid is None:
            gid = self.overlay.group_ids.get(name)
        return gid

    def group_name(self, gid: int) -> str:
        return self.group_names([gid])[0]

    def group_names(self, gids: Iterable[int]) -> list[str]:
        names = self.base_groups
        n = len(names)
        extra = self.overlay.group_names
        try:
            return [names[g] if g < n else extra[g - n] for g in gids]
        except IndexError:
            reason = f"a stored set holds a group id past its {self.group_count()} groups"
        raise StorageError(f"index at {self.path} is damaged: {reason}")

    def group_count(self) -> int:
        return len(self.base_groups) + len(self.overlay.group_names)

    def subject_name(self, sid: int) -> str:
        key = gkey(sid)
        raw = self._get("sname", key)
        if raw is None:
            raise self.damage("sname", key, "no name for a subject id a stored set holds")
        return self.decode("sname", key, raw, decode_name)

    def _first_base_id_after(self, after: str) -> int:
        """The smallest base subject id whose name sorts after ``after``."""
        for key, value in self._families["m2g"].items(start=after.encode()):
            if key.decode(errors="replace") > after:
                return self.decode("m2g", key, value, m2g_id, in_base=True)
        return self.base_subjects

    def subject_page(self, members: BitMap, *, limit: int | None, after: str | None) -> list[str]:
        """Names of ``members`` in name order, after ``after``, at most ``limit``."""
        # Base ids are in name order: the page is a range of ranks, sliced alone (a
        # slice of the whole set copied 29 ms of 3.8M members for a page of 100).
        nb = self.base_subjects
        below = members.rank(nb - 1) if nb > 0 else 0  # how many are base subjects
        first = 0
        if after is not None:
            start = self._first_base_id_after(after)
            first = min(below, members.rank(start - 1)) if start > 0 else 0
        last = below if limit is None else min(below, first + limit)
        take = members[first:last] if last > first else ()
        base_names = [self.subject_name(s) for s in take]
        new_part = members[below:] if below < len(members) else ()
        new_names = sorted(self.subject_name(s) for s in new_part)
        if after is not None:
            new_names = [n for n in new_names if n > after]
        if not new_names:
            return base_names
        merged = sorted(base_names + new_names)
        return merged if limit is None else merged[:limit]

    # -- stats --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        report_path = report_of(self.generation)
        try:
            report = json.loads(report_path.read_bytes()) if report_path.exists() else {}
        except (OSError, ValueError) as exc:
            raise StorageError(f"index at {self.path} is damaged: {report_path}: {exc}") from None
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
