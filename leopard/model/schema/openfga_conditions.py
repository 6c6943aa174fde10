"""Conditions of OpenFGA's DSL: ``condition NAME(param: type, ...) { CEL }``.

Read from the comment-cleaned text of a model (``openfga_dsl.clean_lines``), as
OpenFGA's grammar reads them: parameters may sit on lines of their own; a parameter
type is one of ``PARAM_TYPES`` or ``map<T>`` / ``list<T>`` of one; the body runs to the
first ``}`` outside a CEL string (so it holds no braces of its own). The expression
is kept as OpenFGA's transformer keeps it: a new line and blanks right after ``{``
are dropped, ``//`` comments removed, and trailing new lines (not blanks) trimmed.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from leopard.model.schema.ast import Condition, fail

__all__ = ["PARAM_TYPES", "read_condition"]

#: the parameter types of conditions; ``map`` and ``list`` take one of them as ``map<T>``
PARAM_TYPES = ("bool", "string", "int", "uint", "double", "duration", "timestamp", "ipaddress")

_TYPE = rf"(?:(?:map|list)<(?:{'|'.join(PARAM_TYPES)})>|{'|'.join(PARAM_TYPES)})"
_HEAD = re.compile(r"[ \t]*(?P<keyword>condition)[ \t]+(?P<name>[A-Za-z_][A-Za-z0-9_-]*)[ \t]*\(")
_PARAM = re.compile(
    rf"\s*(?P<name>[A-Za-z_][A-Za-z0-9_-]*)[ \t]*:[ \t]*(?P<type>{_TYPE})(?![\w<])[ \t]*"
)
#: ')' and '{', then what OpenFGA's grammar skips: one run of new lines (with blanks) or blanks
_OPEN = re.compile(r"\s*\)[ \t]*\{(?:(?:[ \t\f]*(?:\r?\n|\r|\f)[ \t\f]*)+|[ \t\f]*)")


def read_condition(
    text: str, start: int, filename: str, known: Collection[str]
) -> tuple[Condition, int]:
    """The condition whose line starts at offset ``start``, and the offset after its '}'.

    ``known`` are the names of the conditions before it, which it may not repeat.
    """

    def error(at: int, message: str) -> Exception:
        line = text.count("\n", 0, at) + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
        return fail(filename, line, column, message)

    head = _HEAD.match(text, start)
    if head is None:
        raise error(start, "expected 'condition NAME(' to start a condition")
    name = head.group("name")
    if name in known:
        raise error(head.start("name"), f"condition {name!r} is defined twice")
    params: list[tuple[str, str]] = []
    at = head.end()
    while True:
        m = _PARAM.match(text, at)
        if m is None:
            raise error(
                at,
                f"expected a parameter 'NAME: TYPE' of condition {name!r} "
                f"(types: {', '.join(PARAM_TYPES)}, map<T>, list<T>)",
            )
        if any(p == m.group("name") for p, _ in params):
            raise error(
                m.start("name"), f"parameter {m.group('name')!r} of condition {name!r} is repeated"
            )
        params.append((m.group("name"), m.group("type")))
        at = m.end()
        if not text.startswith(",", at):
            break
        at += 1
    m = _OPEN.match(text, at)
    if m is None:
        raise error(at, f"expected ')' and '{{' after the parameters of condition {name!r}")
    at = _body_end(text, m.end())
    if at < 0:
        raise error(head.start("keyword"), f"condition {name!r} has no closing '}}'")
    body = re.sub(r"//[^\n]*", "", text[m.end() : at]).rstrip("\n")
    if not body.strip():
        raise error(at, f"condition {name!r} has an empty expression")
    line_end = text.find("\n", at)
    rest = text[at + 1 : len(text) if line_end < 0 else line_end]
    if rest.strip():
        raise error(at + 1, f"expected the end of the line after the '}}' of condition {name!r}")
    line = text.count("\n", 0, start) + 1
    column = head.start("keyword") - start + 1
    condition = Condition(name, tuple(sorted(params)), body, line, column)
    return condition, at + 1


def _body_end(text: str, at: int) -> int:
    """The offset of the first '}' from ``at`` outside a CEL string, or -1."""
    quote = ""
    while at < len(text):
        ch = text[at]
        if quote:
            if text.startswith(quote, at):
                at += len(quote)
                quote = ""
                continue
            at += 2 if ch == "\\" else 1
        elif ch in "\"'":
            quote = text[at : at + 3] if text[at : at + 3] in ('"""', "'''") else ch
            at += len(quote)
        elif ch == "}":
            return at
        else:
            at += 1
    return -1
