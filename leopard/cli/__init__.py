"""The ``leopard`` command: a thin shell over the Python API.

Each command opens the library object, calls one method and prints. Errors the
library raises on purpose (``LeopardError``) become one line on stderr and exit
status 1, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from leopard.errors import InvalidInput, LeopardError

F = TypeVar("F", bound=Callable[..., Any])


def _fail_cleanly(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LeopardError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:
            # output piped into `head`: not an error worth a traceback
            sys.stderr.close()
            sys.exit(0)

    return wrapper  # type: ignore[return-value]


def index_option(fn: F) -> F:
    return click.option(
        "--index",
        "index_path",
        envvar="LEOPARD_INDEX",
        metavar="DIR",
        help="Index directory (default: $LEOPARD_INDEX).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)


def _need_index(index_path: str | None) -> str:
    if not index_path:
        raise click.UsageError("no index given: pass --index DIR or set LEOPARD_INDEX")
    return index_path


def _open(index_path: str | None):  # type: ignore[no-untyped-def]
    from leopard.api import open_index

    return open_index(_need_index(index_path))


def _emit(value: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    click.echo(
        json.dumps(value, indent=None if not isinstance(value, dict) else 2)
        if as_json
        else text(value)
    )


def parse_position(text: str | None) -> dict[str, int]:
    """``topic:partition=offset,...`` as a position; InvalidInput naming the bad item."""
    if not text:
        return {}
    out: dict[str, int] = {}
    for item in text.split(","):
        item = item.strip()
        topic, _, rest = item.rpartition(":")
        part, eq, offset = rest.partition("=")
        if not topic or not eq or not part.isdigit() or not offset.isdigit():
            raise InvalidInput(
                f"--position: {item!r} is not topic:partition=offset (e.g. changes:0=1500)"
            )
        out[f"{topic}:{int(part)}"] = int(offset)
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="leopard-index")
def main() -> None:
    """Leopard: a group membership index with precomputed nested-group closures.

    Build an index from a snapshot of relation tuples, then ask it who is in what:

    \b
      leopard build org.txt --index ./idx
      leopard check user:alice group:eng --index ./idx
      export LEOPARD_INDEX=./idx; leopard groups user:alice
    """


# -- build -------------------------------------------------------------------------------


@main.command()
@click.argument("snapshots", nargs=-1, required=True, metavar="SNAPSHOT...")
@index_option
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="TOML set configuration."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "csv", "json", "jsonl"]),
    help="Snapshot format (default: from each file's extension).",
)
@click.option("--skip-invalid", is_flag=True, help="Index every valid record; count the rest.")
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, writable=True),
    help="With --skip-invalid: write each rejected record here, after a '#' line with the reason.",
)
@click.option(
    "--position",
    metavar="TOPIC:PART=OFFSET,...",
    help="Change-stream position the snapshot reflects; the consumer starts there.",
)
@click.option(
    "--id-order",
    type=click.Choice(["dfs", "input"]),
    default="dfs",
    show_default=True,
    help="Group id assignment: depth-first (related groups nearby) or first appearance.",
)
@json_option
@_fail_cleanly
def build(
    snapshots: tuple[str, ...],
    index_path: str | None,
    config_path: str | None,
    fmt: str | None,
    skip_invalid: bool,
    rejects: str | None,
    position: str | None,
    id_order: str,
    as_json: bool,
) -> None:
    """Build an index from snapshot files and swap it in atomically.

    SNAPSHOT is a file of tuples (text, OpenFGA CSV, JSON or JSONL; .gz is read
    transparently) or - for stdin. A malformed record stops the build with
    FILE:LINE unless --skip-invalid.

    \b
    Example:
      leopard build org.txt.gz extra.csv --index ./idx --config sets.toml
      leopard build dump.txt --index ./idx --skip-invalid --rejects rejects.txt
    """
    from leopard.api import build_index

    index_dir = _need_index(index_path)
    if rejects and not skip_invalid:
        raise click.UsageError("--rejects needs --skip-invalid")
    pos = parse_position(position)
    reject_file = open(rejects, "w", encoding="utf-8") if rejects else None  # noqa: SIM115
    on_reject = None
    if reject_file is not None:

        def on_reject(r: Any) -> None:
            reject_file.write(f"# {r.source}:{r.line}: {r.reason}\n{r.text}\n")

    total = sum(os.path.getsize(s) for s in snapshots if s != "-" and os.path.isfile(s))
    show = sys.stderr.isatty() and total > 0 and not as_json
    bar_context: Any = (
        click.progressbar(length=total, label="reading", file=sys.stderr, show_eta=True)
        if show
        else contextlib.nullcontext()
    )
    try:
        with bar_context as bar:
            report = build_index(
                list(snapshots),
                index_dir,
                config_path,
                format=fmt,
                skip_invalid=skip_invalid,
                on_reject=on_reject,
                position=pos,
                progress=bar.update if bar is not None else None,
                id_order=id_order,
            )
    finally:
        if reject_file is not None:
            reject_file.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(format_report(report.to_dict(), index_dir))


def format_report(r: dict[str, Any], index_dir: str) -> str:
    lines = [f"built {index_dir} in {r['seconds']:.2f} s"]
    rows = [
        ("tuples read", f"{r['tuples_read']:,}"),
        ("indexed", f"{r['tuples_indexed']:,}"),
        ("rejected (invalid)", f"{r['rejected']:,}"),
        ("skipped", f"{sum(r['skipped'].values()):,}"),
        ("groups", f"{r['groups']:,}"),
        ("subjects", f"{r['subjects']:,}"),
        ("nested edges", f"{r['nested_edges']:,}"),
        ("wildcards", f"{r['wildcards']:,}"),
        ("opaque usersets", f"{r['opaque_usersets']:,}"),
        (
            "largest group",
            f"{r['largest_group']} ({r['largest_group_members']:,} members)"
            if r["largest_group"]
            else "-",
        ),
        ("deepest nesting", f"{r['deepest_nesting']} groups"),
        ("cycles collapsed", f"{r['cycles_collapsed']:,} ({r['groups_in_cycles']:,} groups)"),
        ("bytes on disk", f"{r['bytes_on_disk']:,}"),
    ]
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    for reason, n in r["skipped"].items():
        lines.append(f"    skipped {n:,}: {reason}")
    return "\n".join(lines)


# -- queries -----------------------------------------------------------------------------


@main.command()
@click.argument("subject")
@click.argument("group")
@index_option
@click.option(
    "--at-least",
    metavar="TOKEN",
    help="Wait (bounded by --max-wait) until the index has applied this version.",
)
@click.option("--max-wait", type=float, default=1.0, show_default=True, help="Seconds.")
@json_option
@_fail_cleanly
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
    with _open(index_path) as ix:
        if at_least:
            ix.wait_for(at_least, max_wait)
        member = ix.check(subject, group)
        if as_json:
            click.echo(json.dumps({"member": member, "token": ix.version}))
        else:
            click.echo("true" if member else "false")


@main.command()
@click.argument("subject")
@index_option
@json_option
@_fail_cleanly
def groups(subject: str, index_path: str | None, as_json: bool) -> None:
    """List every group SUBJECT is in, transitively, one per line.

    \b
    Example:
      leopard groups user:alice --index ./idx
    """
    with _open(index_path) as ix:
        _emit(ix.groups_of(subject), as_json, "\n".join)


@main.command()
@click.argument("group")
@index_option
@click.option("--limit", type=click.IntRange(min=0), help="At most N subjects.")
@click.option("--after", metavar="SUBJECT", help="Start after this subject name (paging).")
@json_option
@_fail_cleanly
def members(
    group: str, index_path: str | None, limit: int | None, after: str | None, as_json: bool
) -> None:
    """List every leaf subject in GROUP, transitively, sorted by name.

    \b
    Example:
      leopard members group:eng --limit 100 --index ./idx
      leopard members group:eng --limit 100 --after user:u0000099
    """
    with _open(index_path) as ix:
        _emit(ix.members_of(group, limit=limit, after=after), as_json, "\n".join)


@main.command()
@click.argument("subject")
@click.argument("group")
@index_option
@json_option
@_fail_cleanly
def explain(subject: str, group: str, index_path: str | None, as_json: bool) -> None:
    """Show a shortest chain of groups from GROUP down to one SUBJECT is directly in.

    \b
    Example:
      leopard explain user:alice group:all-employees --index ./idx
    """
    with _open(index_path) as ix:
        chain = ix.explain(subject, group)
    if as_json:
        click.echo(json.dumps(chain))
    elif chain is None:
        click.echo(f"{subject} is not a member of {group}")
    else:
        click.echo(" -> ".join(chain) + f" -> {subject}")


@main.command()
@index_option
@json_option
@_fail_cleanly
def stats(index_path: str | None, as_json: bool) -> None:
    """Show counts, sizes, the stream position and the last build's report.

    \b
    Example:
      leopard stats --index ./idx --json
    """
    with _open(index_path) as ix:
        s = ix.stats()
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
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


# -- maintenance ---------------------------------------------------------------------


@main.command()
@index_option
@json_option
@_fail_cleanly
def compact(index_path: str | None, as_json: bool) -> None:
    """Fold the incremental layer into a new base and swap it in.

    Runs beside a live index: queries and a consumer in other processes keep going
    (the consumer resumes from the new base's position).

    \b
    Example:
      leopard compact --index ./idx
    """
    from leopard.core.compact import compact as run_compaction

    index_dir = _need_index(index_path)
    report = run_compaction(index_dir)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(format_report(report.to_dict(), index_dir))


@main.command()
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
@_fail_cleanly
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
    from leopard.gen.org import OrgSpec, config_toml, format_report, generate

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
    text = json.dumps(report.to_dict(), indent=2) if as_json else format_report(report)
    click.echo(text, err=out == "-")


# -- the stream ----------------------------------------------------------------------


def broker_options(fn: F) -> F:
    fn = click.option(
        "--topic",
        "topics",
        multiple=True,
        required=True,
        envvar="LEOPARD_TOPIC",
        help="Change topic (repeatable; default: $LEOPARD_TOPIC).",
    )(fn)
    return click.option(
        "--brokers",
        required=True,
        envvar="LEOPARD_BROKERS",
        metavar="HOST:PORT[,...]",
        help="Kafka bootstrap servers (default: $LEOPARD_BROKERS).",
    )(fn)


def consumer_options(fn: F) -> F:
    from ingest.codecs import CODECS

    for decorator in reversed(
        [
            click.option("--group-id", default="leopard", show_default=True),
            click.option(
                "--format",
                "fmt",
                type=click.Choice(CODECS),
                default="native",
                show_default=True,
                help="Change event format.",
            ),
            click.option(
                "--codec-option",
                "codec_options",
                multiple=True,
                metavar="KEY=VALUE",
                help="Codec option, e.g. debezium column names: subject_id=member_id.",
            ),
            click.option("--dlq-topic", help="Dead-letter topic (default: <topic>.dlq)."),
            click.option(
                "--compact-threshold",
                type=int,
                default=500_000,
                show_default=True,
                help="Compact when the incremental layer holds this many sets.",
            ),
            click.option(
                "--linger-ms",
                type=click.IntRange(min=0),
                default=50,
                show_default=True,
                help="Once caught up, wait this long for more changes before the next "
                "batch: fewer, larger batches, for that much freshness (0: none).",
            ),
        ]
    ):
        fn = decorator(fn)
    return fn


def consumer_settings(
    brokers: str,
    topics: tuple[str, ...],
    group_id: str,
    fmt: str,
    codec_options: tuple[str, ...],
    dlq_topic: str | None,
    compact_threshold: int,
    linger_ms: int,
):  # type: ignore[no-untyped-def]
    from ingest.consumer import ConsumerSettings

    options = {}
    for item in codec_options:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InvalidInput(f"--codec-option {item!r} is not KEY=VALUE")
        options[key] = value
    return ConsumerSettings(
        brokers=brokers,
        topics=list(topics),
        group_id=group_id,
        format=fmt,
        codec_options=options,
        dlq_topic=dlq_topic,
        compact_threshold=compact_threshold,
        linger_ms=linger_ms,
    )


@main.command()
@index_option
@broker_options
@consumer_options
@click.option("--idle-exit", type=float, help="Exit after this many seconds without messages.")
@click.option("-v", "--verbose", is_flag=True, help="Log every batch.")
@_fail_cleanly
def consume(
    index_path: str | None,
    brokers: str,
    topics: tuple[str, ...],
    group_id: str,
    fmt: str,
    codec_options: tuple[str, ...],
    dlq_topic: str | None,
    compact_threshold: int,
    linger_ms: int,
    idle_exit: float | None,
    verbose: bool,
) -> None:
    """Apply tuple changes from Kafka to the index, continuously.

    Resumes from the offsets stored in the index (a fresh index starts where
    'leopard build --position' said, else at the beginning). Each batch and its
    offsets are written together, so a crash loses or doubles nothing. SIGTERM
    finishes the batch in hand and exits.

    \b
    Example:
      leopard consume --index ./idx --brokers 127.0.0.1:9092 --topic changes
    """
    import logging

    from ingest.consumer import ChangeConsumer

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    settings = consumer_settings(
        brokers, topics, group_id, fmt, codec_options, dlq_topic, compact_threshold, linger_ms
    )

    def progress(stats):  # type: ignore[no-untyped-def]
        if verbose:
            click.echo(
                f"batch {stats.batches}: {stats.changes:,} changes, lag {stats.total_lag():,}, "
                f"{stats.dead_letters} dead letters",
                err=True,
            )

    consumer = ChangeConsumer(_need_index(index_path), settings, on_batch=progress)
    consumer.install_signal_handlers()
    stats = consumer.run(idle_exit=idle_exit)
    click.echo(
        f"consumed {stats.messages:,} messages ({stats.changes:,} changes) in "
        f"{stats.batches:,} batches; {stats.dead_letters} dead letters; "
        f"version {consumer.index.version}",
        err=True,
    )


@main.command()
@click.argument("source", default="-", metavar="[FILE]")
@broker_options
@json_option
@_fail_cleanly
def publish(source: str, brokers: str, topics: tuple[str, ...], as_json: bool) -> None:
    """Write changes to a topic and print the token of the last write.

    FILE (default: stdin) holds '+tuple' (touch) or '-tuple' (delete) lines, or
    native JSON events. Pass the token to 'leopard check --at-least' (or the HTTP
    API's at_least) to read your own write.

    \b
    Example:
      echo '+group:eng#member@user:alice' | leopard publish --brokers 127.0.0.1:9092 --topic changes
    """
    from ingest.kafka.publish import parse_change_lines, result_json
    from ingest.kafka.publish import publish as run_publish

    if len(topics) != 1:
        raise click.UsageError("publish writes to exactly one --topic")
    if source == "-":
        changes = list(parse_change_lines(sys.stdin, "<stdin>"))
    else:
        try:
            with open(source, encoding="utf-8") as fh:
                changes = list(parse_change_lines(fh, source))
        except OSError as exc:
            raise InvalidInput(f"cannot read {source!r}: {exc.strerror}") from exc
    result = run_publish(changes, brokers, topics[0])
    click.echo(result_json(result) if as_json else result.token)


import leopard.cli.serve  # noqa: E402, F401  (registers `leopard serve`; imported last: it imports this module)


def run() -> None:  # pragma: no cover - console entry point
    main()


if __name__ == "__main__":  # pragma: no cover
    main()
