"""``leopard build --from spicedb:TARGET`` (or ``openfga:URL --store-id S``): an index
bootstrapped from SpiceDB's or OpenFGA's API.

``leopard build`` loads this module by name only when ``--from`` is given, so that a
build from files needs neither grpc nor the authzed package (the ``[grpc]`` extra),
which only a SpiceDB upstream needs (OpenFGA's is HTTP, the standard library's).
"""

from __future__ import annotations

import json
from typing import Any

import click

from ingest.upstream.openfga import OpenFGABootstrap, OpenFGASource, bootstrap_openfga
from leopard.cli.options import format_report
from leopard.errors import InvalidInput

_grpc_missing: ModuleNotFoundError | None = None
try:
    from ingest.upstream.spicedb import BootstrapReport, SpiceDBSource, bootstrap
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    _grpc_missing = exc  # an error only when a SpiceDB is asked for (the [grpc] extra)

__all__ = ["bootstrap_text", "build_from", "openfga_source", "parse_source", "spicedb_source"]


def parse_source(text: str) -> tuple[str, str]:
    """``("spicedb", target)`` or ``("openfga", url)`` of ``spicedb:TARGET`` or
    ``openfga:URL``."""
    kind, sep, rest = text.partition(":")
    if not sep or kind not in ("spicedb", "openfga") or not rest:
        raise InvalidInput(
            f"{text!r} is not an upstream; expected spicedb:TARGET (a gRPC target such as "
            "spicedb:127.0.0.1:50051 or spicedb:unix:///run/spicedb.sock) or openfga:URL "
            "(openfga:http://127.0.0.1:8080, with --store-id)"
        )
    return kind, rest


def spicedb_source(text: str, key: str | None, tls: bool | None) -> SpiceDBSource:
    """The SpiceDB of ``spicedb:TARGET``; InvalidInput for a malformed one."""
    kind, target = parse_source(text)
    if kind != "spicedb":
        raise InvalidInput(f"{text!r}: expected spicedb:TARGET")
    if _grpc_missing is not None:
        raise InvalidInput(
            f"following SpiceDB needs grpc and the authzed package: pip install "
            f"'leopard-index[grpc]' ({_grpc_missing})"
        )
    return SpiceDBSource(target, key=key, tls=tls)


def openfga_source(text: str, key: str | None, store_id: str | None) -> OpenFGASource:
    """The OpenFGA store of ``openfga:URL`` and ``--store-id``."""
    kind, url = parse_source(text)
    if kind != "openfga":
        raise InvalidInput(f"{text!r}: expected openfga:URL")
    if not store_id:
        raise InvalidInput(f"{text!r} needs --store-id: the OpenFGA store to read")
    return OpenFGASource(url, store_id, key=key)


def openfga_text(report: OpenFGABootstrap, index_dir: str, as_json: bool) -> str:
    """The report of ``build --from openfga:URL``."""
    build = report.build.to_dict() if report.build is not None else {}
    if as_json:
        doc: dict[str, Any] = {
            "source": report.source,
            "model_id": report.model_id,
            "continuation_token": report.token,
            "tuples": report.tuples,
            "left_out": report.skipped,
            "build": build,
        }
        return json.dumps(doc, indent=2)
    lines = [
        f"read {report.tuples:,} tuples from {report.source} with model {report.model_id}; "
        f"changes follow from continuation token {report.token!r}",
        *(f"left out: {n:,} {why}" for why, n in sorted(report.skipped.items())),
        format_report(build, index_dir),
    ]
    return "\n".join(lines)


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
    store_id: str | None = None,
    memory: int | None = None,
) -> None:
    """Bootstrap the index at ``index_dir`` from ``spicedb:TARGET`` (or ``openfga:URL``
    and its store) and print the report."""
    if parse_source(source_text)[0] == "openfga":
        store = openfga_source(source_text, key, store_id)
        fga = bootstrap_openfga(
            index_dir, store, only=only, max_shrink=max_shrink, wait=wait, memory=memory
        )
        click.echo(openfga_text(fga, index_dir, as_json))
        return
    if store_id:
        raise InvalidInput("--store-id names an OpenFGA store; a SpiceDB has none")
    source = spicedb_source(source_text, key, tls)
    try:
        report = bootstrap(
            index_dir, source, only=only, max_shrink=max_shrink, wait=wait, memory=memory
        )
    finally:
        source.close()
    click.echo(bootstrap_text(report, index_dir, as_json))
