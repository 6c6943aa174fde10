"""Reading a whole index back to say what in it is damaged (``leopard verify``).

Queries check every value they read (see ``leopard.core.layers``); this reads every key
and value of the live generation, the base and the delta alike, and checks what no
single read can:

* each database opens with its write-ahead log whole (a torn or damaged record is
  reported, though readers recover the writes before it);
* every value of every family decodes as its family stores it, with no bytes left
  over; the header of the base matches its checksums and the group-name list its count;
* across families, over the base with the delta laid on it: every group has its
  GROUP2GROUP, holding the group itself and no id past the last group, equal to the
  group and the closures of its children;
  ``child`` and ``parent`` mirror each other, and so do ``m2g`` and ``g2m``; every
  subject name in ``m2g`` has the id whose ``sname`` names it back, the ids running
  from 0 without a gap; every support mask belongs to an edge that exists;
* with a schema, the derived edges (``dchild``, and ``dparent`` as its mirror) and
  their support counts (``dsupport``) are those the stored tuples derive, derived
  again as the build derives them (``leopard.core.rederive``).

Each finding is one line naming the family, the key and the database; past ``LIMIT``
findings of one kind the rest are counted, not listed. Run it on an index no consumer
is writing: a write in flight can look like a torn record.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyroaring import BitMap

from leopard.core.crosscheck import CrossChecks
from leopard.core.layers import Overlay, load_overlay, open_delta
from leopard.errors import IndexNotFound, StorageError
from leopard.model.names import SUBJECT_RE
from leopard.model.setcodec import TAG
from leopard.store.generations import IndexDir, base_of, report_of
from leopard.store.layout import (
    BASE_KEYS,
    NEW_GROUP_PREFIX,
    NEXT_SUBJECT_KEY,
    POSITION_KEY,
    RESOURCE_KEY,
    SEQ_KEY,
    SET_FAMILIES,
    SOURCE_STATE_KEY,
    BadValue,
    check_header,
    count_of,
    damaged,
    decode_bitmap,
    decode_name,
    gid_of,
    mask_of,
    split_m2g,
)
from leopard.store.rocks import RocksDB, log_files

__all__ = ["VerifyReport", "verify_index", "LIMIT"]

LIMIT = 20  # findings of one kind listed; the rest are counted
_SETS = ("g2g", "g2m", "child", "parent", "dchild", "dparent")  # group id -> set
_DELTA_KEYS = (POSITION_KEY, NEXT_SUBJECT_KEY, SEQ_KEY, SOURCE_STATE_KEY)
_EMPTY = BitMap()


@dataclass
class VerifyReport:
    """What ``verify_index`` read, and every finding as one line."""

    path: str
    generation: str = ""
    problems: list[str] = field(default_factory=list)
    groups: int = 0
    subjects: int = 0
    keys: int = 0
    databases: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (
            f"index at {self.path} is sound: {self.generation}, {self.groups:,} groups, "
            f"{self.subjects:,} subjects, {self.keys:,} keys in {self.databases} "
            f"database{'s' if self.databases != 1 else ''} read in {self.seconds:.1f} s"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def verify_index(path: str | Path) -> VerifyReport:
    """Read every key and value of the live generation at ``path``; report the damage.

    IndexNotFound when there is no index there at all; anything damaged, the index's
    ``CURRENT`` included, is a line of ``problems``.
    """
    started = time.perf_counter()
    v = _Verifier(Path(path))
    index_dir = IndexDir(v.index)
    try:
        generation = index_dir.current()
    except (IndexNotFound, StorageError) as exc:
        if not index_dir.exists():
            raise
        v.add("CURRENT", str(exc))
    else:
        v.report.generation = generation.name
        v.generation(generation)
    v.finish()
    v.report.seconds = round(time.perf_counter() - started, 3)
    return v.report


class _Stopped(Exception):
    """A scan stopped at damage (already reported)."""


class _Verifier(CrossChecks):
    limit = LIMIT

    def __init__(self, index: Path) -> None:
        self.index = index
        self.report = VerifyReport(str(index))
        self.kinds: Counter[str] = Counter()
        self.base: RocksDB | None = None
        self.delta: RocksDB | None = None
        # the live state, decoded: the base with the delta laid on it
        self.sets: dict[str, dict[int, BitMap]] = {f: {} for f in _SETS}
        self.m2g: dict[str, tuple[int, BitMap]] = {}  # name -> id, direct groups
        self.names: dict[int, str] = {}  # sname: id -> name
        self.support: dict[bytes, int] = {}
        self.stored_resource: bytes | None = None
        self.rset = BitMap()
        self.dsupport: dict[bytes, int] = {}  # derived edges' support counts
        self.whole: set[str] = set(SET_FAMILIES)  # families read to the end
        self.in_delta: dict[str, set[bytes]] = {f: set() for f in SET_FAMILIES}
        self.delta_stopped = False  # a scan of the delta stopped at damage

    # -- findings -------------------------------------------------------------------

    def add(self, kind: str, line: str) -> None:
        self.kinds[kind] += 1
        if self.kinds[kind] <= LIMIT:
            self.report.problems.append(line)

    def value(self, db: RocksDB, family: str, key: bytes | None, reason: object) -> None:
        self.add(family, str(damaged(self.index, db.where, family, key, reason)))

    def bad(self, family: str, key: bytes, reason: str) -> None:
        """A finding about the live value of ``family`` at ``key`` (base or delta)."""
        assert self.base is not None
        db = self.delta if self.delta is not None and key in self.in_delta[family] else self.base
        self.value(db, family, key, reason)

    def error(self, kind: str, exc: Exception) -> None:
        text = str(exc)
        self.add(kind, text if "is damaged" in text else f"index at {self.index}: {text}")

    def finish(self) -> None:
        for kind, n in self.kinds.items():
            if n > LIMIT:
                more = f"{n - LIMIT:,} more findings in {kind} like the ones above"
                self.report.problems.append(f"index at {self.index} is damaged: {more}")

    # -- reading --------------------------------------------------------------------

    def generation(self, gen: Path) -> None:
        path = report_of(gen)
        try:
            if path.exists() and not isinstance(json.loads(path.read_bytes()), dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            self.add("report", f"index at {self.index} is damaged: {path}: {exc}")
        self.base = self.open("base", lambda strict: RocksDB(base_of(gen), strict=strict))
        if self.base is None:
            return
        try:
            self.report.databases = 1
            header = self.header(self.base)
            self.delta = self.open("delta", lambda s: open_delta(gen, read_only=True, strict=s))
            for family in SET_FAMILIES:
                self.read(family)
            overlay = Overlay()
            if self.delta is not None:
                self.report.databases = 2
                if not self.delta_header(self.delta, overlay, header):
                    return  # the ids of the groups and subjects it adds are unknown
            if header is not None:
                self.cross_check(header[0], header[1], overlay)
        finally:
            self.base.close()
            if self.delta is not None:
                self.delta.close()

    def open(self, what: str, opener: Callable[[bool], RocksDB | None]) -> RocksDB | None:
        """Open a database strictly; if only its write-ahead log is damaged, report
        that and go on with what readers recover from it."""
        try:
            return opener(True)
        except StorageError as exc:
            try:
                db = opener(False)
            except StorageError:
                self.error(what, exc)
                return None
            assert db is not None
            logs = ", ".join(p.name for p in log_files(db.where)) or "none"
            self.add(
                what,
                f"index at {self.index} is damaged: write-ahead log of {db.where} ({logs}): "
                f"{exc}; readers recover the writes before the damage",
            )
            return db

    def scan(self, db: RocksDB, family: str) -> Iterator[tuple[bytes, bytes]]:
        items = db.scan(b"") if family == "default" else db.family(family).items()
        try:
            for key, value in items:
                self.report.keys += 1
                yield key, value
        except StorageError as exc:  # a damaged block: the scan stops there
            self.add(family, f"index at {self.index} is damaged: {exc}")
            raise _Stopped from None

    def header(self, base: RocksDB) -> tuple[dict[str, Any], list[str]] | None:
        values: dict[bytes, bytes | None] = dict.fromkeys(BASE_KEYS)
        try:
            for key, value in self.scan(base, "default"):
                if key in values:
                    values[key] = value
                elif key == RESOURCE_KEY:
                    self.stored_resource = value
                else:
                    self.value(base, "default", key, "a key the base never holds")
        except _Stopped:  # the damage is told; a header read in part would add a false
            return None  # "not a Leopard index" to it
        try:
            return check_header(values, self.index, base.where)
        except (IndexNotFound, StorageError) as exc:
            self.error("default", exc)
            return None

    def delta_header(self, delta: RocksDB, overlay: Overlay, header: Any) -> bool:
        """The default family of the delta; whether its counts and names are sound."""
        try:
            for key, _ in self.scan(delta, "default"):
                known = key in _DELTA_KEYS or (
                    key.startswith(NEW_GROUP_PREFIX) and len(key) == len(NEW_GROUP_PREFIX) + 4
                )
                if not known:
                    self.value(delta, "default", key, "a key the delta never holds")
            if header is None or self.delta_stopped:  # read as far as it goes already
                return False
            load_overlay(delta, overlay, index=self.index, first_group=len(header[1]))
            return True
        except _Stopped:
            return False
        except StorageError as exc:
            self.error("default", exc)
            return False

    def read(self, family: str) -> None:
        """Every value of ``family`` decoded, the delta's over the base's."""
        layers: list[dict[bytes, Any]] = []
        for db in (self.delta, self.base):
            values: dict[bytes, Any] = {}
            layers.append(values)
            if db is None:
                continue
            try:
                for key, raw in self.scan(db, family):
                    try:
                        values[key] = _decode(family, key, raw, base=db is self.base)
                    except BadValue as exc:
                        self.value(db, family, key, exc)
            except _Stopped:
                self.whole.discard(family)
                self.delta_stopped |= db is self.delta
        in_delta, in_base = layers
        self.in_delta[family] = set(in_delta)
        for values in (in_base, in_delta):
            for key, value in values.items():
                if family == "m2g":
                    self.m2g[key.decode()] = value
                elif family == "sname":
                    self.names[gid_of(key)] = value
                elif family in ("support", "dsupport"):
                    counts = self.support if family == "support" else self.dsupport
                    if value is None:  # the delta's "no entry"
                        counts.pop(key, None)
                    else:
                        counts[key] = value
                else:
                    self.sets[family][gid_of(key)] = value


def _decode(family: str, key: bytes, raw: bytes, *, base: bool) -> Any:
    """A value as its family stores it; BadValue for a key or value it never holds."""
    if family == "m2g":
        _subject(decode_name(key))
        sid, groups = split_m2g(raw)
        _whole(groups, raw[4:])
        if base and not groups:
            raise BadValue("no groups: the base holds only subjects in some group")
        return sid, groups
    if family == "support":
        if len(key) != 9 or key[4:5] not in (b"g", b"s"):
            raise BadValue(f"key is no support key ({len(key)} bytes)")
        return None if not raw and not base else mask_of(raw)
    if family == "dsupport":
        if len(key) != 8:
            raise BadValue(f"key is no derived edge's key ({len(key)} bytes, not 8)")
        return None if not raw and not base else count_of(raw)
    if len(key) != 4:
        raise BadValue(f"key is {len(key)} bytes, not a 4-byte id")
    if family == "sname":
        return _subject(decode_name(raw))
    bm = decode_bitmap(raw)
    _whole(bm, raw)
    if base and not bm:  # the delta holds the sets its deletes emptied
        raise BadValue("the set is empty: the base holds none")
    return bm


def _subject(name: str) -> str:
    if not SUBJECT_RE.fullmatch(name):
        raise BadValue(f"{name!r:.80} is no subject name")
    return name


def _whole(bm: BitMap, raw: bytes) -> None:
    if raw[:1] == bytes((TAG,)):  # the compact form: every byte is part of an id
        return
    size = len(bm.serialize())
    if size != len(raw):
        raise BadValue(f"value holds {len(raw) - size} bytes past its roaring bitmap")
