"""Reading a schema file, its dialect chosen by the file's extension."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from leopard.errors import InvalidSchema
from leopard.model.schema.ast import Schema
from leopard.model.schema.openfga import parse_openfga_json
from leopard.model.schema.openfga_dsl import parse_openfga_dsl
from leopard.model.schema.spicedb import parse_spicedb

__all__ = ["load_schema", "PARSERS"]

#: extension -> the parser of its dialect
PARSERS: dict[str, Callable[[str, str], Schema]] = {
    ".zed": parse_spicedb,
    ".fga": parse_openfga_dsl,
    ".json": parse_openfga_json,
}


def load_schema(path: str | Path) -> Schema:
    """Parse the schema at ``path``: ``.zed`` is SpiceDB, ``.fga`` OpenFGA's DSL and
    ``.json`` OpenFGA's JSON model. Raise InvalidSchema naming the file when it cannot be
    read, has another extension or does not parse."""
    p = Path(path)
    parser = PARSERS.get(p.suffix.lower())
    if parser is None:
        accepted = ", ".join(PARSERS)
        raise InvalidSchema(
            f"{p}: unknown schema extension {p.suffix or '(none)'!r}; expected one of {accepted}"
        )
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InvalidSchema(f"cannot read schema {str(p)!r}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidSchema(f"{p}: not UTF-8 text (byte {exc.start})") from exc
    return parser(text, str(p))
