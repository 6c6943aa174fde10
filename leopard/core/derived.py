"""Keeping a schema's derived edges right as tuples change.

With a schema, computed and arrow feeds derive edges between sets from the stored
tuples (see ``leopard.model.plan``): ``doc:X#view -> doc:X#edit`` for every object
``doc:X`` with a tuple, ``doc:X#view -> folder:F#view`` for every tuple
``doc:X#parent@folder:F``. A batch changes them exactly:

* an arrow's edge comes and goes with its tuple: when the membership of ``folder:F``
  in ``doc:X#parent`` flips, the edges of every arrow over ``parent`` move with it;
* a computed feed's edge comes with an object's first tuple and goes with its last: the
  object is compared before and after the batch (it exists while one of its relations
  fed directly holds a member);
* an edge two feeds derive (two arrows reaching the same set, say) has a support count
  and goes only when the last of them goes.

Only presence flips count, so replaying a batch, or a change the index already holds,
changes nothing, as everywhere in the incremental layer.
"""

from __future__ import annotations

from collections import Counter

from pyroaring import BitMap

from leopard.core.batchwork import Work
from leopard.model.edges import Edge
from leopard.model.plan import Plan
from leopard.store.layout import count_of, count_value, pair_key

__all__ = ["Derivations", "support_entries"]


def _split(group: str) -> tuple[str, str, str]:
    """``type``, ``type:id`` and relation of a set name."""
    obj, _, relation = group.rpartition("#")
    return obj[: obj.index(":")], obj, relation


class Derivations:
    """The derived edges one batch changes (see the module docstring)."""

    def __init__(self, plan: Plan, work: list[tuple[Edge, bool]], w: Work) -> None:
        self.plan = plan
        self.delta: Counter[tuple[str, str]] = Counter()
        objects = set()
        for e, _ in work:
            type_name, obj, _ = _split(e.group)
            if plan.has_computed(type_name):
                objects.add(obj)
        self.before = {obj: self._exists(w, obj) for obj in objects}

    def _exists(self, w: Work, obj: str) -> bool:
        type_name = obj[: obj.index(":")]
        for relation in self.plan.direct_relations(type_name):
            gid = w.group_id(f"{obj}#{relation}")
            if gid is not None and (w.bitmap("g2m", gid) or w.bitmap("child", gid)):
                return True
        return False

    def flipped(self, e: Edge, added: bool) -> None:
        """A direct edge of the batch came (``added``) or went: its arrows follow it."""
        if e.nested or "#" in e.subject or e.subject.endswith(":*"):
            return
        type_name, obj, relation = _split(e.group)
        arrows = self.plan.arrows(type_name, relation)
        if not arrows:
            return
        target_type = e.subject[: e.subject.index(":")]
        step = 1 if added else -1
        for set_rel, target, _ in arrows:
            if self.plan.is_set(target_type, target):
                self.delta[(f"{obj}#{set_rel}", f"{e.subject}#{target}")] += step

    def apply(self, w: Work, changed: list[tuple[int, int]]) -> int:
        """Change the derived edges as the batch says; their flips go to ``changed`` (for
        the closures to be derived again); returns how many flipped."""
        for obj, was in self.before.items():
            now = self._exists(w, obj)
            if now != was:
                step = 1 if now else -1
                for set_rel, target, _ in self.plan.computed(obj[: obj.index(":")]):
                    self.delta[(f"{obj}#{set_rel}", f"{obj}#{target}")] += step
        flips = 0
        for (parent, child), step in sorted(self.delta.items()):
            if step and self._move(w, parent, child, step, changed):
                flips += 1
        return flips

    def _move(
        self, w: Work, parent: str, child: str, step: int, changed: list[tuple[int, int]]
    ) -> bool:
        if step > 0:
            p, c = w.ensure_group(parent), w.ensure_group(child)
        else:
            gp, gc = w.group_id(parent), w.group_id(child)
            if gp is None or gc is None:  # pragma: no cover - a derived edge names known sets
                return False
            p, c = gp, gc
        kids = w.bitmap("dchild", p)
        present = c in kids
        key = pair_key(p, c)
        if key in w.dsupport:
            stored = w.dsupport[key]
        else:
            raw = w.r.raw("dsupport", key)
            if raw:
                w.dsupport_stored.add(key)
                stored = w.r.decode("dsupport", key, raw, count_of)
            else:
                stored = int(present)
        count = max(0, stored + step)
        w.dsupport[key] = count
        if (count > 0) == present:
            return False
        w.bitmap("dchild", p, write=True)
        parents: BitMap = w.bitmap("dparent", c, write=True)
        if count > 0:
            kids.add(c)
            parents.add(p)
        else:
            kids.discard(c)
            parents.discard(p)
        changed.append((p, c))
        return True


def support_entries(w: Work) -> list[tuple[bytes, bytes]]:
    """What the batch writes to ``dsupport``: a count of 2 or more, or "no entry" (an
    empty value) over a count that was stored."""
    out = []
    for key, count in w.dsupport.items():
        if count >= 2:
            out.append((key, count_value(count)))
        elif key in w.dsupport_stored:
            out.append((key, b""))
    return out
