"""Relation tuples in Zanzibar/SpiceDB syntax: parsing, printing and names.

A tuple is ``namespace:object_id#relation@subject`` where the subject is one of

* ``namespace:object_id``            a plain subject (``#...`` means the same),
* ``namespace:object_id#relation``   a userset (every subject of that set),
* ``namespace:*``                    a wildcard (every subject of that namespace).

Names are as long and as varied as the peers allow: a part is accepted when SpiceDB
or OpenFGA accepts it as that part, and anything else is refused naming the part and
the reason. Whitespace and control characters, which both refuse, are a space and
U+0000 to U+001F and U+007F to U+009F (OpenFGA's; other Unicode spaces are characters).

* a namespace (type) is 1 to 254 characters (OpenFGA's ``^[^:#@\\s]{1,254}$``), none
  ':', '#', '@', whitespace or control; SpiceDB's types (``([a-z][a-z0-9_]{1,61}
  [a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]``, tenant prefixes included) are among them.
* a relation takes the same characters, 1 to 50 (OpenFGA's ``^[^:#@\\s]{1,50}$``) or up
  to 64 for a name SpiceDB accepts (``[a-z][a-z0-9_]{1,62}[a-z0-9]``). ``...`` is none:
  it is SpiceDB's ellipsis, and ``ns:id#...`` is the plain subject ``ns:id``.
* an id is 1 to 1,024 bytes (SpiceDB's limit; OpenFGA's object and user fields, 256
  characters and 512 bytes, hold no longer one) of anything but ':', '#', whitespace
  or control: SpiceDB's ``[a-zA-Z0-9/_|\\-=+]`` and what else OpenFGA takes
  (``anne@example.com``, ``Ü.1``, ``a*b``). The id ``*`` is the wildcard (subjects only).
* a userset's id and relation hold no '*' (OpenFGA refuses ``group:a*b#member``;
  SpiceDB's names hold none).

The separators stay unambiguous. No namespace or relation holds ':', '#' or '@' in
either peer, so the first ':' ends the resource's namespace. SpiceDB's ids hold none
of the three and OpenFGA's hold '@' but no ':' or '#' (an id with either is refused),
so the first '#' ends the resource and the first '@' after it starts the subject:
``group:a@b#member@user:anne@example.com`` is ``group:a@b`` and ``user:anne@example.com``.

Caveated and expiring relationships (a SpiceDB ``[...]`` suffix) are refused. Since
OpenFGA's ids and relations may hold brackets, a tuple is read as SpiceDB reads it:
one that ends in ``[name]``, ``[name:{...}]`` or ``[expiration:...]`` (``name`` a
SpiceDB caveat name) has a caveat, so ``user:anne[weekdays]`` cannot be a subject
in a tuple; ``user:arr[0]`` can.

The union is taken part by part: a tuple whose every part is accepted by one peer or
the other is accepted, even when no one peer would take the whole (a SpiceDB
relation of 60 characters beside an id holding '@'). A text longer than any tuple
can be (``MAX_TUPLE_BYTES``) is refused by its size alone.

OpenFGA spells a tuple as three fields, ``object`` (``ns:id``), ``relation`` and
``user`` (a subject as above); ``parse_openfga`` reads them with the same grammar.

The same grammar is exported as ``TUPLE_PATTERN`` (RE2 compatible, for str values) so
that the bulk reader can validate whole columns at once; anything it rejects is parsed
again here to get the exact message. It leaves out what RE2 cannot count well: a bulk
reader must parse here a row it admits with an id over ``MAX_ID_BYTES`` bytes, a
namespace over ``MAX_NAMESPACE_CHARS`` bytes, the relation ``...`` or a last ']'.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from leopard.errors import InvalidTuple

__all__ = [
    "MAX_ID_BYTES",
    "MAX_NAMESPACE_CHARS",
    "MAX_OPENFGA_RELATION_CHARS",
    "MAX_RELATION_CHARS",
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
    "namespace_problem",
    "relation_problem",
    "tuple_too_long",
]

#: the longest namespace, in characters (OpenFGA's type; SpiceDB's is 128 bytes)
MAX_NAMESPACE_CHARS = 254
#: the longest relation, in characters, for a name of SpiceDB's form
MAX_RELATION_CHARS = 64
#: the longest relation of any other form, in characters (OpenFGA's)
MAX_OPENFGA_RELATION_CHARS = 50
#: the longest id, in bytes (SpiceDB's)
MAX_ID_BYTES = 1024
_CHAR_BYTES = 4  # the most bytes a character takes in UTF-8
_RELATION_BYTES = max(MAX_RELATION_CHARS, _CHAR_BYTES * MAX_OPENFGA_RELATION_CHARS)
#: the longest tuple text the part limits allow, in bytes: two namespaces, two ids and
#: two relations at their longest, and the five separators
MAX_TUPLE_BYTES = 2 * (_CHAR_BYTES * MAX_NAMESPACE_CHARS + MAX_ID_BYTES + _RELATION_BYTES) + 5

# A space and the control characters: what OpenFGA refuses anywhere in a name.
_CONTROL = r"\x00-\x20\x7f-\x9f"
# Lone surrogates are no Unicode text; they can be in a Python str, never in UTF-8.
_SURROGATES = r"\ud800-\udfff"
_SPICEDB_NAME = r"[a-z][a-z0-9_]{1,62}[a-z0-9]"
_CAVEAT_NAME = rf"(?:[a-z][a-z0-9_]{{1,61}}[a-z0-9]/)*{_SPICEDB_NAME}"


class _Grammar:
    """The parts' patterns, for characters outside ``bad`` (RE2 and Python spell
    them alike; Python's also leave out lone surrogates)."""

    def __init__(self, bad: str, namespace_count: str) -> None:
        name = rf"[^{bad}:#@]"  # a namespace's or a relation's character
        userset_name = rf"[^{bad}:#@*]"  # a userset's relation's character
        self.id_char = rf"[^{bad}:#]"
        self.userset_id_char = rf"[^{bad}:#*]"
        self.name_char = name
        self.namespace = rf"{name}{namespace_count}"
        n = MAX_OPENFGA_RELATION_CHARS
        self.relation = rf"(?:{_SPICEDB_NAME}|{name}{{1,{n}}})"
        self.userset_relation = rf"(?:{_SPICEDB_NAME}|{userset_name}{{1,{n}}})"
        # any id but the wildcard
        self.resource_id = rf"(?:{self.userset_id_char}{self.id_char}*|\*{self.id_char}+)"
        self.tuple = (
            rf"^(?P<rns>{self.namespace}):(?P<rid>{self.resource_id})#(?P<rel>{self.relation})"
            rf"@(?P<sns>{self.namespace}):(?:(?P<uid>{self.userset_id_char}+)"
            rf"#(?P<urel>{self.userset_relation})|(?P<sid>{self.id_char}+)(?:#\.\.\.)?)$"
        )


# RE2 counts repetitions of a multi-byte class poorly (254 of them make its DFA give
# up on a whole block): its pattern leaves the namespace's length to the reader.
_RE2 = _Grammar(_CONTROL, "+")
_PY = _Grammar(_CONTROL + _SURROGATES, f"{{1,{MAX_NAMESPACE_CHARS}}}")

TUPLE_PATTERN = _RE2.tuple

_NS_RE = re.compile(_PY.namespace)
_REL_RE = re.compile(rf"(?!\.\.\.\Z){_PY.relation}")
_SPICEDB_NAME_RE = re.compile(_SPICEDB_NAME)
_TUPLE_RE = re.compile(_PY.tuple)
# The common tuple (printable ASCII but '*' and brackets, parts within every peer's
# limits) as the grammar reads it, without its alternations: a third of the time.
_N, _I = r'[!"$-)+-9;-?A-Z\\^-~]', r'[!"$-)+-9;-Z\\^-~]'  # a name's, an id's character
_COMMON_RE = re.compile(
    rf"({_N}{{1,254}}):({_I}{{1,1024}})#({_N}{{1,50}})@({_N}{{1,254}}):({_I}{{1,1024}})(?:#({_N}{{1,50}}))?"
)
_BAD_CHAR_RE = re.compile(rf"[{_CONTROL}{_SURROGATES}]")
_BAD_NAME_CHAR_RE = re.compile(rf"[{_CONTROL}{_SURROGATES}:#@]")
_BAD_ID_CHAR_RE = re.compile(rf"[{_CONTROL}{_SURROGATES}:#]")
_EXPIRATION = r"\[expiration:[0-9.:TZ-]+\]"
#: a SpiceDB caveat and/or expiration at the end of a text (SpiceDB's own patterns)
_CAVEAT_RE = re.compile(
    rf"(?:\[{_CAVEAT_NAME}(?::\{{.*\}})?\](?:{_EXPIRATION})?|{_EXPIRATION})\Z", re.S
)
# No id of this many characters or fewer can be over MAX_ID_BYTES.
_SHORT_ID = MAX_ID_BYTES // _CHAR_BYTES

#: a tenant prefix (``acme/``, ``a/b/``) or none: namespace characters ending in '/',
#: leaving room for a name behind them
TENANT_PREFIX_RE = re.compile(rf"(?:{_PY.name_char}{{0,{MAX_NAMESPACE_CHARS - 2}}}/)?")
#: a subject: groups ``(namespace, id or "*", relation or "..." or None)``; the id is
#: not checked against ``MAX_ID_BYTES`` (a name of at most ``MAX_ID_BYTES // 4``
#: characters cannot be over it)
SUBJECT_RE = re.compile(
    rf"({_PY.namespace}):(?!{_PY.userset_id_char}*\*{_PY.id_char}*#(?!\.\.\.\Z))"
    rf"({_PY.id_char}+)(?:#(\.\.\.|{_PY.userset_relation}))?"
)
#: a group name: groups ``(namespace, id, relation or None)``, the id unchecked as above
GROUP_RE = re.compile(
    rf"({_PY.namespace}):(?!\*(?:#|\Z))({_PY.id_char}+)(?:#(?!\.\.\.\Z)({_PY.relation}))?"
)
#: a plain subject ``ns:id`` (not a wildcard), the id unchecked as above
PLAIN_SUBJECT_RE = re.compile(rf"{_PY.namespace}:(?!\*\Z){_PY.id_char}+")
#: splits a name known to be valid into ``ns``, ``id`` and ``rel`` (RE2 compatible,
#: for Arrow's ``extract_regex``); ``rel`` is empty when there is none
SPLIT_NAME_PATTERN = r"^(?P<ns>[^:]+):(?P<id>[^#]+)(?:#(?P<rel>.+))?$"


def is_namespace(text: str) -> bool:
    """Whether ``text`` is a valid namespace, tenant prefixes included."""
    return _NS_RE.fullmatch(text) is not None


def is_relation(text: str) -> bool:
    """Whether ``text`` is a valid relation name (``...`` is none)."""
    return _REL_RE.fullmatch(text) is not None


def tuple_too_long(size: int) -> str:
    """Why a text of ``size`` bytes, over ``MAX_TUPLE_BYTES``, is no tuple."""
    return (
        f"is {size:,} bytes, longer than any tuple can be ({MAX_TUPLE_BYTES:,} bytes: two "
        f"namespaces of {MAX_NAMESPACE_CHARS} characters, two ids of {MAX_ID_BYTES:,} bytes "
        "and two relations)"
    )


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
    m = _COMMON_RE.fullmatch(text)
    if m is not None and "..." not in (parts := m.groups()):  # a tuple's fields, in order
        return tuple.__new__(RelationTuple, parts)
    m = _TUPLE_RE.fullmatch(text) if len(text) <= MAX_TUPLE_BYTES else None
    if m is not None:
        rid, rel, sid, srel = m.group("rid", "rel", "uid", "urel")
        if sid is None:  # a plain subject or a wildcard, maybe spelled with "#..."
            sid, srel = m.group("sid"), None
        caveat = text[-1] == "]" and _CAVEAT_RE.search(text)
        if rel != "..." and _id_fits(rid) and _id_fits(sid) and not caveat:
            srel = None if srel == "..." else srel
            return RelationTuple(m.group("rns"), rid, rel, m.group("sns"), sid, srel)
    raise InvalidTuple(f"{_q(text)} {_diagnose(text)}")


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
    if rel_or_none is not None:
        if oid == "*":
            raise InvalidTuple(f"{_q(text)}: a wildcard {what} cannot carry a relation")
        for part, value in (("id", oid), ("relation", rel_or_none)):
            if "*" in value:
                raise InvalidTuple(
                    f"{_q(text)}: the userset's {part} {_q(value)} holds '*', which a "
                    f"userset's {part} cannot (OpenFGA refuses it; SpiceDB's names hold none)"
                )
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


def _id_fits(oid: str) -> bool:
    return len(oid) <= _SHORT_ID or len(oid.encode()) <= MAX_ID_BYTES


def _shorten(text: str) -> str:
    return text if len(text) <= 120 else text[:100] + "..."


def _q(text: str) -> str:
    """``text`` quoted for a message, cut short when long."""
    return repr(_shorten(text))


def _char(c: str) -> str:
    """How a message names a character a name may not hold."""
    if c in " \t\n\r\x0b\x0c":
        return "whitespace"
    if "\ud800" <= c <= "\udfff":
        return f"the lone surrogate {c!r} (not Unicode text)"
    if c <= "\x1f" or "\x7f" <= c <= "\x9f":
        return f"the control character {c!r}"
    return f"the character {c!r}"


def namespace_problem(ns: str, label: str = "namespace") -> str | None:
    """Why ``ns`` is no namespace (the sentence names it ``label``), or None."""
    if not ns:
        return f"{label} is empty"
    if bad := _BAD_NAME_CHAR_RE.search(ns):
        return (
            f"{label} {_q(ns)} has {_char(bad.group())}; {label}s hold no ':', '#', '@', "
            "whitespace or control characters"
        )
    if len(ns) > MAX_NAMESPACE_CHARS:
        return (
            f"{label} of {len(ns):,} characters is over the limit of {MAX_NAMESPACE_CHARS} "
            "(OpenFGA's)"
        )
    return None


def relation_problem(rel: str, label: str = "relation") -> str | None:
    """Why ``rel`` is no relation name (the sentence names it ``label``), or None."""
    if not rel:
        return f"{label} is empty"
    if rel == "...":
        return f"{label} '...' is reserved: '#...' means no relation (SpiceDB's ellipsis)"
    if bad := _BAD_NAME_CHAR_RE.search(rel):
        return (
            f"{label} {_q(rel)} has {_char(bad.group())}; {label}s hold no ':', '#', '@', "
            "whitespace or control characters"
        )
    n = len(rel)
    if n > MAX_RELATION_CHARS:
        return f"{label} of {n:,} characters is over the limit of {MAX_RELATION_CHARS} (SpiceDB's)"
    if n > MAX_OPENFGA_RELATION_CHARS and not _SPICEDB_NAME_RE.fullmatch(rel):
        return (
            f"{label} of {n} characters is over the limit of {MAX_OPENFGA_RELATION_CHARS} "
            f"(OpenFGA's); only a name SpiceDB accepts (a lowercase letter, then lowercase "
            f"letters, digits or '_', ending in a letter or digit) may have up to "
            f"{MAX_RELATION_CHARS}"
        )
    return None


def _id_problem(oid: str, label: str) -> str | None:
    if bad := _BAD_ID_CHAR_RE.search(oid):
        return (
            f"{label} {_q(oid)} has {_char(bad.group())}; ids hold no ':', '#', whitespace "
            "or control characters"
        )
    if not _id_fits(oid):
        size = len(oid.encode())
        return f"{label} of {size:,} bytes is over the limit of {MAX_ID_BYTES:,} (SpiceDB's)"
    return None


def _misplaced(text: str, field: str, value: str) -> str:
    return (
        f"{_q(text)}: {field} {_q(value)} is not valid "
        "(it contains a separator ':', '#' or '@' that its field may not hold)"
    )


def _check_text(text: str, what: str) -> None:
    if not text:
        raise InvalidTuple(f"empty {what} name")
    if bad := _BAD_CHAR_RE.search(text):
        raise InvalidTuple(
            f"{_q(text)}: {what} name contains {_char(bad.group())} at position {bad.start()}"
        )


def _check_relation(text: str, rel: str, what: str) -> None:
    if not rel:
        raise InvalidTuple(f"{_q(text)}: {what} has an empty relation after '#'")
    if problem := relation_problem(rel):
        raise InvalidTuple(f"{_q(text)}: {problem}")


def _split_object(text: str, obj: str, what: str, *, allow_wildcard: bool) -> tuple[str, str]:
    if ":" not in obj:
        raise InvalidTuple(f"{_q(text)}: {what} {_q(obj)} has no ':' between namespace and id")
    ns, oid = obj.split(":", 1)
    if not ns:
        raise InvalidTuple(f"{_q(text)}: {what} {_q(obj)} has an empty namespace")
    if problem := namespace_problem(ns):
        raise InvalidTuple(f"{_q(text)}: {problem}")
    if not oid:
        raise InvalidTuple(f"{_q(text)}: {what} {_q(obj)} has an empty id")
    if oid == "*":
        if not allow_wildcard:
            raise InvalidTuple(f"{_q(text)}: a {what} cannot be a wildcard")
        return ns, oid
    if problem := _id_problem(oid, f"{what} id"):
        raise InvalidTuple(f"{_q(text)}: {problem}")
    return ns, oid


def _diagnose(text: str) -> str:
    """Say what is wrong with a tuple that failed the pattern or a part's limit."""
    if not text:
        return "is empty"
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TUPLE_BYTES:
        return tuple_too_long(size)
    if text[-1] == "]" and _CAVEAT_RE.search(text):
        return (
            "has a caveat or expiration ('[...]'); caveated and expiring relationships are "
            "not supported"
        )
    if bad := _BAD_CHAR_RE.search(text):
        return f"contains {_char(bad.group())} at position {bad.start()}"
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
    if problem := relation_problem(rel):
        return problem
    if not subject:
        return "has no subject after '@'"
    try:
        parse_subject(subject)
    except InvalidTuple as exc:
        return _reason(exc, subject)
    return "is not a valid tuple"  # pragma: no cover - the pattern and the checks agree


def _reason(exc: InvalidTuple, text: str) -> str:
    msg = str(exc)
    prefix = f"{_q(text)}: "
    if msg.startswith(prefix):
        msg = msg[len(prefix) :]
    return msg
