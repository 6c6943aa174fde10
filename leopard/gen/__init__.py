"""Deterministic synthetic organisations: users and nested groups as relation tuples.

Why: the index, the benchmarks and the side-by-side runs against SpiceDB need data
shaped like a real directory, at sizes from a thousand to a hundred million tuples,
identical from run to run so that numbers can be compared across machines and commits.
Hand-written fixtures miss the shapes that make group indexing hard, so this package
builds them on purpose:

* a hierarchy ``all-employees`` → orgs → departments → teams → squads → pods, exactly
  ``max_depth`` nesting levels deep at its deepest, with heavy-tailed fan-outs (a few
  departments own hundreds of teams);
* project, mailing-list, cross-functional and access groups that nest under the
  hierarchy and cross-link to several groups deeper down (some to hundreds);
* users directly in one primary team plus a lognormal number of other groups, drawn
  with a Zipf-like popularity, so a few groups hold a good share of all users directly;
* ``-leads`` groups nested through the ``manager`` relation and ~10% of users who are
  ``manager`` of their team (``rewrites``), a few ``@user:*`` groups (``wildcards``),
  and a handful of 2–5 group rings plus one self-loop (``cycles``).

Every nested edge goes from a group of lower *level* to one of higher level, except
the deliberate ring and self-loop edges; that is what makes ``cycles=False`` a DAG and
bounds the longest nesting chain by ``max_depth``.

The docs shape (``OrgSpec(shape="docs")``) adds folders nested ``max_depth`` deep and
documents in them, shared with those users and groups, following a schema written
beside them in both dialects (``docs_schema``, ``docs_model``): see
``leopard.gen.docs``.

Modules: ``spec`` (``OrgSpec``, ``GenReport``, the config and report texts),
``structure`` (the groups and their nesting, built in memory), ``write`` (the org
shape: user memberships in chunks, formatted and written), ``docs`` (the docs shape)
and ``changes`` (``generate_changes``: change lines against a snapshot, for the demo
and benchmarks). ``generate`` writes either shape.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from leopard.gen import write
from leopard.gen.changes import generate_changes
from leopard.gen.docs import DOCS_GROUP_DEPTH, docs_model, docs_schema, generate_docs
from leopard.gen.spec import (
    DOCS_MAX_DEPTH,
    MAX_DEPTH_LIMIT,
    MAX_TUPLES,
    MIN_TUPLES,
    SHAPES,
    GenReport,
    OrgSpec,
    config_toml,
    format_report,
)

__all__ = [
    "DOCS_GROUP_DEPTH",
    "DOCS_MAX_DEPTH",
    "MAX_DEPTH_LIMIT",
    "MAX_TUPLES",
    "MIN_TUPLES",
    "SHAPES",
    "GenReport",
    "OrgSpec",
    "config_toml",
    "docs_model",
    "docs_schema",
    "format_report",
    "generate",
    "generate_changes",
    "generate_docs",
]


def generate(
    spec: OrgSpec,
    out: BinaryIO | str | Path,
    *,
    progress: Callable[[int], None] | None = None,
) -> GenReport:
    """Write ``spec.tuples`` tuples (exactly) of the spec's shape to ``out``, one per
    line; report on them.

    ``out`` is a binary file object or a path; a path ending in ``.gz`` is gzipped.
    ``progress`` is called after each chunk with the number of tuples written so far.
    """
    if spec.shape == "docs":
        return generate_docs(spec, out, progress=progress)
    return write.generate(spec, out, progress=progress)
