"""Relation tuples in Zanzibar/SpiceDB syntax: parsing, printing and names.

A tuple is ``namespace:object_id#relation@subject`` where the subject is one of

* ``namespace:object_id``            a plain subject (``#...`` means the same),
* ``namespace:object_id#relation``   a userset (every subject of that set),
* ``namespace:*``                    a wildcard (every subject of that namespace).

Namespaces may carry tenant prefixes (``acme/group``). Object ids take letters,
digits and ``_ - / | = + . @``; the separator ``@`` is the first one after the
resource's ``#``, so a subject id may itself contain ``@`` (``user:anne@example.com``).
Caveated and expiring relationships (a ``[...]`` suffix) are refused for now.

OpenFGA spells a tuple as three fields, ``object`` (``ns:id``), ``relation`` and
``user`` (a subject as above); ``parse_openfga`` reads them with the same grammar.

The same grammar is exported as ``TUPLE_PATTERN`` (RE2 compatible) so that the bulk
reader can validate whole columns at once; anything it rejects is parsed again
here to get the exact message. The pattern admits one thing the grammar does not,
a wildcard with a relation (``user:*#member``): bulk readers must refuse that row.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from leopard.errors import InvalidTuple

__all__ = [
    "MAX_TUPLE_BYTES",
    "TUPLE_PATTERN",
    "RelationTuple",
    "Subject",
    "ObjectRef",
    "parse_tuple",
    "parse_openfga",
    "format_tuple",
    "parse_subject",
    "parse_object",
    "GROUP_RE",
    "PLAIN_SUBJECT_RE",
    "SPLIT_NAME_PATTERN",
    "SUBJECT_RE",
    "TENANT_PREFIX_RE",
    "is_namespace",
    "is_relation",
]

MAX_TUPLE_BYTES = 1024

_TENANT = r"[a-z][a-z0-9_]{0,63}/"
_NS = rf"(?:{_TENANT})*[a-z][a-z0-9_]{{0,63}}"
_REL = r"[a-z][a-z0-9_]{0,63}"
_ID = r"[A-Za-z0-9_\-/|=+.@]+"
_ID_CHARS = "A-Z a-z 0-9 _ - / | = + . @"

TUPLE_PATTERN = (
    rf"^(?P<rns>{_NS}):(?P<rid>[A-Za-z0-9_\-/|=+.@]+)#(?P<rel>{_REL})"
    rf"@(?P<sns>{_NS}):(?P<sid>{_ID}|\*)(?:#(?P<srel>{_REL}|\.\.\.))?$"
)

_NS_RE = re.compile(_NS)
_REL_RE = re.compile(_REL)
_ID_RE = re.compile(_ID)
_TUPLE_RE = re.compile(TUPLE_PATTERN)
_WS_RE = re.compile(r"\s")

#: a tenant prefix (``acme/``, ``a/b/``) or none
TENANT_PREFIX_RE = re.compile(rf"(?:{_TENANT})*")
#: a subject: groups ``(namespace, id or "*", relation or "..." or None)``
SUBJECT_RE = re.compile(rf"({_NS}):(\*|{_ID})(?:#({_REL}|\.\.\.))?")
#: a group name: groups ``(namespace, id, relation or None)``
GROUP_RE = re.compile(rf"({_NS}):({_ID})(?:#({_REL}))?")
#: a plain subject ``ns:id``
PLAIN_SUBJECT_RE = re.compile(rf"{_NS}:{_ID}")
#: splits a name known to be valid into ``ns``, ``id`` and ``rel`` (RE2 compatible,
#: for Arrow's ``extract_regex``); ``rel`` is empty when there is none
SPLIT_NAME_PATTERN = r"^(?P<ns>[^:]+):(?P<id>[^#]+)(?:#(?P<rel>.+))?$"


def is_namespace(text: str) -> bool:
    """Whether ``text`` is a valid namespace, tenant prefixes included."""
    return _NS_RE.fullmatch(text) is not None


def is_relation(text: str) -> bool:
    """Whether ``text`` is a valid relation name."""
    return _REL_RE.fullmatch(text) is not None


class RelationTuple(NamedTuple):
    """One parsed tuple. ``subject_relation`` is None for a plain subject or ``#...``."""

    resource_type: str
    resource_id: str
    relation: str
    subject_type: str
    subject_id: str
    subject_relation: str | None = None

    def __str__(self) -> str:
        return format_tuple(self)

    @property
    def is_wildcard(self) -> bool:
        return self.subject_id == "*"

    @property
    def subject(self) -> Subject:
        return Subject(self.subject_type, self.subject_id, self.subject_relation)


class Subject(NamedTuple):
    """A subject: ``ns:id``, a userset ``ns:id#rel`` or a wildcard ``ns:*``."""

    namespace: str
    object_id: str
    relation: str | None = None

    def __str__(self) -> str:
        if self.relation is None:
            return f"{self.namespace}:{self.object_id}"
        return f"{self.namespace}:{self.object_id}#{self.relation}"

    @property
    def is_wildcard(self) -> bool:
        return self.object_id == "*"


class ObjectRef(NamedTuple):
    """An object named ``ns:id``, optionally with a relation (``ns:id#rel``)."""

    namespace: str
    object_id: str
    relation: str | None = None

    def __str__(self) -> str:
        if self.relation is None:
            return f"{self.namespace}:{self.object_id}"
        return f"{self.namespace}:{self.object_id}#{self.relation}"


def format_tuple(t: RelationTuple) -> str:
    """Print a tuple in canonical form (no ``#...``)."""
    subject = f"{t.subject_type}:{t.subject_id}"
    if t.subject_relation is not None:
        subject += f"#{t.subject_relation}"
    return f"{t.resource_type}:{t.resource_id}#{t.relation}@{subject}"


def parse_tuple(text: str) -> RelationTuple:
    """Parse ``ns:id#relation@subject``; raise InvalidTuple naming what is wrong."""
    m = _TUPLE_RE.fullmatch(text) if len(text) <= MAX_TUPLE_BYTES else None
    if m is not None and len(text.encode()) <= MAX_TUPLE_BYTES:
        srel = m.group("srel")
        if srel == "...":
            srel = None
        if srel is not None and m.group("sid") == "*":
            raise InvalidTuple(f"{text!r} has a wildcard subject with a relation ({srel!r})")
        return RelationTuple(
            m.group("rns"), m.group("rid"), m.group("rel"), m.group("sns"), m.group("sid"), srel
        )
    raise InvalidTuple(f"{_shorten(text)!r} {_diagnose(text)}")


def parse_openfga(user: str, relation: str, object: str) -> RelationTuple:
    """Parse OpenFGA's tuple key fields (``user``, ``relation``, ``object``) into a tuple.

    The fields are joined as ``object#relation@user`` and parsed as one tuple; each
    must then be exactly its part of the result, so a separator inside a field (a
    relation ``member@user:x``) is refused rather than moving the split. Raises
    InvalidTuple naming the joined tuple and, for a misplaced separator, the field.
    """
    text = f"{object}#{relation}@{user}"
    t = parse_tuple(text)
    # Once the object and the relation are their parts, the user is the rest: the
    # subject, spelled with or without "#...".
    if object != f"{t.resource_type}:{t.resource_id}":
        raise InvalidTuple(_misplaced(text, "object", object))
    if relation != t.relation:
        raise InvalidTuple(_misplaced(text, "relation", relation))
    return t


def parse_subject(text: str, *, what: str = "subject") -> Subject:
    """Parse ``ns:id``, ``ns:id#...``, ``ns:id#rel`` or ``ns:*``."""
    _check_text(text, what)
    if "#" in text:
        obj, rel = text.split("#", 1)
        if rel == "...":
            rel_or_none: str | None = None
        else:
            _check_relation(text, rel, what)
            rel_or_none = rel
    else:
        obj, rel_or_none = text, None
    ns, oid = _split_object(text, obj, what, allow_wildcard=True)
    if oid == "*" and rel_or_none is not None:
        raise InvalidTuple(f"{text!r}: a wildcard {what} cannot carry a relation")
    return Subject(ns, oid, rel_or_none)


def parse_object(text: str, *, what: str = "group") -> ObjectRef:
    """Parse a group name: ``ns:id`` or ``ns:id#relation``."""
    _check_text(text, what)
    rel: str | None = None
    obj = text
    if "#" in text:
        obj, rel = text.split("#", 1)
        _check_relation(text, rel, what)
    ns, oid = _split_object(text, obj, what, allow_wildcard=False)
    return ObjectRef(ns, oid, rel)


# -- diagnostics ---------------------------------------------------------------


def _shorten(text: str) -> str:
    return text if len(text) <= 120 else text[:100] + "..."


def _misplaced(text: str, field: str, value: str) -> str:
    return (
        f"{_shorten(text)!r}: {field} {value!r} is not valid "
        "(it contains a separator ':', '#' or '@' that its field may not hold)"
    )


def _check_text(text: str, what: str) -> None:
    if not text:
        raise InvalidTuple(f"empty {what} name")
    if len(text.encode()) > MAX_TUPLE_BYTES:
        raise InvalidTuple(f"{_shorten(text)!r}: {what} name is over {MAX_TUPLE_BYTES} bytes")
    ws = _WS_RE.search(text)
    if ws:
        raise InvalidTuple(f"{text!r}: {what} name contains whitespace at position {ws.start()}")


def _check_relation(text: str, rel: str, what: str) -> None:
    if not rel:
        raise InvalidTuple(f"{text!r}: {what} has an empty relation after '#'")
    if not _REL_RE.fullmatch(rel):
        raise InvalidTuple(
            f"{text!r}: relation {rel!r} is not valid "
            "(expected a lowercase letter, then lowercase letters, digits or '_')"
        )


def _split_object(text: str, obj: str, what: str, *, allow_wildcard: bool) -> tuple[str, str]:
    if ":" not in obj:
        raise InvalidTuple(f"{text!r}: {what} {obj!r} has no ':' between namespace and id")
    ns, oid = obj.split(":", 1)
    if not ns:
        raise InvalidTuple(f"{text!r}: {what} {obj!r} has an empty namespace")
    if not _NS_RE.fullmatch(ns):
        raise InvalidTuple(
            f"{text!r}: namespace {ns!r} is not valid (expected lowercase letters, digits "
            "and '_', starting with a letter, optionally behind 'tenant/' prefixes)"
        )
    if not oid:
        raise InvalidTuple(f"{text!r}: {what} {obj!r} has an empty id")
    if oid == "*":
        if not allow_wildcard:
            raise InvalidTuple(f"{text!r}: a {what} cannot be a wildcard")
        return ns, oid
    if not _ID_RE.fullmatch(oid):
        bad = next(c for c in oid if not _ID_RE.fullmatch(c))
        raise InvalidTuple(f"{text!r}: id {oid!r} has the character {bad!r}; ids take {_ID_CHARS}")
    return ns, oid


def _diagnose(text: str) -> str:
    """Say what is wrong with a tuple that failed the pattern."""
    if not text:
        return "is empty"
    size = len(text.encode())
    if size > MAX_TUPLE_BYTES:
        return f"is {size} bytes, over the limit of {MAX_TUPLE_BYTES}"
    ws = _WS_RE.search(text)
    if ws:
        return f"contains whitespace at position {ws.start()}"
    if "[" in text:
        return (
            "has a caveat or expiration ('[...]'); caveated and expiring "
            "relationships are not supported"
        )
    if "#" not in text:
        return "has no '#' between the resource and the relation"
    head, after_hash = text.split("#", 1)
    if "@" not in after_hash:
        return "has no '@' between the relation and the subject"
    rel, subject = after_hash.split("@", 1)
    try:
        _split_object(text, head, "resource", allow_wildcard=False)
    except InvalidTuple as exc:
        return _reason(exc, text)
    if not rel:
        return "has no relation between '#' and '@'"
    if not _REL_RE.fullmatch(rel):
        return (
            f"has the relation {rel!r}, which is not valid "
            "(expected a lowercase letter, then lowercase letters, digits or '_')"
        )
    if not subject:
        return "has no subject after '@'"
    try:
        parse_subject(subject)
    except InvalidTuple as exc:
        return _reason(exc, subject)
    return "is not a valid tuple"  # pragma: no cover - the pattern and the checks agree


def _reason(exc: InvalidTuple, text: str) -> str:
    msg = str(exc)
    prefix = f"{text!r}: "
    if msg.startswith(prefix):
        msg = msg[len(prefix) :]
    return msg
