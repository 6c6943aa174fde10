"""Caches of a layered reader: what queries read most, held in memory beside it.

``CachedSets`` wraps one ``SetReader`` and offers the reads queries need (a group's
closure, a namespace's wildcard groups, a subject's direct groups, a group's member
union) with the sets read most kept in memory. Each cache has one stated bound, and
each is kept right by the reader itself: the reader calls ``invalidate`` with every
batch it installs (``SetReader.listeners``), and the wrapper drops exactly what that
batch replaced, so a steady trickle of changes does not empty them all.

==============  ==========================================  ==============================
cache           holds                                       bound
==============  ==========================================  ==============================
``group_ids``   a group name as asked -> its id (-1: none)  ``NAME_LIMIT`` names, then
                                                            starts over
``closures``    group id -> GROUP2GROUP (after ``warm()``,    ``CLOSURE_LIMIT`` sets, then
                a small one as stored until first asked)    starts over (``warm`` fills it)
``reaches``,    group name -> GROUP2GROUP (a resource-tier  ``CLOSURE_LIMIT`` names each,
``tier_``       set's in ``tier_reaches``, and the group-   then starts over
``reaches``     tier sets it stops at in ``tier_groups``),
                for the path of a check after ``warm()``
                that parses nothing (``held_answer``)
``wildcards``   namespace -> the groups of ``ns:*``         one entry per namespace asked
``tier_wild``   namespace -> resource-tier set name ->      ``CLOSURE_LIMIT`` names each,
                whether ``ns:*`` is in it (``tier_meets``)  then starts over; dropped with
                                                            any closure or wildcard change
``members``     group id -> union of the members below it   ``MEMBER_LIMIT`` groups, oldest
                                                            first out
``subjects``    subject key -> direct groups, after         every subject of the base
                ``warm()``: as stored until first asked,    (``warm`` is the choice to
                then deserialized; a changed subject is     hold them all)
                dropped and read through the overlay again
==============  ==========================================  ==============================

The wrapper reads only through its reader's public methods, and nothing outside it
writes its caches except through its methods.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from itertools import compress
from operator import itemgetter
from typing import Any, cast

import numpy as np
from pyroaring import BitMap

from leopard.core.layers import SetReader, Updates
from leopard.store.layout import gid_of, gkey, m2g_groups

__all__ = [
    "CachedSets",
    "Loaded",
    "load_all",
    "NAME_LIMIT",
    "CLOSURE_LIMIT",
    "MEMBER_LIMIT",
]

NAME_LIMIT = 200_000
CLOSURE_LIMIT = 2_000_000
MEMBER_LIMIT = 16
_UNSEEN: Any = object()

#: what ``load_all`` reads for ``CachedSets.install``: closures, subjects (None when
#: not asked)
Loaded = tuple[dict[int, BitMap | bytes], dict[bytes, BitMap | bytes] | None]


class CachedSets:
    """A ``SetReader`` with the sets queries read most held in memory (see the module)."""

    def __init__(self, reader: SetReader) -> None:
        self.reader = reader
        self.group_ids: dict[str, int] = {}
        # a value may be the stored GROUP2GROUP value until first asked (after warm())
        self.closures: dict[int, BitMap | bytes] = {}
        self.reaches: dict[str, BitMap] = {}
        # the same for sets of a schema's resource tier, whose check meets them
        # differently (a dictionary apart, not a marker: its values stay BitMaps,
        # which the cyclic collector does not track, where tuples made it walk more
        # at every check that made one)
        self.tier_reaches: dict[str, BitMap] = {}
        self.tier_groups: dict[str, BitMap] = {}
        self.wildcards: dict[str, BitMap | None] = {}
        # namespace -> resource-tier set name -> whether its wildcard is in the set
        self._tier_wild: dict[str, dict[str, bool]] = {}
        self._members: dict[int, BitMap] = {}
        # a value is the stored MEMBER2GROUP value until first asked (``subject_groups``)
        self.subjects: dict[bytes, BitMap | bytes] | None = None
        self._group_count = reader.group_count()
        reader.listeners.append(self.invalidate)

    def detach(self) -> None:
        """Stop following the reader (it is being replaced)."""
        if self.invalidate in self.reader.listeners:
            self.reader.listeners.remove(self.invalidate)

    # -- reads ------------------------------------------------------------------------

    def closure(self, gid: int) -> BitMap:
        """GROUP2GROUP of a group (never change the result)."""
        held = self.closures
        bm = held.get(gid)
        if bm is None:
            if len(held) > CLOSURE_LIMIT:
                held.clear()
            bm = held[gid] = self.reader.bitmap("g2g", gid)
        elif isinstance(bm, bytes):  # held as stored by warm()
            stored = bm
            try:
                bm = BitMap.deserialize(stored)
            except Exception:  # pyroaring: ValueError; set_value says why
                bm = self.reader.set_value("g2g", gkey(gid), stored)
            held[gid] = bm
        return bm

    def remember_group(self, name: str, gid: int | None) -> None:
        """Remember how a group name resolved (None: to no group)."""
        if len(self.group_ids) > NAME_LIMIT:
            self.group_ids.clear()
        self.group_ids[name] = -1 if gid is None else gid

    def remember_reach(self, name: str, gid: int, resource_tier: bool = False) -> None:
        """Hold the closure of ``gid`` under the name it was asked by (in
        ``tier_reaches`` for a set of the resource tier, the group-tier sets it stops
        at in ``tier_groups``)."""
        held = self.tier_reaches if resource_tier else self.reaches
        if name in held:
            return
        if len(held) > CLOSURE_LIMIT:
            held.clear()
            if resource_tier:
                self.tier_groups.clear()
        closure = held[name] = self.closure(gid)
        if resource_tier:
            self.tier_groups[name] = closure - self.reader.resource_ids

    def held_answer(self, s: str, g: str) -> bool | None:
        """After ``warm()``, the answer for a subject held in memory and a group whose
        closure a check reached before (both then valid names, so neither is parsed):
        one intersection, and one with the namespace's wildcard groups when that
        misses (for a resource-tier set, ``tier_meets``).
        None when the pair needs the whole path of ``Index._check`` (which remembers
        the group's closure here, ``remember_reach``)."""
        mem = self.subjects
        if mem is None:
            return None
        found = self.reaches.get(g)
        tier = found is None
        reach = self.tier_reaches.get(g) if tier else found
        if reach is None:
            return None
        direct = mem.get(skey := s.encode("utf-8", "surrogatepass"))
        if direct is None:
            return None
        if isinstance(direct, bytes):  # held as stored until first asked
            direct = self.subject_groups(skey, direct)
        if tier:  # a resource-tier set's: as Index._check does
            return self.tier_meets(s, direct, reach, self.tier_groups[g], g)
        if direct.intersect(reach):
            return True
        w = self.wildcards.get(s[: s.find(":")], _UNSEEN)
        if w is _UNSEEN:
            return None  # Index._check looks the wildcard up, and remembers it
        return w is not None and w.intersect(reach)

    def wildcard_groups(self, namespace: str) -> BitMap | None:
        """The groups ``namespace:*`` is directly in (None when in none)."""
        if namespace in self.wildcards:
            return self.wildcards[namespace]
        found = self.reader.m2g(f"{namespace}:*")
        bm = found[1] if found else None
        self.wildcards[namespace] = bm
        return bm

    def direct_groups(self, key: str) -> BitMap:
        """Groups the leaf ``key`` is directly in, its namespace's wildcard included."""
        found = self.reader.m2g(key)
        direct = found[1] if found else BitMap()
        if not key.endswith(":*"):
            wild = self.wildcard_groups(key[: key.index(":")])
            if wild:
                direct = direct | wild
        return direct

    def tier_meets(
        self, key: str, direct: BitMap, reach: BitMap, groups: BitMap, name: str | None = None
    ) -> bool:
        """Whether the subject ``key`` whose direct sets are ``direct`` is in a
        resource-tier set whose closure is ``reach``; ``groups`` are the group-tier sets
        ``reach`` holds, where it stops. The subject is in it exactly when it is
        directly in a set of ``reach`` or below one of ``groups`` (their closures meet
        ``direct``); or, ``key`` not a wildcard itself, when its namespace's wildcard
        is. A few intersections: no set above the subject is formed (``bench/schema.py``
        times the first checks of new subjects). The wildcard's answer is the same for
        every subject of the namespace: held under the set's ``name`` when given."""
        if self._tier_meets(direct, reach, groups):
            return True
        if key.endswith(":*"):
            return False
        ns = key[: key.index(":")]
        answers = self._tier_wild.get(ns)
        if answers is None:
            answers = self._tier_wild[ns] = {}
        elif name is not None:
            found = answers.get(name)
            if found is not None:
                return found
        wild = self.wildcard_groups(ns)
        found = wild is not None and self._tier_meets(wild, reach, groups)
        if name is not None:
            if len(answers) > CLOSURE_LIMIT:
                answers.clear()
            answers[name] = found
        return found

    def set_in_tier(self, sgid: int, reach: BitMap) -> bool:
        """Whether the set ``sgid`` is in a resource-tier set whose closure is
        ``reach``: in it, or below a group-tier set it stops at."""
        return self._tier_meets(BitMap([sgid]), reach, reach - self.reader.resource_ids)

    def _tier_meets(self, direct: BitMap, reach: BitMap, groups: BitMap) -> bool:
        if direct.intersect(reach):
            return True
        held = self.closures
        for gid in groups:
            closure = held.get(gid)
            if type(closure) is not BitMap:
                closure = self.closure(gid)
            if closure.intersect(direct):
                return True
        return False

    def reach(self, gid: int) -> BitMap:
        """Every set below ``gid``: its closure, and for a resource-tier set also the
        closures of the group sets its closure stops at."""
        closure = self.closure(gid)
        rset = self.reader.resource_ids
        if not rset or gid not in rset:
            return closure
        return BitMap.union(closure, *(self.closure(g) for g in closure - rset))

    def above(self, seeds: BitMap) -> BitMap:
        """``seeds`` and every set above them, found by walking the parent edges up (no
        ancestor sets are stored): one multi-get a family for each level of the walk."""
        plan = self.reader.config.plan
        families = ("parent", "dparent") if plan is not None else ("parent",)
        bitmaps = self.reader.bitmaps
        found = BitMap(seeds)
        frontier = seeds
        while frontier:
            nxt = BitMap.union(BitMap(), *(bm for f in families for bm in bitmaps(f, frontier)))
            nxt -= found
            found |= nxt
            frontier = nxt
        return found

    def members(self, gid: int) -> BitMap:
        """Every leaf subject id below a group: the union of GROUP2MEMBER over its reach."""
        members = self._members.get(gid)
        if members is None:
            # one multi-get: a point read each took most of the union at 776k groups
            members = BitMap.union(BitMap(), *self.reader.bitmaps("g2m", self.reach(gid)))
            # paging through a big group asks for the same union again and again
            if len(self._members) >= MEMBER_LIMIT:
                self._members.pop(next(iter(self._members)))
            self._members[gid] = members
        return members

    # -- warm -------------------------------------------------------------------------

    def load(self, *, subjects: bool) -> int:
        """Hold every closure (and, with ``subjects``, every subject's direct groups)."""
        loaded = _load(self.reader, subjects, have=self.closures)
        self.install(loaded)
        held = len(self.closures)
        return held + (len(self.subjects) if self.subjects is not None else 0)

    def subject_groups(self, key: bytes, raw: bytes) -> BitMap:
        """The direct groups of the subject ``key`` from its stored value in
        ``subjects``, kept deserialized from now on (a value damaged in a way ``warm``
        could not see fails here, as a read of it does)."""
        try:
            groups = m2g_groups(raw)
        except ValueError as exc:
            raise self.reader.damage("m2g", key, exc, in_base=True) from None
        self.subjects[key] = groups  # type: ignore[index]  # set: raw came from it
        return groups

    def install(self, loaded: Loaded) -> None:
        """Take sets loaded by ``load_all`` (e.g. ahead of a swap, outside any lock)."""
        closures, subjects = loaded
        self.closures.update(closures)
        if subjects is not None:
            self.subjects = subjects

    # -- following the reader ---------------------------------------------------------

    def invalidate(self, updates: Updates) -> None:
        """Drop what a batch replaced (everything, when ``updates`` is empty)."""
        reader = self.reader
        count = reader.group_count()
        g2g = updates.get("g2g")
        if not updates:
            self.closures.clear()
            self.reaches.clear()
            self.tier_reaches.clear()
            self.tier_groups.clear()
        elif g2g:
            gids = [gid_of(key) for key in g2g]
            for gid in gids:
                self.closures.pop(gid, None)
            if self.reaches or self.tier_reaches:
                # a group is asked by its name, or without the relation when its
                # namespace has one set: drop both
                for name in reader.group_names(gids):
                    for held in (self.reaches, self.tier_reaches, self.tier_groups):
                        held.pop(name, None)
                        held.pop(name[: name.rfind("#")], None)
        m2g = updates.get("m2g")
        wild_changed = m2g is not None and any(key.endswith(b":*") for key in m2g)
        if not updates or wild_changed:
            self.wildcards.clear()
        if not updates or wild_changed or g2g:
            # a wildcard, a set's closure or one that its closure stops at changed
            self._tier_wild.clear()
        if not updates or count != self._group_count:
            # A name's id never changes within a generation; only a name unknown so
            # far may have become a group.
            self.group_ids.clear()
            self._group_count = count
        if not updates or "g2m" in updates or "g2g" in updates:
            self._members.clear()
        mem = self.subjects
        if mem is not None:
            # subjects changed since the base are read through the overlay again
            changed = updates.get("m2g") if updates else reader.overlay.sets.get("m2g")
            for key in changed or ():
                mem.pop(key, None)


def load_all(reader: SetReader, subjects: bool) -> Loaded:
    """Every closure and (``subjects``) the direct groups of every subject unchanged
    since the base, read from ``reader``, for ``CachedSets.install``."""
    return _load(reader, subjects, have={})


def _load(
    r: SetReader, subjects: bool, *, have: Iterable[int] | dict[int, BitMap | bytes]
) -> Loaded:
    # Millions of sets go into dictionaries that grow all the while: each full
    # collection the allocations trigger walks them again (a fifth of warm() at 40M
    # tuples), and nothing loaded here forms reference cycles.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load_all(r, subjects, have=have)
    finally:
        if was_enabled:
            gc.enable()


def _load_all(
    r: SetReader, subjects: bool, *, have: Iterable[int] | dict[int, BitMap | bytes]
) -> Loaded:
    # The subjects' sets are held as stored and deserialized when first asked
    # (``subject_groups``): at 40M tuples deserializing 3.8M of them here took two
    # thirds of warm(), and a check pays it once per subject (about 1.5 us). The
    # dictionaries are made by passes in C (``dict``, ``map``, ``zip``), not a Python
    # loop per set. A subject's value that a glance shows damaged (too short, no
    # roaring header) is reported here as before.
    g2g = _closures(r, have)
    if not subjects:
        return g2g, None
    # values become BitMaps in place as checks first ask (``subject_groups``)
    raw = cast(dict[bytes, BitMap | bytes], r.base.family("m2g").as_dict())
    for key in r.overlay.sets.get("m2g") or ():  # read through the overlay instead
        raw.pop(key, None)
    if not set(map(_HEAD, raw.values())) <= _ROARING_HEADS:
        for key, value in raw.items():
            if isinstance(value, bytes) and value[4:6] not in _ROARING_HEADS:
                try:
                    m2g_groups(value)  # raises BadValue, unless it deserializes after all
                except ValueError as exc:
                    raise r.damage("m2g", key, exc, in_base=True) from None
    return g2g, raw


def _first_resource_id(r: SetReader, none: int) -> int:
    """The base's first resource-tier id: its group tier is the ids below (``none``
    when it has no resource tier)."""
    return int(r.base_resource_ids.min()) if r.base_resource_ids else none


def _stored(r: SetReader, family: str) -> tuple[np.ndarray, list[bytes]]:
    """The group ids and values of the base's ``family`` in one pass, but those the
    overlay holds (to be read through the layers) and keys not of four bytes (damage,
    told when read)."""
    keys, values = r.base.family(family).columns()
    joined = b"".join(keys)
    if len(joined) != 4 * len(keys):
        sound = [len(key) == 4 for key in keys]
        keys, values = list(compress(keys, sound)), list(compress(values, sound))
        joined = b"".join(keys)
    ids = np.frombuffer(joined, dtype=">u4").astype(np.int64)
    changed = [gid_of(key) for key in r.overlay.sets.get(family) or () if len(key) == 4]
    if changed:
        keep = ~np.isin(ids, changed)
        ids, values = ids[keep], list(compress(values, keep.tolist()))
    return ids, values


#: the first two bytes of a serialized roaring bitmap (its format's cookies, 12346 and
#: 12347, little-endian), which follow the subject id in a MEMBER2GROUP value
_ROARING_HEADS = {b"\x3a\x30", b"\x3b\x30"}
_HEAD = itemgetter(slice(4, 6))


def _closures(
    r: SetReader, have: Iterable[int] | dict[int, BitMap | bytes]
) -> dict[int, BitMap | bytes]:
    """Every group's closure but those in ``have``: the base's read in one pass in key
    order (twice as fast at 776k groups as a point read each), then what the overlay
    holds and anything the pass did not yield read as ``r.bitmap`` reads it, damage
    reported the same way. Closures of up to ``_HELD_AS_STORED`` bytes serialized
    (``_HELD_AS_STORED_RESOURCE`` in a schema's resource tier) are held as stored, the
    rest deserialized by a pass in C."""
    count = r.group_count()
    ids, values = _stored(r, "g2g")
    # kept: ids of groups that exist, with a value (an empty one is damage, read below)
    sizes = np.fromiter(map(len, values), np.int64, len(values))
    keep = (ids < count) & (sizes > 0)
    first = _first_resource_id(r, count)
    small = keep & (sizes <= np.where(ids < first, _HELD_AS_STORED, _HELD_AS_STORED_RESOURCE))
    big = keep & ~small
    out: dict[int, BitMap | bytes] = dict(
        zip(ids[small].tolist(), compress(values, small.tolist()), strict=True)
    )
    big_ids = ids[big].tolist()
    big_values = list(compress(values, big.tolist()))
    try:
        out.update(zip(big_ids, map(BitMap.deserialize, big_values), strict=True))
    except Exception:  # pyroaring: ValueError; one at a time, the damaged read below
        for gid, value in zip(big_ids, big_values, strict=True):
            try:
                out[gid] = BitMap.deserialize(value)
            except Exception:
                continue
    del values, big_values
    for gid in have:
        out.pop(gid, None)  # already held
    found = np.zeros(count, dtype=bool)
    found[np.fromiter(out, np.int64, len(out))] = True
    for gid in np.flatnonzero(~found).tolist():
        if gid not in have:  # the overlay's, and any the pass did not yield
            out[gid] = r.bitmap("g2g", gid)
    return out


#: closures of at most this many bytes serialized are held as stored by ``warm()`` and
#: deserialized at their first read (a few us). 64 bytes at first; at 4 KiB, warm() at
#: 40M tuples of groups took 4.18-4.45 s instead of 4.63-5.31 (four runs each,
#: alternated), first checks on new pairs p50 8.3 against 7.8 us, p99 the same (15 us).
_HELD_AS_STORED = 4096
#: the same for a schema's resource tier: at 4 KiB, warm() at 10M tuples of documents
#: took 20.6 s instead of 24.1, but a first check of a document 9.7 us p50 instead of 6.8
#: (their closures are longer: a folder's chain); 64 bytes still holds 70% of them
_HELD_AS_STORED_RESOURCE = 64
