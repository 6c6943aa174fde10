"""Tests of relation tuple parsing and printing (leopard.model.names).

Every accepted form of the grammar is parsed and printed back, names from both peers'
alphabets included (SpiceDB's long ids, OpenFGA's upper case, '-', '.', '*', brackets
and non-ASCII characters); every error path of ``parse_tuple`` (through
``_diagnose``), ``parse_subject`` and ``parse_object`` is driven once, and each
message must name the offending text, the part and what is wrong. Each part's limit
is tried at the limit and one over. Hypothesis properties close it: tuples assembled
from valid parts (drawn from the wide alphabets) parse back to those parts, and
arbitrary text never raises anything but ``InvalidTuple``.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leopard.errors import InvalidTuple, LeopardError
from leopard.model import names
from leopard.model.names import (
    GROUP_RE,
    MAX_ID_BYTES,
    MAX_NAMESPACE_CHARS,
    MAX_OPENFGA_RELATION_CHARS,
    MAX_RELATION_CHARS,
    MAX_TUPLE_BYTES,
    PLAIN_SUBJECT_RE,
    SUBJECT_RE,
    TENANT_PREFIX_RE,
    TUPLE_PATTERN,
    ObjectRef,
    RelationTuple,
    Subject,
    format_tuple,
    is_namespace,
    is_relation,
    namespace_problem,
    parse_object,
    parse_openfga,
    parse_subject,
    parse_tuple,
    relation_problem,
    tuple_too_long,
)

ID_RULE = "ids hold no ':', '#', whitespace or control characters"
NS_RULE = "namespaces hold no ':', '#', '@', whitespace or control characters"
REL_RULE = "relations hold no ':', '#', '@', whitespace or control characters"
# every printable ASCII character but ':', '#' and the space: an OpenFGA id
PRINTABLE_ID = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ":#")


def error_of(fn, text: str) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidTuple) as info:
        fn(text)
    return str(info.value)


# -- accepted forms ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "group:eng#member@user:alice",
            RelationTuple("group", "eng", "member", "user", "alice", None),
        ),
        (
            "group:eng#member@group:backend#member",
            RelationTuple("group", "eng", "member", "group", "backend", "member"),
        ),
        (
            "group:eng#member@user:*",
            RelationTuple("group", "eng", "member", "user", "*", None),
        ),
        (
            "acme/group:eng#member@acme/user:alice",
            RelationTuple("acme/group", "eng", "member", "acme/user", "alice", None),
        ),
        (
            "a/b/group:eng#member@a/b/user:alice",
            RelationTuple("a/b/group", "eng", "member", "a/b/user", "alice", None),
        ),
        (
            "group:eng#member@user:anne@example.com",
            RelationTuple("group", "eng", "member", "user", "anne@example.com", None),
        ),
        (
            "doc:a_b-c/d|e=f+g.h#viewer_2@user:X_y-z/1|2=3+4.5",
            RelationTuple("doc", "a_b-c/d|e=f+g.h", "viewer_2", "user", "X_y-z/1|2=3+4.5", None),
        ),
        (
            # '@' in a resource id is allowed too: the separator is the first '@' after '#'
            "group:a@b#member@user:c@d@e",
            RelationTuple("group", "a@b", "member", "user", "c@d@e", None),
        ),
        (
            "acme/group:eng#member@acme/group:backend#direct_member",
            RelationTuple("acme/group", "eng", "member", "acme/group", "backend", "direct_member"),
        ),
        # OpenFGA's names: upper case, '-', '.' and '/' anywhere in types and relations
        (
            "Document:Budget-2024.v1#Can-View.All@User:Anne.B-1",
            RelationTuple("Document", "Budget-2024.v1", "Can-View.All", "User", "Anne.B-1", None),
        ),
        (
            "acme//Group_:eng#mem.ber@team:x#Mem-ber",
            RelationTuple("acme//Group_", "eng", "mem.ber", "team", "x", "Mem-ber"),
        ),
        (
            "a:b#c@d:e",  # one-letter names: OpenFGA's (SpiceDB's need three)
            RelationTuple("a", "b", "c", "d", "e", None),
        ),
        (
            # any character but the separators, whitespace and control characters
            "t!$%&'()*+,-./;<=>?[]^_`{|}~\"\\:x#r!$%&'()*+,-./;<=>?[]^_`{|}~\"\\@u:y",
            RelationTuple(
                "t!$%&'()*+,-./;<=>?[]^_`{|}~\"\\",
                "x",
                "r!$%&'()*+,-./;<=>?[]^_`{|}~\"\\",
                "u",
                "y",
                None,
            ),
        ),
        (
            f"doc:{PRINTABLE_ID}#viewer@user:{PRINTABLE_ID}",
            RelationTuple("doc", PRINTABLE_ID, "viewer", "user", PRINTABLE_ID, None),
        ),
        (
            # non-ASCII characters, and Unicode spaces that are no whitespace to OpenFGA
            "dokument:\u00fcber/\u674e#\u67e5\u770b@benutzer:an\u00a0ne\u2028x\U0001f600",
            RelationTuple(
                "dokument",
                "\u00fcber/\u674e",
                "\u67e5\u770b",
                "benutzer",
                "an\u00a0ne\u2028x\U0001f600",
                None,
            ),
        ),
        (
            # '*' inside an id is no wildcard; brackets that hold no caveat name are none
            "doc:a*b#viewer@user:x*[0]",
            RelationTuple("doc", "a*b", "viewer", "user", "x*[0]", None),
        ),
        (
            "doc:*a#v*w@user:a*",
            RelationTuple("doc", "*a", "v*w", "user", "a*", None),
        ),
        (
            "doc:1#viewer@group:eng#....",  # four dots are a relation
            RelationTuple("doc", "1", "viewer", "group", "eng", "...."),
        ),
    ],
)
def test_accepted_forms_parse_and_print_back(text: str, expected: RelationTuple) -> None:
    parsed = parse_tuple(text)
    assert parsed == expected
    assert format_tuple(parsed) == text
    assert str(parsed) == text
    assert parse_tuple(format_tuple(parsed)) == parsed


def test_ellipsis_relation_is_the_same_as_none() -> None:
    plain = parse_tuple("group:eng#member@user:alice")
    dotted = parse_tuple("group:eng#member@user:alice#...")
    assert dotted == plain
    assert dotted.subject_relation is None
    # printing is canonical: no '#...'
    assert format_tuple(dotted) == "group:eng#member@user:alice"
    wildcard = parse_tuple("group:eng#member@user:*#...")
    assert wildcard.is_wildcard and wildcard.subject_relation is None


def test_tuple_properties() -> None:
    t = parse_tuple("group:eng#member@group:backend#member")
    assert t.subject == Subject("group", "backend", "member")
    assert str(t.subject) == "group:backend#member"
    assert not t.is_wildcard
    w = parse_tuple("group:eng#member@user:*")
    assert w.is_wildcard and w.subject.is_wildcard
    assert str(w.subject) == "user:*"


def test_the_limits_are_the_peers() -> None:
    assert MAX_ID_BYTES == 1024  # SpiceDB's object_id
    assert MAX_NAMESPACE_CHARS == 254  # OpenFGA's type
    assert MAX_RELATION_CHARS == 64  # SpiceDB's relation
    assert MAX_OPENFGA_RELATION_CHARS == 50  # OpenFGA's relation
    # two namespaces of 254 four-byte characters, two ids, two relations of 50
    # four-byte characters, five separators
    assert MAX_TUPLE_BYTES == 2 * 1016 + 2 * 1024 + 2 * 200 + 5


@pytest.mark.parametrize("size", [1000, MAX_ID_BYTES])
def test_spicedb_ids_up_to_the_limit(size: int) -> None:
    rid, sid = "r" * size, "s/_|-=+" * (size // 7) + "x" * (size % 7)
    assert len(sid) == size
    text = f"document:{rid}#viewer@user:{sid}"
    assert len(text) > 2 * size  # the whole text is far over one id's limit
    assert parse_tuple(text) == RelationTuple("document", rid, "viewer", "user", sid, None)
    assert parse_subject(f"user:{sid}") == Subject("user", sid)
    assert parse_object(f"document:{rid}#viewer") == ObjectRef("document", rid, "viewer")
    assert re.fullmatch(TUPLE_PATTERN, text)
    assert SUBJECT_RE.fullmatch(f"user:{sid}") and GROUP_RE.fullmatch(f"document:{rid}")
    # bytes count, not characters
    wide = "\u00e9" * (MAX_ID_BYTES // 2)
    assert parse_tuple(f"doc:{wide}#v@user:{wide}").subject_id == wide


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "document:1#viewer@user:" + "x" * 1025,
            "subject id of 1,025 bytes is over the limit of 1,024 (SpiceDB's)",
        ),
        (
            "document:" + "x" * 1100 + "#viewer@user:a",
            "resource id of 1,100 bytes is over the limit of 1,024 (SpiceDB's)",
        ),
        (
            "document:1#viewer@user:" + "\u00e9" * 513,
            "subject id of 1,026 bytes is over the limit of 1,024 (SpiceDB's)",
        ),
        (
            "t" * 255 + ":1#viewer@user:a",
            "namespace of 255 characters is over the limit of 254 (OpenFGA's)",
        ),
        (
            "doc:1#viewer@" + "\u00e9" * 255 + ":a",
            "namespace of 255 characters is over the limit of 254 (OpenFGA's)",
        ),
        (
            "doc:1#" + "r" * 65 + "@user:a",
            "relation of 65 characters is over the limit of 64 (SpiceDB's)",
        ),
        (
            "doc:1#viewer@group:a#" + "r" * 65,
            "relation of 65 characters is over the limit of 64 (SpiceDB's)",
        ),
        (
            "doc:1#" + "R" * 51 + "@user:a",
            "relation of 51 characters is over the limit of 50 (OpenFGA's); only a name "
            "SpiceDB accepts",
        ),
        (
            "doc:1#viewer@group:a#" + "r" * 50 + "_",
            "relation of 51 characters is over the limit of 50 (OpenFGA's)",
        ),
    ],
)
def test_one_over_a_part_limit_names_the_part_and_the_limit(text: str, message: str) -> None:
    msg = error_of(parse_tuple, text)
    assert message in msg
    assert msg.startswith(repr(text if len(text) <= 120 else text[:100] + "..."))
    assert len(msg) < 400


def test_part_limits_are_inclusive() -> None:
    ns = "T" * MAX_NAMESPACE_CHARS
    wide_ns = "\u674e" * MAX_NAMESPACE_CHARS  # 762 bytes
    spicedb_rel = "r" * MAX_RELATION_CHARS  # a name SpiceDB accepts
    openfga_rel = "R" * MAX_OPENFGA_RELATION_CHARS
    wide_rel = "\u00e9" * MAX_OPENFGA_RELATION_CHARS
    text = f"{ns}:a#{spicedb_rel}@{wide_ns}:b#{openfga_rel}"
    assert parse_tuple(text) == RelationTuple(ns, "a", spicedb_rel, wide_ns, "b", openfga_rel)
    assert parse_tuple(f"a:b#{wide_rel}@c:d").relation == wide_rel
    assert is_namespace(ns) and not is_namespace(ns + "T")
    assert is_relation(spicedb_rel) and not is_relation(spicedb_rel + "r")
    assert is_relation(openfga_rel) and not is_relation(openfga_rel + "R")


def test_the_longest_tuple() -> None:
    ns, oid, rel = "\U0001f600" * 254, "x" * 1024, "\U0001f600" * 50
    text = f"{ns}:{oid}#{rel}@{ns}:{oid}#{rel}"
    assert len(text.encode()) == MAX_TUPLE_BYTES
    assert parse_tuple(text) == RelationTuple(ns, oid, rel, ns, oid, rel)
    msg = error_of(parse_tuple, text + "x")
    assert tuple_too_long(MAX_TUPLE_BYTES + 1) in msg
    assert "is 4,486 bytes, longer than any tuple can be (4,485 bytes" in msg


def test_tuple_pattern_is_anchored_and_matches_the_accepted_forms() -> None:
    pattern = re.compile(TUPLE_PATTERN)
    assert TUPLE_PATTERN.startswith("^") and TUPLE_PATTERN.endswith("$")
    for text in (
        "group:eng#member@user:alice",
        "group:eng#member@user:*",
        "acme/group:eng#member@acme/user:anne@example.com#...",
        "group:eng#member@group:backend#member",
        "Doc.Type:Ü-1#Can-View@User:a*b#...",
    ):
        assert pattern.fullmatch(text)
    for text in (
        "group:eng#member",
        "group:*#member@user:a",  # a resource is no wildcard
        "group:eng#member@user:*#member",  # nor carries a wildcard a relation
        "group:eng#member@group:a*#member",  # a userset's id holds no '*'
        "group:eng#member@group:a#mem*ber",  # nor its relation
        "group:eng#member@user:a b",
        "group:eng#member@user:a\x7f",
        "group:eng#member@user:a\x85",
        "group:eng#" + "R" * 51 + "@user:a",
    ):
        assert not pattern.fullmatch(text), text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user:alice", Subject("user", "alice", None)),
        ("user:alice#...", Subject("user", "alice", None)),
        ("group:eng#member", Subject("group", "eng", "member")),
        ("user:*", Subject("user", "*", None)),
        ("user:*#...", Subject("user", "*", None)),
        ("acme/user:anne@example.com", Subject("acme/user", "anne@example.com", None)),
        ("User:A.b-C", Subject("User", "A.b-C", None)),
        ("Team:x#Mem-ber.1", Subject("Team", "x", "Mem-ber.1")),
        ("user:a*b", Subject("user", "a*b", None)),
        ("user:a*b#...", Subject("user", "a*b", None)),
        ("user:[weekdays]", Subject("user", "[weekdays]", None)),  # no tuple text
    ],
)
def test_parse_subject_forms(text: str, expected: Subject) -> None:
    assert parse_subject(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("group:eng", ObjectRef("group", "eng", None)),
        ("group:eng#member", ObjectRef("group", "eng", "member")),
        ("acme/group:a.b-c#direct_member", ObjectRef("acme/group", "a.b-c", "direct_member")),
        ("Doc:a*b#Vi*ew", ObjectRef("Doc", "a*b", "Vi*ew")),  # a group may hold '*'
        ("*:a", ObjectRef("*", "a", None)),  # a namespace may be '*' (OpenFGA's JSON)
    ],
)
def test_parse_object_forms(text: str, expected: ObjectRef) -> None:
    ref = parse_object(text)
    assert ref == expected
    assert str(ref) == text


# -- parse_tuple errors (_diagnose) --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("", ["'' is empty"]),
        (
            "group:eng#member @user:alice",
            ["'group:eng#member @user:alice'", "contains whitespace at position 16"],
        ),
        ("group:eng#member@user:alice\t", ["whitespace at position 27"]),
        ("group:eng#member@user:alice\n", ["whitespace at position 27"]),
        ("group:eng#member@user:alice\x0b", ["whitespace at position 27"]),
        ("group:eng#member@user:al\x01ice", ["the control character '\\x01' at position 24"]),
        ("group:eng#member@user:al\x7fice", ["the control character '\\x7f' at position 24"]),
        ("group:eng#member@user:al\x85ice", ["the control character '\\x85' at position 24"]),
        ("group:eng#member@user:al\ud800ce", ["the lone surrogate '\\ud800'", "position 24"]),
        (
            "group:eng#member@user:alice[ip_allowlist:{}]",
            ["'group:eng#member@user:alice[ip_allowlist:{}]'", "caveat", "not supported"],
        ),
        (
            "group:eng#member@user:alice[expiration:2025-01-01T00:00:00Z]",
            ["[expiration:2025-01-01T00:00:00Z]", "expiration", "not supported"],
        ),
        (
            # a caveat with a context that holds spaces: the caveat is the news
            'group:eng#member@user:alice[ip_allowlist:{"cidr": "1.2.3.0/24"}]',
            ["has a caveat or expiration ('[...]')", "not supported"],
        ),
        (
            # the id 'alice[weekdays]' would do for OpenFGA; SpiceDB reads a caveat
            "group:eng#member@user:alice[weekdays]",
            ["has a caveat or expiration ('[...]')", "not supported"],
        ),
        (
            "group:eng#member@group:a#member[acme/weekdays][expiration:2025-01-01T00:00:00Z]",
            ["has a caveat or expiration ('[...]')"],
        ),
        (
            "group:eng",
            ["'group:eng'", "has no '#' between the resource and the relation"],
        ),
        (
            "group:eng#member",
            ["'group:eng#member'", "has no '@' between the relation and the subject"],
        ),
        (
            "group:eng#@user:alice",
            ["'group:eng#@user:alice'", "has no relation between '#' and '@'"],
        ),
        (
            "group:eng#mem:ber@user:alice",
            ["relation 'mem:ber' has the character ':'", REL_RULE],
        ),
        ("group:eng#mem#ber@user:alice", ["relation 'mem#ber' has the character '#'"]),
        (
            "group:eng#...@user:alice",
            ["relation '...' is reserved: '#...' means no relation (SpiceDB's ellipsis)"],
        ),
        (
            "groupeng#member@user:alice",
            ["'groupeng#member@user:alice'", "resource 'groupeng' has no ':'"],
        ),
        (":eng#member@user:alice", ["resource ':eng' has an empty namespace"]),
        ("gr@up:eng#member@user:alice", ["namespace 'gr@up' has the character '@'", NS_RULE]),
        ("group:#member@user:alice", ["resource 'group:' has an empty id"]),
        ("group:e:g#member@user:alice", ["resource id 'e:g' has the character ':'", ID_RULE]),
        ("group:*#member@user:alice", ["a resource cannot be a wildcard"]),
        ("group:eng#member@", ["'group:eng#member@'", "has no subject after '@'"]),
        ("group:eng#member@user", ["subject 'user' has no ':' between namespace and id"]),
        ("group:eng#member@:alice", ["subject ':alice' has an empty namespace"]),
        ("group:eng#member@u@ser:alice", ["namespace 'u@ser' has the character '@'"]),
        ("group:eng#member@user:", ["subject 'user:' has an empty id"]),
        ("group:eng#member@user:al:ce", ["subject id 'al:ce' has the character ':'", ID_RULE]),
        ("group:eng#member@user:alice#", ["subject has an empty relation after '#'"]),
        ("group:eng#member@group:eng#mem#ber", ["relation 'mem#ber' has the character '#'"]),
        ("group:eng#member@group:eng#mem:ber", ["relation 'mem:ber' has the character ':'"]),
        (
            "group:eng#member@user:*#member",
            ["'group:eng#member@user:*#member'", "a wildcard subject cannot carry a relation"],
        ),
        (
            "group:eng#member@group:a*b#member",
            ["the userset's id 'a*b' holds '*', which a userset's id cannot", "OpenFGA"],
        ),
        (
            "group:eng#member@group:ab#mem*ber",
            ["the userset's relation 'mem*ber' holds '*', which a userset's relation cannot"],
        ),
    ],
)
def test_parse_tuple_errors_name_the_text_and_the_problem(text: str, fragments: list[str]) -> None:
    msg = error_of(parse_tuple, text)
    if text:
        assert repr(text) in msg or repr(text[:100]) in msg
    for fragment in fragments:
        assert fragment in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("group:eng#member@user:" + "a" * 5000, 5022),
        # 2,232 two-byte characters: under the limit in characters, over it in bytes
        ("group:eng#member@user:" + "\u00e9" * 2232, 22 + 4464),
        ("group:eng#member@user:" + "\u20ac" * 1500, 22 + 4500),
    ],
)
def test_parse_tuple_longer_than_any_tuple(text: str, size: int) -> None:
    assert len(text.encode()) == size
    msg = error_of(parse_tuple, text)
    assert f"is {size:,} bytes, longer than any tuple can be ({MAX_TUPLE_BYTES:,} bytes" in msg
    # a long text is shortened in the message, not copied whole
    assert len(msg) < 300
    assert msg.startswith(repr(text[:100] + "..."))


def test_short_text_is_not_shortened() -> None:
    text = "group:eng#member@user:" + "b" * 98  # 120 characters
    msg = error_of(parse_tuple, text + ":")
    assert repr(text[:100] + "...") in msg  # 121 characters: shortened
    msg = error_of(parse_tuple, text[:-1] + ":")
    assert repr(text[:-1] + ":") in msg


def test_errors_are_leopard_and_value_errors() -> None:
    with pytest.raises(LeopardError):
        parse_tuple("nope")
    with pytest.raises(ValueError):
        parse_tuple("nope")


# -- parse_subject and parse_object errors --------------------------------------------------


@pytest.mark.parametrize("fn, what", [(parse_subject, "subject"), (parse_object, "group")])
class TestNameErrors:
    def test_empty(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        assert error_of(fn, "") == f"empty {what} name"

    def test_id_at_and_over_the_limit(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        assert fn("user:" + "a" * MAX_ID_BYTES)[1] == "a" * MAX_ID_BYTES
        msg = error_of(fn, "user:" + "a" * (MAX_ID_BYTES + 1))
        assert msg.endswith(f"{what} id of 1,025 bytes is over the limit of 1,024 (SpiceDB's)")
        assert len(msg) < 300

    def test_id_over_the_limit_in_bytes_only(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        text = "user:" + "\u00e9" * 600  # 605 characters, 1205 bytes
        assert f"{what} id of 1,200 bytes is over the limit of 1,024" in error_of(fn, text)

    def test_namespace_over_the_limit(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        assert fn("U" * MAX_NAMESPACE_CHARS + ":a")[0] == "U" * MAX_NAMESPACE_CHARS
        msg = error_of(fn, "U" * (MAX_NAMESPACE_CHARS + 1) + ":a")
        assert msg.endswith("namespace of 255 characters is over the limit of 254 (OpenFGA's)")

    def test_relation_over_the_limit(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        assert fn("group:a#" + "R" * 50)[2] == "R" * 50
        assert "relation of 51 characters" in error_of(fn, "group:a#" + "R" * 51)
        assert fn("group:a#" + "r" * 64)[2] == "r" * 64
        assert "relation of 65 characters" in error_of(fn, "group:a#" + "r" * 65)

    def test_whitespace(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        msg = error_of(fn, "user:a b")
        assert msg == f"'user:a b': {what} name contains whitespace at position 6"

    def test_control_character(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        msg = error_of(fn, "user:a\x1bb")
        assert msg == (
            f"'user:a\\x1bb': {what} name contains the control character '\\x1b' at position 6"
        )

    def test_unicode_space_is_a_character(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        assert fn("user:a\u00a0b")[1] == "a\u00a0b"

    def test_no_colon(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        msg = error_of(fn, "alice")
        assert msg == f"'alice': {what} 'alice' has no ':' between namespace and id"

    def test_empty_namespace(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        assert error_of(fn, ":alice") == f"':alice': {what} ':alice' has an empty namespace"

    def test_bad_namespace(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        msg = error_of(fn, "us@er:alice")
        assert msg == f"'us@er:alice': namespace 'us@er' has the character '@'; {NS_RULE}"

    def test_empty_id(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        assert error_of(fn, "user:") == f"'user:': {what} 'user:' has an empty id"

    def test_bad_id_char_is_named(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        msg = error_of(fn, "user:ali:ce")
        assert msg == f"'user:ali:ce': {what} id 'ali:ce' has the character ':'; {ID_RULE}"

    def test_empty_relation(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        msg = error_of(fn, "group:eng#")
        assert msg == f"'group:eng#': {what} has an empty relation after '#'"

    def test_bad_relation(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        msg = error_of(fn, "group:eng#mem@ber")
        assert msg == f"'group:eng#mem@ber': relation 'mem@ber' has the character '@'; {REL_RULE}"

    def test_relation_checked_before_the_object(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        assert "relation 'X@' has the character '@'" in error_of(fn, "nocolon#X@")

    def test_long_parts_are_shortened(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        msg = error_of(fn, "user:" + "a" * 200 + ":b")
        assert f"{what} id '{'a' * 100}...' has the character ':'" in msg
        assert len(msg) < 400


def test_subject_wildcard_with_relation() -> None:
    msg = error_of(parse_subject, "user:*#member")
    assert msg == "'user:*#member': a wildcard subject cannot carry a relation"


def test_subject_what_names_the_role() -> None:
    assert error_of(lambda t: parse_subject(t, what="member"), "") == "empty member name"


def test_group_cannot_be_a_wildcard() -> None:
    assert error_of(parse_object, "group:*") == "'group:*': a group cannot be a wildcard"
    assert "a group cannot be a wildcard" in error_of(parse_object, "group:*#member")


def test_group_ellipsis_is_not_a_relation() -> None:
    msg = error_of(parse_object, "group:eng#...")
    assert msg == (
        "'group:eng#...': relation '...' is reserved: '#...' means no relation (SpiceDB's ellipsis)"
    )


def test_userset_holds_no_star() -> None:
    msg = error_of(parse_subject, "group:a*b#member")
    assert msg == (
        "'group:a*b#member': the userset's id 'a*b' holds '*', which a userset's id cannot "
        "(OpenFGA refuses it; SpiceDB's names hold none)"
    )
    msg = error_of(parse_subject, "group:ab#mem*ber")
    assert "the userset's relation 'mem*ber' holds '*'" in msg
    assert not SUBJECT_RE.fullmatch("group:a*b#member")
    assert SUBJECT_RE.fullmatch("group:a*b#...") and SUBJECT_RE.fullmatch("group:a*b")


def test_query_patterns_follow_the_grammar() -> None:
    assert SUBJECT_RE.fullmatch("User:anne@x.com").groups() == ("User", "anne@x.com", None)
    assert SUBJECT_RE.fullmatch("Team:a#Mem-ber").groups() == ("Team", "a", "Mem-ber")
    assert SUBJECT_RE.fullmatch("user:*#...").groups() == ("user", "*", "...")
    assert not SUBJECT_RE.fullmatch("user:*#member")
    assert GROUP_RE.fullmatch("Doc:a*b#Vi*ew").groups() == ("Doc", "a*b", "Vi*ew")
    assert GROUP_RE.fullmatch("Doc:x").groups() == ("Doc", "x", None)
    for bad in ("group:*", "group:*#member", "group:a#...", "gr@up:a", "group:a b"):
        assert not GROUP_RE.fullmatch(bad), bad
    assert PLAIN_SUBJECT_RE.fullmatch("User:a.b-c") and PLAIN_SUBJECT_RE.fullmatch("u:a*")
    assert not PLAIN_SUBJECT_RE.fullmatch("user:*")
    assert not SUBJECT_RE.fullmatch("U" * 255 + ":a")
    assert not GROUP_RE.fullmatch("group:a#" + "R" * 51)


def test_tenant_prefix() -> None:
    for prefix in ("", "acme/", "a/b/", "Acme-Corp/", "x" * 252 + "/"):
        assert TENANT_PREFIX_RE.fullmatch(prefix), prefix
    for prefix in ("acme", "ac me/", "a@b/", "x" * 253 + "/"):
        assert not TENANT_PREFIX_RE.fullmatch(prefix), prefix


@pytest.mark.parametrize(
    ("fn", "text", "problem"),
    [
        (namespace_problem, "Acme-Corp/Group.1", None),
        (namespace_problem, "", "namespace is empty"),
        (namespace_problem, "a b", f"namespace 'a b' has whitespace; {NS_RULE}"),
        (namespace_problem, "a#b", f"namespace 'a#b' has the character '#'; {NS_RULE}"),
        (
            namespace_problem,
            "x" * 255,
            "namespace of 255 characters is over the limit of 254 (OpenFGA's)",
        ),
        (relation_problem, "Can-View.All", None),
        (relation_problem, "r" * 64, None),
        (relation_problem, "", "relation is empty"),
        (relation_problem, "a@b", f"relation 'a@b' has the character '@'; {REL_RULE}"),
        (relation_problem, "a\tb", f"relation 'a\\tb' has whitespace; {REL_RULE}"),
        (
            relation_problem,
            "...",
            "relation '...' is reserved: '#...' means no relation (SpiceDB's ellipsis)",
        ),
    ],
)
def test_name_problems(fn, text: str, problem: str | None) -> None:  # type: ignore[no-untyped-def]
    assert fn(text) == problem


def test_name_problems_take_a_label() -> None:
    assert namespace_problem("a:b", "type name") == (
        "type name 'a:b' has the character ':'; type names hold no ':', '#', '@', "
        "whitespace or control characters"
    )
    assert relation_problem("r" * 70, "relation name") == (
        "relation name of 70 characters is over the limit of 64 (SpiceDB's)"
    )


# -- OpenFGA tuple keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("user:anne", RelationTuple("group", "eng", "member", "user", "anne", None)),
        ("user:anne#...", RelationTuple("group", "eng", "member", "user", "anne", None)),
        ("group:ops#member", RelationTuple("group", "eng", "member", "group", "ops", "member")),
        ("user:*", RelationTuple("group", "eng", "member", "user", "*", None)),
        ("user:a@b.c", RelationTuple("group", "eng", "member", "user", "a@b.c", None)),
        ("User:Anne.B-1", RelationTuple("group", "eng", "member", "User", "Anne.B-1", None)),
        ("Team:x#Mem-ber", RelationTuple("group", "eng", "member", "Team", "x", "Mem-ber")),
    ],
)
def test_openfga_fields(user: str, expected: RelationTuple) -> None:
    assert parse_openfga(user, "member", "group:eng") == expected
    assert parse_openfga(user=user, relation="member", object="group:eng") == expected


def test_openfga_fields_that_do_not_parse_name_the_joined_tuple() -> None:
    msg = error_of(lambda user: parse_openfga(user, "member", "group:eng"), "alice")
    assert msg == error_of(parse_tuple, "group:eng#member@alice")
    assert "'alice' has no ':'" in msg
    assert "relation 'mem:ber' has the character ':'" in error_of(
        lambda rel: parse_openfga("user:a", rel, "group:eng"), "mem:ber"
    )
    assert "caveat" in error_of(lambda obj: parse_openfga("user:a[cav]", "member", obj), "group:e")
    # no caveat name in the brackets: an OpenFGA id
    assert parse_openfga("user:a[c]", "member", "group:e").subject_id == "a[c]"


def test_openfga_wide_names() -> None:
    t = parse_openfga("User:Anne.B-1", "Can-View.All", "Doc.Type:Budget_2024-v1.pdf")
    assert t == RelationTuple(
        "Doc.Type", "Budget_2024-v1.pdf", "Can-View.All", "User", "Anne.B-1", None
    )
    assert parse_openfga("user:*", "viewer", "doc:1").is_wildcard


def test_openfga_separator_in_a_field_is_refused() -> None:
    # Joined, the fields parse (subject 'user:x@y'), but the relation is not 'member'.
    msg = error_of(lambda rel: parse_openfga("y", rel, "group:eng"), "member@user:x")
    assert msg == (
        "'group:eng#member@user:x@y': relation 'member@user:x' is not valid "
        "(it contains a separator ':', '#' or '@' that its field may not hold)"
    )


# A valid head, then maybe pieces holding separators: some join into a tuple only by
# moving the split between the fields.
_tail = st.lists(
    st.sampled_from(["a", ":x", "#member", "#...", "@user:y", "@z", "*", ":"]), max_size=2
).map("".join)


def _field(*heads: str) -> st.SearchStrategy[str]:
    return st.builds(str.__add__, st.sampled_from(heads), _tail)


@settings(max_examples=500, deadline=None)
@given(
    _field("user:a", "group:b", "user:*", "y", ""),
    _field("member", "viewer", ""),
    _field("group:eng", "doc:1", "group", ""),
)
def test_openfga_fields_are_exactly_the_parts(user: str, relation: str, obj: str) -> None:
    try:
        t = parse_openfga(user, relation, obj)
    except InvalidTuple as exc:
        assert str(exc).startswith(repr(f"{obj}#{relation}@{user}"))
        return
    assert obj == f"{t.resource_type}:{t.resource_id}"
    assert relation == t.relation
    assert user in (str(t.subject), f"{t.subject}#...")


# -- properties ---------------------------------------------------------------------------

_LOWER = "abcdefghijklmnopqrstuvwxyz"
_spicedb_ident = st.builds(
    str.__add__, st.sampled_from(_LOWER), st.text(alphabet=_LOWER + "0123456789_", max_size=10)
)
# Both peers' alphabets: SpiceDB's names, and OpenFGA's upper case, punctuation,
# brackets, '*' and non-ASCII characters (a Unicode space among them).
_WIDE = "aZ09_-./*[]!~\u00e9\u00a0\u674e\U0001f600"
_wide_name = st.text(alphabet=_WIDE, min_size=1, max_size=12)
_namespace = st.one_of(st.lists(_spicedb_ident, min_size=1, max_size=3).map("/".join), _wide_name)
_relation = st.one_of(_spicedb_ident, _wide_name).filter(lambda r: r != "...")
_userset_relation = _relation.filter(lambda r: "*" not in r)
_id = st.text(alphabet=_WIDE + "@|=+", min_size=1, max_size=20)


@st.composite
def tuple_parts(draw: st.DrawFn) -> RelationTuple:
    rns, sns = draw(_namespace), draw(_namespace)
    rid, rel = draw(_id.filter(lambda i: i != "*")), draw(_relation)
    kind = draw(st.sampled_from(["plain", "userset", "wildcard"]))
    if kind == "wildcard":
        return RelationTuple(rns, rid, rel, sns, "*", None)
    if kind == "userset":
        sid = draw(_id.filter(lambda i: "*" not in i))
        return RelationTuple(rns, rid, rel, sns, sid, draw(_userset_relation))
    return RelationTuple(rns, rid, rel, sns, draw(_id), None)


def _reads_as_a_caveat(text: str) -> bool:
    return bool(
        re.search(r"\[(?:[a-z][a-z0-9_]{1,61}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]\]$", text)
    )


@settings(max_examples=300, deadline=None)
@given(tuple_parts(), st.booleans())
def test_valid_parts_parse_back_to_the_parts(parts: RelationTuple, ellipsis: bool) -> None:
    text = format_tuple(parts)
    if ellipsis and parts.subject_relation is None:
        text += "#..."
    if _reads_as_a_caveat(text):  # SpiceDB's reading wins: a caveat, refused
        assert "caveat" in error_of(parse_tuple, text)
        return
    assert re.fullmatch(TUPLE_PATTERN, text)
    assert parse_tuple(text) == parts
    assert format_tuple(parse_tuple(text)) == format_tuple(parts)
    subject = text.split("#", 1)[1].split("@", 1)[1]
    assert parse_subject(subject) == parts.subject
    assert SUBJECT_RE.fullmatch(subject)
    resource = f"{parts.resource_type}:{parts.resource_id}#{parts.relation}"
    assert parse_object(resource) == ObjectRef(
        parts.resource_type, parts.resource_id, parts.relation
    )
    assert GROUP_RE.fullmatch(resource)


_tupleish = st.text(alphabet="gu:e#m@*./_-[]A1 \u00e9\t\x01\u00a0", max_size=40)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=60), _tupleish))
def test_random_text_raises_only_invalid_tuple(text: str) -> None:
    for fn in (parse_tuple, parse_subject, parse_object):
        try:
            fn(text)
        except InvalidTuple as exc:
            msg = str(exc)
            assert msg
            # the pattern and the step-by-step checks agree: never the fallback message
            # (hypothesis also draws string constants of the code, that message included)
            assert "is not a valid tuple" not in msg.replace(repr(text), "")


@settings(max_examples=300, deadline=None)
@given(tuple_parts(), st.integers(min_value=0, max_value=200), st.characters())
def test_one_character_changed_parses_or_explains(
    parts: RelationTuple, where: int, char: str
) -> None:
    text = format_tuple(parts)
    i = where % (len(text) + 1)
    mutated = text[:i] + char + text[i + 1 :]
    try:
        t = parse_tuple(mutated)
    except InvalidTuple as exc:
        assert "is not a valid tuple" not in str(exc)
    else:
        assert format_tuple(t) in (mutated, mutated.removesuffix("#..."))


# -- the common tuple's shortcut -----------------------------------------------------

# separators, what ends the shortcut ('*', brackets, space, non-ASCII, the ellipsis's
# dots) and ordinary characters, so that drawn texts land on both sides of it
_PARTS = st.sampled_from([":", "#", "@", "*", "[", "]", " ", ".", "...", "é", "\x7f", '"'])
_WORDS = st.text(alphabet="abzAZ09_-/|=+", min_size=1, max_size=6)


def _outcome(text: str) -> object:
    try:
        return parse_tuple(text)
    except InvalidTuple as exc:
        return str(exc)


def _by_the_grammar(text: str) -> object:
    """What ``parse_tuple`` answers without its shortcut for the common tuple."""
    never = re.compile(r"(?!)")
    original = names._COMMON_RE
    names._COMMON_RE = never
    try:
        return _outcome(text)
    finally:
        names._COMMON_RE = original


def _shaped(words: list[str], part: int, special: str, at: int, userset: bool) -> str:
    """A tuple of ``words`` (the userset's relation last, when ``userset``), one of its
    parts with ``special`` put in at ``at``."""
    words[part] = words[part][:at] + special + words[part][at:]
    rns, rid, rel, sns, sid, srel = words
    return f"{rns}:{rid}#{rel}@{sns}:{sid}" + (f"#{srel}" if userset else "")


# tuple-shaped texts with one odd character in one part: each boundary of the shortcut
_SHAPED = st.builds(
    _shaped,
    st.lists(_WORDS, min_size=6, max_size=6),
    st.integers(0, 5),
    _PARTS,
    st.integers(0, 6),
    st.booleans(),
)


@settings(max_examples=1000)
@given(
    st.one_of(st.lists(st.one_of(_PARTS, _WORDS), min_size=1, max_size=12).map("".join), _SHAPED)
)
def test_the_common_tuples_shortcut_answers_as_the_grammar(text: str) -> None:
    """Any text, taken by the shortcut or not, parses (or fails) as the full grammar
    alone has it."""
    assert _outcome(text) == _by_the_grammar(text)


@settings(max_examples=300)
@given(
    st.tuples(_WORDS, _WORDS, _WORDS, _WORDS, _WORDS, st.none() | _WORDS | st.just("...")),
    st.sampled_from(["", "a@b"]),
)
def test_common_tuples_take_the_shortcut(parts: tuple, at: str) -> None:
    """Tuples of ordinary names (ids may hold '@') are what the shortcut is for: it
    takes them, and the fields are the grammar's."""
    rns, rid, rel, sns, sid, srel = parts
    text = f"{rns}:{rid}{at}#{rel}@{sns}:{sid}{at}" + (f"#{srel}" if srel else "")
    assert names._COMMON_RE.fullmatch(text) is not None
    assert _outcome(text) == _by_the_grammar(text)
