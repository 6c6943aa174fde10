"""The sets one batch of changes works on, read ahead and changed in place.

``Work`` holds what ``DeltaWriter`` reads and changes while it applies one batch: copies
of closures and edges (the state before the batch stays readable until it is
persisted), member sets changed in the writer's cache itself, subjects' direct
groups, support masks, and the groups and subjects the batch creates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pyroaring import BitMap

from leopard.core.layers import SetReader
from leopard.model.edges import Edge
from leopard.store.layout import split_m2g, support_key

__all__ = ["Work"]

# a member edge of a batch resolved: (edge, touched, group id, subject id, the subject's
# direct groups, support key or None)
_Row = tuple[Edge, bool, int, int, BitMap, bytes | None]


class Work:
    """The sets one batch changes: copies of closures and edges (the state before the
    batch stays readable), member sets changed in place (see ``bitmap``)."""

    def __init__(
        self,
        reader: SetReader,
        read: Callable[[str, int], BitMap],
        take: Callable[[str, int], BitMap],
    ) -> None:
        self.r = reader
        self.read = read  # the writer's cached, read-only ``reader.bitmap``
        self.take = take  # the writer's cached set itself, to change in place
        self.sets: dict[tuple[str, int], BitMap] = {}  # (family, group id) -> set
        self.dirty: set[tuple[str, int]] = set()
        self.m2g: dict[str, tuple[int, BitMap]] = {}
        self.m2g_dirty: set[str] = set()
        self.support: dict[bytes, int] = {}
        self.stored_support: dict[bytes, bytes | None] = {}  # read ahead, multi-get
        self.support_entries: set[bytes] = set()  # keys stored with a non-empty mask
        self.new_groups: list[str] = []
        self.new_group_ids: dict[str, int] = {}
        self.new_subjects: dict[int, str] = {}
        self.next_subject = reader.next_subject()
        # support counts of derived edges this batch moved (see leopard.core.derived)
        self.dsupport: dict[bytes, int] = {}
        self.dsupport_stored: set[bytes] = set()  # keys that held a count of 2 or more
        self.new_resource = BitMap()  # new groups of the resource tier

    def bitmap(self, family: str, gid: int, *, write: bool = False) -> BitMap:
        """The batch's copy of a set; ``write=True`` marks it for persisting.

        Member sets, which nothing reads as they were before the batch, are changed
        in the writer's cache directly: a big group's set is not copied every batch.
        """
        key = (family, gid)
        bm = self.sets.get(key)
        if bm is None:
            if family == "g2m":
                bm = self.sets[key] = self.take(family, gid)
            else:
                bm = self.sets[key] = BitMap(self.read(family, gid))
        if write:
            self.dirty.add(key)
        return bm

    def group_id(self, name: str) -> int | None:
        gid = self.r.group_id(name)
        return gid if gid is not None else self.new_group_ids.get(name)

    def ensure_group(self, name: str) -> int:
        gid = self.group_id(name)
        if gid is None:
            gid = self.r.group_count() + len(self.new_groups)
            self.new_groups.append(name)
            self.new_group_ids[name] = gid
            self.sets[("g2g", gid)] = BitMap([gid])
            self.dirty.add(("g2g", gid))
            for fam in ("child", "parent", "g2m", "dchild", "dparent"):
                self.sets[(fam, gid)] = BitMap()
            if self.r.is_resource_name(name):
                self.new_resource.add(gid)
        return gid

    def resource_ids(self) -> BitMap:
        """The ids of a schema's resource-tier sets, this batch's new ones included."""
        return self.r.resource_ids | self.new_resource if self.new_resource else self.r.resource_ids

    def mask(self, key: bytes, present: bool) -> int:
        if key in self.support:
            return self.support[key]
        if not present:  # an absent edge is fed by nothing and has no entry: no read
            return 0
        stored = self.stored_support
        raw = stored[key] if key in stored else self.r.raw("support", key)
        mask = self.r.mask(key, raw)
        if mask is not None:
            self.support_entries.add(key)
            return mask
        return 1

    def members(
        self, work: list[tuple[Edge, bool]], read_many: Callable[[str, Iterable[int]], None]
    ) -> list[_Row]:
        """Apply the member edges of ``work``, in order; those whose presence flipped
        (each ``(edge, touched, ...)``).

        The batch's new groups get their ids here, in the order of ``work`` (nesting
        edges' too: ``_nested`` finds them made). What the member edges read comes
        with a few multi-gets, not a point read each: the subjects' direct groups,
        the groups' member sets (into the writer's cache, through ``read_many``) and
        the support masks of the edges stored already. The loops below are the
        hottest of a stream of member changes, hence their local names.
        """
        r, m2g = self.r, self.m2g
        names = list({e.subject for e, _ in work if not e.nested} - m2g.keys())
        keys = [n.encode() for n in names]
        for name, key, raw in zip(names, keys, r.raw_many("m2g", keys), strict=True):
            if raw is not None:
                m2g[name] = r.decode("m2g", key, raw, split_m2g)
        base_id, overlay_id = r.base_group_ids.get, r.overlay.group_ids.get
        new_id, ensure = self.new_group_ids.get, self.ensure_group
        new_subjects = self.new_subjects
        rows: list[_Row] = []
        stored: list[bytes] = []  # support keys of edges the index holds already
        for e, add in work:
            if e.nested:
                if add:
                    ensure(e.group)
                    ensure(e.subject)
                continue
            name = e.group
            gid = base_id(name)
            if gid is None:
                gid = overlay_id(name)
                if gid is None:
                    gid = new_id(name)
                    if gid is None:
                        if not add:
                            continue
                        gid = ensure(name)
            name = e.subject
            got = m2g.get(name)
            if got is None:  # unknown to the index (read above): a touch makes it
                if not add:
                    continue
                got = m2g[name] = (self.next_subject, BitMap())
                new_subjects[self.next_subject] = name
                self.next_subject += 1
            skey = None
            if e.bit is not None:
                skey = support_key(gid, False, got[0])
                if gid in got[1]:
                    stored.append(skey)
            rows.append((e, add, gid, got[0], got[1], skey))
        known = r.group_count()  # the batch's new groups have no stored members
        read_many("g2m", {row[2] for row in rows if row[2] < known})
        if stored:
            self.stored_support.update(zip(stored, r.raw_many("support", stored), strict=True))
        return self._flip_members(rows)

    def _flip_members(self, rows: list[_Row]) -> list[_Row]:
        """The member edges resolved by ``members``, applied in order."""
        flipped: list[_Row] = []
        support, mask_of = self.support, self.mask
        sets, take, dirty = self.sets, self.take, self.dirty
        m2g_dirty = self.m2g_dirty
        members: dict[int, BitMap] = {}
        for row in rows:
            e, add, gid, sid, groups, key = row
            present = gid in groups
            if key is None:
                keep = add
            else:
                mask = support.get(key)
                if mask is None:
                    mask = mask_of(key, present)
                mask = mask | (1 << e.bit) if add else mask & ~(1 << e.bit)  # type: ignore[operator]
                support[key] = mask
                keep = mask != 0
            if keep == present:
                continue
            bm = members.get(gid)
            if bm is None:
                # as ``bitmap("g2m", gid, write=True)``: the cached set, changed in place
                fam_key = ("g2m", gid)
                bm = sets.get(fam_key)
                if bm is None:
                    bm = sets[fam_key] = take("g2m", gid)
                dirty.add(fam_key)
                members[gid] = bm
            if keep:
                groups.add(gid)
                bm.add(sid)
            else:
                groups.discard(gid)
                bm.discard(sid)
            m2g_dirty.add(e.subject)
            flipped.append(row)
        return flipped
