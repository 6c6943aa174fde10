"""Reading a whole index back to say what in it is damaged (``leopard verify``).

Queries check every value they read (see ``leopard.core.layers``); this reads every key
and value of the live generation, the base and the delta alike, and checks what no
single read can:

* each database opens with its write-ahead log whole (a torn or damaged record is
  reported, though readers recover the writes before it);
* every value of every family decodes as its family stores it, with no bytes left
  over; the header of the base matches its checksums and the group-name list its count;
* across families, over the base with the delta laid on it: every group has its
  GROUP2GROUP and GROUP2ANCESTOR, holding the group itself and no id past the last
  group, each equal to the group and the closures of its children (of its parents);
  ``child`` and ``parent`` mirror each other, and so do ``m2g`` and ``g2m``; every
  subject name in ``m2g`` has the id whose ``sname`` names it back, the ids running
  from 0 without a gap; every support mask belongs to an edge that exists.

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

from leopard.core.layers import Overlay, load_overlay, open_delta
from leopard.errors import IndexNotFound, StorageError
from leopard.model.names import GROUP_RE, SUBJECT_RE
from leopard.store.generations import IndexDir, base_of, report_of
from leopard.store.layout import (
    BASE_KEYS,
    NEW_GROUP_PREFIX,
    NEXT_SUBJECT_KEY,
    POSITION_KEY,
    SEQ_KEY,
    SET_FAMILIES,
    BadValue,
    check_header,
    count_of,
    damaged,
    decode_bitmap,
    decode_name,
    gid_of,
    gkey,
    mask_of,
    split_m2g,
    split_pair_key,
    split_support_key,
)
from leopard.store.rocks import RocksDB, log_files

__all__ = ["VerifyReport", "verify_index", "LIMIT"]

LIMIT = 20  # findings of one kind listed; the rest are counted
_SETS = ("g2g", "g2a", "g2m", "child", "parent", "dchild", "dparent")  # group id -> set
_DELTA_KEYS = (POSITION_KEY, NEXT_SUBJECT_KEY, SEQ_KEY)
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


class _Verifier:
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
                else:
                    self.value(base, "default", key, "a key the base never holds")
        except _Stopped:
            pass
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

    # -- across families --------------------------------------------------------------

    def cross_check(self, meta: dict[str, Any], groups: list[str], overlay: Overlay) -> None:
        n_groups = len(groups) + len(overlay.group_names)
        n = overlay.next_subject
        n_subjects = int(meta["subjects"]) if n is None else n
        self.report.groups, self.report.subjects = n_groups, n_subjects
        if n is not None and n < int(meta["subjects"]) and self.delta is not None:
            reason = f"{n:,} is below the base's {meta['subjects']:,} subjects"
            self.value(self.delta, "default", NEXT_SUBJECT_KEY, reason)
        self.group_names(groups, overlay.group_names)
        self.closures(n_groups)
        self.edges(n_groups, n_subjects)
        self.subjects(n_groups, n_subjects)

    def group_names(self, base: list[str], added: list[str]) -> None:
        seen: dict[str, int] = {}
        for gid, name in enumerate([*base, *added]):
            db = self.base if gid < len(base) else self.delta
            key = b"groups" if gid < len(base) else NEW_GROUP_PREFIX + gkey(gid)
            assert db is not None
            if not GROUP_RE.fullmatch(name) or "#" not in name:
                self.value(db, "default", key, f"{name!r:.80} (id {gid}) is no group name")
            elif name in seen:
                self.value(db, "default", key, f"group {name} has ids {seen[name]} and {gid}")
            seen.setdefault(name, gid)

    def closures(self, groups: int) -> None:
        """GROUP2GROUP and GROUP2ANCESTOR: one per group, holding the group, equal to
        the group and the closures of its children (parents)."""
        sets = self.sets
        for family, edges, derived in (("g2g", "child", "dchild"), ("g2a", "parent", "dparent")):
            if family not in self.whole:
                continue
            closure = sets[family]
            for gid in range(groups):
                if gid not in closure:
                    self.bad(family, gkey(gid), "no value (every group has one)")
            for gid, bm in closure.items():
                key = gkey(gid)
                if gid >= groups:
                    self.bad(family, key, f"a key past the last of {groups:,} groups")
                elif gid not in bm:
                    self.bad(family, key, "the set does not hold the group itself")
                elif bm.max() >= groups:
                    self.bad(family, key, f"the set holds group id {bm.max()}, past the last")
                elif edges in self.whole and derived in self.whole:
                    below = sets[edges].get(gid, _EMPTY) | sets[derived].get(gid, _EMPTY)
                    parts = [closure.get(c, _EMPTY) for c in below]
                    diff = len(BitMap.union(BitMap([gid]), *parts) ^ bm)
                    if diff:
                        what = f"the group and the {family} sets of its {edges} groups"
                        self.bad(family, key, f"the set differs in {diff:,} ids from {what}")

    def edges(self, groups: int, subjects: int) -> None:
        """Direct edges in range, ``child``/``parent`` and ``m2g``/``g2m`` mirrored, and
        a support mask only where its edge is."""
        sets, whole = self.sets, self.whole
        for family, limit in (
            ("child", groups),
            ("parent", groups),
            ("g2m", subjects),
            ("dchild", groups),
            ("dparent", groups),
        ):
            for gid, bm in sets[family].items():
                if gid >= groups:
                    self.bad(family, gkey(gid), f"a key past the last of {groups:,} groups")
                elif bm and bm.max() >= limit:
                    self.bad(family, gkey(gid), f"the set holds id {bm.max()}, past the last")
        if {"child", "parent"} <= whole:
            self.mirror("parent", _flip(sets["child"]), "the child sets naming it")
        if {"dchild", "dparent"} <= whole:
            self.mirror("dparent", _flip(sets["dchild"]), "the dchild sets naming it")
        if {"dsupport", "dchild"} <= whole:
            for key in self.dsupport:
                parent, child = split_pair_key(key)
                if child not in sets["dchild"].get(parent, _EMPTY):
                    self.bad("dsupport", key, "a count for a derived edge that does not exist")
        if {"m2g", "g2m"} <= whole:
            direct = dict(self.m2g.values())
            self.mirror("g2m", _flip(direct), "the m2g values naming it")
        if {"support", "child", "g2m"} <= whole:
            for key in self.support:
                gid, nested, other = split_support_key(key)
                if other not in sets["child" if nested else "g2m"].get(gid, _EMPTY):
                    self.bad("support", key, "a mask for an edge that does not exist")

    def mirror(self, family: str, want: dict[int, BitMap], what: str) -> None:
        got = self.sets[family]
        for gid in sorted(got.keys() | want.keys()):
            diff = len(got.get(gid, _EMPTY) ^ want.get(gid, _EMPTY))
            if diff:
                self.bad(family, gkey(gid), f"the set differs in {diff:,} ids from {what}")

    def subjects(self, groups: int, subjects: int) -> None:
        """Every subject name has the id whose ``sname`` names it back; ids from 0 on."""
        whole, names = self.whole, self.names
        if "m2g" in whole:
            owners: dict[int, str] = {}
            for name, (sid, direct) in self.m2g.items():
                key = name.encode()
                if sid >= subjects:
                    self.bad("m2g", key, f"subject id {sid} is past the last of {subjects:,}")
                elif sid in owners:
                    self.bad("m2g", key, f"subject id {sid} is also the id of {owners[sid]!r}")
                elif "sname" in whole and names.get(sid) != name:
                    self.bad("m2g", key, f"subject id {sid} is named {names.get(sid)!r}")
                if direct and direct.max() >= groups:
                    self.bad("m2g", key, f"the groups hold id {direct.max()}, past the last")
                owners.setdefault(sid, name)
        if "sname" in whole:
            for sid in range(subjects):
                if sid not in names:
                    self.bad("sname", gkey(sid), "no name for this subject id")
            for sid, name in names.items():
                if sid >= subjects:
                    self.bad("sname", gkey(sid), f"a key past the last of {subjects:,} subjects")
                elif "m2g" in whole and name not in self.m2g:
                    self.bad("sname", gkey(sid), f"no m2g value for {name!r}")


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
    size = len(bm.serialize())
    if size != len(raw):
        raise BadValue(f"value holds {len(raw) - size} bytes past its roaring bitmap")


def _flip(sets: dict[int, BitMap]) -> dict[int, BitMap]:
    """``{x: {k : x in sets[k]}}``: the sets turned around."""
    out: dict[int, BitMap] = {}
    for head, bm in sets.items():
        for other in bm:
            found = out.get(other)
            if found is None:
                found = out[other] = BitMap()
            found.add(head)
    return out
