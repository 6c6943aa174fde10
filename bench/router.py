"""Routed checks: ``GET /v1/check`` through ``leopard serve --route`` in front of four
shard servers, beside the same checks on one unsharded index served directly.

Why: sharding (``docs/scale.md``) puts a router between the application and the
index. A plain subject's check is one hop to its shard, so the router's price is one
more loopback HTTP round trip and its own parsing: this measures that price on the
same data (a generated org, ``--tuples``, 1M by default) in the same run:

1. latency, one connection, closed loop (each request sent when the last is answered):
   p50 and p99;
2. throughput with a few concurrent connections (``--connections`` over two load
   processes), with its p50 and p99.

The load is the Python generator of ``bench.http`` (asyncio, keep-alive
connections, in separate processes) over 10,000 (subject, group) pairs, half of them
memberships. Every server is one process (``--workers 1``); on the 2-core development
machine the four shards, the router, the direct server and the load generator share
two cores, so the routed figures include that crowding: indicative, not a verdict.

    python -m bench.router                   # 1M tuples (built once under bench/.data)
    python -m bench.router --tuples 100000 --seconds 3
"""

from __future__ import annotations

import sys

if sys.path and sys.path[0].rstrip("/").endswith("bench"):  # run as a script: unshadow `http`
    del sys.path[0]
    sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])

import argparse  # noqa: E402
import contextlib  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

from bench.common import built_index, machine, org, table  # noqa: E402
from bench.http import (  # noqa: E402
    Result,
    check_path,
    get_request,
    python_load,
    server,
    wait_ready,
    workload,
)

SHARDS = 4


def sharded_index(tuples: int) -> Path:
    """The org of ``tuples`` built as ``SHARDS`` shards, reused when already built."""
    snapshot, config, _ = org(tuples)
    path = snapshot.with_suffix(f".shards{SHARDS}.idx")
    if not (path / "shards.json").exists():
        subprocess.run(
            [sys.executable, "-m", "leopard", "build", str(snapshot), "--index", str(path),
             "--config", str(config), "--shards", str(SHARDS), "--json"],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return path


@contextlib.contextmanager
def router(urls: list[str]) -> Iterator[str]:
    """``leopard serve --route`` in front of ``urls``; yields its URL."""
    given = [a for k, u in enumerate(urls) for a in ("--shard-url", f"{k}={u}")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "leopard", "serve", "--route", "--port", "0", *given],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        m = re.search(r"on (http://[^\s,]+)", line)
        if not m:
            raise SystemExit(f"the router did not start: {line}{proc.stderr.read().decode()}")
        yield m.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def measure(url: str, requests: list[bytes], seconds: float, connections: int) -> dict[str, Result]:
    wait_ready(url)
    python_load(url, requests, seconds=1.0, connections=2, warmup=0.5)  # names cached, pools open
    return {
        "latency": python_load(url, requests, seconds=seconds, connections=1),
        "throughput": python_load(
            url, requests, seconds=seconds, connections=connections, processes=2
        ),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tuples", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=8, help="for the throughput run")
    args = ap.parse_args(argv)

    one, _ = built_index(args.tuples)
    sharded = sharded_index(args.tuples)
    snapshot, _, _ = org(args.tuples)
    requests = [get_request(check_path(s, g)) for s, g in workload(snapshot)]
    print(f"{machine()}; {args.tuples:,} tuples; {SHARDS} shards; {args.seconds:g} s per run")

    with server(one) as (url, _):
        direct = measure(url, requests, args.seconds, args.connections)
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(server(sharded, "--shard", str(k)))[0] for k in range(SHARDS)]
        for u in urls:
            wait_ready(u)
        started = time.perf_counter()
        routed_url = stack.enter_context(router(urls))
        wait_ready(routed_url)
        startup = time.perf_counter() - started
        routed = measure(routed_url, requests, args.seconds, args.connections)

    def rows(label: str, r: dict[str, Result]) -> list[tuple[str, str, str]]:
        lat, thr = r["latency"], r["throughput"]
        return [
            (f"{label}: p50 / p99, 1 connection", f"{lat.p50_ms * 1000:,.0f} / "
             f"{lat.p99_ms * 1000:,.0f} µs", f"{lat.rps:,.0f} req/s"),
            (f"{label}: {args.connections} connections", f"{thr.rps:,.0f} req/s",
             f"p50 {thr.p50_ms * 1000:,.0f} µs, p99 {thr.p99_ms * 1000:,.0f} µs"),
            (f"{label}: errors", f"{lat.errors + thr.errors}", ""),
        ]  # fmt: skip

    out = rows("one index, direct", direct) + rows(f"routed, {SHARDS} shards", routed)
    out.append(("router ready after", f"{startup:.2f} s", ""))
    print(table("GET /v1/check, direct and routed", out))
    extra = routed["latency"].p50_ms - direct["latency"].p50_ms
    print(f"\nthe router's hop costs {extra * 1000:,.0f} µs at p50 (one connection)")


if __name__ == "__main__":
    main()
