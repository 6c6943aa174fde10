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

Modules: ``spec`` (``OrgSpec``, ``GenReport``, the config and report texts),
``structure`` (the groups and their nesting, built in memory), ``write`` (``generate``:
user memberships in chunks, formatted and written) and ``changes``
(``generate_changes``: change lines against a snapshot, for the demo and benchmarks).
"""

from __future__ import annotations

from leopard.gen.changes import generate_changes
from leopard.gen.spec import (
    MAX_DEPTH_LIMIT,
    MAX_TUPLES,
    MIN_TUPLES,
    GenReport,
    OrgSpec,
    config_toml,
    format_report,
)
from leopard.gen.write import generate

__all__ = [
    "MAX_DEPTH_LIMIT",
    "MAX_TUPLES",
    "MIN_TUPLES",
    "GenReport",
    "OrgSpec",
    "config_toml",
    "format_report",
    "generate",
    "generate_changes",
]
