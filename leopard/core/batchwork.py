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
        self.stored_support: dict[bytes, bytes | None] = {}  # read ahead by prefetch
        self.support_entries: set[bytes] = set()  # keys stored with a non-empty mask
        self.unknown: set[str] = set()  # subjects the index had no entry for
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
            for fam in ("g2g", "g2a"):
                self.sets[(fam, gid)] = BitMap([gid])
                self.dirty.add((fam, gid))
            for fam in ("child", "parent", "g2m", "dchild", "dparent"):
                self.sets[(fam, gid)] = BitMap()
            if self.r.is_resource_name(name):
                self.new_resource.add(gid)
        return gid

    def resource_ids(self) -> BitMap:
        """The ids of a schema's resource-tier sets, this batch's new ones included."""
        return self.r.resource_ids | self.new_resource if self.new_resource else self.r.resource_ids

    def subject(self, name: str, create: bool) -> tuple[int, BitMap] | None:
        got = self.m2g.get(name)
        if got is not None:
            return got
        found = None if name in self.unknown else self.r.m2g(name)
        if found is not None:
            got = found  # deserialized for this batch alone: safe to change
        elif create:
            sid = self.next_subject
            self.next_subject += 1
            self.new_subjects[sid] = name
            got = (sid, BitMap())
        else:
            return None
        self.m2g[name] = got
        return got

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

    def prefetch(
        self, edges: list[tuple[Edge, bool]], read_many: Callable[[str, Iterable[int]], None]
    ) -> None:
        """Read what the member edges of a batch need with a few multi-gets instead
        of a point read each: the subjects' direct groups, the groups' member sets
        (into the writer's cache, through ``read_many``) and the support masks."""
        r = self.r
        names = list({e.subject for e, _ in edges if not e.nested} - self.m2g.keys())
        for name, raw in zip(names, r.raw_many("m2g", [n.encode() for n in names]), strict=True):
            if raw is not None:
                self.m2g[name] = r.decode("m2g", name.encode(), raw, split_m2g)
            else:
                self.unknown.add(name)
        group_id = r.group_id
        gids: set[int] = set()
        keys: list[bytes] = []
        m2g = self.m2g
        for e, _ in edges:
            if e.nested:
                continue
            gid = group_id(e.group)
            if gid is None:
                continue
            gids.add(gid)
            if e.bit is not None:
                got = m2g.get(e.subject)
                if got is not None and gid in got[1]:
                    keys.append(support_key(gid, False, got[0]))
        read_many("g2m", gids)
        if keys:
            self.stored_support.update(zip(keys, r.raw_many("support", keys), strict=True))
