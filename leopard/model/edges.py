"""The index edges a stored tuple feeds, by the set configuration.

A stored tuple ``ns:id#relation@subject`` feeds every set its ``ns#relation`` is a
source of (``Config.feeds``); for each, it is a nesting edge when its subject is a
userset of an indexed set, otherwise a membership of a leaf subject. For a set fed by
several stored relations, the edge carries the source's bit, so that deleting one
tuple keeps an edge another relation still feeds.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from leopard.model.config import Config
from leopard.model.names import RelationTuple

__all__ = ["Edge", "classify", "feeding", "edges_of", "disallowed", "schema_refusal"]


class Edge(NamedTuple):
    """One index edge a stored tuple feeds: group -> child group, or group -> leaf."""

    group: str
    subject: str
    nested: bool
    bit: int | None  # source bit for a set fed by several relations, else None


def classify(config: Config, t: RelationTuple) -> list[Edge]:
    """The index edges a stored tuple feeds (none when it feeds no set)."""
    return edges_of(feeding(config, t.resource_type, t.relation), config, t)


def feeding(config: Config, namespace: str, relation: str) -> list[tuple[str, int | None]]:
    """``(set relation, source bit)`` of each set a stored ``namespace#relation`` feeds."""
    out = []
    for set_rel in config.feeds(namespace, relation):
        sources = config.sources(namespace, set_rel)
        out.append((set_rel, sources.index(relation) if len(sources) > 1 else None))
    return out


def edges_of(feeding: list[tuple[str, int | None]], config: Config, t: RelationTuple) -> list[Edge]:
    out = []
    for set_rel, bit in feeding:
        group = f"{t.resource_type}:{t.resource_id}#{set_rel}"
        srel = t.subject_relation
        if srel is not None and config.is_set(t.subject_type, srel):
            out.append(Edge(group, f"{t.subject_type}:{t.subject_id}#{srel}", True, bit))
        else:
            subject = f"{t.subject_type}:{t.subject_id}"
            if srel is not None:
                subject += f"#{srel}"
            out.append(Edge(group, subject, False, bit))
    return out


def disallowed(config: Config, t: RelationTuple) -> str | None:
    """Why a schema's relation does not take this tuple's subject (None: it does, or
    the sets come from no schema). Such a tuple is skipped and counted, as OpenFGA
    ignores it and SpiceDB refuses to write it."""
    plan = config.plan
    if plan is None:
        return None
    sp = plan.direct(t.resource_type, t.relation)
    if sp is None:
        return None
    kind = _subject_kind(t)
    if kind in sp.allowed:
        return None
    return f"{t.resource_type}#{t.relation} does not allow subjects of type {kind}"


def schema_refusal(config: Config, t: RelationTuple) -> str | None:
    """Why the index's schema refuses this tuple outright, as its peer refuses to write
    it: a type or relation the schema does not define, a relation that stores no
    tuples (a permission), a subject type the relation does not allow. None without a
    schema, or when the schema takes the tuple (indexed or not)."""
    plan = config.plan
    if plan is None:
        return None
    refused = relation_refusal(plan.schema, t.resource_type, t.relation)
    if refused is not None:
        return refused
    rel = plan.schema.relation(t.resource_type, t.relation)
    assert rel is not None
    kind = _subject_kind(t)
    traited = None  # the kind allowed only with a caveat or an expiration, which tuples lack
    for allowed in rel.types:
        base = allowed.type + (":*" if allowed.wildcard else "")
        if (base if allowed.relation is None else f"{base}#{allowed.relation}") == kind:
            if allowed.caveat is None and not allowed.expiration:
                return None
            traited = traited or allowed
    if traited is not None:
        return (
            f"{t.resource_type}#{t.relation} allows subjects of type {kind} only as "
            f"{traited}: a tuple without is refused, as SpiceDB refuses to write it"
        )
    return f"{t.resource_type}#{t.relation} does not allow subjects of type {kind}"


def relation_refusal(schema: Any, namespace: str, relation: str) -> str | None:
    """Why ``schema`` stores no tuple of ``namespace#relation``, whatever its subject:
    a type or relation it does not define, or one computed (a permission)."""
    rel = schema.relation(namespace, relation)
    if rel is None:
        if namespace not in schema.types:
            return f"the schema defines no type {namespace!r}"
        return f"the schema defines no relation {relation!r} on {namespace!r}"
    if not rel.types:
        return f"{namespace}#{relation} stores no tuples (it is computed)"
    return None


def _subject_kind(t: RelationTuple) -> str:
    """The tuple's subject as a schema allows it: ``user``, ``user:*``, ``group#member``."""
    if t.subject_relation is not None:
        return f"{t.subject_type}#{t.subject_relation}"
    if t.subject_id == "*":
        return f"{t.subject_type}:*"
    return t.subject_type
