"""The option sets and helpers every ``leopard`` command shares.

Shared options are decorators, so that commands taking the same input cannot disagree
on its name, its environment variable or its help: ``index_option`` and ``json_option``
on nearly every command, ``wait_option`` on ``build`` and ``compact``,
``broker_options`` on ``consume`` and ``publish``,
``consumer_options`` on ``consume`` and ``serve``. ``fail_cleanly`` turns the errors
the library raises on purpose into one line on stderr and exit status 1.

Every command module imports this one, so it stays light: click, the errors and the
codec names, nothing that loads pyarrow, kafka-python or uvicorn.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ingest.codecs import CODECS
from ingest.settings import ON_GAP, ConsumerSettings, check_topic, parse_codec_options
from leopard.errors import InvalidInput, LeopardError

__all__ = [
    "broker_options",
    "consumer_options",
    "consumer_settings",
    "fail_cleanly",
    "format_report",
    "index_option",
    "interval_option",
    "json_option",
    "need_index",
    "parse_position",
    "quiet_kafka_client",
    "read_token_file",
    "wait_option",
]

F = TypeVar("F", bound=Callable[..., Any])


def fail_cleanly(fn: F) -> F:
    """``LeopardError`` becomes ``click.ClickException`` (one line, exit 1, no traceback);
    a closed output pipe ends the command quietly with status 0."""

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


def quiet_kafka_client(verbose: bool) -> None:
    """kafka-python logs every failed attempt to reach a broker (several a second while
    one is away); the consumer says it once itself. Its warnings and errors are shown
    with ``--verbose`` only."""
    logging.getLogger("kafka").setLevel(logging.WARNING if verbose else logging.CRITICAL)


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


def wait_option(fn: F) -> F:
    """--wait: for a build or compaction of the same index to finish (``build``,
    ``compact``), instead of failing at once."""
    return click.option(
        "--wait",
        is_flag=True,
        help="If another build or compaction is writing the index, wait for it to finish "
        "instead of failing.",
    )(fn)


def need_index(index_path: str | None) -> str:
    """The index directory given by --index or $LEOPARD_INDEX; a usage error if none."""
    if not index_path:
        raise click.UsageError("no index given: pass --index DIR or set LEOPARD_INDEX")
    return index_path


def read_token_file(path: str) -> str:
    """The bearer token in the file of --auth-token-file; InvalidInput naming the file."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"--auth-token-file {path!r} cannot be read: {exc}") from None
    if not token:
        raise InvalidInput(f"--auth-token-file {path!r} is empty")
    if any(c.isspace() for c in token) or not token.isprintable():
        raise InvalidInput(
            f"--auth-token-file {path!r}: the token must be one line of printable "
            "characters without spaces"
        )
    return token


def parse_position(text: str | None) -> dict[str, int]:
    """``topic:partition=offset,...`` as a position; InvalidInput naming the bad item."""
    if not text:
        return {}
    out: dict[str, int] = {}
    for item in text.split(","):
        item = item.strip()
        topic, _, rest = item.rpartition(":")
        part, eq, offset = rest.partition("=")
        if not (topic and eq and _DIGITS.fullmatch(part) and _DIGITS.fullmatch(offset)):
            raise InvalidInput(
                f"--position: {item!r} is not topic:partition=offset (e.g. changes:0=1500)"
            )
        check_topic(f"--position {item!r}: the topic", topic)
        at, number = int(offset), int(part)
        if at > _MAX_OFFSET:
            raise InvalidInput(f"--position: {item!r}: the offset must be 0 to {_MAX_OFFSET}")
        if number > _MAX_PARTITION:
            raise InvalidInput(f"--position: {item!r}: the partition must be 0 to {_MAX_PARTITION}")
        key = f"{topic}:{number}"
        if key in out:
            raise InvalidInput(f"--position: {key} is given twice")
        out[key] = at
    return out


# Kafka's limits: 32-bit partitions, 64-bit offsets (ASCII digits only: str.isdigit
# takes '²', which int() refuses)
_DIGITS = re.compile(r"[0-9]+")
_MAX_PARTITION = 2**31 - 1
_MAX_OFFSET = 2**63 - 1


GIB = 1 << 30


def _size(n: int) -> str:
    """Bytes as GiB (two decimals), or as MiB below one GiB."""
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / (1 << 20):.1f} MiB"


def format_report(r: dict[str, Any], index_dir: str) -> str:
    """A build report (of ``build``, ``compact`` or ``stats``) as aligned lines."""
    lines = [f"built {index_dir} in {r['seconds']:.2f} s"]
    shards = r.get("shards") or 0
    # a sharded build's report adds the shards' counts (combine_reports): said so
    summed = f" (summed over the {shards} shards)" if shards else ""
    one = " (the most of one shard)" if shards else ""
    rows = [
        ("tuples read", f"{r['tuples_read']:,}"),
        ("indexed", f"{r['tuples_indexed']:,}{summed}"),
        *(
            (("duplicates", f"{r['duplicates']:,} of those (each indexed once)"),)
            if r.get("duplicates")
            else ()
        ),
        ("rejected (invalid)", f"{r['rejected']:,}"),
        ("skipped", f"{sum(r['skipped'].values()):,}{one}"),
        ("groups", f"{r['groups']:,}{one}"),
        ("subjects", f"{r['subjects']:,}{summed}"),
        ("nested edges", f"{r['nested_edges']:,}"),
        ("derived edges", f"{r.get('derived_edges', 0):,}"),
        ("wildcards", f"{r['wildcards']:,}"),
        ("opaque usersets", f"{r['opaque_usersets']:,}"),
        (
            "largest group",
            f"{r['largest_group']} ({r['largest_group_members']:,} members"
            + (" on one shard: its members are spread over the shards)" if shards else ")")
            if r["largest_group"]
            else "-",
        ),
        ("deepest nesting", f"{r['deepest_nesting']} groups"),
        ("cycles collapsed", f"{r['cycles_collapsed']:,} ({r['groups_in_cycles']:,} groups)"),
        ("bytes on disk", f"{r['bytes_on_disk']:,}"),
    ]
    if shards:
        every = f"{r.get('replicated', 0):,} tuples (userset or wildcard subjects)"
        rows.insert(1, ("shards", f"{shards}; {every} are on every shard, and count on each"))
    if r.get("memory_budget"):
        spilled = r.get("spilled_rows", 0)
        rows.append(
            (
                "memory",
                f"peak {_size(r.get('peak_memory', 0))} of a {_size(r['memory_budget'])} budget"
                + (f"; {spilled:,} rows spilled, {r['subject_ranges']} ranges" if spilled else "")
                + (
                    " (over it: names, sets and closures, and reading, do not spill)"
                    if r.get("peak_memory", 0) > r["memory_budget"]
                    else ""
                ),
            )
        )
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    for reason, n in r["skipped"].items():
        lines.append(f"    skipped {n:,}: {reason}")
    not_indexed = r.get("not_indexed") or {}
    if not_indexed:
        lines.append(f"  not indexed ({len(not_indexed)}; queries on them are refused):")
        lines += [f"    {name}: {why}" for name, why in not_indexed.items()]
    return "\n".join(lines)


def broker_options(fn: F) -> F:
    """--brokers and --topic, both required (``consume``, ``publish``)."""
    fn = click.option(
        "--topic",
        "topics",
        multiple=True,
        required=True,
        envvar="LEOPARD_TOPIC",
        help="Change topic (consume: repeatable; publish: exactly one; default: $LEOPARD_TOPIC).",
    )(fn)
    return click.option(
        "--brokers",
        required=True,
        envvar="LEOPARD_BROKERS",
        metavar="HOST:PORT[,...]",
        help="Kafka bootstrap servers (default: $LEOPARD_BROKERS).",
    )(fn)


def default_group_id(command: str, index_dir: str | Path) -> str:
    """A consumer group of this index's own.

    Every index (every replica, every shard) must apply every partition; indexes sharing
    a consumer group would split the partitions between them and each answer from part
    of the stream. So, unless --group-id is given, the group is named after the command,
    the host and the index directory (stable across restarts).
    """
    digest = hashlib.sha1(str(Path(index_dir).resolve()).encode()).hexdigest()[:10]
    return f"leopard-{command}-{socket.gethostname()}-{digest}"


def consumer_options(fn: F) -> F:
    """How a consumer reads the stream (``consume``, ``serve``); see ``consumer_settings``."""
    for decorator in reversed(
        [
            click.option(
                "--group-id",
                metavar="NAME",
                help="Kafka consumer group, for offsets shown to lag tools (default: one of "
                "this index's own, leopard-COMMAND-HOST-DIGEST; indexes sharing a group "
                "would each get part of the partitions).",
            ),
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
            click.option(
                "--on-gap",
                type=click.Choice(ON_GAP),
                default="stop",
                show_default=True,
                help="When a partition's log no longer holds what the index applied up to "
                "(the broker restarted empty, the topic was recreated, messages were "
                "deleted unread): stop applying it, not ready, versions of it refused; "
                "or go on from the log's earliest offset, for topics whose producers "
                "make that safe.",
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
    on_gap: str = "stop",
) -> ConsumerSettings:
    """The values of ``consumer_options`` as settings (shared by consume and serve)."""
    return ConsumerSettings(
        brokers=brokers,
        topics=list(topics),
        group_id=group_id,
        format=fmt,
        codec_options=parse_codec_options(codec_options),
        dlq_topic=dlq_topic,
        compact_threshold=compact_threshold,
        linger_ms=linger_ms,
        on_gap=on_gap,
    )


def interval_option(fn: F) -> F:
    """--interval (or --source-interval): how often an OpenFGA upstream's ReadChanges is
    polled (``follow``, ``serve --source``)."""
    return click.option(
        "--interval",
        "--source-interval",
        "interval",
        type=click.FloatRange(min=0.01, max=3600),
        default=1.0,
        show_default=True,
        metavar="SECONDS",
        help="With openfga:URL, seconds between polls of ReadChanges once caught up.",
    )(fn)


def upstream_options(fn: F) -> F:
    """--source-key and --source-tls/--source-insecure: how to reach a SpiceDB given as
    ``spicedb:TARGET`` (``build --from``, ``follow``, ``serve --source``)."""
    fn = click.option(
        "--source-tls/--source-insecure",
        "source_tls",
        default=None,
        help="Reach the upstream over TLS, or over plain gRPC (default: plain for a Unix "
        "socket or a loopback address, TLS otherwise).",
    )(fn)
    return click.option(
        "--source-key",
        envvar="LEOPARD_SOURCE_KEY",
        metavar="KEY",
        help="The upstream's preshared key (SpiceDB's --grpc-preshared-key), sent as a "
        "bearer token; or $LEOPARD_SOURCE_KEY.",
    )(fn)
