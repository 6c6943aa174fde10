"""The names a query gives, read against the index's configuration.

A group is named ``ns:id#relation`` (or ``ns:id`` when its namespace has one indexed
set); a subject ``ns:id``, ``ns:*`` or a userset ``ns:id#relation``. With a schema, a
subject of a type the schema does not define, or a userset of a relation its type
does not define, is refused as the peers refuse it (SpiceDB: "object definition not
found"), so that a typo is not answered "no".
"""

from __future__ import annotations

import re

from leopard.errors import InvalidInput, InvalidTuple
from leopard.model.config import Config
from leopard.model.names import (
    GROUP_RE,
    MAX_ID_BYTES,
    SUBJECT_RE,
    parse_object,
    parse_subject,
)

__all__ = ["SHORT", "full_group_name", "subject_parts", "subject_type_problem"]

#: The patterns check every limit but the id's, in bytes: no name this short (in
#: characters) can hold an id over it.
SHORT = MAX_ID_BYTES // 4


def _long(name: str, pattern: re.Pattern[str]) -> re.Match[str] | None:
    """Match a long name, refusing it (no match) when its id is over the byte limit."""
    m = pattern.fullmatch(name)
    return m if m is not None and len(m.group(2).encode()) <= MAX_ID_BYTES else None


def full_group_name(cfg: Config, name: str) -> str:
    """The full name (``ns:id#relation``) of a group a query names; InvalidInput or
    InvalidTuple saying what is wrong with it."""
    m = GROUP_RE.fullmatch(name) if len(name) <= SHORT else _long(name, GROUP_RE)
    if m is None:
        parse_object(name, what="group")  # raises with the precise reason
        raise InvalidTuple(f"{name!r} is not a valid group name")
    ns, oid, rel = m.groups()
    if rel is not None:
        if not cfg.is_set(ns, rel):
            raise InvalidInput(f"group {name!r}: {ns}#{rel} {cfg.not_a_set(ns, rel)}")
        return name
    sets = cfg.sets_of(ns)
    if not sets:
        raise InvalidInput(
            f"group {name!r}: namespace {ns!r} has no indexed set (see the set configuration)"
        )
    if len(sets) > 1:
        raise InvalidInput(
            f"group {name!r}: namespace {ns!r} has several sets "
            f"({', '.join(sets)}); name one, e.g. {name}#{sets[0]}"
        )
    return f"{ns}:{oid}#{sets[0]}"


def subject_type_problem(cfg: Config, ns: str, rel: str | None) -> str | None:
    """Why the schema has no subject of type ``ns`` (or userset ``ns#rel``); None
    when it has, or without a schema (every namespace is one)."""
    plan = cfg.plan
    if plan is None:
        return None
    typedef = plan.schema.types.get(ns)
    if typedef is None:
        return f"the schema defines no type {ns!r}"
    if rel is not None and rel != "..." and rel not in typedef.relations:
        return f"the schema defines no relation {rel!r} on {ns!r}"
    return None


def subject_parts(cfg: Config, name: str) -> tuple[str, str, str | None]:
    """``(namespace, id, relation or None)`` of a subject a query names; InvalidInput
    or InvalidTuple saying what is wrong with it."""
    if not isinstance(name, str):
        raise InvalidInput(f"subject must be a string, not {type(name).__name__}")
    m = SUBJECT_RE.fullmatch(name) if len(name) <= SHORT else _long(name, SUBJECT_RE)
    if m is None:
        parse_subject(name)  # raises with the precise reason
        raise InvalidTuple(f"{name!r} is not a valid subject")
    ns, oid, rel = m.groups()
    why = subject_type_problem(cfg, ns, rel)
    if why is not None:
        raise InvalidInput(f"subject {name!r}: {why}")
    if rel is not None and rel != "..." and oid == "*":
        raise InvalidTuple(f"{name!r}: a wildcard subject cannot carry a relation")
    return ns, oid, rel
