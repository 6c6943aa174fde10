"""The checks of ``leopard verify`` across families: closures, mirrors, names, tiers.

Each family is read and decoded first (``leopard.core.verify``); these checks then hold
the families to each other: every closure is its group and the closures below it (by
a schema's tiers: a resource set's closure stops at the groups it reaches),
``child``/``parent`` and ``dchild``/``dparent`` mirror each other,
``m2g`` and ``g2m`` too, support entries name edges that exist, names are well formed;
with a schema, the derived edges are those the stored tuples derive
(``leopard.core.rederive``).
"""

from __future__ import annotations

from typing import Any

from pyroaring import BitMap

from leopard.core.overlay import Overlay
from leopard.core.rederive import DerivedChecks
from leopard.model.config import Config
from leopard.model.names import GROUP_RE
from leopard.model.plan import Plan
from leopard.store.layout import (
    NEW_GROUP_PREFIX,
    NEXT_SUBJECT_KEY,
    RESOURCE_KEY,
    BadValue,
    decode_bitmap,
    gkey,
    split_pair_key,
    split_support_key,
)

__all__ = ["CrossChecks"]

_EMPTY = BitMap()


class CrossChecks(DerivedChecks):
    """Checks across families, mixed into the verifier (which holds what was read)."""

    # what the verifier read, and how it reports (it defines them)
    sets: dict[str, dict[int, BitMap]]
    whole: set[str]
    m2g: dict[str, tuple[int, BitMap]]
    names: dict[int, str]
    support: dict[bytes, int]
    dsupport: dict[bytes, int]
    stored_resource: bytes | None
    rset: BitMap
    report: Any
    base: Any
    delta: Any

    def bad(self, family: str, key: bytes, reason: str) -> None:
        raise NotImplementedError

    def value(self, db: Any, family: str, key: bytes | None, reason: object) -> None:
        raise NotImplementedError

    def error(self, kind: str, exc: Exception) -> None:
        raise NotImplementedError

    def cross_check(self, meta: dict[str, Any], groups: list[str], overlay: Overlay) -> None:
        n_groups = len(groups) + len(overlay.group_names)
        n = overlay.next_subject
        n_subjects = int(meta["subjects"]) if n is None else n
        self.report.groups, self.report.subjects = n_groups, n_subjects
        if n is not None and n < int(meta["subjects"]) and self.delta is not None:
            reason = f"{n:,} is below the base's {meta['subjects']:,} subjects"
            self.value(self.delta, "default", NEXT_SUBJECT_KEY, reason)
        self.group_names(groups, overlay.group_names)
        config: Config | None = None
        plan: Plan | None = None
        try:
            config = Config.model_validate(meta.get("config", {}))
            plan = config.plan
        except Exception as exc:  # a configuration that no longer reads: said, and go on
            self.error("default", exc)
        if config is None:
            self.rset = BitMap()
        else:
            self.rset = self.resource_ids(plan, groups, overlay.group_names)
        self.closures(n_groups)
        self.edges(n_groups, n_subjects)
        if config is not None:
            self.support_bits(config, [*groups, *overlay.group_names])
        self.subjects(n_groups, n_subjects)
        if config is not None and plan is not None:
            self.derived_edges(plan, config, [*groups, *overlay.group_names], n_subjects)

    def resource_ids(self, plan: Plan | None, base: list[str], added: list[str]) -> BitMap:
        """The ids of a schema's resource-tier sets, by their names; the base's stored
        bitmap must say the same."""
        rset = BitMap()
        if plan is not None:
            for gid, name in enumerate([*base, *added]):
                obj, _, rel = name.rpartition("#")
                if ":" in obj and plan.is_resource(obj[: obj.index(":")], rel):
                    rset.add(gid)
        stored = self.stored_resource
        if stored is not None and self.base is not None:
            try:
                got = decode_bitmap(stored)
            except BadValue as exc:
                self.value(self.base, "default", RESOURCE_KEY, exc)
            else:
                if got != rset & BitMap(range(len(base))):
                    what = "the resource-tier ids differ from those the set names say"
                    self.value(self.base, "default", RESOURCE_KEY, what)
        elif plan is not None and rset and self.base is not None:
            self.value(self.base, "default", RESOURCE_KEY, "missing: the schema has resource sets")
        return rset

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
        """GROUP2GROUP: one per group, holding the group, equal to the group and the
        closures of its children."""
        sets = self.sets
        family, edges, derived = "g2g", "child", "dchild"
        if family not in self.whole:
            return
        closure = sets[family]
        for gid in range(groups):
            if gid not in closure:
                self.bad(family, gkey(gid), "no value (every group has one)")
        rset = self.rset
        for gid, bm in closure.items():
            key = gkey(gid)
            resource = gid in rset
            if gid >= groups:
                self.bad(family, key, f"a key past the last of {groups:,} groups")
            elif gid not in bm:
                self.bad(family, key, "the set does not hold the group itself")
            elif bm.max() >= groups:
                self.bad(family, key, f"the set holds group id {bm.max()}, past the last")
            elif edges in self.whole and derived in self.whole:
                # the tiers of a schema: a resource set's closure stops at the group
                # sets it reaches
                below = sets[edges].get(gid, _EMPTY) | sets[derived].get(gid, _EMPTY)
                if resource:
                    parts = [closure.get(c, _EMPTY) if c in rset else BitMap([c]) for c in below]
                else:
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

    def support_bits(self, config: Config, names: list[str]) -> None:
        """Every support mask names only relations that feed its set: one bit per
        source of a set fed by several (a bit past them would keep an edge whose
        tuples are all gone), no mask at all for a set fed by one."""
        allowed: dict[int, int] = {}
        for key, mask in self.support.items():
            gid = split_support_key(key)[0]
            bits = allowed.get(gid)
            if bits is None:
                obj, _, rel = names[gid].rpartition("#") if gid < len(names) else ("", "", "")
                n = len(config.sources(obj.partition(":")[0], rel)) if ":" in obj else 0
                bits = allowed[gid] = (1 << n) - 1 if n > 1 else 0
            if mask & ~bits:
                self.bad(
                    "support",
                    key,
                    f"a mask naming relations its set is not fed by (bits {mask & ~bits:#x})",
                )

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
