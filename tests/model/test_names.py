"""Tests of relation tuple parsing and printing (leopard.model.names).

Every accepted form of the grammar is parsed and printed back; every error path of
``parse_tuple`` (through ``_diagnose``), ``parse_subject`` and ``parse_object`` is
driven once, and each message must name the offending text and say what is wrong.
Two hypothesis properties close it: tuples assembled from valid parts parse back to
those parts, and arbitrary text never raises anything but ``InvalidTuple``.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leopard.errors import InvalidTuple, LeopardError
from leopard.model.names import (
    MAX_TUPLE_BYTES,
    TUPLE_PATTERN,
    ObjectRef,
    RelationTuple,
    Subject,
    format_tuple,
    parse_object,
    parse_openfga,
    parse_subject,
    parse_tuple,
)

ID_CHARS = "A-Z a-z 0-9 _ - / | = + . @"


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


def test_limit_is_inclusive() -> None:
    head = "group:g#member@user:"
    exact = head + "x" * (MAX_TUPLE_BYTES - len(head))
    assert len(exact.encode()) == MAX_TUPLE_BYTES
    assert parse_tuple(exact).subject_id == "x" * (MAX_TUPLE_BYTES - len(head))
    with pytest.raises(InvalidTuple, match="1025 bytes, over the limit of 1024"):
        parse_tuple(exact + "x")


def test_tuple_pattern_is_anchored_and_matches_the_accepted_forms() -> None:
    pattern = re.compile(TUPLE_PATTERN)
    assert TUPLE_PATTERN.startswith("^") and TUPLE_PATTERN.endswith("$")
    for text in (
        "group:eng#member@user:alice",
        "group:eng#member@user:*",
        "acme/group:eng#member@acme/user:anne@example.com#...",
        "group:eng#member@group:backend#member",
    ):
        assert pattern.fullmatch(text)
    assert not pattern.fullmatch("group:eng#member")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user:alice", Subject("user", "alice", None)),
        ("user:alice#...", Subject("user", "alice", None)),
        ("group:eng#member", Subject("group", "eng", "member")),
        ("user:*", Subject("user", "*", None)),
        ("user:*#...", Subject("user", "*", None)),
        ("acme/user:anne@example.com", Subject("acme/user", "anne@example.com", None)),
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
        ("group:eng#member@user:al\u00a0ice", ["whitespace at position 24"]),
        (
            "group:eng#member@user:alice[ip_allowlist:{}]",
            ["'group:eng#member@user:alice[ip_allowlist:{}]'", "caveat", "not supported"],
        ),
        (
            "group:eng#member@user:alice[expiration:2025-01-01T00:00:00Z]",
            ["[expiration:2025-01-01T00:00:00Z]", "expiration", "not supported"],
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
            "group:eng#Member@user:alice",
            ["has the relation 'Member', which is not valid", "lowercase letter"],
        ),
        ("group:eng#1member@user:alice", ["has the relation '1member'"]),
        ("group:eng#mem-ber@user:alice", ["has the relation 'mem-ber'"]),
        (
            "groupeng#member@user:alice",
            ["'groupeng#member@user:alice'", "resource 'groupeng' has no ':'"],
        ),
        (":eng#member@user:alice", ["resource ':eng' has an empty namespace"]),
        ("Group:eng#member@user:alice", ["namespace 'Group' is not valid"]),
        ("acme//group:eng#member@user:alice", ["namespace 'acme//group' is not valid"]),
        ("group:#member@user:alice", ["resource 'group:' has an empty id"]),
        (
            "group:e!g#member@user:alice",
            ["id 'e!g' has the character '!'", f"ids take {ID_CHARS}"],
        ),
        ("group:e:g#member@user:alice", ["id 'e:g' has the character ':'"]),
        ("group:*#member@user:alice", ["a resource cannot be a wildcard"]),
        ("group:eng#member@", ["'group:eng#member@'", "has no subject after '@'"]),
        ("group:eng#member@user", ["subject 'user' has no ':' between namespace and id"]),
        ("group:eng#member@:alice", ["subject ':alice' has an empty namespace"]),
        ("group:eng#member@User:alice", ["namespace 'User' is not valid"]),
        ("group:eng#member@user:", ["subject 'user:' has an empty id"]),
        ("group:eng#member@user:al%ce", ["id 'al%ce' has the character '%'"]),
        ("group:eng#member@user:al\u00e9", ["id 'al\u00e9' has the character '\u00e9'"]),
        ("group:eng#member@user:alice#", ["subject has an empty relation after '#'"]),
        ("group:eng#member@group:eng#Member", ["relation 'Member' is not valid"]),
        ("group:eng#member@group:eng#mem#ber", ["relation 'mem#ber' is not valid"]),
        (
            "group:eng#member@user:*#member",
            ["'group:eng#member@user:*#member'", "wildcard subject with a relation ('member')"],
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
        ("group:eng#member@user:" + "a" * 1100, 1122),
        # 510 two-byte characters: 1020 characters, but over 1024 bytes
        ("group:eng#member@user:" + "\u00e9" * 510, 22 + 1020),
        # under 1024 characters, over 1024 bytes with 3-byte characters
        ("group:eng#member@user:" + "\u20ac" * 400, 22 + 1200),
    ],
)
def test_parse_tuple_over_the_byte_limit(text: str, size: int) -> None:
    assert len(text.encode()) == size
    msg = error_of(parse_tuple, text)
    assert f"is {size} bytes, over the limit of {MAX_TUPLE_BYTES}" in msg
    # a long text is shortened in the message, not copied whole
    assert len(msg) < 300
    assert msg.startswith(repr(text[:100] + "..."))


def test_byte_limit_counts_bytes_not_characters() -> None:
    # a valid tuple is ASCII-only, so a multibyte text under the limit in characters
    # but over it in bytes is reported by size first
    text = "group:g#member@user:" + "\u00e9" * 503  # 523 characters, 1026 bytes
    assert len(text) < MAX_TUPLE_BYTES < len(text.encode())
    assert "1026 bytes, over the limit" in error_of(parse_tuple, text)


def test_short_text_is_not_shortened() -> None:
    text = "group:eng#member@user:" + "b" * 98  # 120 characters
    msg = error_of(parse_tuple, text + "!")
    assert repr(text[:100] + "...") in msg  # 121 characters: shortened
    msg = error_of(parse_tuple, text[:-1] + "!")
    assert repr(text[:-1] + "!") in msg


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

    def test_over_the_limit(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        msg = error_of(fn, "user:" + "a" * MAX_TUPLE_BYTES)
        assert f"{what} name is over {MAX_TUPLE_BYTES} bytes" in msg
        assert len(msg) < 300

    def test_over_the_limit_in_bytes_only(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        text = "user:" + "\u00e9" * 600  # 605 characters, 1205 bytes
        assert f"{what} name is over {MAX_TUPLE_BYTES} bytes" in error_of(fn, text)

    def test_whitespace(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        msg = error_of(fn, "user:a b")
        assert msg == f"'user:a b': {what} name contains whitespace at position 6"

    def test_no_colon(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        msg = error_of(fn, "alice")
        assert msg == f"'alice': {what} 'alice' has no ':' between namespace and id"

    def test_empty_namespace(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        assert error_of(fn, ":alice") == f"':alice': {what} ':alice' has an empty namespace"

    def test_bad_namespace(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        msg = error_of(fn, "us-er:alice")
        assert msg.startswith("'us-er:alice': namespace 'us-er' is not valid")
        assert "lowercase" in msg and "tenant/" in msg

    def test_empty_id(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        assert error_of(fn, "user:") == f"'user:': {what} 'user:' has an empty id"

    def test_bad_id_char_is_named(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        msg = error_of(fn, "user:ali,ce")
        assert msg == f"'user:ali,ce': id 'ali,ce' has the character ','; ids take {ID_CHARS}"

    def test_empty_relation(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        msg = error_of(fn, "group:eng#")
        assert msg == f"'group:eng#': {what} has an empty relation after '#'"

    def test_bad_relation(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        msg = error_of(fn, "group:eng#Member")
        assert msg.startswith("'group:eng#Member': relation 'Member' is not valid")
        assert "lowercase letter" in msg

    def test_relation_checked_before_the_object(self, fn, what) -> None:  # type: ignore[no-untyped-def]
        assert "relation 'X' is not valid" in error_of(fn, "nocolon#X")


def test_subject_wildcard_with_relation() -> None:
    msg = error_of(parse_subject, "user:*#member")
    assert msg == "'user:*#member': a wildcard subject cannot carry a relation"


def test_subject_what_names_the_role() -> None:
    assert error_of(lambda t: parse_subject(t, what="member"), "") == "empty member name"


def test_group_cannot_be_a_wildcard() -> None:
    assert error_of(parse_object, "group:*") == "'group:*': a group cannot be a wildcard"
    assert "a group cannot be a wildcard" in error_of(parse_object, "group:*#member")


def test_group_ellipsis_is_not_a_relation() -> None:
    assert "relation '...' is not valid" in error_of(parse_object, "group:eng#...")


# -- OpenFGA tuple keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("user:anne", RelationTuple("group", "eng", "member", "user", "anne", None)),
        ("user:anne#...", RelationTuple("group", "eng", "member", "user", "anne", None)),
        ("group:ops#member", RelationTuple("group", "eng", "member", "group", "ops", "member")),
        ("user:*", RelationTuple("group", "eng", "member", "user", "*", None)),
        ("user:a@b.c", RelationTuple("group", "eng", "member", "user", "a@b.c", None)),
    ],
)
def test_openfga_fields(user: str, expected: RelationTuple) -> None:
    assert parse_openfga(user, "member", "group:eng") == expected
    assert parse_openfga(user=user, relation="member", object="group:eng") == expected


def test_openfga_fields_that_do_not_parse_name_the_joined_tuple() -> None:
    msg = error_of(lambda user: parse_openfga(user, "member", "group:eng"), "alice")
    assert msg == error_of(parse_tuple, "group:eng#member@alice")
    assert "'alice' has no ':'" in msg
    assert "relation 'Member'" in error_of(
        lambda rel: parse_openfga("user:a", rel, "group:eng"), "Member"
    )
    assert "caveat" in error_of(lambda obj: parse_openfga("user:a[c]", "member", obj), "group:e")


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
_ident = st.builds(
    str.__add__, st.sampled_from(_LOWER), st.text(alphabet=_LOWER + "0123456789_", max_size=10)
)
_namespace = st.lists(_ident, min_size=1, max_size=3).map("/".join)
_id = st.text(alphabet="abcXYZ019_-/|=+.@", min_size=1, max_size=20)


@st.composite
def tuple_parts(draw: st.DrawFn) -> RelationTuple:
    rns, sns = draw(_namespace), draw(_namespace)
    rid, rel = draw(_id), draw(_ident)
    kind = draw(st.sampled_from(["plain", "userset", "wildcard"]))
    if kind == "wildcard":
        return RelationTuple(rns, rid, rel, sns, "*", None)
    srel = draw(_ident) if kind == "userset" else None
    return RelationTuple(rns, rid, rel, sns, draw(_id), srel)


@settings(max_examples=300, deadline=None)
@given(tuple_parts(), st.booleans())
def test_valid_parts_parse_back_to_the_parts(parts: RelationTuple, ellipsis: bool) -> None:
    text = format_tuple(parts)
    if ellipsis and parts.subject_relation is None:
        text += "#..."
    assert parse_tuple(text) == parts
    assert format_tuple(parse_tuple(text)) == format_tuple(parts)
    subject = text.split("#", 1)[1].split("@", 1)[1]
    assert parse_subject(subject) == parts.subject
    resource = f"{parts.resource_type}:{parts.resource_id}#{parts.relation}"
    assert parse_object(resource) == ObjectRef(
        parts.resource_type, parts.resource_id, parts.relation
    )


_tupleish = st.text(alphabet="gu:e#m@*./_-[]A1 \u00e9\t", max_size=40)


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
        parse_tuple(mutated)
    except InvalidTuple as exc:
        assert "is not a valid tuple" not in str(exc)
