"""The tokens of SpiceDB's schema language, and a reader over them.

Identifiers are runs of letters, digits and ``_`` (keywords are identifiers that the
parser treats as such, so that ``use expiration`` can turn ``expiration`` into one).
Comments (``// ...``, ``/* ... */`` and doc comments ``/** ... */``) and blanks are
skipped. As in SpiceDB, a new line ends a statement when it follows an identifier,
``}``, ``)`` or ``*``: it becomes a ``;`` token (spelled ``"\\n"``), so an expression may
go on to the next line only after an operator. The tokens of caveat bodies (CEL) are
read too, so that a ``}`` inside a CEL string does not end the body.

``TokenReader`` is the cursor the parser (``spicedb``) is built on; it also reads a
caveat's parameters and body, keeping the CEL text as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from leopard.model.schema.ast import Condition, fail

__all__ = ["CAVEAT_TYPES", "Token", "TokenReader", "tokenize", "describe"]

#: the parameter types of SpiceDB's caveats; ``list`` and ``map`` take one type argument
CAVEAT_TYPES = (
    "any", "bool", "bytes", "double", "duration", "int", "ipaddress", "list", "map",
    "string", "timestamp", "uint",
)  # fmt: skip

#: operators, longest first so that ``->`` is not read as ``-`` then ``>``
_PUNCT = (
    "...",
    "->",
    "||",
    "&&",
    "==",
    "!=",
    "<=",
    ">=",
    *"{}()|+-&/=:;#*?![].,%<>",
)
_IDENT = re.compile(r"\w+")
_SPACE = re.compile(r"[ \t]+")
#: kinds after which a new line ends the statement
_ENDS_STATEMENT = ("ident", "}", ")", "*")


@dataclass(frozen=True)
class Token:
    """``kind`` is ``ident``, ``string``, ``;``, ``eof`` or the operator itself."""

    kind: str
    value: str
    line: int
    column: int
    start: int
    end: int


def describe(token: Token) -> str:
    """A token as an error message names it."""
    if token.kind == "eof":
        return "the end of the schema"
    if token.kind == ";" and token.value == "\n":
        return "the end of the line"
    if token.kind == "string":
        return f"the string {token.value}"
    return repr(token.value)


def tokenize(text: str, filename: str) -> list[Token]:
    """The tokens of ``text``, ending with one ``eof``; raise InvalidSchema on a bad one."""
    tokens: list[Token] = []
    pos = 0
    line = 1
    line_start = 0
    last = ""  # the kind of the last token, for synthetic statement ends
    size = len(text)

    def emit(kind: str, value: str, start: int) -> None:
        nonlocal last
        tokens.append(Token(kind, value, line, start - line_start + 1, start, start + len(value)))
        last = kind

    while pos < size:
        ch = text[pos]
        if ch == "\n":
            if last in _ENDS_STATEMENT:
                emit(";", "\n", pos)
            else:
                last = "\n"
            pos += 1
            line += 1
            line_start = pos
            continue
        if ch == "\r":
            pos += 1
            continue
        m = _SPACE.match(text, pos)
        if m:
            pos = m.end()
            continue
        if text.startswith("//", pos):
            end = text.find("\n", pos)
            pos = size if end < 0 else end
            continue
        if text.startswith("/*", pos):
            end = text.find("*/", pos + 2)
            if end < 0:
                raise fail(
                    filename, line, pos - line_start + 1, "unterminated comment: '/*' has no '*/'"
                )
            newlines = text.count("\n", pos, end)
            if newlines:
                line += newlines
                line_start = text.rfind("\n", pos, end) + 1
            pos = end + 2
            continue
        m = _IDENT.match(text, pos)
        if m:
            emit("ident", m.group(), pos)
            pos = m.end()
            continue
        if ch in "\"'":
            quote = text[pos : pos + 3] if text[pos : pos + 3] in ('"""', "'''") else ch
            end = text.find(quote, pos + len(quote))
            newline = text.find("\n", pos, size if end < 0 else end)
            if end < 0 or (len(quote) == 1 and newline >= 0):
                raise fail(
                    filename,
                    line,
                    pos - line_start + 1,
                    f"unterminated string: {quote} is not closed",
                )
            end += len(quote)
            emit("string", text[pos:end], pos)
            if newline >= 0:  # a multi-line string
                line += text.count("\n", pos, end)
                line_start = text.rfind("\n", pos, end) + 1
            pos = end
            continue
        for op in _PUNCT:
            if text.startswith(op, pos):
                emit(op, op, pos)
                pos += len(op)
                break
        else:
            raise fail(filename, line, pos - line_start + 1, f"unexpected character {ch!r}")
    tokens.append(Token("eof", "", line, pos - line_start + 1, pos, pos))
    return tokens


class TokenReader:
    """A cursor over the tokens of a text, with the reads a parser needs.

    ``keywords`` are identifiers that are no names (``use`` flags add theirs).
    """

    def __init__(self, text: str, filename: str, keywords: frozenset[str]) -> None:
        self.text = text
        self.filename = filename
        self.tokens = tokenize(text, filename)
        self.pos = 0
        self.keywords = set(keywords)

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def error(self, message: str, token: Token | None = None) -> Exception:
        token = token or self.tok
        return fail(self.filename, token.line, token.column, message)

    def expected(self, what: str, hint: str = "") -> Exception:
        return self.error(f"expected {what}, found {describe(self.tok)}{hint}")

    def is_keyword(self, word: str) -> bool:
        return self.tok.kind == "ident" and self.tok.value == word and word in self.keywords

    def accept(self, kind: str) -> Token | None:
        return self.advance() if self.tok.kind == kind else None

    def expect(self, kind: str, what: str) -> Token:
        if self.tok.kind != kind:
            raise self.expected(what)
        return self.advance()

    def name(self, what: str) -> Token:
        """An identifier that is not a keyword."""
        if self.tok.kind != "ident":
            raise self.expected(what)
        if self.tok.value in self.keywords:
            raise self.expected(what, f" (the keyword {self.tok.value!r} is no name)")
        return self.advance()

    def path(self, what: str) -> tuple[str, Token]:
        """Names joined by '/' (``tenant/document``), and the first name's token."""
        first = self.name(what)
        parts = [first.value]
        while self.accept("/"):
            parts.append(self.name(f"a name after '/' in {what}").value)
        return "/".join(parts), first

    def end_of_statement(self, what: str, hint: str = "") -> None:
        """One or more ';' (or new lines ending a statement), or the end of the text."""
        if self.tok.kind == ";":
            while self.tok.kind == ";":
                self.advance()
        elif self.tok.kind != "eof":
            raise self.expected(f"a new line or ';' after {what}", hint)

    def caveat(self, name: str, first: Token) -> Condition:
        """The rest of ``caveat NAME``: ``(param type, ...) { CEL }``."""
        self.expect("(", f"'(' after the caveat name {name!r}")
        params: list[tuple[str, str]] = []
        while True:
            param = self.name(f"a parameter name in caveat {name!r}")
            if any(p == param.value for p, _ in params):
                raise self.error(f"parameter {param.value!r} of caveat {name!r} is repeated", param)
            params.append((param.value, self.param_type(name)))
            if not self.accept(","):
                break
        self.expect(")", f"',' or ')' in the parameters of caveat {name!r}")
        self.expect("{", f"'{{' to open the body of caveat {name!r}")
        depth = 1
        start = self.tok
        end = start
        while True:
            tok = self.tok
            if tok.kind == "eof":
                raise self.expected(f"'}}' to close caveat {name!r}")
            depth += {"{": 1, "}": -1}.get(tok.kind, 0)
            if depth == 0:
                break
            end = self.advance()
        if end is start and start.kind == "}":
            raise self.error(f"caveat {name!r} has an empty expression", start)
        self.advance()
        expression = self.text[start.start : end.end].strip()
        return Condition(name, tuple(params), expression, first.line, first.column)

    def param_type(self, caveat: str) -> str:
        """A parameter type as written: ``int``, ``map<string>``, ``list<map<int>>``.

        The types are SpiceDB's (``CAVEAT_TYPES``); ``list`` and ``map`` take exactly
        one type argument, as SpiceDB says (it ignores arguments of the others).
        """
        token = self.name(f"a parameter type in caveat {caveat!r}")
        base = token.value
        if base not in CAVEAT_TYPES:
            raise self.error(
                f"unknown parameter type {base!r} in caveat {caveat!r} (SpiceDB's types: "
                f"{', '.join(CAVEAT_TYPES)})",
                token,
            )
        inner: list[str] = []
        if self.accept("<"):
            inner.append(self.param_type(caveat))
            while self.accept(","):
                inner.append(self.param_type(caveat))
            self.expect(">", "'>' to close the type parameters")
        if base in ("list", "map") and len(inner) != 1:
            raise self.error(
                f"the type {base!r} in caveat {caveat!r} takes one type argument "
                f"({base}<string>, say), not {len(inner)}",
                token,
            )
        return f"{base}<{', '.join(inner)}>" if inner else base
