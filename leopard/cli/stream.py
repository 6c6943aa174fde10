"""The change stream: ``leopard consume`` applies it, ``leopard publish`` writes to it.

Both need the ``[kafka]`` extra (kafka-python), loaded by ``ingest.consumer`` and
``ingest.kafka.publish``.
"""

from __future__ import annotations

import logging
import sys

import click

from ingest.consumer import ChangeConsumer, ConsumerStats
from ingest.kafka.probe import broker_answers
from ingest.kafka.publish import parse_change_lines, result_json
from ingest.kafka.publish import publish as run_publish
from ingest.kafka.sharing import split
from ingest.settings import check_topic
from leopard.cli.options import (
    broker_options,
    consumer_options,
    consumer_settings,
    default_group_id,
    fail_cleanly,
    index_option,
    json_option,
    need_index,
    quiet_kafka_client,
)
from leopard.errors import InvalidInput

__all__ = ["consume", "publish"]


@click.command()
@index_option
@broker_options
@consumer_options
@click.option(
    "--idle-exit",
    type=float,
    help="Exit after this many seconds without messages (status 1 if a partition is stopped "
    "at a gap).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every batch.")
@fail_cleanly
def consume(
    index_path: str | None,
    brokers: str,
    topics: tuple[str, ...],
    group_id: str | None,
    fmt: str,
    codec_options: tuple[str, ...],
    dlq_topic: str | None,
    compact_threshold: int,
    linger_ms: int,
    on_gap: str,
    idle_exit: float | None,
    verbose: bool,
) -> None:
    """Apply tuple changes from Kafka to the index, continuously.

    Resumes from the offsets stored in the index (a fresh index starts where
    'leopard build --position' said, else at the beginning). Each batch and its
    offsets are written together, so a crash loses or doubles nothing. SIGTERM
    finishes the batch in hand and exits. Brokers that do not answer, at the start
    (said once) or later, are retried with backoff until they do.

    \b
    Example:
      leopard consume --index ./idx --brokers 127.0.0.1:9092 --topic changes
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    quiet_kafka_client(verbose)
    index_dir = need_index(index_path)
    settings = consumer_settings(
        brokers,
        topics,
        group_id if group_id is not None else default_group_id("consume", index_dir),
        fmt,
        codec_options,
        dlq_topic,
        compact_threshold,
        linger_ms,
        on_gap,
    )

    def progress(stats: ConsumerStats) -> None:
        if verbose:
            click.echo(
                f"batch {stats.batches}: {stats.changes:,} changes, lag {stats.total_lag():,}, "
                f"{stats.dead_letters} dead letters",
                err=True,
            )

    if not broker_answers(settings.brokers, settings.probe_timeout):  # retried, as later
        click.echo(
            f"leopard: the brokers {settings.brokers!r} do not answer yet; retrying until "
            "they do (Ctrl-C stops)",
            err=True,
        )
    consumer = ChangeConsumer(index_dir, settings, on_batch=progress)
    consumer.install_signal_handlers()
    stats = consumer.run(idle_exit=idle_exit)
    click.echo(
        f"consumed {stats.messages:,} messages ({stats.changes:,} changes) in "
        f"{stats.batches:,} batches; {stats.dead_letters} dead letters"
        + (f" ({stats.refused:,} changes the schema refuses)" if stats.refused else "")
        + (f"; {stats.skipped:,} changes feed no indexed set" if stats.skipped else "")
        + "; "
        f"version {consumer.index.version}",
        err=True,
    )
    if stats.gaps:  # the index is behind those partitions: no success to report
        stopped = "; ".join(f"{p}: {why}" for p, why in sorted(stats.gaps.items()))
        raise InvalidInput(f"partitions stopped at a gap, applied no further: {stopped}")
    if stats.elsewhere:  # so is it behind these, for good
        raise InvalidInput(split(settings.group_id, stats.elsewhere))


@click.command()
@click.argument("source", default="-", metavar="[FILE]")
@broker_options
@json_option
@fail_cleanly
def publish(source: str, brokers: str, topics: tuple[str, ...], as_json: bool) -> None:
    """Write changes to a topic and print the token of the last write.

    FILE (default: stdin) holds '+tuple' (touch) or '-tuple' (delete) lines, or
    native JSON events. Pass the token to 'leopard check --at-least' (or the HTTP
    API's at_least) to read your own write.

    \b
    Example:
      echo '+group:eng#member@user:alice' | leopard publish --brokers 127.0.0.1:9092 --topic changes
    """
    if len(topics) != 1:
        raise click.UsageError("publish writes to exactly one --topic")
    check_topic("--topic", topics[0])
    if source == "-":
        changes = list(parse_change_lines(sys.stdin.buffer, "<stdin>"))
    else:
        try:
            with open(source, "rb") as fh:
                changes = list(parse_change_lines(fh, source))
        except OSError as exc:
            raise InvalidInput(f"cannot read {source!r}: {exc.strerror}") from exc
    result = run_publish(changes, brokers, topics[0])
    click.echo(result_json(result) if as_json else result.token)
