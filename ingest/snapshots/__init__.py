"""Snapshot readers: relation tuples from files into Arrow tables for the offline build.

The build starts from a snapshot of every stored tuple, which for a real deployment is
tens of millions of lines. Parsing those one by one in Python runs at a few hundred
thousand lines a second, which would make the reader, not the closure computation,
the slowest part of a build. So the main format, plain text, is read in blocks of a
few megabytes and each block is validated and cut into columns by vectorised code
(``text``); only lines that fail the tuple pattern are looked at in Python, where
``parse_tuple`` gives exactly the message it gives everywhere else. A pure-Python path
reads the same bytes line by line, and the two always produce the same rows and the
same rejects (a property test holds them to it).

OpenFGA's CSV and JSON exports and JSON lines (``openfga``) are read in Python: they
are the formats people write by hand or export from small stores, not the bulk path.
Files, standard input, gzip and in-memory lines are opened in ``sources``; the reader
that ties them together is ``reader``.

Every format yields Arrow tables in the layout of ``leopard.core.batches`` (``COLUMNS``,
``SCHEMA``); ``srel`` is null for a plain subject (``#...`` included). Duplicates pass
through; the build removes them.
"""

from __future__ import annotations

from ingest.snapshots.reader import FORMATS, detect_format, read_snapshots
from ingest.snapshots.records import ReadStats, Reject
from leopard.core.batches import COLUMNS, SCHEMA

__all__ = [
    "COLUMNS",
    "FORMATS",
    "SCHEMA",
    "ReadStats",
    "Reject",
    "detect_format",
    "read_snapshots",
]
