"""``leopard gen``: a synthetic org as tuples, the same as ``scripts/gen-org``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from leopard.cli.options import fail_cleanly, json_option
from leopard.gen import OrgSpec, config_toml, generate
from leopard.gen import format_report as format_gen_report

__all__ = ["gen"]


@click.command()
@click.option("-n", "--tuples", type=int, default=100_000, show_default=True, help="Tuple count.")
@click.option(
    "--out", required=True, metavar="FILE", help="Output file (.gz compresses; - for stdout)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--config-out", metavar="FILE", help="Also write the matching set configuration.")
@click.option("--no-cycles", is_flag=True, help="A strict DAG (SpiceDB refuses cycles).")
@click.option("--no-wildcards", is_flag=True)
@click.option("--no-rewrites", is_flag=True, help="Only 'member' tuples, no 'manager'.")
@click.option("--max-depth", type=int, default=15, show_default=True)
@json_option
@fail_cleanly
def gen(
    tuples: int,
    out: str,
    seed: int,
    config_out: str | None,
    no_cycles: bool,
    no_wildcards: bool,
    no_rewrites: bool,
    max_depth: int,
    as_json: bool,
) -> None:
    """Generate a synthetic org (users, nested groups, cycles, wildcards) as tuples.

    Deterministic by seed. The same as scripts/gen-org.

    \b
    Example:
      leopard gen -n 1000000 --out org.txt --config-out org.toml
    """
    spec = OrgSpec(
        tuples=tuples,
        seed=seed,
        cycles=not no_cycles,
        wildcards=not no_wildcards,
        rewrites=not no_rewrites,
        max_depth=max_depth,
    )
    if out == "-":
        report = generate(spec, sys.stdout.buffer)
    else:
        report = generate(spec, out)
    if config_out:
        Path(config_out).write_text(config_toml(spec))
    text = json.dumps(report.to_dict(), indent=2) if as_json else format_gen_report(report)
    click.echo(text, err=out == "-")
