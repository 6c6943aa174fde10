"""``leopard serve``: the HTTP query service as a click command.

The consumer options are the very decorators ``leopard consume`` uses, so the two
commands cannot disagree. ``python -m leopard.cli.serve`` runs this command alone.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ingest.kafka.probe import broker_answers
from leopard.cli.options import (
    consumer_options,
    consumer_settings,
    default_group_id,
    fail_cleanly,
    index_option,
    interval_option,
    need_index,
    quiet_kafka_client,
    read_token_file,
    upstream_options,
)
from leopard.cli.route import shard_options
from leopard.core.successor import live_generation
from leopard.errors import InvalidInput, LeopardError
from leopard.http.app import DEFAULT_MAX_BODY, DEFAULT_READY_LAG
from leopard.http.authzen import check_public_url
from leopard.http.connections import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES,
    MAX_TIMEOUT,
    ConnectionLimits,
)
from leopard.http.openfga import check_store_id, default_store_id
from leopard.http.schemas import DEFAULT_MAX_BATCH
from leopard.http.server import Companion, require_stream_client, serve
from leopard.http.upstream import Upstream
from leopard.http.workers import MAX_WORKERS, default_workers

_grpc_missing: ModuleNotFoundError | None = None
try:
    from leopard.grpc.server import GrpcOptions, GrpcServer
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    _grpc_missing = exc  # an error only when --grpc-port asks for gRPC

__all__ = ["grpc_options", "serve_command"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_GRPC_OPTIONS = [
    click.option(
        "--grpc-port",
        type=click.IntRange(0, 65535),
        metavar="PORT",
        help="Also serve SpiceDB's gRPC API (an authzed client's target) on this port "
        "(0: any free); off without it.",
    ),
    click.option("--grpc-host", metavar="ADDRESS", help="Address gRPC binds to (default: --host)."),
    click.option(
        "--grpc-preshared-key",
        envvar="LEOPARD_GRPC_PRESHARED_KEY",
        metavar="KEY",
        help="Require 'authorization: Bearer KEY' on gRPC calls, as SpiceDB's flag of "
        "this name (default: $LEOPARD_GRPC_PRESHARED_KEY).",
    ),
    click.option(
        "--grpc-tls-cert-path",
        type=click.Path(dir_okay=False),
        help="Serve gRPC over TLS with this certificate (PEM; with --grpc-tls-key-path).",
    ),
    click.option(
        "--grpc-tls-key-path", type=click.Path(dir_okay=False), help="Its private key (PEM)."
    ),
    click.option(
        "--grpc-max-wait",
        type=click.FloatRange(min=0, max=3600),
        default=1.0,
        show_default=True,
        metavar="SECONDS",
        help="Longest wait of an at_least_as_fresh or fully_consistent request for the "
        "index to catch up (OUT_OF_RANGE or UNAVAILABLE beyond).",
    ),
    click.option(
        "--upstream-spicedb",
        metavar="HOST:PORT",
        help="The SpiceDB this index follows: gRPC requests the index cannot answer "
        "(permissions not indexed, caveat contexts, writes, Watch, ...) are forwarded "
        "to it; without it they are UNIMPLEMENTED.",
    ),
    click.option(
        "--upstream-preshared-key",
        envvar="LEOPARD_UPSTREAM_PRESHARED_KEY",
        metavar="KEY",
        help="The upstream SpiceDB's preshared key (default: $LEOPARD_UPSTREAM_PRESHARED_KEY).",
    ),
    click.option(
        "--upstream-tls/--upstream-insecure",
        default=None,
        help="Reach the upstream SpiceDB over TLS (system roots), or over plain gRPC "
        "(default: plain for a Unix socket or a loopback address, TLS otherwise).",
    ),
]
_GRPC_KEYS = (
    "grpc_port",
    "grpc_host",
    "grpc_preshared_key",
    "grpc_tls_cert_path",
    "grpc_tls_key_path",
    "grpc_max_wait",
    "upstream_spicedb",
    "upstream_preshared_key",
    "upstream_tls",
)


def grpc_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The gRPC options, handed to the command as one ``grpc`` argument: the companion
    that serves SpiceDB's API beside HTTP, or None without --grpc-port."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {k: kwargs.pop(k) for k in _GRPC_KEYS}
        try:
            companion = _grpc_companion(given, kwargs["host"])
        except LeopardError as exc:
            raise click.ClickException(str(exc)) from None
        return fn(*args, grpc=companion, **kwargs)

    for option in reversed(_GRPC_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def _grpc_companion(given: dict[str, Any], http_host: str) -> Companion | None:
    if given["grpc_port"] is None:
        for key in ("grpc_host", "grpc_tls_cert_path", "grpc_tls_key_path", "upstream_spicedb"):
            if given[key] is not None:
                raise click.UsageError(f"--{key.replace('_', '-')} needs --grpc-port")
        return None
    if _grpc_missing is not None:
        raise click.UsageError(str(_grpc_missing))
    options = GrpcOptions(
        port=given["grpc_port"],
        host=given["grpc_host"] or http_host,
        preshared_key=given["grpc_preshared_key"],
        tls_cert_path=given["grpc_tls_cert_path"],
        tls_key_path=given["grpc_tls_key_path"],
        max_wait=given["grpc_max_wait"],
        upstream=given["upstream_spicedb"],
        upstream_preshared_key=given["upstream_preshared_key"],
        upstream_tls=given["upstream_tls"],
    )
    options.check()  # here, before workers fork: one line, said once

    def start(index: Any, consumer: Any, readiness: Callable[[], list[str]]) -> Callable[[], None]:
        server = GrpcServer(index, options, consumer=consumer, readiness=readiness)
        address = server.start()
        tls = " over TLS" if options.tls_cert_path else ""
        key = ", preshared key required" if options.preshared_key else ""
        up = f", forwarding to SpiceDB at {options.upstream}" if options.upstream else ""
        click.echo(f"leopard: serving SpiceDB's gRPC API on {address}{tls}{key}{up}", err=True)
        if not options.preshared_key and options.host not in _LOOPBACK:
            click.echo(
                f"leopard: warning: gRPC on {options.host} is reachable from other hosts "
                "and no --grpc-preshared-key is given",
                err=True,
            )
        return server.stop

    return start


@click.command("serve")
@index_option
@shard_options
@click.option(
    "--brokers",
    envvar="LEOPARD_BROKERS",
    metavar="HOST:PORT[,...]",
    help="Kafka bootstrap servers: follow the change stream in this process.",
)
@click.option(
    "--topic",
    "topics",
    multiple=True,
    envvar="LEOPARD_TOPIC",
    help="Change topic (repeatable; needed with --brokers; default: $LEOPARD_TOPIC).",
)
@consumer_options
@click.option(
    "--source",
    "source_text",
    metavar="spicedb:TARGET|openfga:URL",
    help="Follow an upstream directly in this process, as --brokers follows a topic: "
    "SpiceDB's Watch, or OpenFGA's ReadChanges of --store-id (see 'leopard follow').",
)
@upstream_options
@interval_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0: any free."
)
@click.option(
    "--auth-token-file",
    type=click.Path(dir_okay=False),
    help="Require 'Authorization: Bearer <token>' with the token in this file "
    "(/healthz and /readyz stay open).",
)
@click.option(
    "--max-body",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_BODY,
    show_default=True,
    metavar="BYTES",
    help="Largest request body (413 beyond).",
)
@click.option(
    "--max-header-bytes",
    type=click.IntRange(min=1024),
    default=DEFAULT_MAX_HEADER_BYTES,
    show_default=True,
    metavar="BYTES",
    help="Largest request line and headers of a request, in all (431 and close beyond; "
    "checked before the token).",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0, max=MAX_TIMEOUT, min_open=True),
    default=DEFAULT_HEADER_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Time for a request's line and headers to arrive, from the connection's "
    "opening or the previous answer (408 and close beyond).",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(min=0, max=MAX_TIMEOUT, min_open=True),
    default=DEFAULT_BODY_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Time for a whole request body to arrive after its headers (408 and close beyond).",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0, max=MAX_TIMEOUT, min_open=True),
    default=DEFAULT_IDLE_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Close a connection that sends no byte this long after opening or after an "
    "answer (keep-alive).",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_CONNECTIONS,
    show_default=True,
    metavar="N",
    help="Open connections served; a new one beyond is answered 503 and closed "
    "(lowered, with a warning, if the open-file limit has no room for them).",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_BATCH,
    show_default=True,
    help="Most checks in one POST /v1/check (413 beyond).",
)
@click.option(
    "--ready-max-lag",
    type=click.IntRange(min=0),
    default=DEFAULT_READY_LAG,
    show_default=True,
    help="/readyz fails while the consumer is more messages behind than this.",
)
@click.option(
    "--refresh-interval",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Without --brokers: seconds between re-reads of what another process "
    "applied or compacted (0: never).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, MAX_WORKERS),
    envvar="LEOPARD_WORKERS",
    metavar="N",
    help="Processes answering on the port (default: one per core, or 1 with --brokers or "
    "--source; $LEOPARD_WORKERS). The first runs the consumer and gRPC, the others "
    "follow its writes; /readyz and /metrics are each worker's own.",
)
@click.option(
    "--store-id",
    metavar="ULID",
    help="The OpenFGA store id the index answers for on /stores/... (default: one derived "
    "from the index directory, printed at start).",
)
@click.option(
    "--upstream-openfga",
    metavar="URL",
    help="An OpenFGA server to forward what the index cannot answer to (contextual tuples, "
    "conditions, relations it does not hold); its store must have the same id.",
)
@click.option(
    "--public-url",
    metavar="URL",
    help="The URL clients reach this server at (behind a proxy, say): the base of the "
    "endpoints AuthZEN's discovery document names. Default: the request's Host.",
)
@grpc_options
@click.option("--access-log", is_flag=True, help="Log every request.")
@click.option("-v", "--verbose", is_flag=True, help="Log consumer batches and more.")
@fail_cleanly
def serve_command(
    index_path: str | None,
    brokers: str | None,
    topics: tuple[str, ...],
    group_id: str | None,
    fmt: str,
    codec_options: tuple[str, ...],
    dlq_topic: str | None,
    compact_threshold: int,
    linger_ms: int,
    on_gap: str,
    source_text: str | None,
    source_key: str | None,
    source_tls: bool | None,
    interval: float,
    host: str,
    port: int,
    auth_token_file: str | None,
    max_body: int,
    max_header_bytes: int,
    header_timeout: float,
    body_timeout: float,
    idle_timeout: float,
    max_connections: int,
    max_batch: int,
    ready_max_lag: int,
    refresh_interval: float,
    workers: int | None,
    store_id: str | None,
    upstream_openfga: str | None,
    public_url: str | None,
    access_log: bool,
    verbose: bool,
    grpc: Companion | None = None,
) -> None:
    """Serve the index over HTTP (JSON under /v1, OpenAPI at /openapi.json).

    With --brokers and --topic, a consumer in the same process applies the change
    stream to the served index, so answers follow it; pass the token from
    'leopard publish' as at_least to read your own write. Unless --group-id is
    given, the consumer group is this server's own (see the docs of
    leopard.cli.options.default_group_id). Nothing is ever written over HTTP.

    \b
    Example:
      leopard serve --index ./idx --port 8080 --workers 4
      leopard serve --index ./idx --brokers 127.0.0.1:9092 --topic changes
      leopard serve --index ./idx --source spicedb:127.0.0.1:50051 --source-key KEY
      curl 'http://127.0.0.1:8080/v1/check?subject=user:alice&group=group:eng'
      leopard serve --index ./idx --grpc-port 50051 --upstream-spicedb 127.0.0.1:50052
      leopard serve --index ./sharded --shard 0 --port 8081     # one per shard, then:
      leopard serve --route --shard-url 0=http://127.0.0.1:8081 --shard-url 1=...
    """
    index_dir = need_index(index_path)
    settings = None
    if brokers:
        if not topics:
            raise click.UsageError("--brokers needs at least one --topic")
        if group_id is None:
            group_id = default_group_id("serve", index_dir)
        settings = consumer_settings(
            brokers,
            topics,
            group_id,
            fmt,
            codec_options,
            dlq_topic,
            compact_threshold,
            linger_ms,
            on_gap,
        )
    elif topics:
        raise click.UsageError("--topic needs --brokers")
    follower = None
    if source_text:
        if brokers:
            raise click.UsageError("--source and --brokers exclude each other")
        # loaded by name: only following an upstream needs grpc (the [grpc] extra)
        follower = importlib.import_module("leopard.cli.upstream").serve_follower(
            source_text,
            index_dir,
            key=source_key,
            tls=source_tls,
            store_id=store_id,
            interval=interval,
            compact_threshold=compact_threshold,
            linger_ms=linger_ms,
        )
    if workers is None:
        # With a stream, /readyz and /metrics about the consumer are worker 0's alone:
        # one process keeps them the server's unless more are asked for.
        workers = 1 if settings is not None or follower is not None else default_workers()
    elif workers > 1 and (settings is not None or follower is not None) and not refresh_interval:
        raise click.UsageError(
            f"--workers {workers} with a change stream needs --refresh-interval above 0: "
            "the workers without the consumer follow it by re-reading the index"
        )
    if workers > 1:
        live_generation(Path(index_dir))  # no index: said here, not once per worker
    token = read_token_file(auth_token_file) if auth_token_file else None
    store = check_store_id(store_id) if store_id else default_store_id(index_dir)
    if upstream_openfga:
        Upstream(upstream_openfga)  # a bad URL is refused now, not after opening the index
    if public_url:
        try:
            public_url = check_public_url(public_url)
        except InvalidInput as exc:
            raise click.BadParameter(str(exc), param_hint="'--public-url'") from None
    limits = ConnectionLimits(
        max_header_bytes=max_header_bytes,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        idle_timeout=idle_timeout,
        max_connections=max_connections,
    )
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if settings is not None:
        quiet_kafka_client(verbose)
        require_stream_client(settings)  # the missing extra named before the brokers asked
        if not broker_answers(settings.brokers, settings.probe_timeout):
            # served meanwhile: the consumer retries them, as an outage later
            click.echo(
                f"leopard: warning: the brokers {settings.brokers!r} do not answer yet; "
                "serving the index as it is while the consumer retries them",
                err=True,
            )

    def announce(url: str) -> None:
        following = f", following {', '.join(topics)} at {brokers}" if settings else ""
        if source_text:
            following = f", following {source_text}"
        auth = ", bearer token required" if token else ""
        processes = f", {workers} workers" if workers > 1 else ""
        click.echo(
            f"leopard: serving {index_dir} on {url}{following}{auth}{processes} "
            f"(its OpenFGA API answers as store {store})",
            err=True,
        )
        if not token and host not in ("127.0.0.1", "localhost", "::1"):
            click.echo(
                f"leopard: warning: {host} is reachable from other hosts and no "
                "--auth-token-file is given: anyone there can query the index",
                err=True,
            )

    serve(
        index_dir,
        host=host,
        port=port,
        consumer_settings=settings,
        auth_token=token,
        max_body=max_body,
        max_batch=max_batch,
        ready_max_lag=ready_max_lag,
        refresh_interval=refresh_interval,
        access_log=access_log,
        limits=limits,
        on_listening=announce,
        beside=[grpc] if grpc is not None else [],
        store_id=store,
        upstream_openfga=upstream_openfga,
        public_url=public_url,
        follower=follower,
        workers=workers,
    )


if __name__ == "__main__":  # pragma: no cover - `python -m leopard.cli.serve`
    serve_command()
