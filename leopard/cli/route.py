"""``leopard serve`` of a sharded index: ``--shard K`` serves one shard, ``--route`` the
router in front of them all.

A sharded index (``leopard build --shards N``) is a directory of N ordinary indexes
and a manifest. Each shard is served by its own ``leopard serve --index DIR --shard
K`` (with ``--brokers``, ``--workers`` and everything else as for one index: a shard's
change writer skips the changes of other shards' subjects by itself), and one or more
``leopard serve --route --shard-url 0=URL0 ...`` answer the whole index's HTTP API by
asking the shards (``leopard.http.router``). Serving the sharded directory itself,
without either, is refused with the way to do it: its root holds no index.

``shard_options`` adds the three options to ``serve`` and decides before it runs:
the router never opens an index, so it is started here, in place of ``serve``'s body.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import click

from leopard.cli.options import need_index, read_token_file
from leopard.core.sharded import read_manifest
from leopard.errors import LeopardError
from leopard.http.connections import ConnectionLimits
from leopard.http.router import serve_router
from leopard.http.shardlinks import check_shard_url

__all__ = ["parse_shard_urls", "shard_index", "shard_options"]

_OPTIONS = [
    click.option(
        "--shard",
        type=click.IntRange(min=0),
        metavar="K",
        help="Serve shard K of the sharded index --index (its directory shard-K, as an "
        "ordinary index).",
    ),
    click.option(
        "--route",
        is_flag=True,
        help="Serve no index: route every query to the shard servers of --shard-url "
        "and join their answers (the same HTTP API).",
    ),
    click.option(
        "--shard-url",
        "shard_urls",
        multiple=True,
        metavar="K=URL",
        help="With --route: shard K is served at URL (repeat for shards 0 to N-1, each once).",
    ),
]
#: options of ``serve`` that need an index of this process: refused with --route
_NOT_ROUTED = {
    "brokers": "--brokers",
    "source_text": "--source",
    "grpc": "--grpc-port",
    "upstream_openfga": "--upstream-openfga",
    "store_id": "--store-id",
}


def shard_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--shard, --route and --shard-url on ``serve`` (see the module)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        shard = kwargs.pop("shard")
        route = kwargs.pop("route")
        urls = kwargs.pop("shard_urls")
        try:
            if route:
                if shard is not None:
                    raise click.UsageError("--route serves no shard itself: drop --shard")
                return _route(urls, kwargs)
            if urls:
                raise click.UsageError("--shard-url needs --route")
            kwargs["index_path"] = shard_index(need_index(kwargs["index_path"]), shard)
        except LeopardError as exc:
            raise click.ClickException(str(exc)) from None
        return fn(*args, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def shard_index(index_dir: str, shard: int | None) -> str:
    """The directory to serve: ``index_dir`` itself, or its shard ``shard``."""
    manifest = read_manifest(index_dir)
    if manifest is None:
        if shard is not None:
            raise click.ClickException(
                f"--shard {shard}: {index_dir} is not a sharded index (no shards.json); "
                "serve it without --shard"
            )
        return index_dir
    n = manifest.shards
    if shard is None:
        raise click.ClickException(
            f"{index_dir} is a sharded index of {n} shards: serve each with --shard K "
            f"(K from 0 to {n - 1}), and route to them with 'leopard serve --route "
            "--shard-url 0=URL ...'"
        )
    if shard >= n:
        raise click.ClickException(
            f"--shard {shard}: {index_dir} has {n} shards, numbered 0 to {n - 1}"
        )
    return str(manifest.shard_paths(index_dir)[shard])


def parse_shard_urls(given: tuple[str, ...]) -> list[str]:
    """``K=URL`` options as the URLs in shard order; ClickException naming the bad one
    unless shards 0 to N-1 are each given once."""
    if not given:
        raise click.ClickException(
            "--route needs the shard servers: --shard-url K=URL for each shard K from 0"
        )
    urls: dict[int, str] = {}
    for item in given:
        k, eq, url = item.partition("=")
        if not eq or not k.strip().isdigit():
            raise click.ClickException(
                f"--shard-url {item!r} is not K=URL (e.g. 0=http://127.0.0.1:8081)"
            )
        shard = int(k)
        if shard in urls:
            raise click.ClickException(f"--shard-url: shard {shard} is given twice")
        urls[shard] = check_shard_url(url.strip(), shard)
    n = len(urls)
    missing = sorted(set(range(n)) - set(urls))
    if missing:
        raise click.ClickException(
            f"--shard-url: {n} shards are given, so shards 0 to {n - 1} are expected; "
            f"shard {missing[0]} is missing (given: {', '.join(map(str, sorted(urls)))})"
        )
    return [urls[k] for k in range(n)]


def _route(given: tuple[str, ...], o: dict[str, Any]) -> None:
    """``leopard serve --route``: the router, with ``serve``'s options ``o``."""
    for key, flag in _NOT_ROUTED.items():
        if o.get(key):
            raise click.UsageError(f"--route serves no index: {flag} belongs on the shard servers")
    if o.get("workers") not in (None, 1):
        raise click.UsageError("--route runs in one process: drop --workers")
    urls = parse_shard_urls(given)
    if o.get("index_path"):
        manifest = read_manifest(o["index_path"])
        if manifest is None:
            raise click.ClickException(
                f"--index {o['index_path']} is not a sharded index (no shards.json)"
            )
        if manifest.shards != len(urls):
            raise click.ClickException(
                f"--index {o['index_path']} has {manifest.shards} shards, but "
                f"{len(urls)} --shard-url are given"
            )
    token = read_token_file(o["auth_token_file"]) if o.get("auth_token_file") else None
    limits = ConnectionLimits(
        max_header_bytes=o["max_header_bytes"],
        header_timeout=o["header_timeout"],
        body_timeout=o["body_timeout"],
        idle_timeout=o["idle_timeout"],
        max_connections=o["max_connections"],
    )
    logging.basicConfig(
        level=logging.INFO if o.get("verbose") else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )

    def announce(url: str) -> None:
        shards = ", ".join(f"{k}={u}" for k, u in enumerate(urls))
        auth = ", bearer token required" if token else ""
        click.echo(f"leopard: routing on {url} to {len(urls)} shards{auth}: {shards}", err=True)

    serve_router(
        urls,
        host=o["host"],
        port=o["port"],
        auth_token=token,
        max_body=o["max_body"],
        max_batch=o["max_batch"],
        limits=limits,
        access_log=o.get("access_log", False),
        on_listening=announce,
    )
