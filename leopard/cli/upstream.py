"""``leopard follow``: an upstream followed directly, its changes applied as they happen.

It reaches SpiceDB through ``ingest.upstream`` (grpc and the authzed messages, the
``[grpc]`` extra) and runs the consumer loop of ``ingest.consumer`` over its Watch.
"""

from __future__ import annotations

import logging

import click

from ingest.consumer import ConsumerStats
from ingest.upstream.watch import SpiceDBFollower
from leopard.cli.bootstrap import spicedb_source
from leopard.cli.options import fail_cleanly, index_option, need_index, upstream_options

__all__ = ["follow"]


@click.command()
@index_option
@click.option(
    "--source",
    "source_text",
    required=True,
    metavar="spicedb:TARGET",
    help="The SpiceDB to follow: any gRPC target (127.0.0.1:50051, unix:///run/s.sock).",
)
@upstream_options
@click.option(
    "--rebuild-on-gap",
    is_flag=True,
    help="When SpiceDB no longer has the changes after the index's revision (older than "
    "its watch window) or its schema changed, rebuild the index from it and go on, "
    "instead of stopping.",
)
@click.option(
    "--compact-threshold",
    type=int,
    default=500_000,
    show_default=True,
    help="Compact once the incremental layer holds this many sets.",
)
@click.option("--idle-exit", type=float, help="Exit after this many seconds without changes.")
@click.option("-v", "--verbose", is_flag=True, help="Log every batch.")
@fail_cleanly
def follow(
    index_path: str | None,
    source_text: str,
    source_key: str | None,
    source_tls: bool | None,
    rebuild_on_gap: bool,
    compact_threshold: int,
    idle_exit: float | None,
    verbose: bool,
) -> None:
    """Apply SpiceDB's changes to the index as they happen, with its Watch.

    Watches from the revision the index records ('leopard build --from' sets it),
    and stores each applied revision with its changes in one write batch, so a
    crash loses or doubles nothing. Reconnects with backoff when SpiceDB is away.
    A ZedToken of a SpiceDB write is then accepted as --at-least (and at_least).
    SIGTERM finishes the batch in hand and exits.

    \b
    Example:
      leopard build --index ./idx --from spicedb:127.0.0.1:50051 --source-key KEY
      leopard follow --index ./idx --source spicedb:127.0.0.1:50051 --source-key KEY
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    source = spicedb_source(source_text, source_key, source_tls)

    def progress(stats: ConsumerStats) -> None:
        if verbose:
            click.echo(
                f"batch {stats.batches}: {stats.changes:,} changes, {stats.dead_letters} refused",
                err=True,
            )

    follower = SpiceDBFollower(
        need_index(index_path),
        source,
        on_batch=progress,
        rebuild_on_gap=rebuild_on_gap,
        compact_threshold=compact_threshold,
    )
    follower.install_signal_handlers()
    stats = follower.run(idle_exit=idle_exit)
    click.echo(
        f"followed {source.name}: {stats.messages:,} revisions ({stats.changes:,} changes); "
        f"{stats.dead_letters} refused; version {follower.index.version}",
        err=True,
    )
