"""Printing a schema as SpiceDB's language or OpenFGA's DSL.

Each printer writes what its parser reads back to an equal ``Schema``:
``parse_spicedb(format_spicedb(s)) == s`` for a SpiceDB schema and
``parse_openfga_dsl(format_openfga_dsl(s)) == s`` for an OpenFGA one. A compound
operand is always parenthesised (SpiceDB forgets the parentheses of ``(a + b) & c``
when it compiles, OpenFGA needs them to mix operators). What a dialect cannot write
raises InvalidSchema: in SpiceDB a permission reading its own tuples, in the OpenFGA
DSL ``nil``, ``.all()`` arrows, expiration, and direct types anywhere but first.
"""

from __future__ import annotations

from leopard.errors import InvalidSchema
from leopard.model.schema.ast import (
    Arrow,
    Computed,
    Condition,
    Exclusion,
    Intersection,
    Nil,
    Relation,
    Rewrite,
    Schema,
    Self,
    SubjectType,
    This,
    Union,
    walk,
)
from leopard.model.schema.spicedb import RELATION_RE, TYPE_RE, parse_spicedb

__all__ = ["format_spicedb", "format_openfga_dsl"]


def format_spicedb(schema: Schema) -> str:
    """The schema in SpiceDB's language; InvalidSchema where SpiceDB would refuse it.

    A model of another dialect may use names or forms SpiceDB refuses (``can-read``,
    a wildcard through another definition's relation, a condition named as a type):
    its type and relation names are checked first (a caveat's name follows a wider
    rule, ``Cond`` and ``c`` are caveats), then the text is read back as SpiceDB's
    validation reads it, so that what is printed is a schema SpiceDB takes.
    """
    if schema.dialect != "spicedb":
        _spicedb_names(schema)
    text = _format_spicedb(schema)
    if schema.dialect != "spicedb":
        try:
            parse_spicedb(text, "the model in SpiceDB's language")
        except InvalidSchema as exc:
            raise InvalidSchema(f"{schema.filename}: SpiceDB would refuse it: {exc}") from None
    return text


def _spicedb_names(schema: Schema) -> None:
    def refuse(what: str, name: str) -> InvalidSchema:
        return InvalidSchema(f"{schema.filename}: SpiceDB does not take the {what} name {name!r}")

    for typedef in schema.types.values():
        if not TYPE_RE.fullmatch(typedef.name) or len(typedef.name.encode()) > 128:
            raise refuse("type", typedef.name)
        for rel in typedef.relations.values():
            if not RELATION_RE.fullmatch(rel.name):
                raise refuse("relation", rel.name)


def _format_spicedb(schema: Schema) -> str:
    parts: list[str] = []
    if any(
        s.expiration for t in schema.types.values() for r in t.relations.values() for s in r.types
    ):
        parts.append("use expiration\n")
    if any(
        isinstance(node, Self)
        for t in schema.types.values()
        for r in t.relations.values()
        for node in walk(r.rewrite)
    ):
        parts.append("use self\n")
    for cond in schema.condition_defs:
        params = ", ".join(f"{name} {type_}" for name, type_ in cond.parameters)
        parts.append(f"caveat {cond.name}({params}) {{\n  {cond.expression}\n}}\n")
    for typedef in schema.types.values():
        lines = [f"definition {typedef.name} {{"]
        for rel in typedef.relations.values():
            lines.append("    " + _spicedb_member(schema, rel))
        lines.append("}\n")
        parts.append("\n".join(lines) if typedef.relations else f"definition {typedef.name} {{}}\n")
    return "\n".join(parts)


def _spicedb_member(schema: Schema, rel: Relation) -> str:
    if rel.kind == "relation":
        if not isinstance(rel.rewrite, This) or not rel.types:
            raise InvalidSchema(
                f"{schema.filename}: relation {rel.name!r} must be its own tuples with types"
            )
        return f"relation {rel.name}: " + " | ".join(str(s) for s in rel.types)
    return f"permission {rel.name} = {_zed(schema, rel, rel.rewrite)}"


def _zed(schema: Schema, rel: Relation, node: Rewrite) -> str:
    def operand(child: Rewrite) -> str:
        text = _zed(schema, rel, child)
        return f"({text})" if isinstance(child, (Union, Intersection, Exclusion)) else text

    if isinstance(node, Computed):
        return node.relation
    if isinstance(node, Arrow):
        return (
            f"{node.tupleset}.all({node.relation})"
            if node.all
            else (f"{node.tupleset}->{node.relation}")
        )
    if isinstance(node, Nil):
        return "nil"
    if isinstance(node, Self):
        return "self"
    if isinstance(node, (Union, Intersection)):
        op = " + " if isinstance(node, Union) else " & "
        return op.join(operand(c) for c in node.children)
    if isinstance(node, Exclusion):
        return f"{operand(node.base)} - {operand(node.subtract)}"
    raise InvalidSchema(
        f"{schema.filename}: permission {rel.name!r} reads its own tuples, which SpiceDB "
        "cannot write (split it into a relation and a permission)"
    )


def format_openfga_dsl(schema: Schema) -> str:
    """The schema in OpenFGA's DSL (schema 1.1 unless the schema says otherwise)."""
    lines = ["model", f"  schema {schema.schema_version or '1.1'}"]
    for typedef in schema.types.values():
        lines.append("")
        lines.append(f"type {typedef.name}")
        if typedef.relations:
            lines.append("  relations")
        for rel in typedef.relations.values():
            lines.append(f"    define {rel.name}: {_dsl(schema, rel, rel.rewrite, True)}")
    for cond in schema.condition_defs:
        lines.append("")
        lines.extend(_dsl_condition(cond))
    return "\n".join(lines) + "\n"


def _dsl_condition(cond: Condition) -> list[str]:
    params = ", ".join(f"{name}: {type_}" for name, type_ in cond.parameters)
    if cond.expression != cond.expression.rstrip(" \t"):
        # trailing blanks survive only before the '}' (OpenFGA trims the ends of lines)
        return [f"condition {cond.name}({params}) {{", f"  {cond.expression}}}"]
    return [f"condition {cond.name}({params}) {{", f"  {cond.expression}", "}"]


def _dsl(schema: Schema, rel: Relation, node: Rewrite, first: bool) -> str:
    def operand(child: Rewrite, child_first: bool) -> str:
        text = _dsl(schema, rel, child, child_first)
        return f"({text})" if isinstance(child, (Union, Intersection, Exclusion)) else text

    if isinstance(node, This):
        if not first:
            raise _no_dsl(schema, rel, "direct types '[...]' that are not its first item")
        return "[" + ", ".join(_dsl_subject(schema, rel, s) for s in rel.types) + "]"
    if isinstance(node, Computed):
        return node.relation
    if isinstance(node, Arrow):
        if node.all:
            raise _no_dsl(schema, rel, "an arrow over all subjects ('.all()')")
        return f"{node.relation} from {node.tupleset}"
    if isinstance(node, (Union, Intersection)):
        op = " or " if isinstance(node, Union) else " and "
        return op.join(operand(c, first and i == 0) for i, c in enumerate(node.children))
    if isinstance(node, Exclusion):
        return f"{operand(node.base, first)} but not {operand(node.subtract, False)}"
    raise _no_dsl(schema, rel, "self" if isinstance(node, Self) else "nil")


def _dsl_subject(schema: Schema, rel: Relation, subject: SubjectType) -> str:
    if subject.expiration:
        raise _no_dsl(schema, rel, "expiring subjects ('with expiration')")
    return str(subject)


def _no_dsl(schema: Schema, rel: Relation, what: str) -> InvalidSchema:
    return InvalidSchema(
        f"{schema.filename}: relation {rel.name!r} has {what}, which OpenFGA's DSL cannot write"
    )
