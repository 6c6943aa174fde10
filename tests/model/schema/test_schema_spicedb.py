"""Tests of the SpiceDB schema parser (leopard.model.schema.spicedb).

The peers' own schemas (``data/*.zed``, copied from SpiceDB's repository) parse into
the structure SpiceDB compiles them to; operator precedence is SpiceDB's (``-`` loosest,
then ``&``, then ``+``); and every way a schema can be wrong gives an InvalidSchema
whose one-line message names the file, the line and column, and what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from leopard.errors import InvalidConfig, InvalidSchema
from leopard.model.plan import compile_schema
from leopard.model.schema import (
    Arrow,
    Computed,
    Condition,
    Exclusion,
    Intersection,
    Nil,
    Rewrite,
    Schema,
    Self,
    SubjectType,
    This,
    Union,
    load_schema,
    parse_spicedb,
)
from leopard.model.schema.printers import format_openfga_dsl, format_spicedb

DATA = Path(__file__).parent / "data"
ZED = sorted(DATA.glob("*.zed"))


def c(name: str) -> Computed:
    return Computed(name)


def perm(text: str) -> Rewrite:
    """The rewrite of ``permission p = text`` on a type that defines a..h relations."""
    rels = "\n".join(f"    relation {r}{r}{r}: user" for r in "abcdefgh")
    schema = parse_spicedb(
        f"definition user {{}}\ndefinition doc {{\n{rels}\n    relation parent: doc\n"
        f"    permission ppp = {text}\n}}\n"
    )
    found = schema.relation("doc", "ppp")
    assert found is not None and found.kind == "permission" and found.types == ()
    return found.rewrite


def error(text: str, filename: str = "schema.zed") -> str:
    with pytest.raises(InvalidSchema) as info:
        parse_spicedb(text, filename)
    msg = str(info.value)
    assert msg.startswith(f"{filename}:"), msg
    assert "\n" not in msg
    return msg


# -- the peers' examples --------------------------------------------------------------


@pytest.mark.parametrize("path", ZED, ids=lambda p: p.name)
def test_every_example_parses(path: Path) -> None:
    schema = load_schema(path)
    assert schema.dialect == "spicedb" and schema.filename == str(path)
    assert schema.source == path.read_text()
    assert schema.types


def test_document_example_in_detail() -> None:
    schema = load_schema(DATA / "document.zed")
    assert list(schema.types) == ["user", "document", "folder"]
    assert schema.types["user"].relations == {}
    doc = schema.types["document"]
    assert list(doc.relations) == [
        "owner",
        "editor",
        "parent",
        "viewer",
        "edit",
        "view",
        "view_and_edit",
    ]
    owner = doc.relations["owner"]
    assert (owner.kind, owner.types, owner.rewrite) == ("relation", (SubjectType("user"),), This())
    assert owner.line == 5 and doc.line == 4  # after the line naming the source
    assert doc.relations["parent"].types == (SubjectType("folder"),)
    assert doc.relations["edit"].rewrite == Union((c("editor"), c("owner")))
    assert doc.relations["view"].rewrite == Union((c("viewer"), c("edit"), Arrow("parent", "view")))
    assert doc.relations["view_and_edit"].rewrite == Intersection((c("view"), c("edit")))
    folder_viewer = schema.relation("folder", "viewer")
    assert folder_viewer is not None
    assert folder_viewer.types == (SubjectType("user"), SubjectType("folder", "view"))
    assert schema.relation("folder", "nothing") is None
    assert schema.relation("nothing", "viewer") is None


def test_caveats_wildcards_and_arrows_of_quay() -> None:
    schema = load_schema(DATA / "quay.zed")
    assert schema.conditions == ("is_not_geo_banned",)
    assert schema.condition_defs == (
        Condition(
            "is_not_geo_banned",
            (("user_ip", "ipaddress"), ("cidr", "string")),
            "!user_ip.in_cidr(cidr)",
        ),
    )
    readers = schema.relation("repo", "readers")
    assert readers is not None
    assert readers.types == (
        SubjectType("user"),
        SubjectType("anonymoususer", wildcard=True, caveat="is_not_geo_banned"),
    )
    assert str(readers.types[1]) == "anonymoususer:* with is_not_geo_banned"
    ns_parent = schema.relation("namespace", "parent")
    assert ns_parent is not None
    assert ns_parent.types == (SubjectType("namespace"), SubjectType("organization"))
    can_admin = schema.relation("namespace", "can_admin")
    assert can_admin is not None
    assert can_admin.rewrite == Union((c("admin"), Arrow("parent", "can_admin")))
    admin = schema.relation("organization", "admin")
    assert admin is not None and admin.types[1] == SubjectType("team", "member")


def test_all_operators_with_caveats() -> None:
    schema = load_schema(DATA / "allopscaveat.zed")
    assert schema.conditions == ("some_caveat", "another_caveat", "third_caveat")
    has = schema.relation("document", "has_permission")
    assert has is not None
    assert has.rewrite == Exclusion(Intersection((c("reader"), c("writer"))), c("banned"))
    reader = schema.relation("document", "reader")
    assert reader is not None
    assert reader.types == (SubjectType("user"), SubjectType("user", caveat="some_caveat"))


def test_any_and_all_arrows() -> None:
    schema = load_schema(DATA / "intersectionarrow.zed")
    by_all = schema.relation("resource", "view_by_all")
    by_any = schema.relation("resource", "view_by_any")
    assert by_all is not None and by_any is not None
    assert by_all.rewrite == Arrow("team", "member", all=True)
    assert by_any.rewrite == Arrow("team", "member")  # .any() is the plain arrow


def test_caveat_and_expiration() -> None:
    schema = load_schema(DATA / "expirationwithcaveat.zed")
    viewer = schema.relation("document", "viewer")
    assert viewer is not None
    assert viewer.types == (SubjectType("user", caveat="somecaveat", expiration=True),)
    assert str(viewer.types[0]) == "user with somecaveat and expiration"
    alone = parse_spicedb(
        "use expiration\ndefinition user {}\ndefinition doc {\n"
        "  relation vvv: user with expiration\n}\n"
    )
    rel = alone.relation("doc", "vvv")
    assert rel is not None and rel.types == (SubjectType("user", expiration=True),)


def test_tenant_prefixes_and_prefixed_caveats() -> None:
    schema = load_schema(DATA / "multipleslashes.zed")
    assert "org/identity_team/group" in schema.types
    assert schema.conditions == ("foo/bar/only_on_tuesday",)
    viewer = schema.relation("org/docs_team/resource", "viewer")
    assert viewer is not None
    assert viewer.types == (
        SubjectType("org/identity_team/group", "member"),
        SubjectType("org/identity_team/group", "member", caveat="foo/bar/only_on_tuesday"),
    )


def test_nil() -> None:
    schema = load_schema(DATA / "nil.zed")
    view = schema.relation("test/resource", "view")
    empty = schema.relation("test/resource", "empty")
    assert view is not None and empty is not None
    assert view.rewrite == Union((c("viewer"), Nil()))
    assert empty.rewrite == Nil()


def test_parentheses_and_flattening_of_multipleops() -> None:
    schema = load_schema(DATA / "multipleops.zed")
    third_minus_banned = Exclusion(c("third"), c("banned"))
    computed = schema.relation("resource", "computed")
    assert computed is not None
    assert computed.rewrite == Intersection(
        (
            Union((c("first"), c("second"), third_minus_banned)),
            c("must_be_here"),
            c("also_must_be_here"),
        )
    )
    # an intersection inside parentheses joins the outer one, as SpiceDB compiles it
    computed3 = schema.relation("resource", "computed3")
    computed2 = schema.relation("resource", "computed2")
    assert computed3 is not None and computed2 is not None
    assert computed3.rewrite == computed2.rewrite


def test_arrows_mixed_with_operators() -> None:
    schema = load_schema(DATA / "linuxfoundation.zed")
    renegade = schema.relation("linux/event", "renegadespeaker")
    invited = schema.relation("linux/event", "invited")
    assert renegade is not None and invited is not None
    assert renegade.rewrite == Intersection(
        (Arrow("relatedevent", "positivelyratedspeaker"), Arrow("blacklist", "member"))
    )
    assert invited.rewrite == Exclusion(
        Union((c("invitee"), Arrow("relatedevent", "speaker"))), Arrow("blacklist", "member")
    )


def test_partials_are_spliced() -> None:
    schema = load_schema(DATA / "partials.zed")
    resource = schema.types["resource"]
    assert list(resource.relations) == ["user", "view"]
    assert resource.relations["view"].rewrite == c("user")
    nested = parse_spicedb(
        "use partial\npartial inner {\n  relation viewer: user\n}\n"
        "partial outer {\n  ...inner\n  permission view = viewer\n}\n"
        "definition user {}\ndefinition doc {\n  ...outer\n  relation owner: user\n}\n"
    )
    assert list(nested.types["doc"].relations) == ["viewer", "view", "owner"]


# -- precedence -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("aaa + bbb + ccc", Union((c("aaa"), c("bbb"), c("ccc")))),
        ("aaa + (bbb + ccc)", Union((c("aaa"), c("bbb"), c("ccc")))),
        ("aaa - bbb - ccc", Exclusion(Exclusion(c("aaa"), c("bbb")), c("ccc"))),
        ("aaa - (bbb - ccc)", Exclusion(c("aaa"), Exclusion(c("bbb"), c("ccc")))),
        ("aaa & bbb & ccc", Intersection((c("aaa"), c("bbb"), c("ccc")))),
        # '-' binds loosest, then '&', then '+': as SpiceDB's grammar has it
        ("aaa + bbb - ccc", Exclusion(Union((c("aaa"), c("bbb"))), c("ccc"))),
        ("aaa - bbb + ccc", Exclusion(c("aaa"), Union((c("bbb"), c("ccc"))))),
        ("aaa + bbb & ccc", Intersection((Union((c("aaa"), c("bbb"))), c("ccc")))),
        ("aaa & bbb + ccc", Intersection((c("aaa"), Union((c("bbb"), c("ccc")))))),
        ("aaa - bbb & ccc", Exclusion(c("aaa"), Intersection((c("bbb"), c("ccc"))))),
        ("aaa & bbb - ccc", Exclusion(Intersection((c("aaa"), c("bbb"))), c("ccc"))),
        ("(aaa - bbb) + ccc", Union((Exclusion(c("aaa"), c("bbb")), c("ccc")))),
        ("((aaa))", c("aaa")),
        ("parent->aaa + bbb", Union((Arrow("parent", "aaa"), c("bbb")))),
        (
            "parent.all(aaa) & parent.any(bbb)",
            Intersection((Arrow("parent", "aaa", all=True), Arrow("parent", "bbb"))),
        ),
        ("aaa +\n        bbb", Union((c("aaa"), c("bbb")))),  # an operator carries on
        ("nil - aaa", Exclusion(Nil(), c("aaa"))),
    ],
)
def test_precedence(text: str, tree: Rewrite) -> None:
    assert perm(text) == tree


def test_positions_are_kept_but_not_compared() -> None:
    rewrite = perm("aaa + parent->bbb")
    assert isinstance(rewrite, Union)
    first, arrow = rewrite.children
    assert (first.line, first.column) == (12, 22)
    assert (arrow.line, arrow.column) == (12, 28)
    assert rewrite == Union((Computed("aaa", 1, 1), Arrow("parent", "bbb")))


def test_comments_semicolons_and_type_annotations() -> None:
    schema = parse_spicedb(
        "/** a user */\ndefinition user {}  // trailing\n/* block\n comment */\n"
        "definition doc { relation viewer: user; relation owner: user;\n"
        "  /** doc comment */ permission view: user = viewer + owner\n}\n"
    )
    assert list(schema.types["doc"].relations) == ["viewer", "owner", "view"]
    empty = parse_spicedb("// nothing but a comment\n")
    assert empty == Schema({}, (), "spicedb")


def test_the_error_is_an_invalid_config() -> None:
    assert issubclass(InvalidSchema, InvalidConfig) and issubclass(InvalidSchema, ValueError)


# -- every error ------------------------------------------------------------------------

USER = "definition user {}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # tokens
        ("definition user {} $", "1:20: unexpected character '$'"),
        ("/* never closed\ndefinition user {}", "1:1: unterminated comment: '/*' has no '*/'"),
        ("caveat cav(a string) { a == 'x }", "1:29: unterminated string: ' is not closed"),
        # structure
        (
            "definitio user {}",
            "1:1: expected 'definition', 'caveat' or 'use' at the top level, found 'definitio'",
        ),
        ("definition user {", "1:18: expected '}' to close definition 'user', found the end"),
        ("definition user", "1:16: expected '{' to open definition 'user', found the end"),
        (
            USER + "definition doc { relation viewer: user }",
            "2:40: expected a new line or ';' after relation 'viewer', found '}'",
        ),
        (
            USER + "definition doc {\n  relation viewer user\n}",
            "3:19: expected ':' after the relation name 'viewer', found 'user'",
        ),
        (
            USER + "definition doc {\n  relation viewer: \n}",
            "4:1: expected a subject type in relation 'viewer', found '}'",
        ),
        (
            USER + "definition doc {\n  foo bar\n}",
            "3:3: expected 'relation', 'permission' or '}' in definition 'doc', found 'foo'",
        ),
        (
            USER + "definition doc {\n  relation viewer: user\n  permission view + viewer\n}",
            "4:19: expected '=' after the permission name 'view', found '+'",
        ),
        (
            USER + "definition doc {\n  relation viewer: user\n  permission view = \n}",
            "5:1: expected a relation name, an arrow, 'nil' or '(' in 'view', found '}'",
        ),
        (
            USER + "definition doc {\n  relation viewer: user\n  permission view = viewer +\n}",
            "5:1: expected a relation name, an arrow, 'nil' or '(' in 'view', found '}'",
        ),
        (
            USER + "definition doc {\n  relation viewer: user\n  permission view = viewer\n"
            "    + viewer\n}",
            "5:5: expected 'relation', 'permission' or '}' in definition 'doc', found '+' (an "
            "expression goes on to the next line only after an operator)",
        ),
        (
            USER + "definition doc {\n  relation viewer: user\n  permission view = (viewer\n}",
            "4:28: expected ')' to close the '(', found the end of the line",
        ),
        (
            USER
            + "definition doc {\n  relation viewer: user\n  permission view = viewer viewer\n}",
            "4:28: expected '+', '&', '-' or the end of permission 'view', found 'viewer'",
        ),
        (
            USER + "definition doc {\n  relation viewer: user:\n}",
            "4:1: expected '*' after 'user:', found '}'",
        ),
        (
            USER + "definition doc {\n  relation relation: user\n}",
            "3:12: expected a name after 'relation', found 'relation' (the keyword 'relation' "
            "is no name)",
        ),
        # arrows
        (
            USER + "definition doc {\n  relation parent: doc\n  permission view = parent->\n}",
            "5:1: expected a relation name after '->', found '}'",
        ),
        (
            USER
            + "definition doc {\n  relation parent: doc\n  permission view = parent.foo(view)\n}",
            "4:28: expected 'any' or 'all' after '.', found 'foo'",
        ),
        (
            USER + "definition doc {\n  relation parent: doc\n"
            "  permission view = parent->parent->view\n}",
            "4:35: nested arrows (a->b->c) are not supported",
        ),
        (
            USER
            + "definition doc {\n  relation parent: doc\n  permission view = (parent)->view\n}",
            "4:29: an arrow's left side must be a relation name, not an expression",
        ),
        # names
        ("definition Doc {}", "1:12: type name 'Doc' is not valid"),
        ("definition do {}", "1:12: type name 'do' is not valid"),
        ("definition doc_ {}", "1:12: type name 'doc_' is not valid"),
        ("definition acme/x {}", "1:12: type name 'acme/x' is not valid"),
        (
            USER + "definition doc {\n  relation vi: user\n}",
            "3:12: relation name 'vi' is not valid",
        ),
        (
            USER + "definition doc {\n  relation " + "v" * 65 + ": user\n}",
            "3:12: relation name 'vvvv",
        ),
        (
            USER + "definition doc {\n  permission Viewer = nil\n}",
            "3:14: permission name 'Viewer' is not valid",
        ),
        # duplicates
        (USER + "definition user {}", "2:12: 'user' is defined twice (first on line 1)"),
        (USER + "caveat user(a int) { a }", "2:8: 'user' is defined twice (first on line 1)"),
        (
            USER + "definition doc {\n  relation owner: user\n  permission owner = nil\n}",
            "4:3: 'owner' is defined twice in 'doc' (first on line 3)",
        ),
        (
            USER + "definition doc {\n  relation owner: user | user\n}",
            "3:26: relation 'owner' of 'doc': 'user' is listed twice",
        ),
        ("caveat cav(a int, a int) { a }", "1:19: parameter 'a' of caveat 'cav' is repeated"),
        # caveats
        ("caveat cav() { true }", "1:12: expected a parameter name in caveat 'cav', found ')'"),
        ("caveat cav(a int) { }", "1:21: caveat 'cav' has an empty expression"),
        ("caveat cav(a integer) { a }", "1:14: unknown parameter type 'integer' in caveat 'cav'"),
        ("caveat cav(a list<foo>) { a }", "1:19: unknown parameter type 'foo' in caveat 'cav'"),
        (
            "caveat cav(a map) { a }",
            "1:14: the type 'map' in caveat 'cav' takes one type argument (map<string>, say), "
            "not 0",
        ),
        (
            "caveat cav(a list<int, int>) { a }",
            "takes one type argument (list<string>, say), not 2",
        ),
        ("caveat cav(a int) { a == {1: 2}", "1:32: expected '}' to close caveat 'cav', found"),
        ("caveat cav(a map<int) { a }", "1:21: expected '>' to close the type parameters"),
        # references
        (
            "definition doc {\n  relation owner: usr\n}",
            "2:19: relation 'owner' of 'doc': subject type 'usr' is not defined",
        ),
        (
            USER + "definition doc {\n  relation owner: doc#nope\n}",
            "3:19: relation 'owner' of 'doc': 'doc' has no relation 'nope' (in 'doc#nope')",
        ),
        (
            USER + "definition doc {\n  relation owner: user with cav\n}",
            "3:19: relation 'owner' of 'doc': no caveat named 'cav' is defined",
        ),
        (
            USER + "definition doc {\n  relation owner: user with expiration\n}",
            "no caveat named 'expiration' is defined ('use expiration' at the top of the schema",
        ),
        (
            USER + "caveat cav(a int) { a }\ndefinition doc {\n"
            "  relation owner: user with cav and expiration\n}",
            "4:33: expected a new line or ';' after relation 'owner', found 'and' ('with CAVEAT "
            "and expiration' needs 'use expiration' at the top)",
        ),
        (
            "use expiration\n" + USER + "caveat cav(a int) { a }\ndefinition doc {\n"
            "  relation owner: user with expiration and cav\n}",
            "5:40: the caveat must come before expiration",
        ),
        (
            USER + "definition doc {\n  relation owner: user\n  permission view = viewer\n}",
            "4:21: permission 'view' of 'doc': 'viewer' is not defined on 'doc'",
        ),
        (
            USER + "definition doc {\n  relation owner: user\n  permission view = parent->view\n}",
            "4:21: permission 'view' of 'doc': the arrow 'parent->view' starts from 'parent', which"
            " 'doc' does not define",
        ),
        (
            USER + "definition doc {\n  relation owner: user\n  permission edit = owner\n"
            "  permission view = edit->view\n}",
            "5:21: permission 'view' of 'doc': the left side of an arrow must be a relation, and "
            "'edit' is a permission",
        ),
        (
            USER + "definition doc {\n  relation parent: doc | doc:*\n"
            "  permission view = parent->view\n}",
            "4:21: permission 'view' of 'doc': the left side of the arrow 'parent->view' allows the"
            " wildcard 'doc:*' (through 'doc#parent')",
        ),
        (
            USER + "definition group {\n  relation member: user | user:*\n}\n"
            "definition doc {\n  relation viewer: group#member\n}",
            "6:20: relation 'viewer' of 'doc': 'group#member' includes the wildcard 'user:*' "
            "through 'group#member'",
        ),
        (
            USER + "definition doc {\n  permission aaa = bbb\n  permission bbb = aaa\n}",
            "3:3: 'aaa' -> 'bbb' -> 'aaa' of 'doc' are aliases of each other in a cycle",
        ),
        # flags and what Leopard refuses
        (
            "use something\n",
            "1:5: unknown flag 'something' after 'use'; SpiceDB knows expiration,"
            " import, partial, self, typechecking",
        ),
        (USER + "use expiration\n", "2:1: 'use' must come before any definition or caveat"),
        ('use import\nimport "other.zed"\n', "2:1: imports are not supported"),
        ('import "other.zed"\n', "1:1: imports are not supported"),
        ("partial p {}\n", "1:1: 'partial' needs 'use partial' at the top of the schema"),
        ("use partial\ndefinition doc {\n  ...nope\n}", "3:6: no partial named 'nope'"),
        (
            "use partial\npartial aaa {\n  ...bbb\n}\npartial bbb {\n  ...aaa\n}\n"
            "definition doc {\n  ...aaa\n}",
            "partials refer to each other in a cycle: aaa -> bbb -> aaa",
        ),
        ("use partial\npartial aaa {}\npartial aaa {}", "3:9: partial 'aaa' is defined twice"),
    ],
)
def test_errors(text: str, expected: str) -> None:
    msg = error(text)
    assert expected in msg, msg


def test_a_self_expression_without_the_flag_is_a_relation_name() -> None:
    msg = error(USER + "definition doc {\n  permission view = self\n}")
    assert "'self' is not defined on 'doc'" in msg


SELF = """use self
definition user {
    permission itself = self
}
definition group {
    relation member: user | group#member
    permission view = member + self
}
definition doc {
    relation viewer: user | group#member
    permission view = viewer
}
"""


def test_self_is_parsed_printed_and_named_as_not_indexed() -> None:
    """``use self`` (SpiceDB 1.54): the permissions using ``self`` are not indexed and
    say why; the rest of the schema is (the whole schema was refused)."""
    schema = parse_spicedb(SELF)
    me = schema.relation("user", "itself")
    assert me is not None and isinstance(me.rewrite, Self)
    printed = format_spicedb(schema)
    assert printed.startswith("use self\n") and "permission view = member + self" in printed
    assert format_spicedb(parse_spicedb(printed)) == printed
    with pytest.raises(InvalidSchema, match="'itself' has self, which OpenFGA's DSL cannot"):
        format_openfga_dsl(schema)
    plan = compile_schema(schema)
    why = "uses self (the object as its own subject): not indexed"
    assert plan.refused[("user", "itself")] == why
    assert plan.refused[("group", "view")] == why
    assert ("doc", "view") in plan.sets and ("group", "member") in plan.sets


def test_the_error_names_the_file() -> None:
    assert error("definition Doc {}", "acme/schema.zed").startswith("acme/schema.zed:1:12: ")


def test_every_caveat_parameter_type_of_spicedb_is_read() -> None:
    params = "a any, b bool, c bytes, d double, e duration, f int, g ipaddress, h list<int>, "
    params += "i map<list<string>>, j string, k timestamp, l uint"
    schema = parse_spicedb(f"caveat cav({params}) {{ b }}\n" + USER)
    (cond,) = schema.condition_defs
    assert [t for _, t in cond.parameters][7:9] == ["list<int>", "map<list<string>>"]
    assert len(cond.parameters) == 12
