"""The ``verify`` command: read a whole index back and report what is damaged.

The checking is ``leopard.core.verify.verify_index``; this prints its findings, one
line each, and exits 1 when there is any, or prints a summary and exits 0.
"""

from __future__ import annotations

import json

import click

from leopard.cli.options import fail_cleanly, index_option, json_option, need_index
from leopard.core.verify import verify_index

__all__ = ["verify"]


@click.command()
@index_option
@json_option
@fail_cleanly
def verify(index_path: str | None, as_json: bool) -> None:
    """Read every key and value of the live index and report what is damaged.

    Checks that each value decodes, the checksums of the group names and metadata,
    and what the families say of each other (ids in range, closures against edges,
    subject names both ways; with a schema, its derived edges and their support
    counts against those the stored tuples derive). Prints one line per finding and
    exits 1, or a summary and exits 0. Run it while no consumer writes to the index.

    \b
    Example:
      leopard verify --index ./idx
    """
    report = verify_index(need_index(index_path))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo("\n".join(report.problems) if report.problems else report.summary())
    if not report.ok:
        click.get_current_context().exit(1)
