"""``leopard bridge``: SpiceDB's changes published to a Kafka topic, for many replicas.

Needs grpc and the authzed package (the ``[grpc]`` extra) and kafka-python (``[kafka]``);
the work is ``ingest.upstream.bridge``'s.
"""

from __future__ import annotations

import logging
import signal

import click

from ingest.settings import check_topic
from ingest.upstream.bridge import Bridge
from leopard.cli.bootstrap import spicedb_source
from leopard.cli.options import fail_cleanly, upstream_options

__all__ = ["bridge"]


@click.command()
@click.option(
    "--source",
    "source_text",
    required=True,
    metavar="spicedb:TARGET",
    help="The SpiceDB to watch: any gRPC target (127.0.0.1:50051, unix:///run/s.sock).",
)
@upstream_options
@click.option("--brokers", envvar="LEOPARD_BROKERS", required=True, metavar="HOST:PORT[,...]")
@click.option("--topic", required=True, help="The topic to publish to (it must exist).")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    required=True,
    help="The bridge's position: a file holding the ZedToken of the last revision every "
    "broker acknowledged (created if missing; replaced atomically).",
)
@click.option(
    "--start-token",
    metavar="ZEDTOKEN",
    help="Without a checkpoint, start after this revision (default: SpiceDB's current one). "
    "Give the ZedToken of the indexes that will consume the topic (their build --from): "
    "a consumer whose index is older than the bridge's start stops, as the changes "
    "between are in no record.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@fail_cleanly
def bridge(
    source_text: str,
    source_key: str | None,
    source_tls: bool | None,
    brokers: str,
    topic: str,
    checkpoint: str,
    start_token: str | None,
    verbose: bool,
) -> None:
    """Publish SpiceDB's changes to a Kafka topic, keyed by tuple, with its revision.

    Each change is a native change record (key: the tuple) with the SpiceDB revision
    and ZedToken in headers; after each batch a marker goes to every partition, so
    that 'leopard consume' and 'leopard serve --brokers' of the topic carry SpiceDB's
    revision in their tokens and honour a ZedToken as --at-least. The position is
    checkpointed after the brokers acknowledge; a restart goes on from it. SIGTERM
    finishes the batch in hand and exits.

    \b
    Example:
      leopard build --index ./idx --from spicedb:127.0.0.1:50051
      leopard bridge --source spicedb:127.0.0.1:50051 --brokers 127.0.0.1:9092 \\
          --topic changes --checkpoint bridge.json &
      leopard consume --index ./idx --brokers 127.0.0.1:9092 --topic changes
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    check_topic("--topic", topic)
    source = spicedb_source(source_text, source_key, source_tls)
    runner = Bridge(source, brokers, topic, checkpoint, start_token=start_token)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.stop())
    stats = runner.run()
    click.echo(
        f"bridged {source.name} to {topic}: {stats.revisions:,} revisions, "
        f"{stats.changes:,} changes, {stats.refused} refused; at revision {stats.revision}",
        err=True,
    )
