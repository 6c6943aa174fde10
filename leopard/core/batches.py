"""Tuple batches: the Arrow column layout every reader yields and the build reads.

A batch is an Arrow table with the string columns ``COLUMNS`` (resource namespace,
resource id, relation, subject namespace, subject id, subject relation); ``srel`` is
null for a plain subject (``#...`` included).
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from leopard.model.names import RelationTuple

__all__ = ["COLUMNS", "SCHEMA", "table_from_tuples"]

COLUMNS = ("rns", "rid", "rel", "sns", "sid", "srel")
SCHEMA = pa.schema([(c, pa.string()) for c in COLUMNS])


def table_from_tuples(tuples: Iterable[RelationTuple]) -> pa.Table:
    """An Arrow batch of parsed tuples, in the column layout the build reads."""
    rows = list(tuples)
    # One transpose with zip: about twice as fast as appending value by value.
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(COLUMNS)
    return pa.Table.from_arrays([pa.array(c, pa.string()) for c in columns], schema=SCHEMA)
