"""``leopard gen``: a synthetic org, or documents in folders, as tuples (``scripts/gen-org``
writes the org)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from leopard.cli.options import fail_cleanly, json_option
from leopard.errors import InvalidInput
from leopard.gen import (
    DOCS_MAX_DEPTH,
    MAX_DEPTH_LIMIT,
    MAX_TUPLES,
    MIN_TUPLES,
    SHAPES,
    OrgSpec,
    config_toml,
    docs_model,
    docs_schema,
    generate,
)
from leopard.gen import format_report as format_gen_report

__all__ = ["gen"]

_ORG_MAX_DEPTH = 15


@click.command()
@click.option(
    "-n",
    "--tuples",
    type=click.IntRange(MIN_TUPLES, MAX_TUPLES),
    default=100_000,
    show_default=True,
    help="Tuple count.",
)
@click.option(
    "--out", required=True, metavar="FILE", help="Output file (.gz compresses; - for stdout)."
)
@click.option(
    "--shape",
    type=click.Choice(SHAPES),
    default="org",
    show_default=True,
    help="org: users in nested groups; docs: documents in nested folders shared with them.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--config-out", metavar="FILE", help="Also write the matching set configuration.")
@click.option("--schema-out", metavar="FILE", help="docs: also write the SpiceDB schema (.zed).")
@click.option("--fga-out", metavar="FILE", help="docs: also write the OpenFGA model (.fga).")
@click.option("--no-cycles", is_flag=True, help="A strict DAG (SpiceDB refuses cycles).")
@click.option("--no-wildcards", is_flag=True, help="No @user:* (groups in org, public docs).")
@click.option("--no-rewrites", is_flag=True, help="Only 'member' tuples, no 'manager' (org).")
@click.option(
    "--max-depth",
    type=click.IntRange(1, MAX_DEPTH_LIMIT),
    help=f"Deepest nesting: of groups (org, default {_ORG_MAX_DEPTH}) or of folders "
    f"(docs, default {DOCS_MAX_DEPTH}).",
)
@json_option
@fail_cleanly
def gen(
    tuples: int,
    out: str,
    shape: str,
    seed: int,
    config_out: str | None,
    schema_out: str | None,
    fga_out: str | None,
    no_cycles: bool,
    no_wildcards: bool,
    no_rewrites: bool,
    max_depth: int | None,
    as_json: bool,
) -> None:
    """Generate a synthetic org (users, nested groups, cycles, wildcards) as tuples, or
    documents in nested folders shared with its users and groups (--shape docs), with
    their schema for SpiceDB and OpenFGA.

    Deterministic by seed. The org is the same as scripts/gen-org.

    \b
    Example:
      leopard gen -n 1000000 --out org.txt --config-out org.toml
      leopard gen --shape docs -n 1000000 --no-cycles --out docs.txt \\
        --schema-out docs.zed --fga-out docs.fga
    """
    if shape != "docs" and (schema_out or fga_out):
        raise InvalidInput("--schema-out and --fga-out are for --shape docs")
    if max_depth is None:
        max_depth = DOCS_MAX_DEPTH if shape == "docs" else _ORG_MAX_DEPTH
    spec = OrgSpec(
        tuples=tuples,
        seed=seed,
        cycles=not no_cycles,
        wildcards=not no_wildcards,
        rewrites=not no_rewrites,
        max_depth=max_depth,
        shape=shape,
    )
    outputs = {"--out": None if out == "-" else out, "--config-out": config_out,
               "--schema-out": schema_out, "--fga-out": fga_out}  # fmt: skip
    for option, path in outputs.items():
        if path is not None:
            _writable(option, path)  # all of them before anything is written
    try:
        if out == "-":
            report = generate(spec, sys.stdout.buffer)
        else:
            report = generate(spec, out)
        if config_out:
            Path(config_out).write_text(config_toml(spec))
        if schema_out:
            Path(schema_out).write_text(docs_schema(spec.namespace_prefix))
        if fga_out:
            Path(fga_out).write_text(docs_model(spec.namespace_prefix))
    except OSError as exc:  # the disk filled, say
        raise InvalidInput(f"cannot write {exc.filename or out!r}: {exc.strerror}") from None
    text = json.dumps(report.to_dict(), indent=2) if as_json else format_gen_report(report)
    click.echo(text, err=out == "-")


def _writable(option: str, path: str) -> None:
    """InvalidInput naming ``option`` when ``path`` cannot be a file written here."""
    p = Path(path)
    if p.is_dir():
        raise InvalidInput(f"{option} {path!r} is a directory; give a file name")
    if not p.parent.is_dir():
        raise InvalidInput(f"{option} {path!r}: the directory {str(p.parent)!r} does not exist")
