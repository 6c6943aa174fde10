"""``leopard build --from spicedb:TARGET``: an index bootstrapped from SpiceDB's API.

``leopard build`` loads this module by name only when ``--from`` is given, so that a
build from files needs neither grpc nor the authzed package (the ``[grpc]`` extra).
"""

from __future__ import annotations

import json

import click

from ingest.upstream.spicedb import BootstrapReport, SpiceDBSource, bootstrap, parse_source
from leopard.cli.options import format_report
from leopard.errors import InvalidInput

__all__ = ["bootstrap_text", "build_from", "spicedb_source"]


def spicedb_source(text: str, key: str | None, tls: bool | None) -> SpiceDBSource:
    """The SpiceDB of ``spicedb:TARGET``; InvalidInput for another upstream (OpenFGA is
    not followed yet) or a malformed one."""
    kind, target = parse_source(text)
    if kind != "spicedb":
        raise InvalidInput(f"{text!r}: only a SpiceDB upstream (spicedb:TARGET) is followed yet")
    return SpiceDBSource(target, key=key, tls=tls)


def bootstrap_text(report: BootstrapReport, index_dir: str, as_json: bool) -> str:
    """The report of ``build --from``: the source, its revision, then the build's."""
    build = report.build.to_dict() if report.build is not None else {}
    if as_json:
        doc = {
            "source": report.source,
            "revision": report.revision,
            "read_with": report.method,
            "relationships": report.relationships,
            "left_out": report.skipped,
            "build": build,
        }
        return json.dumps(doc, indent=2)
    lines = [
        f"read {report.relationships:,} relationships from {report.source} with "
        f"{report.method} at revision {report.revision}",
        *(f"left out: {n:,} {why}" for why, n in sorted(report.skipped.items())),
        format_report(build, index_dir),
    ]
    return "\n".join(lines)


def build_from(
    source_text: str,
    index_dir: str,
    *,
    key: str | None,
    tls: bool | None,
    only: list[str],
    max_shrink: float | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Bootstrap the index at ``index_dir`` from ``spicedb:TARGET`` and print the report."""
    source = spicedb_source(source_text, key, tls)
    try:
        report = bootstrap(index_dir, source, only=only, max_shrink=max_shrink, wait=wait)
    finally:
        source.close()
    click.echo(bootstrap_text(report, index_dir, as_json))
