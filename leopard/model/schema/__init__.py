"""Schemas people already have, parsed into one model: SpiceDB's ``.zed`` and OpenFGA's
authorization models (the JSON form and the 1.1 DSL ``.fga``).

Pure code: the parsers read the text they are given (``load_schema`` reads one file)
and raise ``InvalidSchema`` naming the file, the line and what is wrong. Modules:

* ``ast``           the model (``Schema``, ``TypeDef``, ``Relation``, rewrites)
* ``spicedb``       SpiceDB's language (its tokens in ``spicedb_lexer``)
* ``openfga_dsl``   OpenFGA's DSL
* ``openfga``       OpenFGA's JSON form, read and written
* ``checks``        the references each peer's validation checks
* ``printers``      the schema printed as SpiceDB's language or OpenFGA's DSL
* ``load``          a file, its dialect chosen by its extension
"""

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
    TypeDef,
    Union,
)
from leopard.model.schema.load import load_schema
from leopard.model.schema.openfga import parse_openfga_json, to_openfga_json
from leopard.model.schema.openfga_dsl import parse_openfga_dsl
from leopard.model.schema.printers import format_openfga_dsl, format_spicedb
from leopard.model.schema.spicedb import parse_spicedb

__all__ = [
    "Arrow",
    "Computed",
    "Condition",
    "Exclusion",
    "Intersection",
    "Nil",
    "Self",
    "Relation",
    "Rewrite",
    "Schema",
    "SubjectType",
    "This",
    "TypeDef",
    "Union",
    "format_openfga_dsl",
    "format_spicedb",
    "load_schema",
    "parse_openfga_dsl",
    "parse_openfga_json",
    "parse_spicedb",
    "to_openfga_json",
]
