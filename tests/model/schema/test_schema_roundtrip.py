"""Printing and parsing again: random schemas, and the peers' examples.

Hypothesis draws valid schemas as ASTs (types, relations with allowed subject types,
caveats or conditions, rewrites of every operator the dialect has), prints them with
``format_spicedb`` / ``format_openfga_dsl`` and parses the text back: the result must
equal the AST drawn. SpiceDB's ASTs are drawn flattened (no union directly in a union),
as SpiceDB compiles them; OpenFGA's keep any nesting, with the direct types only first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from leopard.errors import InvalidSchema
from leopard.model.schema import (
    Arrow,
    Computed,
    Condition,
    Exclusion,
    Intersection,
    Nil,
    Relation,
    Rewrite,
    Schema,
    SubjectType,
    This,
    TypeDef,
    Union,
    format_openfga_dsl,
    format_spicedb,
    load_schema,
    parse_openfga_dsl,
    parse_spicedb,
    to_openfga_json,
)
from leopard.model.schema.checks import check_schema

DATA = Path(__file__).parent / "data"

KEYWORDS = {
    "and", "all", "any", "but", "caveat", "condition", "define", "definition", "expiration",
    "extend", "false", "from", "import", "model", "module", "nil", "not", "null", "partial",
    "permission", "relation", "relations", "schema", "self", "this", "true", "type",
    "typechecking", "use", "with",
}  # fmt: skip
NAMES = st.from_regex(r"[a-z][a-z0-9_]{1,6}[a-z0-9]", fullmatch=True).filter(
    lambda n: n not in KEYWORDS
)
TYPE_NAMES = st.one_of(NAMES, st.builds(lambda a, b: f"{a}/{b}", NAMES, NAMES))


@st.composite
def skeletons(draw: st.DrawFn) -> tuple[list[str], dict[str, list[tuple[str, str]]], list[str]]:
    """Type names, each type's relations as ``(name, kind)``, and condition names."""
    names = draw(st.lists(TYPE_NAMES, min_size=1, max_size=4, unique=True))
    conditions = draw(st.lists(NAMES.filter(lambda n: n not in names), max_size=2, unique=True))
    rels = {}
    for name in names:
        rel_names = draw(st.lists(NAMES, max_size=5, unique=True))
        rels[name] = [(r, draw(st.sampled_from(["relation", "permission"]))) for r in rel_names]
    return names, rels, conditions


def subjects(
    draw: st.DrawFn,
    names: list[str],
    rels: dict[str, list[tuple[str, str]]],
    conditions: list[str],
    *,
    expiration: bool,
) -> tuple[SubjectType, ...]:
    out = []
    for _ in range(draw(st.integers(1, 3))):
        type_name = draw(st.sampled_from(names))
        shape = draw(st.sampled_from(["plain", "wildcard", "userset"]))
        relation = None
        if shape == "userset" and rels[type_name]:
            relation = draw(st.sampled_from(rels[type_name]))[0]
        caveat = draw(st.sampled_from([None, *conditions]))
        out.append(
            SubjectType(
                type_name,
                relation,
                shape == "wildcard",
                caveat,
                expiration and draw(st.booleans()),
            )
        )
    return tuple(dict.fromkeys(out))


def conditions_of(names: list[str], sort: bool) -> tuple[Condition, ...]:
    out = [
        Condition(n, (("amount", "int"), ("names", "list<string>")), "amount < 10") for n in names
    ]
    return tuple(sorted(out, key=lambda c: c.name) if sort else out)


# -- SpiceDB ----------------------------------------------------------------------------


@st.composite
def spicedb_schemas(draw: st.DrawFn) -> Schema:
    names, rels, conditions = draw(skeletons())
    types = {}
    for type_name in names:
        relations: dict[str, Relation] = {}
        for index, (rel_name, kind) in enumerate(rels[type_name]):
            if kind == "relation":
                types_ = subjects(draw, names, rels, conditions, expiration=True)
                relations[rel_name] = Relation(rel_name, "relation", types_, This())
                continue
            earlier = [r for r, _ in rels[type_name][:index]]
            stored = [r for r, k in rels[type_name] if k == "relation"]
            rewrite = draw(_zed_rewrite(earlier, stored, 3))
            relations[rel_name] = Relation(rel_name, "permission", (), rewrite)
        types[type_name] = TypeDef(type_name, relations)
    schema = Schema(
        types, tuple(conditions), "spicedb", condition_defs=conditions_of(conditions, False)
    )
    try:
        check_schema(schema)
    except InvalidSchema:  # a wildcard through a relation, or on an arrow's left
        assume(False)
    return schema


def _zed_rewrite(earlier: list[str], stored: list[str], depth: int) -> st.SearchStrategy[Rewrite]:
    """A permission's rewrite, flattened: no union right in a union, nor intersection in one."""
    leaves: list[st.SearchStrategy[Rewrite]] = [st.just(Nil())]
    if earlier:
        leaves.append(st.builds(Computed, st.sampled_from(earlier)))
    if stored:
        leaves.append(st.builds(Arrow, st.sampled_from(stored), NAMES, st.booleans()))
    leaf = st.one_of(leaves)

    def union(d: int) -> st.SearchStrategy[Rewrite]:
        child = st.one_of(leaf, *((inter(d - 1), excl(d - 1)) if d > 1 else ()))
        return st.lists(child, min_size=2, max_size=3).map(lambda cs: Union(tuple(cs)))

    def inter(d: int) -> st.SearchStrategy[Rewrite]:
        child = st.one_of(leaf, *((union(d - 1), excl(d - 1)) if d > 1 else ()))
        return st.lists(child, min_size=2, max_size=3).map(lambda cs: Intersection(tuple(cs)))

    def excl(d: int) -> st.SearchStrategy[Rewrite]:
        return st.builds(Exclusion, any_(d - 1), any_(d - 1))

    def any_(d: int) -> st.SearchStrategy[Rewrite]:
        return leaf if d == 0 else st.one_of(leaf, union(d), inter(d), excl(d))

    return any_(depth)


@settings(max_examples=150, deadline=None)
@given(spicedb_schemas())
def test_spicedb_printed_and_parsed_again(schema: Schema) -> None:
    text = format_spicedb(schema)
    parsed = parse_spicedb(text, "printed.zed")
    assert parsed == schema, text
    assert parsed.condition_defs == schema.condition_defs


# -- OpenFGA ----------------------------------------------------------------------------


@st.composite
def openfga_schemas(draw: st.DrawFn) -> Schema:
    names, rels, conditions = draw(skeletons())
    conditions.sort()
    types = {}
    plain: dict[tuple[str, str], tuple[SubjectType, ...]] = {}
    for type_name in names:
        for rel_name, kind in rels[type_name]:
            if kind == "relation" and draw(st.booleans()):  # a possible tupleset
                chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
                plain[(type_name, rel_name)] = tuple(SubjectType(t) for t in chosen)
    for type_name in names:
        relations: dict[str, Relation] = {}
        for index, (rel_name, kind) in enumerate(rels[type_name]):
            if (type_name, rel_name) in plain:
                types_ = plain[(type_name, rel_name)]
                relations[rel_name] = Relation(rel_name, "relation", types_, This())
                continue
            earlier = [r for r, _ in rels[type_name][:index]]
            arrows = [
                Arrow(t, r)
                for (owner, t), allowed in plain.items()
                if owner == type_name
                for s in allowed
                for r, _ in rels[s.type]
            ]
            direct = kind == "relation"  # this one holds tuples, maybe with a rewrite
            rewrite = draw(_dsl_rewrite(earlier, arrows, 2, direct))
            has_this = any(isinstance(n, This) for n in _nodes(rewrite))
            types_ = subjects(draw, names, rels, conditions, expiration=False) if has_this else ()
            kind_ = "relation" if isinstance(rewrite, This) else "permission"
            relations[rel_name] = Relation(rel_name, kind_, types_, rewrite)
        types[type_name] = TypeDef(type_name, relations)
    schema = Schema(
        types,
        tuple(conditions),
        "openfga",
        condition_defs=conditions_of(conditions, True),
        schema_version="1.1",
    )
    try:
        check_schema(schema)
    except InvalidSchema:  # no entrypoint, a userset of a tupleset, ...
        assume(False)
    return schema


def _nodes(rewrite: Rewrite) -> list[Rewrite]:
    if isinstance(rewrite, (Union, Intersection)):
        return [rewrite, *(n for c in rewrite.children for n in _nodes(c))]
    if isinstance(rewrite, Exclusion):
        return [rewrite, *_nodes(rewrite.base), *_nodes(rewrite.subtract)]
    return [rewrite]


def _dsl_rewrite(
    earlier: list[str], arrows: list[Arrow], depth: int, direct: bool
) -> st.SearchStrategy[Rewrite]:
    """What OpenFGA's DSL can write: direct types only as the first item."""
    leaves: list[st.SearchStrategy[Rewrite]] = []
    if direct:
        leaves.append(st.just(This()))
    if earlier:
        leaves.append(st.builds(Computed, st.sampled_from(earlier)))
    if arrows:
        leaves.append(st.sampled_from(arrows))
    if not leaves:
        return st.just(This())  # a relation with nothing before it: hold tuples
    leaf = st.one_of(leaves)
    if depth == 0 or not (earlier or arrows):
        return leaf
    first = _dsl_rewrite(earlier, arrows, depth - 1, direct)
    rest = _dsl_rewrite(earlier, arrows, depth - 1, False)

    def chain(op: type[Union] | type[Intersection]) -> st.SearchStrategy[Rewrite]:
        return st.builds(
            lambda a, more: op((a, *more)), first, st.lists(rest, min_size=1, max_size=2)
        )

    return st.one_of(leaf, chain(Union), chain(Intersection), st.builds(Exclusion, first, rest))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(openfga_schemas())
def test_openfga_printed_and_parsed_again(schema: Schema) -> None:
    text = format_openfga_dsl(schema)
    parsed = parse_openfga_dsl(text, "printed.fga")
    assert parsed == schema, text
    assert parsed.condition_defs == schema.condition_defs
    assert to_openfga_json(parsed) == to_openfga_json(schema)


# -- the examples -----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(DATA.glob("*.zed")), ids=lambda p: p.name)
def test_spicedb_examples_printed_and_parsed_again(path: Path) -> None:
    schema = load_schema(path)
    again = parse_spicedb(format_spicedb(schema))
    assert again == schema and again.condition_defs == schema.condition_defs


@pytest.mark.parametrize(
    "path",
    sorted(DATA.glob("*.fga")),
    ids=lambda p: p.name,
)
def test_openfga_examples_printed_and_parsed_again(path: Path) -> None:
    schema = load_schema(path)
    again = parse_openfga_dsl(format_openfga_dsl(schema))
    assert again == schema and again.condition_defs == schema.condition_defs


def test_what_a_printer_cannot_write() -> None:
    def one(rel: Relation, dialect: str) -> Schema:
        return Schema({"doc": TypeDef("doc", {rel.name: rel})}, (), dialect)  # type: ignore[arg-type]

    own = Relation("view", "permission", (SubjectType("doc"),), Union((This(), Computed("v"))))
    with pytest.raises(InvalidSchema, match="reads its own tuples"):
        format_spicedb(one(own, "spicedb"))
    bare = Relation("view", "relation", (), This())
    with pytest.raises(InvalidSchema, match="must be its own tuples with types"):
        format_spicedb(one(bare, "spicedb"))
    late = Relation("view", "permission", (SubjectType("doc"),), Union((Computed("v"), This())))
    with pytest.raises(InvalidSchema, match="direct types .* not its first item"):
        format_openfga_dsl(one(late, "openfga"))
    for rewrite, what in ((Nil(), "nil"), (Arrow("p", "v", all=True), "all subjects")):
        with pytest.raises(InvalidSchema, match=what):
            format_openfga_dsl(one(Relation("view", "permission", (), rewrite), "openfga"))
    expiring = Relation("view", "relation", (SubjectType("doc", expiration=True),), This())
    with pytest.raises(InvalidSchema, match="expiring subjects"):
        format_openfga_dsl(one(expiring, "openfga"))


@pytest.mark.parametrize(("name", "prints"), [("c", True), ("Cond", True), ("c1", True),
                                              ("x" * 70, True), ("c-d", False)])  # fmt: skip
def test_an_openfga_condition_in_spicedbs_language_takes_spicedbs_caveat_names(
    name: str, prints: bool
) -> None:
    """A caveat's name follows a wider rule than a definition's (SpiceDB 1.54 takes
    ``c`` and ``Cond``); one it cannot read (``c-d``) is refused."""
    model = parse_openfga_dsl(
        "model\n  schema 1.1\ntype user\ntype doc\n  relations\n"
        f"    define viewer: [user with {name}]\ncondition {name}(x: int) {{\n  x < 5\n}}\n"
    )
    if prints:
        assert parse_spicedb(format_spicedb(model)).conditions == (name,)
    else:
        with pytest.raises(InvalidSchema, match="SpiceDB would refuse it"):
            format_spicedb(model)
