"""OpenFGA's modelling language, schema 1.1 (``.fga``): a hand-written parser.

The text is cleaned first as OpenFGA's own transformer cleans it: a line whose first
non-blank is ``#`` is blank, and anything from `` #`` (a blank, then ``#``) to the end
of a line is a comment (so ``group#member`` is no comment). Then, line by line::

    model
      schema 1.1
    type user
    type document
      relations
        define parent: [folder]
        define editor: [user, group#member, user:*, user with cond]
        define viewer: [user] or editor or viewer from parent
    condition cond(x: int, names: list<string>) {
      x < 100
    }

Types come first, then conditions. A relation's expression chains items with one
operator: ``or`` or ``and`` (any number of times) or ``but not`` (once); mixing them
needs parentheses, as in OpenFGA. An item is a relation name, ``name from
tupleset``, a parenthesised expression, or the direct types ``[...]``, which may only
be the first item (also inside parentheses that are themselves first). The direct
types may span lines; nothing else may. The result has the shape OpenFGA's
transformer gives (``to_openfga_json`` prints the same JSON), nesting included.

A type or relation name is one of the language's identifiers (a letter or '_', then
letters, digits, '_' and '-', with single '.', '/' or '-' between letters and digits:
``Asset-Category``, ``acme.doc``, ``tenant/folder``), within OpenFGA's limits
(``checks.openfga_name_problem``); modular models (``module``, ``extend type``) and
schema versions other than 1.1 and 1.2 are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from leopard.model.schema.ast import (
    MAX_NESTING,
    Arrow,
    Computed,
    Condition,
    Exclusion,
    Intersection,
    Kind,
    Relation,
    Rewrite,
    Schema,
    SubjectType,
    This,
    TypeDef,
    Union,
    fail,
)
from leopard.model.schema.checks import check_schema, openfga_name_problem
from leopard.model.schema.openfga_conditions import read_condition

__all__ = ["parse_openfga_dsl", "clean_lines", "RESERVED", "SCHEMA_VERSIONS"]

#: words of the language that cannot name a type or relation
RESERVED = frozenset(
    {"or", "and", "from", "with", "define", "relations", "condition", "in", "true", "false", "null"}
)
SCHEMA_VERSIONS = ("1.1", "1.2")

_MODULAR = "modular models ('module', 'extend type') are not supported: give the combined model"
_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_./-]*)|(?P<punct>[\[\](),:#*]))")
#: a type or relation name: the language's IDENTIFIER or EXTENDED_IDENTIFIER
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*|[A-Za-z_](?:[/.-]?[A-Za-z0-9_]+)*")


def clean_lines(text: str) -> list[str]:
    """The lines of ``text`` with comments removed as OpenFGA removes them."""
    out = []
    for line in text.split("\n"):
        line = line.rstrip("\r")
        stripped = line.lstrip(" \t")  # OpenFGA's grammar also skips tab-indented comments
        if not stripped or stripped.startswith("#"):
            out.append("")
        else:
            out.append(line.split(" #")[0].rstrip(" "))
    return out


@dataclass(frozen=True)
class _Tok:
    kind: str  # "name", a punctuation mark, or "end"
    value: str
    line: int
    column: int


def parse_openfga_dsl(text: str, filename: str = "<schema>") -> Schema:
    """Parse an OpenFGA 1.1 model; raise InvalidSchema naming the line and what is wrong."""
    return _Parser(text, filename).schema()


class _Parser:
    def __init__(self, text: str, filename: str) -> None:
        self.depth = 0  # parentheses open around the token read
        self.text = text
        self.filename = filename
        self.lines = clean_lines(text)
        self.clean = "\n".join(self.lines)
        self.toks: list[_Tok] = []
        self.pos = 0
        self.header_end = 0
        self.types: tuple[SubjectType, ...] = ()  # the direct types of the relation read
        self.type_name: str | None = None  # the type being read, and its relations
        self.relations: dict[str, Relation] = {}
        self.relations_tok: _Tok | None = None

    def error(self, line: int, column: int | None, message: str) -> Exception:
        return fail(self.filename, line, column, message)

    # -- lines ------------------------------------------------------------------

    def tokenize(self, index: int) -> int:
        """Tokenize line ``index`` (0-based), and the next ones while a '[' is open."""
        self.toks, self.pos = [], 0
        depth = 0
        while True:
            line = self.lines[index]
            at = 0
            while True:
                m = _TOKEN.match(line, at)
                if m is None:
                    rest = line[at:].lstrip()
                    if rest:
                        col = len(line) - len(rest) + 1
                        raise self.error(index + 1, col, f"unexpected character {rest[0]!r}")
                    break
                group = "name" if m.group("name") else "punct"
                kind = "name" if group == "name" else m.group(group)
                self.toks.append(_Tok(kind, m.group(group), index + 1, m.start(group) + 1))
                depth += {"[": 1, "]": -1}.get(kind, 0)
                at = m.end()
            if depth <= 0 or index + 1 >= len(self.lines):
                break
            index += 1
        end_col = len(self.lines[index]) + 1
        self.toks.append(_Tok("end", "", index + 1, end_col))
        return index

    @property
    def tok(self) -> _Tok:
        return self.toks[self.pos]

    def advance(self) -> _Tok:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def expected(self, what: str) -> Exception:
        tok = self.tok
        found = "the end of the line" if tok.kind == "end" else repr(tok.value)
        return self.error(tok.line, tok.column, f"expected {what}, found {found}")

    def expect(self, kind: str, what: str) -> _Tok:
        if self.tok.kind != kind:
            raise self.expected(what)
        return self.advance()

    def name(self, what: str) -> _Tok:
        if self.tok.kind != "name" or self.tok.value in RESERVED:
            raise self.expected(what)
        return self.advance()

    def is_word(self, *words: str) -> bool:
        return all(
            self.pos + i < len(self.toks)
            and self.toks[self.pos + i].kind == "name"
            and self.toks[self.pos + i].value == w
            for i, w in enumerate(words)
        )

    # -- the model --------------------------------------------------------------

    def schema(self) -> Schema:
        types: dict[str, TypeDef] = {}
        conditions: list[Condition] = []
        version: str | None = None
        index = 0
        while index < len(self.lines):
            line = self.lines[index]
            if not line.strip():
                index += 1
                continue
            if version is not None and re.match(r"[ \t]*condition[ \t(]", line):
                self.close_type()
                self.type_name = None
                index = self.condition(index, conditions)
                continue
            index = self.tokenize(index) + 1
            first = self.tok
            if version is None:
                version = self.header(first, index)
                index = self.header_end
            elif first.kind == "name" and first.value == "type":
                if conditions:
                    raise self.error(first.line, first.column, "types must come before conditions")
                self.close_type()
                self.advance()
                name = self.name("a type name after 'type'")
                self.end(f"type {name.value!r}")
                self.check_name(name, is_type=True)
                if name.value in types:
                    first_line = types[name.value].line
                    raise self.error(
                        name.line,
                        name.column,
                        f"type {name.value!r} is defined twice (first on line {first_line})",
                    )
                self.type_name, self.relations, self.relations_tok = name.value, {}, None
                types[name.value] = TypeDef(name.value, self.relations, name.line, name.column)
            elif self.is_word("relations"):
                if self.type_name is None or self.relations_tok is not None:
                    raise self.error(
                        first.line, first.column, "'relations' must follow 'type NAME'"
                    )
                self.relations_tok = self.advance()
                self.end("'relations'")
            elif self.is_word("define"):
                if self.type_name is None or self.relations_tok is None:
                    raise self.error(
                        first.line, first.column, "'define' must come under 'relations' of a type"
                    )
                rel = self.define()
                if rel.name in self.relations:
                    raise self.error(
                        first.line,
                        first.column,
                        f"relation {rel.name!r} is defined twice in {self.type_name!r} (first on "
                        f"line {self.relations[rel.name].line})",
                    )
                self.relations[rel.name] = rel
            elif self.is_word("extend") or self.is_word("module"):
                raise self.error(first.line, first.column, _MODULAR)
            else:
                raise self.expected("'type', 'relations', 'define' or 'condition'")
        if version is None:
            raise self.error(1, None, "expected 'model' and 'schema 1.1' at the top, found nothing")
        self.close_type()
        conditions.sort(key=lambda c: c.name)  # a map in OpenFGA's model, as in its JSON
        schema = Schema(
            types=types,
            conditions=tuple(c.name for c in conditions),
            dialect="openfga",
            source=self.text,
            filename=self.filename,
            condition_defs=tuple(conditions),
            schema_version=version,
        )
        check_schema(schema)
        return schema

    def close_type(self) -> None:
        """Refuse a type that opened 'relations' and defined none."""
        tok = self.relations_tok
        if tok is not None and not self.relations:
            raise self.error(
                tok.line, tok.column, f"type {self.type_name!r} has 'relations' but defines none"
            )
        self.relations_tok = None

    def header(self, first: _Tok, index: int) -> str:
        """Read ``model`` (tokenized) and the ``schema X.Y`` line at or after ``index``."""
        if first.kind == "name" and first.value == "module":
            raise self.error(first.line, first.column, _MODULAR)
        if not self.is_word("model"):
            raise self.expected("'model' at the top of the schema")
        self.advance()
        self.end("'model'")
        while index < len(self.lines) and not self.lines[index].strip():
            index += 1
        if index >= len(self.lines):
            raise self.error(first.line, None, "expected 'schema 1.1' after 'model'")
        line = self.lines[index]
        m = re.fullmatch(r"(\s*)schema[ \t]+(\S+)", line)
        if m is None:
            raise self.error(
                index + 1, len(line) - len(line.lstrip()) + 1, "expected 'schema 1.1' after 'model'"
            )
        if m.group(2) not in SCHEMA_VERSIONS:
            raise self.error(
                index + 1,
                m.start(2) + 1,
                f"schema {m.group(2)} is not supported: OpenFGA models are schema "
                f"{' or '.join(SCHEMA_VERSIONS)}",
            )
        self.header_end = index + 1
        return m.group(2)

    def end(self, what: str) -> None:
        if self.tok.kind != "end":
            raise self.expected(f"the end of the line after {what}")

    def check_name(self, tok: _Tok, *, is_type: bool) -> None:
        if not _NAME.fullmatch(tok.value):
            what = "type" if is_type else "relation"
            raise self.error(
                tok.line,
                tok.column,
                f"{what} name {tok.value!r} is not valid in OpenFGA's language: a letter or "
                "'_', then letters, digits, '_' and '-', with single '.', '/' or '-' between "
                "letters and digits",
            )
        problem = openfga_name_problem(tok.value, is_type=is_type)
        if problem:
            raise self.error(tok.line, tok.column, problem)

    # -- relations --------------------------------------------------------------

    def define(self) -> Relation:
        start = self.advance()
        name = self.name("a relation name after 'define'")
        self.check_name(name, is_type=False)
        self.expect(":", f"':' after the relation name {name.value!r}")
        self.types = ()
        rewrite = self.expression(direct=True)
        if self.tok.kind != "end":
            raise self.expected(f"'or', 'and', 'but not' or the end of relation {name.value!r}")
        kind: Kind = "relation" if isinstance(rewrite, This) else "permission"
        return Relation(name.value, kind, self.types, rewrite, start.line, start.column)

    def expression(self, *, direct: bool) -> Rewrite:
        first = self.tok
        items = [self.item(direct=direct)]
        operator = ""
        while True:
            tok = self.tok
            if self.is_word("but", "not"):
                op = "but not"
            elif self.is_word("or") or self.is_word("and"):
                op = tok.value
            else:
                break
            if operator == "but not":
                raise self.error(
                    tok.line,
                    tok.column,
                    "'but not' takes one operand: put what comes before it in parentheses",
                )
            if operator and op != operator:
                raise self.error(
                    tok.line,
                    tok.column,
                    f"{operator!r} and {op!r} cannot be mixed without parentheses",
                )
            operator = op
            self.pos += 2 if op == "but not" else 1
            items.append(self.item(direct=False))
        if len(items) == 1:
            return items[0]
        at = (first.line, first.column)
        if operator == "or":
            return Union(tuple(items), *at)
        if operator == "and":
            return Intersection(tuple(items), *at)
        return Exclusion(items[0], items[1], *at)

    def item(self, *, direct: bool) -> Rewrite:
        tok = self.tok
        if tok.kind == "[":
            if not direct:
                raise self.error(
                    tok.line,
                    tok.column,
                    "the direct types '[...]' must come first in a relation's definition",
                )
            self.advance()
            self.types = self.restrictions()
            return This(tok.line, tok.column)
        if tok.kind == "(":
            self.advance()
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise self.error(
                    tok.line, tok.column, f"parentheses nested more than {MAX_NESTING} deep"
                )
            inner = self.expression(direct=direct)
            self.depth -= 1
            self.expect(")", "')' to close the '('")
            return inner
        name = self.name("a relation name, '[' or '('")
        if self.is_word("from"):
            self.advance()
            tupleset = self.name("a relation name after 'from'")
            return Arrow(tupleset.value, name.value, False, name.line, name.column)
        return Computed(name.value, name.line, name.column)

    def restrictions(self) -> tuple[SubjectType, ...]:
        out = []
        while True:
            type_tok = self.name("a type in '[...]'")
            relation = None
            wildcard = False
            if self.tok.kind == ":":
                self.advance()
                self.expect("*", f"'*' after '{type_tok.value}:'")
                wildcard = True
            elif self.tok.kind == "#":
                self.advance()
                relation = self.name(f"a relation after '{type_tok.value}#'").value
            condition = None
            if self.is_word("with"):
                self.advance()
                condition = self.name("a condition name after 'with'").value
            out.append(
                SubjectType(
                    type_tok.value,
                    relation,
                    wildcard,
                    condition,
                    False,
                    type_tok.line,
                    type_tok.column,
                )
            )
            if self.tok.kind == "]":
                self.advance()
                return tuple(out)
            self.expect(",", "',' or ']' in the direct types")

    # -- conditions -------------------------------------------------------------

    def condition(self, index: int, conditions: list[Condition]) -> int:
        """Parse the condition starting on line ``index``; return the line after it."""
        offset = sum(len(line) + 1 for line in self.lines[:index])
        condition, end = read_condition(
            self.clean, offset, self.filename, {c.name for c in conditions}
        )
        conditions.append(condition)
        return self.clean.count("\n", 0, end) + 1
