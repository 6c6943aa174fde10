"""Userset subjects with a schema: the sets of its own object, and wildcards.

A check, a lookup or an explanation whose subject is a userset ``T:x#r`` answers as
the peers do:

* SpiceDB and OpenFGA count a userset in every set of its own object that includes
  its relation through computed terms alone (``group:g#member`` is in
  ``group:g#everyone`` when ``everyone = member + manager``), whether or not the
  object has a tuple. The build derives those edges only for objects with tuples of
  their own (``leopard.core.derive``), so a query starts from all those sets: a
  userset named only as a subject (``doc:d#viewer@group:g#everyone``, ``group:g`` with
  no tuple) is then in ``doc:d#view`` as both peers answer.
* A namespace's wildcard ``T:*``: SpiceDB's CheckPermission counts every subject of
  type ``T`` in it, usersets too (``user:u1#friend`` is in a set holding ``user:*``),
  while its LookupResources lists no set for a userset through a wildcard (SpiceDB
  1.54: the same userset is "in" ``doc:d#view`` and no ``doc`` is found for it);
  ``check`` and ``explain`` answer as the one, ``groups_of`` as the other. OpenFGA
  counts plain subjects only. Without a schema, an unindexed (opaque) userset is a
  leaf like any other and its namespace's wildcard holds it; an indexed set is not.
"""

from __future__ import annotations

from collections.abc import Callable

from pyroaring import BitMap

from leopard.core.caches import CachedSets
from leopard.model.config import Config

__all__ = [
    "own_sets",
    "holds_own",
    "full_set",
    "wildcard_holds",
    "wildcard_lists",
    "userset_starts",
]


def own_sets(config: Config, name: str) -> list[str]:
    """The sets of the userset ``name``'s own object that hold it by the schema alone
    (its own set first, when indexed); none without a schema, or for no userset."""
    plan = config.plan
    if plan is None or "#" not in name:
        return []
    obj, _, rel = name.rpartition("#")
    return [f"{obj}#{p}" for p in plan.including(obj[: obj.index(":")], rel)]


def holds_own(config: Config, name: str, group: str) -> bool:
    """Whether the set ``group`` (a valid name, its relation left out where its
    namespace has one set) holds the userset ``name`` by the schema alone: the same
    object, and a relation that includes the userset's."""
    obj = name.rpartition("#")[0]
    if config.plan is None or (group != obj and not group.startswith(obj + "#")):
        return False  # no schema, or a set of another object
    full = full_set(config, group)
    return full is not None and full in own_sets(config, name)


def full_set(config: Config, group: str) -> str | None:
    """``group`` with its relation (its namespace's one set where it has none), None
    when the namespace has not exactly one."""
    if "#" in group:
        return group
    sets = config.sets_of(group[: group.index(":")])
    return f"{group}#{sets[0]}" if len(sets) == 1 else None


def wildcard_holds(config: Config, subject: str) -> bool:
    """Whether the subject's namespace's wildcard holds it (the subject no wildcard):
    a plain subject always; a userset unless the schema is an OpenFGA model (without
    a schema the caller asks only of opaque usersets, which it holds)."""
    if "#" not in subject:
        return True
    source = config.schema_source
    return source is None or source.dialect == "spicedb"


def wildcard_lists(config: Config, subject: str) -> bool:
    """Whether ``groups_of`` lists the sets of the subject's namespace's wildcard for
    it: a plain subject's always, a userset's only without a schema."""
    return "#" not in subject or config.schema_source is None


def userset_starts(
    config: Config,
    c: CachedSets,
    live: Callable[[str], int | None],
    name: str,
    sgid: int | None,
    by_wild: bool = True,
) -> BitMap:
    """The sets a query of the indexed userset ``name`` (live id ``sgid``) starts
    from: its own, those of its object that include it, and with a SpiceDB schema (and
    ``by_wild``) the sets its namespace's wildcard is directly in. ``live`` gives a set
    name's live id."""
    starts = BitMap() if sgid is None else BitMap([sgid])
    for other in own_sets(config, name):
        if other != name and (gid := live(other)) is not None:
            starts.add(gid)
    source = config.schema_source
    if by_wild and source is not None and source.dialect == "spicedb":
        wild = c.wildcard_groups(name[: name.index(":")])
        if wild:
            starts |= wild
    return starts
