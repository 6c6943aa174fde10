"""What one round trip costs on this machine before any server of ours is involved.

Two floors, each measured in the run that reports a served latency beside them:

* ``tcp_round_trip``: 50 bytes out and back over loopback TCP between two processes
  (``TCP_NODELAY``, a blocking echo), the least a request on another process can cost;
* ``stock_grpc_health``: the standard health ``Check`` of grpcio's own servicer
  (``grpc_health.v1.health.HealthServicer``) on a stock ``grpc.server`` with a thread
  pool, in a process of its own, asked over a plain insecure channel: what Python's
  grpcio costs a unary call with no code of ours on either side.

A served p50 under the second is out of reach for any server built on grpcio here.
Run alone: ``python -m bench.floors``.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
import time
from collections.abc import Callable
from typing import Any

from bench.common import percentiles

__all__ = ["one_at_a_time", "stock_grpc_health", "tcp_round_trip"]


def one_at_a_time(call: Callable[[], object], n: int, warmup: int) -> tuple[float, float]:
    """p50 and p99 in µs of ``call()``, made ``n`` times one after another after
    ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t = clock()
        call()
        samples.append(clock() - t)
    p50, p99 = percentiles(samples)
    return p50, p99


def _echo(port: int) -> None:
    conn = socket.create_connection(("127.0.0.1", port))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(256):
        conn.sendall(data)


def tcp_round_trip(n: int = 5_000, warmup: int = 500) -> dict[str, float]:
    """p50 / p99 in µs of a 50-byte loopback TCP round trip to another process."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    ctx = mp.get_context("spawn")
    child = ctx.Process(target=_echo, args=(listener.getsockname()[1],), daemon=True)
    child.start()
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = b"x" * 50
    clock = time.perf_counter_ns
    samples = []
    try:
        for i in range(warmup + n):
            t = clock()
            conn.sendall(payload)
            got = 0
            while got < len(payload):
                got += len(conn.recv(256))
            if i >= warmup:
                samples.append(clock() - t)
    finally:
        conn.close()
        listener.close()
        child.join(10)
    p50, p99 = percentiles(samples)
    return {"n": n, "p50_us": round(p50, 1), "p99_us": round(p99, 1)}


def _stock_server(conn: Any) -> None:
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    conn.send(port)
    conn.recv()  # until told to stop
    server.stop(0)


def stock_grpc_health(n: int = 3_000, warmup: int = 300) -> dict[str, float]:
    """p50 / p99 in µs of grpcio's own health Check, server in another process."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_stock_server, args=(theirs,), daemon=True)
    child.start()
    try:
        if not ours.poll(60):
            raise RuntimeError("the stock gRPC server did not start in 60 s")
        port = ours.recv()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest()
            p50, p99 = one_at_a_time(lambda: stub.Check(request), n, warmup)
    finally:
        ours.send("stop")
        child.join(10)
        if child.is_alive():
            child.kill()
    return {"n": n, "p50_us": round(p50, 1), "p99_us": round(p99, 1)}


if __name__ == "__main__":
    tcp = tcp_round_trip()
    stock = stock_grpc_health()
    print(f"loopback TCP round trip, p50 / p99: {tcp['p50_us']:,.1f} / {tcp['p99_us']:,.1f} us")
    print(
        f"stock grpcio health Check, p50 / p99: {stock['p50_us']:,.0f} / {stock['p99_us']:,.0f} us"
    )
