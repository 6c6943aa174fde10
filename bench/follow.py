#!/usr/bin/env python3
"""Following SpiceDB's Watch: changes applied per second, and write-to-visible latency.

SpiceDB embedded (``scripts/install-spicedb``) runs in a child process behind the test
fixture's gRPC front (``tests/support/spicedb_front.py``), loaded with a generated store
of nested groups, folders and documents (the schema of ``tests/follow/world.py``). The
child also writes: each write is one WriteRelationships request, a change (a new member
of a group, or the delete of an earlier one), made with SpiceDB's C function, so the
rate at which SpiceDB accepts writes on this machine is measured as they are made.
Leopard's follower (``SpiceDBFollower``, the loop of ``leopard follow``) runs in this
process, on an index bootstrapped from SpiceDB (``leopard build --from``).

* **throughput**: a backlog of writes is made while no follower runs (timed: SpiceDB's
  accept rate, one relationship a request, and 100 a request); then the follower is
  started and timed until its position reaches the last write's revision: relationship
  changes applied per second, beside the rate SpiceDB accepted them;
* **latency**: with the follower caught up, the child writes at a steady rate (1k
  writes/s by default, open loop: each write is due at its slot) and notes when each
  write returned and its revision; the follower notes when each batch was applied (its
  listener, in this process). A write's latency is the time from its return to the
  first batch whose revision reached it (one CLOCK_MONOTONIC for both processes).

Printed beside the target (write-to-visible p99 <= 200 ms at 1k writes/s), with the
machine's load (2 shared cores: SpiceDB, its front, the writer and the follower all
compete for them, so figures are indicative):

    python bench/follow.py                      # ~1 minute
    python bench/follow.py --backlog 20000 --rate 1000 --seconds 15 --json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if sys.path and sys.path[0].rstrip("/").endswith("bench"):
    del sys.path[0]  # run as a script: bench/grpc_api.py would shadow the grpc package
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "follow")]

from bench.common import machine, percentiles, table, verdict  # noqa: E402

#: write-to-visible p99 target at 1k writes/s, milliseconds
TARGET_P99_MS = 200.0


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- the child: SpiceDB and its writer -------------------------------------------------


def _store(rng: random.Random, groups: int, users: int, folders: int, docs: int) -> list[str]:
    rels = set()
    for g in range(groups):
        for _ in range(8):
            rels.add(f"group:g{g}#member@user:u{rng.randrange(users)}")
        if g > 0 and rng.random() < 0.5:
            rels.add(f"group:g{rng.randrange(g)}#member@group:g{g}#member")
    for f in range(folders):
        if f > 0:
            rels.add(f"folder:f{f}#parent@folder:f{rng.randrange(max(1, f // 2))}")
        rels.add(f"folder:f{f}#viewer@group:g{rng.randrange(groups)}#member")
    for d in range(docs):
        rels.add(f"doc:d{d}#parent@folder:f{rng.randrange(folders)}")
        if rng.random() < 0.3:
            rels.add(f"doc:d{d}#viewer@user:u{rng.randrange(users)}")
    return sorted(rels)


def child(conn: Any, schema: str, size: int, seed: int) -> None:
    """SpiceDB embedded behind the gRPC front; answers the parent's commands."""
    from authzed.api import v1
    from support.spicedb_front import SpiceDBFront, parse_relationship

    rng = random.Random(seed)
    groups = max(10, size // 40)
    with SpiceDBFront(schema) as front:
        front.write(_store(rng, groups, size // 4, max(4, size // 50), size // 5))
        conn.send(front.target)
        written: list[str] = []
        serial = 0
        touch = v1.RelationshipUpdate.Operation.OPERATION_TOUCH
        delete = v1.RelationshipUpdate.Operation.OPERATION_DELETE
        path = "/authzed.api.v1.PermissionsService/WriteRelationships"

        def one_write(per_request: int) -> Any:
            nonlocal serial
            updates = []
            earlier = len(written)  # a request names a relationship once: delete older ones
            for _ in range(per_request):
                if earlier and rng.random() < 0.2:
                    earlier -= 1
                    text, op = written.pop(rng.randrange(earlier + 1)), delete
                else:
                    serial += 1
                    text, op = f"group:g{rng.randrange(groups)}#member@user:w{serial}", touch
                    written.append(text)
                updates.append(
                    v1.RelationshipUpdate(operation=op, relationship=parse_relationship(text))
                )
            answer = front.call(path, v1.WriteRelationshipsRequest(updates=updates))
            return answer.written_at.token

        while True:
            command = conn.recv()
            if command[0] == "stop":
                return
            if command[0] == "backlog":
                _, writes, per_request = command
                t0 = time.perf_counter()
                token = None
                for _ in range(writes):
                    token = one_write(per_request)
                conn.send((time.perf_counter() - t0, token))
            elif command[0] == "steady":
                _, rate, seconds = command
                done: list[tuple[float, str]] = []
                start = time.monotonic()
                n = int(rate * seconds)
                late = 0
                for i in range(n):
                    due = start + i / rate
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    elif wait < -0.05:
                        late += 1
                    token = one_write(1)
                    done.append((time.monotonic(), token))
                conn.send((done, time.monotonic() - start, late))


# -- this process: the follower ----------------------------------------------------------


class Follower:
    """A SpiceDBFollower in a thread; ``applied`` holds (monotonic time, revision) of
    every batch."""

    def __init__(self, path: Path, target: str) -> None:
        from ingest.upstream.spicedb import SpiceDBSource
        from ingest.upstream.watch import SpiceDBFollower
        from leopard.model.zedtoken import SPICEDB_KEY

        self.applied: list[tuple[float, int]] = []
        self.follower = SpiceDBFollower(path, SpiceDBSource(target), on_batch=self._batch)
        self._key = SPICEDB_KEY
        self.thread = threading.Thread(target=self.follower.run, daemon=True)
        self.started = time.perf_counter()
        self.thread.start()

    def _batch(self, stats: Any) -> None:
        self.applied.append((time.monotonic(), self.follower.index.position.get(self._key, -1)))

    def wait_until(self, revision: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while not self.applied or self.applied[-1][1] < revision:
            if time.monotonic() > deadline:
                raise SystemExit(f"the follower did not reach revision {revision} in {timeout} s")
            time.sleep(0.002)
        return time.perf_counter() - self.started

    def stop(self) -> None:
        self.follower.stop()
        self.thread.join(60)


def receive(conn: Any, proc: Any, timeout: float) -> Any:
    """The child's answer; SystemExit if it died or took longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    while not conn.poll(0.5):
        if not proc.is_alive():
            raise SystemExit(f"the SpiceDB child process exited with {proc.exitcode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"no answer from the SpiceDB child process in {timeout} s")
    return conn.recv()


def revision_of(token: str) -> int:
    from leopard.model.zedtoken import zedtoken_position

    return next(iter(zedtoken_position(token).values()))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from world import SCHEMA

    from ingest.upstream.spicedb import SpiceDBSource, bootstrap

    result: dict[str, Any] = {"machine": machine(), "load_start": load(), "size": args.size}
    ctx = multiprocessing.get_context("spawn")
    parent, child_end = ctx.Pipe()
    proc = ctx.Process(target=child, args=(child_end, SCHEMA, args.size, 1), daemon=True)
    proc.start()
    try:
        target = receive(parent, proc, args.timeout)
        with tempfile.TemporaryDirectory(prefix="leopard-bench-follow-") as tmp:
            path = Path(tmp) / "ix"
            t0 = time.perf_counter()
            report = bootstrap(path, SpiceDBSource(target))
            result["bootstrap"] = {
                "relationships": report.relationships,
                "seconds": time.perf_counter() - t0,
            }
            for per_request in (1, 100):
                writes = args.backlog // per_request
                parent.send(("backlog", writes, per_request))
                seconds, token = receive(parent, proc, args.timeout)
                changes = writes * per_request
                follower = Follower(path, target)
                took = follower.wait_until(revision_of(token), args.timeout)
                follower.stop()
                result[f"throughput_{per_request}"] = {
                    "changes": changes,
                    "spicedb_accept_per_s": changes / seconds,
                    "spicedb_writes_per_s": writes / seconds,
                    "follow_seconds": took,
                    "applied_per_s": changes / took,
                    "batches": follower.follower.stats.batches,
                }
            follower = Follower(path, target)
            parent.send(("backlog", 1, 1))  # caught up before the clock starts
            follower.wait_until(revision_of(receive(parent, proc, args.timeout)[1]), args.timeout)
            parent.send(("steady", args.rate, args.seconds))
            done, elapsed, late = receive(parent, proc, args.timeout)
            follower.wait_until(revision_of(done[-1][1]), args.timeout)
            follower.stop()
            applied = follower.applied
            latencies = []
            i = 0
            for t_done, token in done:  # in revision order, as are the batches
                revision = revision_of(token)
                while applied[i][1] < revision:
                    i += 1
                latencies.append(max(0.0, applied[i][0] - t_done))
            p50, p99 = percentiles([int(x * 1e9) for x in latencies])
            result["latency"] = {
                "rate_asked": args.rate,
                "rate_made": len(done) / elapsed,
                "writes": len(done),
                "late_writes": late,
                "p50_ms": p50 / 1000,
                "p99_ms": p99 / 1000,
                "max_ms": max(latencies) * 1000,
                "batches": follower.follower.stats.batches,
            }
    finally:
        if proc.is_alive():
            parent.send(("stop",))
            proc.join(30)
    result["load_end"] = load()
    return result


def print_table(result: dict[str, Any]) -> None:
    b = result["bootstrap"]
    rows = [
        (
            "bootstrap (ReadSchema + export + build)",
            f"{b['relationships']:,} relationships in {b['seconds']:.2f} s",
            "",
        )
    ]
    for per_request in (1, 100):
        t = result[f"throughput_{per_request}"]
        rows.append(
            (
                f"SpiceDB accepts, {per_request} relationship(s) a write",
                f"{t['spicedb_accept_per_s']:,.0f} changes/s "
                f"({t['spicedb_writes_per_s']:,.0f} writes/s)",
                "baseline",
            )
        )
        rows.append(
            (
                f"follow applies a backlog of {t['changes']:,}",
                f"{t['applied_per_s']:,.0f} changes/s ({t['batches']} batches, "
                f"{t['follow_seconds']:.2f} s from start)",
                f"{t['applied_per_s'] / t['spicedb_accept_per_s']:.1f}x SpiceDB's rate",
            )
        )
    lat = result["latency"]
    rows.append(
        (
            f"write-to-visible at {lat['rate_asked']:,.0f} writes/s",
            f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.0f} ms",
            f"p99 <= {TARGET_P99_MS:.0f} ms: {verdict(lat['p99_ms'] <= TARGET_P99_MS)}",
        )
    )
    rows.append(
        (
            "  writes made",
            f"{lat['writes']:,} at {lat['rate_made']:,.0f}/s ({lat['late_writes']} late > 50 ms), "
            f"{lat['batches']:,} batches",
            "",
        )
    )
    rows.append(("load average, start / end", f"{result['load_start']} / {result['load_end']}", ""))
    print(table(f"following SpiceDB's Watch ({result['machine']})", rows))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=20_000, help="about this many users")
    ap.add_argument("--backlog", type=int, default=10_000, help="changes of each backlog")
    ap.add_argument("--rate", type=float, default=1_000.0, help="writes/s of the latency run")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
