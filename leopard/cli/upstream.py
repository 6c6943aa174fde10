"""``leopard follow``: an upstream followed directly, its changes applied as they happen.

SpiceDB is reached through ``ingest.upstream`` (grpc and the authzed messages, the
``[grpc]`` extra) and followed with its Watch; an OpenFGA store through its HTTP API,
polling ReadChanges. Both run the consumer loop of ``ingest.consumer``.
``serve_follower`` makes the same follower for ``leopard serve --source``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import click

from ingest.consumer import ChangeConsumer, ConsumerStats
from ingest.upstream.readchanges import OpenFGAFollower
from leopard.cli.bootstrap import openfga_source, parse_source, spicedb_source
from leopard.cli.options import (
    fail_cleanly,
    index_option,
    interval_option,
    need_index,
    upstream_options,
)
from leopard.core.index import Index
from leopard.errors import InvalidInput

_grpc_missing: ModuleNotFoundError | None = None
try:
    from ingest.upstream.watch import SpiceDBFollower
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    _grpc_missing = exc  # spicedb_source says so when a SpiceDB is asked for

__all__ = ["follow", "make_follower", "serve_follower"]


def make_follower(
    source_text: str,
    index_dir: str,
    *,
    key: str | None,
    tls: bool | None,
    store_id: str | None,
    interval: float,
    index: Index | None = None,
    **options: object,
) -> ChangeConsumer:
    """The follower of ``spicedb:TARGET`` or ``openfga:URL`` (with ``store_id``);
    ``options`` go to its constructor (``rebuild_on_gap``, ``compact_threshold``, ...)."""
    if parse_source(source_text)[0] == "openfga":
        store = openfga_source(source_text, key, store_id)
        return OpenFGAFollower(index_dir, store, index=index, interval=interval, **options)  # type: ignore[arg-type]
    if store_id:
        raise InvalidInput("--store-id names an OpenFGA store; a SpiceDB has none")
    source = spicedb_source(source_text, key, tls)
    return SpiceDBFollower(index_dir, source, index=index, **options)  # type: ignore[arg-type]


def serve_follower(
    source_text: str,
    index_dir: str,
    *,
    key: str | None,
    tls: bool | None,
    store_id: str | None,
    interval: float,
    compact_threshold: int,
    linger_ms: int,
) -> Callable[[Index], ChangeConsumer]:
    """What ``leopard serve --source`` runs beside HTTP: the follower of the upstream,
    made on the served index (the source is checked now, before the index opens)."""
    kind = parse_source(source_text)[0]
    if kind == "openfga":
        openfga_source(source_text, key, store_id)
    else:
        spicedb_source(source_text, key, tls)
        # serve's --store-id is the OpenFGA store it answers for, not an upstream's
        store_id = None

    def make(index: Index) -> ChangeConsumer:
        return make_follower(
            source_text,
            index_dir,
            key=key,
            tls=tls,
            store_id=store_id,
            interval=interval,
            index=index,
            compact_threshold=compact_threshold,
            linger_ms=linger_ms,
        )

    return make


@click.command()
@index_option
@click.option(
    "--source",
    "source_text",
    required=True,
    metavar="spicedb:TARGET|openfga:URL",
    help="The SpiceDB to follow: any gRPC target (127.0.0.1:50051, unix:///run/s.sock); "
    "or an OpenFGA server's HTTP API, with --store-id.",
)
@upstream_options
@click.option("--store-id", metavar="ID", help="With openfga:URL: the OpenFGA store to follow.")
@interval_option
@click.option(
    "--rebuild-on-gap",
    is_flag=True,
    help="When the upstream no longer has the changes after the index's position (older "
    "than SpiceDB's watch window, a continuation token OpenFGA refuses) or its schema "
    "changed, rebuild the index from it and go on, instead of stopping.",
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
    store_id: str | None,
    interval: float,
    rebuild_on_gap: bool,
    compact_threshold: int,
    idle_exit: float | None,
    verbose: bool,
) -> None:
    """Apply SpiceDB's (or OpenFGA's) changes to the index as they happen.

    Watches SpiceDB from the revision the index records ('leopard build --from' sets
    it), or polls an OpenFGA store's ReadChanges from the continuation token it
    records, every --interval seconds once caught up; each applied revision or page
    is stored with its changes in one write batch, so a crash loses or doubles
    nothing. Reconnects with backoff when the upstream is away. A ZedToken of a
    SpiceDB write is then accepted as --at-least (and at_least). SIGTERM finishes
    the batch in hand and exits.

    \b
    Example:
      leopard build --index ./idx --from spicedb:127.0.0.1:50051 --source-key KEY
      leopard follow --index ./idx --source spicedb:127.0.0.1:50051 --source-key KEY
      leopard follow --index ./idx --source openfga:http://127.0.0.1:8080 \\
          --store-id 01HZX3Q1A2B3C4D5E6F7G8H9JK --interval 0.5
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )

    def progress(stats: ConsumerStats) -> None:
        if verbose:
            click.echo(
                f"batch {stats.batches}: {stats.changes:,} changes, {stats.dead_letters} refused",
                err=True,
            )

    follower = make_follower(
        source_text,
        need_index(index_path),
        key=source_key,
        tls=source_tls,
        store_id=store_id,
        interval=interval,
        on_batch=progress,
        rebuild_on_gap=rebuild_on_gap,
        compact_threshold=compact_threshold,
    )
    follower.install_signal_handlers()
    stats = follower.run(idle_exit=idle_exit)
    name = follower.settings.brokers  # the upstream's name
    click.echo(
        f"followed {name}: {stats.messages:,} revisions or pages ({stats.changes:,} "
        f"changes); {stats.dead_letters} refused; version {follower.index.version}",
        err=True,
    )
