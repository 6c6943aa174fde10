"""Why a subject is in a set: a shortest chain of sets, and what each step came from.

A chain runs from the set asked about down to one the subject is directly in, over the
edges between sets: those a stored tuple makes (``child``) and those a schema's feeds
derive (``dchild``). Only sets below the set asked about and above one the subject is
in can lie on a chain, so the search is pruned to those.

Each step says where its edge comes from: the stored tuple, or the rewrite (a computed
relation of the same object, or an arrow with the tuple it follows).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from pyroaring import BitMap

from leopard.core.caches import CachedSets
from leopard.core.layers import SetReader
from leopard.core.usersets import full_set, own_sets
from leopard.model.config import Config

__all__ = ["Step", "shortest_chain", "describe", "own_chain"]


@dataclass(frozen=True)
class Step:
    """One set of a chain and how the set before it includes it (None for the first)."""

    set: str
    via: str | None


def shortest_chain(r: SetReader, c: CachedSets, gid: int, targets: BitMap) -> list[int] | None:
    """Group ids from ``gid`` down to one of ``targets``, shortest first; None if none."""
    reach = c.reach(gid)
    if not targets.intersect(reach):
        return None
    hits = targets & reach
    above = c.above(hits)
    allowed = reach & above
    prev: dict[int, int] = {gid: -1}
    queue = deque([gid])
    while queue:
        v = queue.popleft()
        if v in targets:
            chain = []
            while v != -1:
                chain.append(v)
                v = prev[v]
            chain.reverse()
            return chain
        fresh = [
            w for w in (r.bitmap("child", v) | r.bitmap("dchild", v)) & allowed if w not in prev
        ]
        # by name, so that which of several shortest chains is told does not depend on
        # the ids the build happened to give
        for _, w in sorted(zip(r.group_names(fresh), fresh, strict=True)):
            prev[w] = v
            queue.append(w)
    return None  # pragma: no cover - closures and edges agree


def describe(r: SetReader, chain: list[int], subject: str) -> list[Step]:
    """The chain as steps, each with what its edge came from."""
    names = r.group_names(chain)
    steps = [Step(names[0], None)]
    for (p, c), child_name in zip(zip(chain, chain[1:], strict=False), names[1:], strict=True):
        steps.append(Step(child_name, _via(r, p, c, names[len(steps) - 1], child_name)))
    last = names[-1]
    if last != subject:  # a userset's chain may end at its own set: no tuple is left
        if last in own_sets(r.config, subject):  # a set of its object including it
            steps.append(Step(subject, _includes(last, subject)))
        else:
            steps.append(Step(subject, f"tuple {last}@{_leaf(r, chain[-1], subject)}"))
    return steps


def own_chain(
    config: Config, userset: str, group: str, steps: bool
) -> list[str] | list[Step] | None:
    """The chain of a userset in a set of its own object that includes its relation
    by the schema alone (``leopard.core.usersets``), where no edge leads: None when
    ``group`` is no such set."""
    full = full_set(config, group)
    if full is None or full not in own_sets(config, userset):
        return None
    if not steps:
        return [full]
    out = [Step(full, None)]
    if full != userset:
        out.append(Step(userset, _includes(full, userset)))
    return out


def _includes(full: str, userset: str) -> str:
    obj, _, relation = full.rpartition("#")
    return f"{obj[: obj.index(':')]}#{relation} includes {userset.rpartition('#')[2]}"


def _leaf(r: SetReader, gid: int, subject: str) -> str:
    """The member of ``gid`` that puts ``subject`` in it: itself or its wildcard."""
    if subject.endswith(":*"):
        return subject
    found = r.m2g(subject)
    if found is not None and gid in found[1]:
        return subject
    return subject[: subject.index(":")] + ":*"


def _via(r: SetReader, parent: int, child: int, parent_name: str, child_name: str) -> str:
    if child in r.bitmap("child", parent):
        return f"tuple {parent_name}@{child_name}"
    plan = r.config.plan
    obj, _, relation = parent_name.rpartition("#")
    type_name = obj[: obj.index(":")]
    child_obj, _, child_rel = child_name.rpartition("#")
    if plan is not None:
        sp = plan.sets.get((type_name, relation))
        for feed in sp.feeds if sp is not None else ():
            if feed.kind == "computed" and child_obj == obj and feed.relation == child_rel:
                return f"{type_name}#{relation} includes {child_rel}"
            if feed.kind == "arrow" and feed.relation == child_rel:
                tuple_set = f"{obj}#{feed.tupleset}"
                gid = r.group_id(tuple_set)
                found = r.m2g(child_obj)
                if gid is not None and found is not None and gid in found[1]:
                    return (
                        f"{type_name}#{relation} includes {feed.tupleset}->{child_rel}, "
                        f"through the tuple {tuple_set}@{child_obj}"
                    )
    return f"{parent_name} includes {child_name}"  # pragma: no cover - feeds and edges agree
