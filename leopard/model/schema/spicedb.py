"""SpiceDB's schema language (``.zed``): a recursive-descent parser.

The grammar, as SpiceDB's own parser reads it::

    schema      := (use | definition | caveat | partial)*
    use         := 'use' FLAG                  before any definition or caveat
    definition  := 'definition' PATH '{' (member END)* '}'
    partial     := 'partial' PATH '{' (member END)* '}'          after 'use partial'
    member      := 'relation' NAME ':' subject ('|' subject)*
                 | 'permission' NAME (':' NAME ('|' NAME)*)? '=' expr
                 | '...' NAME                                  a partial's members
    subject     := PATH (':' '*' | '#' (NAME | '...'))?
                   ('with' (PATH ('and' 'expiration')? | 'expiration'))?
    caveat      := 'caveat' PATH '(' NAME TYPE (',' NAME TYPE)* ')' '{' CEL '}'
    PATH        := NAME ('/' NAME)*

``expr`` has three binary operators, all left-associative: ``-`` (exclusion) binds
loosest, then ``&`` (intersection), then ``+`` (union), so ``a - b + c`` is
``a - (b + c)`` and ``a + b & c`` is ``(a + b) & c``. Operands are a relation name,
an arrow (``parent->view``, ``parent.any(view)``, ``parent.all(view)``), ``nil`` or
a parenthesised expression. Unions of unions and intersections of intersections are
flattened as SpiceDB compiles them. ``END`` is ``;`` or a new line (see
``spicedb_tokens``), so ``definition a { relation b: c }`` on one line is refused,
as SpiceDB refuses it.

``use expiration`` makes ``expiration`` and ``and`` keywords (without it ``with
expiration`` names a caveat called ``expiration``); ``use partial`` enables partials,
which are spliced into the definitions that name them. Permission type annotations
(``permission view: user = ...``) are read and dropped. Imports, ``self`` and nested
arrows (``a->b->c``) are refused. Caveat bodies are kept as text, never evaluated.

Names follow SpiceDB's patterns: a type is ``[a-z][a-z0-9_]{1,62}[a-z0-9]`` behind
optional ``tenant/`` prefixes of the same form (128 bytes in all), a relation or
permission ``[a-z][a-z0-9_]{1,62}[a-z0-9]``. References are checked as SpiceDB's
validation checks them (``leopard.model.schema.checks``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from leopard.model.schema.ast import (
    MAX_NESTING,
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
    TypeDef,
    Union,
    fail,
)
from leopard.model.schema.checks import check_schema
from leopard.model.schema.spicedb_tokens import Token, TokenReader

__all__ = ["parse_spicedb", "KEYWORDS", "FLAGS", "TYPE_RE", "RELATION_RE"]

#: always keywords; a flag adds its own
KEYWORDS = frozenset({"definition", "caveat", "relation", "permission", "nil", "with"})
#: the ``use`` flags SpiceDB knows, and the keywords each one adds
FLAGS: dict[str, frozenset[str]] = {
    "expiration": frozenset({"expiration", "and"}),
    "typechecking": frozenset({"typechecking"}),
    "self": frozenset({"self"}),
    "partial": frozenset({"partial"}),
    "import": frozenset({"import"}),
}
_NAME = r"[a-z][a-z0-9_]{1,62}[a-z0-9]"
TYPE_RE = re.compile(rf"(?:{_NAME}/)*{_NAME}")
RELATION_RE = re.compile(_NAME)
_NAME_RULE = (
    "3 to 64 characters: a lowercase letter, then lowercase letters, digits or '_', "
    "ending in a letter or digit"
)


@dataclass(frozen=True)
class _PartialRef:
    name: str
    line: int
    column: int


_Member = Relation | _PartialRef


def parse_spicedb(text: str, filename: str = "<schema>") -> Schema:
    """Parse a SpiceDB schema; raise InvalidSchema naming the line and what is wrong."""
    return _Parser(text, filename).schema()


class _Parser(TokenReader):
    def __init__(self, text: str, filename: str) -> None:
        super().__init__(text, filename, KEYWORDS)
        self.depth = 0  # parentheses open around the token read

    # -- top level --------------------------------------------------------------

    def schema(self) -> Schema:
        definitions: list[tuple[str, Token, list[_Member]]] = []
        partials: dict[str, tuple[Token, list[_Member]]] = {}
        caveats: list[Condition] = []
        seen: dict[str, Token] = {}  # definition and caveat names share one space
        started = False
        while True:
            while self.accept(";"):
                pass
            tok = self.tok
            if tok.kind == "eof":
                break
            if tok.kind == "ident" and tok.value == "use":
                self.use(started)
            elif self.is_keyword("definition") or self.is_keyword("caveat"):
                started = True
                self.advance()
                name, first = self.path(f"a name after {tok.value!r}")
                if name in seen:
                    where = seen[name]
                    raise self.error(
                        f"{name!r} is defined twice (first on line {where.line}); definitions "
                        "and caveats share one set of names",
                        first,
                    )
                seen[name] = first
                if tok.value == "definition":
                    self.check_type_name(name, first)
                    definitions.append((name, first, self.body(f"definition {name!r}")))
                else:
                    caveats.append(self.caveat(name, first))
            elif self.is_keyword("partial"):
                self.advance()
                name, first = self.path("a name after 'partial'")
                if name in partials:
                    raise self.error(f"partial {name!r} is defined twice", first)
                partials[name] = (first, self.body(f"partial {name!r}"))
            elif tok.kind == "ident" and tok.value == "import":
                raise self.error(
                    "imports are not supported: give the whole schema in one file "
                    "('zed preview schema compile' writes one)"
                )
            elif tok.kind == "ident" and tok.value == "partial":
                raise self.error("'partial' needs 'use partial' at the top of the schema")
            else:
                raise self.expected("'definition', 'caveat' or 'use' at the top level")
        types: dict[str, TypeDef] = {}
        for name, first, members in definitions:
            relations = self.splice(name, members, partials)
            types[name] = TypeDef(name, relations, first.line, first.column)
        schema = Schema(
            types=types,
            conditions=tuple(c.name for c in caveats),
            dialect="spicedb",
            source=self.text,
            filename=self.filename,
            condition_defs=tuple(caveats),
        )
        check_schema(schema)
        return schema

    def use(self, started: bool) -> None:
        use = self.advance()
        flag = self.tok
        if flag.kind != "ident":
            raise self.expected("a flag after 'use'")
        if flag.value not in FLAGS:
            raise self.error(
                f"unknown flag {flag.value!r} after 'use'; SpiceDB knows {', '.join(sorted(FLAGS))}"
            )
        if started:
            raise self.error("'use' must come before any definition or caveat", use)
        self.advance()
        self.keywords |= FLAGS[flag.value]
        self.end_of_statement(f"'use {flag.value}'")

    def check_type_name(self, name: str, token: Token) -> None:
        if not TYPE_RE.fullmatch(name) or len(name.encode()) > 128:
            raise self.error(
                f"type name {name!r} is not valid: each part is {_NAME_RULE}, "
                "parts joined by '/', 128 bytes in all",
                token,
            )

    def check_relation_name(self, token: Token, what: str) -> None:
        if not RELATION_RE.fullmatch(token.value):
            raise self.error(f"{what} name {token.value!r} is not valid: {_NAME_RULE}", token)

    # -- definitions ------------------------------------------------------------

    def body(self, what: str) -> list[_Member]:
        self.expect("{", f"'{{' to open {what}")
        members: list[_Member] = []
        while not self.accept("}"):
            tok = self.tok
            if self.is_keyword("relation"):
                members.append(self.relation())
            elif self.is_keyword("permission"):
                members.append(self.permission())
            elif tok.kind == "...":
                self.advance()
                ref = self.name("a partial's name after '...'")
                members.append(_PartialRef(ref.value, ref.line, ref.column))
            elif tok.kind == ";":
                self.advance()
                continue
            elif tok.kind == "eof":
                raise self.expected(f"'}}' to close {what}")
            elif tok.kind in ("+", "&", "-", "->", "."):
                raise self.expected(
                    f"'relation', 'permission' or '}}' in {what}",
                    " (an expression goes on to the next line only after an operator)",
                )
            else:
                raise self.expected(f"'relation', 'permission' or '}}' in {what}")
            last = members[-1]
            self.end_of_statement(
                f"'...{last.name}'"
                if isinstance(last, _PartialRef)
                else f"{last.kind} {last.name!r}"
            )
        return members

    def relation(self) -> Relation:
        start = self.advance()
        name = self.name("a name after 'relation'")
        self.check_relation_name(name, "relation")
        if self.tok.kind != ":":
            raise self.expected(f"':' after the relation name {name.value!r}")
        self.advance()
        types = [self.subject(name.value)]
        while self.accept("|"):
            types.append(self.subject(name.value))
        if self.tok.kind == "ident" and self.tok.value == "and":
            raise self.expected(
                f"a new line or ';' after relation {name.value!r}",
                " ('with CAVEAT and expiration' needs 'use expiration' at the top)",
            )
        return Relation(
            name.value, "relation", tuple(types), This(start.line, start.column), *_at(start)
        )

    def subject(self, relation: str) -> SubjectType:
        type_name, first = self.path(f"a subject type in relation {relation!r}")
        subject_relation: str | None = None
        wildcard = False
        if self.accept(":"):
            self.expect("*", f"'*' after '{type_name}:'")
            wildcard = True
        elif self.accept("#"):
            if self.accept("...") is None:
                subject_relation = self.name(f"a relation after '{type_name}#'").value
        caveat: str | None = None
        expiration = False
        if self.is_keyword("with"):
            self.advance()
            if self.is_keyword("expiration"):
                self.advance()
                expiration = True
                if self.is_keyword("and"):
                    raise self.error(
                        "the caveat must come before expiration: 'with CAVEAT and expiration'"
                    )
            else:
                caveat, _ = self.path(f"a caveat name after 'with' in relation {relation!r}")
                if self.is_keyword("and"):
                    self.advance()
                    if not self.is_keyword("expiration"):
                        raise self.expected("'expiration' after 'and'")
                    self.advance()
                    expiration = True
        return SubjectType(
            type_name, subject_relation, wildcard, caveat, expiration, first.line, first.column
        )

    def permission(self) -> Relation:
        start = self.advance()
        name = self.name("a name after 'permission'")
        self.check_relation_name(name, "permission")
        if self.accept(":"):  # a type annotation: read, then dropped
            self.name(f"a type after ':' in permission {name.value!r}")
            while self.accept("|"):
                self.name(f"a type after '|' in permission {name.value!r}")
        if self.tok.kind != "=":
            raise self.expected(f"'=' after the permission name {name.value!r}")
        self.advance()
        rewrite = self.expression(name.value)
        if self.tok.kind in ("->", "."):
            raise self.error("an arrow's left side must be a relation name, not an expression")
        if self.tok.kind not in (";", "eof"):
            raise self.expected(f"'+', '&', '-' or the end of permission {name.value!r}")
        return Relation(name.value, "permission", (), rewrite, *_at(start))

    # -- expressions ------------------------------------------------------------

    def expression(self, permission: str) -> Rewrite:
        """``-`` binds loosest, then ``&``, then ``+``; each is left-associative."""
        left = self.intersection(permission)
        while self.tok.kind == "-":
            self.advance()
            right = self.intersection(permission)
            left = Exclusion(left, right, left.line, left.column)
        return left

    def intersection(self, permission: str) -> Rewrite:
        children = [self.union(permission)]
        while self.accept("&"):
            children.append(self.union(permission))
        return _flat(Intersection, children)

    def union(self, permission: str) -> Rewrite:
        children = [self.operand(permission)]
        while self.accept("+"):
            children.append(self.operand(permission))
        return _flat(Union, children)

    def operand(self, permission: str) -> Rewrite:
        tok = self.tok
        if tok.kind == "(":
            self.advance()
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise self.error(f"parentheses nested more than {MAX_NESTING} deep", tok)
            inner = self.expression(permission)
            self.depth -= 1
            self.expect(")", "')' to close the '('")
            return replace(inner, line=tok.line, column=tok.column)
        if self.is_keyword("nil"):
            self.advance()
            return Nil(*_at(tok))
        if self.is_keyword("self"):  # (a keyword only after 'use self')
            self.advance()
            return Self(*_at(tok))
        if tok.kind != "ident" or tok.value in self.keywords:
            raise self.expected(f"a relation name, an arrow, 'nil' or '(' in {permission!r}")
        self.advance()
        node: Rewrite = Computed(tok.value, *_at(tok))
        while self.tok.kind in ("->", "."):
            op = self.advance()
            if isinstance(node, Arrow):
                raise self.error(
                    "nested arrows (a->b->c) are not supported; name a permission for "
                    "the middle step",
                    op,
                )
            if op.kind == "->":
                target = self.name("a relation name after '->'").value
                node = Arrow(tok.value, target, False, *_at(tok))
                continue
            func = self.tok
            if func.kind != "ident" or func.value not in ("any", "all"):
                raise self.expected("'any' or 'all' after '.'")
            self.advance()
            self.expect("(", f"'(' after '.{func.value}'")
            target = self.name(f"a relation name in '.{func.value}(...)'").value
            self.expect(")", f"')' to close '.{func.value}('")
            node = Arrow(tok.value, target, func.value == "all", *_at(tok))
        return node

    # -- partials ------------------------------------------------------------------

    def splice(
        self,
        owner: str,
        members: list[_Member],
        partials: dict[str, tuple[Token, list[_Member]]],
        stack: tuple[str, ...] = (),
    ) -> dict[str, Relation]:
        """The relations of a definition, partials spliced in; duplicates refused."""
        out: dict[str, Relation] = {}
        for member in members:
            if isinstance(member, _PartialRef):
                if member.name not in partials:
                    raise fail(
                        self.filename,
                        member.line,
                        member.column,
                        f"no partial named {member.name!r}",
                    )
                if member.name in stack:
                    cycle = " -> ".join((*stack, member.name))
                    raise fail(
                        self.filename,
                        member.line,
                        member.column,
                        f"partials refer to each other in a cycle: {cycle}",
                    )
                found = self.splice(
                    owner, partials[member.name][1], partials, (*stack, member.name)
                )
                batch = list(found.values())
            else:
                batch = [member]
            for rel in batch:
                if rel.name in out:
                    raise fail(
                        self.filename,
                        rel.line,
                        rel.column,
                        f"{rel.name!r} is defined twice in {owner!r} (first on line "
                        f"{out[rel.name].line})",
                    )
                out[rel.name] = rel
        return out


def _at(token: Token) -> tuple[int, int]:
    return token.line, token.column


def _flat(cls: type[Union] | type[Intersection], children: list[Rewrite]) -> Rewrite:
    """One child is itself; children of the same operator are merged into the parent."""
    if len(children) == 1:
        return children[0]
    merged: list[Rewrite] = []
    for child in children:
        merged.extend(child.children if isinstance(child, cls) else (child,))
    return cls(tuple(merged), children[0].line, children[0].column)
