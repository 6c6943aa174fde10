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
``tier_``       resource-tier set name -> its small         ``CLOSURE_LIMIT`` names (made
``stored``      GROUP2GROUP value as stored, which          by ``held_meets``)
                ``held_meets`` reads in place each time
``wildcards``   namespace -> the groups of ``ns:*``         one entry per namespace asked
                (``wild_ids``: the same as an array)
``tier_wild``   namespace -> resource-tier set name ->      ``CLOSURE_LIMIT`` names each,
                whether ``ns:*`` is in it (``tier_meets``)  then starts over; dropped with
                                                            any closure or wildcard change
``members``     group id -> union of the members below it   ``MEMBER_LIMIT`` groups, oldest
                                                            first out
``parents``     set id -> the sets directly above it, what  ``CLOSURE_LIMIT`` sets, then
                ``above`` walks (``groups_of``, explain);   starts over (without a schema
                as stored until first asked after warm()    ``warm`` fills it)
``subjects``    subject key -> direct groups, after         every subject of the base
                ``warm()``: as stored until first asked,    (``warm`` is the choice to
                then deserialized; a changed subject is     hold them all)
                dropped and read through the overlay again
==============  ==========================================  ==============================

The wrapper reads only through its reader's public methods, and nothing outside it
writes its caches except through its methods.
"""

from __future__ import annotations

from typing import Any

from pyroaring import BitMap

from leopard.core.layers import SetReader, Updates
from leopard.core.loading import Loaded, load_all
from leopard.model.closure import walk_up
from leopard.model.setcodec import load
from leopard.store.layout import gid_of, gkey, m2g_groups

__all__ = [
    "CachedSets",
    "NAME_LIMIT",
    "CLOSURE_LIMIT",
    "MEMBER_LIMIT",
]

NAME_LIMIT = 200_000
CLOSURE_LIMIT = 2_000_000
MEMBER_LIMIT = 16
_UNSEEN: Any = object()


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
        # a small one as stored, read in place by held_meets (setcodec.SMALL_IDS)
        self.tier_stored: dict[str, bytes] = {}
        self.wildcards: dict[str, BitMap | None] = {}
        # the same groups as native 32-bit ids in ascending order, which held_meets
        # searches where a BitMap would be asked for each id of a small set
        self.wild_ids: dict[str, bytes] = {}
        # namespace -> resource-tier set name -> whether its wildcard is in the set
        self._tier_wild: dict[str, dict[str, bool]] = {}
        self._members: dict[int, BitMap] = {}
        # set id -> the sets directly above it (its parent and derived parent edges),
        # what ``above`` walks; a value may be the stored one until first asked
        self.parents: dict[int, BitMap | bytes] = {}
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
            bm = held[gid] = self._stored_set("g2g", gid, bm)
        return bm

    def _stored_set(self, family: str, gid: int, stored: bytes) -> BitMap:
        """A value ``warm()`` held as stored, deserialized (damage told as a read does)."""
        try:
            return load(stored)
        except Exception:  # ValueError; set_value says why
            return self.reader.set_value(family, gkey(gid), stored)

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
        if mem is None or "#" in s:  # a userset: Index._check (leopard.core.usersets)
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
        if bm is not None:  # before ``wildcards``: held_meets takes it with that
            self.wild_ids[namespace] = bm.to_array().tobytes()
        self.wildcards[namespace] = bm
        return bm

    def direct_groups(self, key: str, by_wild: bool = True) -> BitMap:
        """Groups the leaf ``key`` is directly in, its namespace's wildcard included
        (unless not ``by_wild``)."""
        found = self.reader.m2g(key)
        direct = found[1] if found else BitMap()
        if by_wild and not key.endswith(":*"):
            wild = self.wildcard_groups(key[: key.index(":")])
            if wild:
                direct = direct | wild
        return direct

    def tier_meets(
        self,
        key: str,
        direct: BitMap,
        reach: BitMap,
        groups: BitMap,
        name: str | None = None,
        by_wild: bool = True,
    ) -> bool:
        """Whether the subject ``key`` whose direct sets are ``direct`` is in a
        resource-tier set whose closure is ``reach``; ``groups`` are the group-tier sets
        ``reach`` holds, where it stops. The subject is in it exactly when it is
        directly in a set of ``reach`` or below one of ``groups`` (their closures meet
        ``direct``); or, ``key`` not a wildcard itself, when its namespace's wildcard
        is. A few intersections: no set above the subject is formed (``bench/schema.py``
        times the first checks of new subjects). The wildcard's answer is the same for
        every subject of the namespace: held under the set's ``name`` when given; not
        asked unless ``by_wild``."""
        if self._tier_meets(direct, reach, groups):
            return True
        if not by_wild or key.endswith(":*"):
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

    def meets_set(self, sets: BitMap, gid: int) -> bool:
        """Whether one of ``sets`` is in the set ``gid``: in its closure, or for a
        resource-tier set below a group-tier set its closure stops at."""
        reach = self.closure(gid)
        rset = self.reader.resource_ids
        if not rset or gid not in rset:
            return sets.intersect(reach)
        return self._tier_meets(sets, reach, reach - rset)

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
        ancestor sets are stored), level by level over the parent sets held here."""
        return walk_up(seeds, self._parents)

    def _parents(self, gids: BitMap) -> list[BitMap]:
        """The parent sets of ``gids`` (never change them): those not held yet read with
        one multi-get a family and held from now on."""
        held = self.parents
        out: list[BitMap] = []
        missing: list[int] = []
        for gid in gids:
            bm = held.get(gid)
            if bm is None:
                missing.append(gid)
                continue
            if isinstance(bm, bytes):  # held as stored by warm()
                bm = held[gid] = self._stored_set("parent", gid, bm)
            out.append(bm)
        if missing:
            read = self.reader.bitmaps
            found = read("parent", missing)
            if self.reader.config.plan is not None:
                derived = read("dparent", missing)
                found = [a | b if b else a for a, b in zip(found, derived, strict=True)]
            if len(held) + len(missing) > CLOSURE_LIMIT:
                held.clear()
            held.update(zip(missing, found, strict=True))
            out += found
        return out

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
        loaded = load_all(self.reader, subjects, have=self.closures)
        self.install(loaded)
        held = len(self.closures) + len(self.parents)
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
        closures, subjects, parents = loaded
        self.closures.update(closures)
        self.parents.update(parents)
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
            self.tier_stored.clear()
            self.parents.clear()
        elif g2g:
            gids = [gid_of(key) for key in g2g]
            for gid in gids:
                self.closures.pop(gid, None)
            if self.reaches or self.tier_reaches or self.tier_stored:
                # a group is asked by its name, or without the relation when its
                # namespace has one set: drop both
                for name in reader.group_names(gids):
                    for held in (
                        self.reaches,
                        self.tier_reaches,
                        self.tier_groups,
                        self.tier_stored,
                    ):
                        held.pop(name, None)
                        held.pop(name[: name.rfind("#")], None)
        for family in ("parent", "dparent"):
            for key in updates.get(family) or ():
                self.parents.pop(gid_of(key), None)
        m2g = updates.get("m2g")
        wild_changed = m2g is not None and any(key.endswith(b":*") for key in m2g)
        if not updates or wild_changed:
            self.wildcards.clear()
            self.wild_ids.clear()
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
