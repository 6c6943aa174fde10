"""The query commands: ``check``, ``groups``, ``members``, ``explain``, ``stats``.

Each opens the index (``leopard.core.index.Index``, which loads no pyarrow, unlike
``leopard.api`` with its snapshot readers), calls one method and prints: a plain
line per answer, or JSON with --json.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from leopard.cli.options import fail_cleanly, format_report, index_option, json_option, need_index
from leopard.core.sharded import open_any

__all__ = ["check", "explain", "groups", "members", "stats"]


def _emit(value: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    if not as_json and isinstance(value, list) and not value:
        return  # no line at all: a blank one would read as one empty name
    click.echo(
        json.dumps(value, indent=None if not isinstance(value, dict) else 2)
        if as_json
        else text(value)
    )


@click.command()
@click.argument("subject")
@click.argument("group")
@index_option
@click.option(
    "--at-least",
    metavar="TOKEN",
    help="Wait (bounded by --max-wait) until the index has applied this version "
    "(a Leopard token, or the ZedToken of a SpiceDB write when the index follows SpiceDB).",
)
@click.option(
    "--max-wait", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Seconds."
)
@json_option
@fail_cleanly
def check(
    subject: str,
    group: str,
    index_path: str | None,
    at_least: str | None,
    max_wait: float,
    as_json: bool,
) -> None:
    """Print true if SUBJECT is in GROUP (directly or through nesting), else false.

    Exit status is 0 either way; errors exit 1.

    \b
    Example:
      leopard check user:alice group:eng --index ./idx
      leopard check group:backend#member group:eng#member
    """
    with open_any(need_index(index_path)) as ix:
        if at_least is not None:  # an empty one is refused, not taken as none
            ix.wait_for(at_least, max_wait)
        member = ix.check(subject, group)
        if as_json:
            click.echo(json.dumps({"member": member, "token": ix.version}))
        else:
            click.echo("true" if member else "false")


@click.command()
@click.argument("subject")
@index_option
@click.option("--type", "type_name", metavar="TYPE", help="Only sets of objects of this type.")
@click.option("--permission", metavar="NAME", help="Only sets of this relation or permission.")
@json_option
@fail_cleanly
def groups(
    subject: str,
    index_path: str | None,
    type_name: str | None,
    permission: str | None,
    as_json: bool,
) -> None:
    """List every group (every set) SUBJECT is in, transitively, one per line.

    With a schema, --type and --permission ask what SpiceDB calls LookupResources:
    every object of TYPE on which SUBJECT has PERMISSION.

    \b
    Example:
      leopard groups user:alice --index ./idx
      leopard groups user:anne --type doc --permission view --index ./idx
    """
    with open_any(need_index(index_path)) as ix:
        found = ix.groups_of(subject, type=type_name, permission=permission)
    _emit(found, as_json, "\n".join)


@click.command()
@click.argument("group")
@index_option
@click.option("--limit", type=click.IntRange(min=1), help="At most N subjects (1 or more).")
@click.option("--after", metavar="SUBJECT", help="Start after this subject name (paging).")
@json_option
@fail_cleanly
def members(
    group: str, index_path: str | None, limit: int | None, after: str | None, as_json: bool
) -> None:
    """List every leaf subject in GROUP, transitively, sorted by name.

    \b
    Example:
      leopard members group:eng --limit 100 --index ./idx
      leopard members group:eng --limit 100 --after user:u000099
    """
    with open_any(need_index(index_path)) as ix:
        _emit(ix.members_of(group, limit=limit, after=after), as_json, "\n".join)


@click.command()
@click.argument("subject")
@click.argument("group")
@index_option
@click.option(
    "--steps",
    is_flag=True,
    help="One step a line, each with the tuple or the schema's rewrite it came from.",
)
@json_option
@fail_cleanly
def explain(subject: str, group: str, index_path: str | None, steps: bool, as_json: bool) -> None:
    """Show a shortest chain of groups from GROUP down to one SUBJECT is directly in.

    \b
    Example:
      leopard explain user:alice group:all-employees --index ./idx
      leopard explain user:anne doc:d1#view --steps --index ./idx
    """
    with open_any(need_index(index_path)) as ix:
        chain = ix.explain(subject, group, steps=steps)
    if chain is None:
        click.echo("null" if as_json else f"{subject} is not a member of {group}")
    elif steps:
        found = [{"set": s.set, "via": s.via} for s in chain]  # type: ignore[union-attr]
        if as_json:
            click.echo(json.dumps(found))
        else:
            click.echo(found[0]["set"])
            for step in found[1:]:
                click.echo(f"  -> {step['set']}    ({step['via']})")
    elif as_json:
        click.echo(json.dumps(chain))
    else:
        # a userset's chain ends at its own set: it is not named twice
        tail = [] if chain[-1] == subject else [subject]  # type: ignore[index]
        click.echo(" -> ".join([*chain, *tail]))  # type: ignore[misc]


@click.command()
@index_option
@json_option
@fail_cleanly
def stats(index_path: str | None, as_json: bool) -> None:
    """Show counts, sizes, the stream position and the last build's report.

    \b
    Example:
      leopard stats --index ./idx --json
    """
    with open_any(need_index(index_path)) as ix:
        s = ix.stats()
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    shards = s.get("shards")
    if shards is not None:  # a sharded index: each shard is an index of its own
        click.echo(f"sharded index of {len(shards)} shards")
        for k, one in enumerate(shards):
            click.echo(f"\n-- shard {k}")
            _print_stats(one)
        return
    _print_stats(s)


def _print_stats(s: dict[str, Any]) -> None:
    for key in (
        "path",
        "generation",
        "groups",
        "subjects",
        "overlay_sets",
        "bytes_on_disk",
        "version",
    ):
        click.echo(f"{key:<14} {s[key]}")
    click.echo(f"{'position':<14} {json.dumps(s['position'])}")
    if s.get("build"):
        click.echo(format_report(s["build"], s["path"]))
