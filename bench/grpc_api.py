"""SpiceDB's API over gRPC: Leopard's face beside SpiceDB embedded's, through the authzed client.

Why: issue 11 makes Leopard a drop-in for SpiceDB's clients, and its speed claim is the
figure an authzed client sees: CheckPermission on loopback, one request in flight,
p50 <= 250 us and p99 <= 1 ms (the Leopard paper's serving figures: median < 150 us,
p99 < 1 ms), throughput with concurrent clients, and CheckBulkPermissions >= 500k
checks/s; all beside SpiceDB served over gRPC on the same org, in the same run.

On a generated org (``leopard gen``: no cycles, which SpiceDB refuses; the plain
``group#member`` set, SpiceDB's ``relation member: user | user:* | group#member``):

1. Leopard: ``leopard serve --grpc-port 0`` in its own process; SpiceDB: SpiceDB
   embedded behind ``tests/support/spicedb_front.py`` (its whole v1 API on a gRPC port),
   in its own process, on its in-memory datastore, loaded with the same tuples;
2. CheckPermission through ``authzed.api.v1.InsecureClient`` from this process, one
   call at a time, over (user, group) pairs, half of them direct memberships of the
   snapshot: p50 and p99, and the answers of both compared;
3. the same with ``--clients`` threads in ``--client-processes`` processes, each call
   sent as soon as the last is answered: calls/s;
4. CheckBulkPermissions of ``--bulk`` items, one in flight and concurrent: checks/s.

SpiceDB embedded answers from memdb, its test datastore, whose cost per dispatch grows
with the relationships stored (see bench/README.md), so it gets fewer calls, a time
budget per measure and bulks of at most 100 items; its questions are asked at least
as fresh as its last write (``minimize_latency`` reads can be ~5 s stale right after
the load), Leopard's with no consistency (``minimize_latency``), as a hot path asks.
The PostgreSQL datastore (the fair deployment) is tried too: Debian's ``postgresql``
is started by the bench (``initdb``/``pg_ctl`` as the ``postgres`` user, on a free
port); when SpiceDB cannot be served on it, the reason is printed.

The machine has 2 cores shared by server, clients and whatever else runs: figures are
indicative, ratios fairer than times. Timings never decide a test.

    python bench/grpc_api.py                       # 20k tuples, 3 s runs (a few minutes)
    python bench/grpc_api.py --tuples 200000 --seconds 5 --clients 16 --json

It records its figures under ``"grpc"`` in bench/results/latest.json (``--no-record``
to leave that file alone).

"""

from __future__ import annotations

import sys

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.common import ROOT, built_index, machine, org, percentiles, table, verdict  # noqa: E402

TARGET_P50_US = 250.0
TARGET_P99_US = 1000.0
TARGET_BULK = 500_000
SPICEDB_BULK = 100  # items per SpiceDB bulk request at most (memdb: ms per check)
LATEST = ROOT / "bench" / "results" / "latest.json"
HAS = 2  # CheckPermissionResponse.PERMISSIONSHIP_HAS_PERMISSION
PG_BIN = Path("/usr/lib/postgresql")


# -- the workload ------------------------------------------------------------------------


def workload(snapshot: Path, n: int, seed: int = 7) -> list[tuple[str, str]]:
    """``n`` (group id, user id) pairs: half direct memberships, half random pairs."""
    rng = random.Random(seed)
    members: list[tuple[str, str]] = []
    users: set[str] = set()
    groups: set[str] = set()
    with open(snapshot, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= 400_000:
                break
            resource, _, subject = line.rstrip("\n").partition("@")
            group = resource.split("#", 1)[0].removeprefix("group:")
            groups.add(group)
            if subject.startswith("user:") and subject != "user:*":
                uid = subject.removeprefix("user:")
                users.add(uid)
                members.append((group, uid))
    user_list, group_list = sorted(users), sorted(groups)
    return [
        rng.choice(members)
        if rng.random() < 0.5
        else (rng.choice(group_list), rng.choice(user_list))
        for _ in range(n)
    ]


def check_request(pair: tuple[str, str], consistency: Any = None) -> Any:
    from authzed.api import v1

    group, uid = pair
    return v1.CheckPermissionRequest(
        resource=v1.ObjectReference(object_type="group", object_id=group),
        permission="member",
        subject=v1.SubjectReference(object=v1.ObjectReference(object_type="user", object_id=uid)),
        consistency=consistency,
    )


def bulk_request(pairs: list[tuple[str, str]], consistency: Any = None) -> Any:
    from authzed.api import v1

    return v1.CheckBulkPermissionsRequest(
        items=[
            v1.CheckBulkPermissionsRequestItem(
                resource=r.resource, permission=r.permission, subject=r.subject
            )
            for r in (check_request(p) for p in pairs)
        ],
        consistency=consistency,
    )


def consistency_of(token: str | None) -> Any:
    from authzed.api import v1

    return None if token is None else v1.Consistency(at_least_as_fresh=v1.ZedToken(token=token))


# -- the servers -------------------------------------------------------------------------


@contextlib.contextmanager
def leopard_server(index: Path) -> Iterator[str]:
    """``leopard serve --grpc-port 0`` in its own process; yields the gRPC target."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "leopard", "serve", "--index", str(index), "--port", "0",
         "--grpc-port", "0", "--refresh-interval", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    target = None
    try:
        seen: list[str] = []
        while True:
            line = proc.stderr.readline()
            if not line:
                raise SystemExit(f"leopard serve did not start: {''.join(seen)}")
            seen.append(line)
            found = re.search(r"serving SpiceDB's gRPC API on (\S+?)(,|\s|$)", line)
            if found:
                target = found.group(1)
            if target and " on http://" in line:
                break
        # drain stderr so that the server never blocks on a full pipe
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield target
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _spicedb_main(conn: Any, schema: str, lines: list[str], options: dict[str, str]) -> None:
    """The child process of ``spicedb_server``: SpiceDB embedded served on a port."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from spicedb_embedded.ffi import StartOptions
        from support.spicedb_front import SpiceDBFront

        started = time.perf_counter()
        front = SpiceDBFront(schema, options=StartOptions(**options) if options else None)
    except Exception as exc:  # reported to the parent, which explains it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        try:
            token = front.write(lines)
        except Exception as exc:  # the parent explains it
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            return
        conn.send(("ready", front.target, token.token, time.perf_counter() - started))
        conn.recv()  # until told to stop
    finally:
        front.close()


@contextlib.contextmanager
def spicedb_server(
    schema: str, lines: list[str], options: dict[str, str] | None = None
) -> Iterator[tuple[str, str, float]]:
    """SpiceDB embedded, loaded with ``lines``, in its own process: (target, ZedToken of
    the load, seconds to load); SystemExit-free: RuntimeError with SpiceDB's refusal."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_spicedb_main, args=(child, schema, lines, options or {}))
    proc.start()
    try:
        if not parent.poll(600):
            raise RuntimeError("SpiceDB embedded did not start within 600 s")
        message = parent.recv()
        if message[0] == "error":
            raise RuntimeError(message[1])
        _, target, token, seconds = message
        yield target, token, seconds
    finally:
        with contextlib.suppress(BrokenPipeError, OSError):
            parent.send("stop")
        proc.join(60)
        if proc.is_alive():
            proc.kill()
            proc.join()


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """Debian's PostgreSQL in a fresh cluster on a free port (as the ``postgres`` user,
    which it needs when this runs as root); yields the URI of an empty database."""
    versions = sorted(PG_BIN.glob("*/bin/postgres")) if PG_BIN.is_dir() else []
    if not versions:
        raise RuntimeError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres): "
            "apt-get install postgresql"
        )
    bin_dir = versions[-1].parent
    work = Path(tempfile.mkdtemp(prefix="leopard-bench-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(work, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = work / "data"

    def run(*argv: str) -> None:
        done = subprocess.run([*as_user, *argv], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{Path(argv[0]).name} failed: {done.stderr.strip()[-300:]}")

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(work / "log"), "-w", "start",
            "-o", f"-p {port} -k {work} -c listen_addresses=127.0.0.1 "
                  "-c track_commit_timestamp=on")  # fmt: skip
        try:
            run(str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                "-c", "CREATE DATABASE spicedb")  # fmt: skip
            yield f"postgres://postgres@127.0.0.1:{port}/spicedb?sslmode=disable"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- load --------------------------------------------------------------------------------


@dataclass
class Latency:
    n: int = 0
    p50_us: float | None = None
    p99_us: float | None = None
    members: int = 0
    answers: list[int] = field(default_factory=list, repr=False)


def single(target: str, pairs: list[tuple[str, str]], n: int, budget: float,
           token: str | None = None, warmup: int = 200) -> Latency:  # fmt: skip
    """CheckPermission one call at a time: up to ``n`` calls or ``budget`` seconds."""
    from authzed.api import v1

    client = v1.InsecureClient(target, "bench")
    consistency = consistency_of(token)
    requests = [check_request(p, consistency) for p in pairs]
    for r in requests[:warmup]:
        client.CheckPermission(r)
    clock = time.perf_counter_ns
    stop = time.monotonic() + budget
    samples, answers = [], []
    for i in range(n):
        request = requests[i % len(requests)]
        t = clock()
        answer = client.CheckPermission(request)
        samples.append(clock() - t)
        answers.append(int(answer.permissionship))
        if time.monotonic() > stop:
            break
    p50, p99 = percentiles(samples)
    return Latency(len(samples), round(p50, 1), round(p99, 1), answers.count(HAS), answers)


def floor(target: str, n: int, warmup: int = 300) -> Latency:
    """The transport's floor: the standard health Check (no index work) on the same
    server, through the same client stack (the authzed client's token interceptor on
    an insecure channel), one call at a time."""
    import grpc
    from authzed.api import v1
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = grpc.intercept_channel(
        grpc.insecure_channel(target),
        v1.TokenAuthorization("bench"),  # type: ignore[attr-defined]
    )
    from bench.floors import one_at_a_time

    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest()
    p50, p99 = one_at_a_time(lambda: stub.Check(request), n, warmup)
    channel.close()
    return Latency(n, round(p50, 1), round(p99, 1))


def _closed_loop(target: str, requests: list[bytes], method: str, threads: int,
                 seconds: float, warmup: float) -> tuple[int, int]:  # fmt: skip
    """One load process: ``threads`` threads, each sending its next call when the last
    is answered; (calls answered in the measured window, errors)."""
    import grpc
    from authzed.api import v1

    client = v1.InsecureClient(target, "bench")
    call = getattr(client, method)
    kind = v1.CheckPermissionRequest if method == "CheckPermission" else (
        v1.CheckBulkPermissionsRequest)  # fmt: skip
    parsed = [kind.FromString(r) for r in requests]
    start = time.monotonic() + warmup
    stop = start + seconds
    counts = [0] * threads
    errors = [0] * threads

    def worker(k: int) -> None:
        i = k
        while True:
            now = time.monotonic()
            if now >= stop:
                return
            try:
                call(parsed[i % len(parsed)], timeout=60)
            except grpc.RpcError:
                errors[k] += 1
            if time.monotonic() < stop and now >= start:
                counts[k] += 1
            i += threads

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts), sum(errors)


def concurrent(target: str, requests: list[Any], method: str, threads: int, processes: int,
               seconds: float, warmup: float = 1.0) -> tuple[float, int]:  # fmt: skip
    """Calls/s answered by ``threads`` client threads over ``processes`` processes."""
    raw = [r.SerializeToString() for r in requests]
    per = [threads // processes + (i < threads % processes) for i in range(processes)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        jobs = [
            pool.apply_async(
                _closed_loop, (target, raw[i::processes] or raw, method, t, seconds, warmup)
            )  # fmt: skip
            for i, t in enumerate(per)
            if t
        ]
        done = [j.get(timeout=seconds + warmup + 600) for j in jobs]
    return sum(d[0] for d in done) / seconds, sum(d[1] for d in done)


def bulk_one(target: str, requests: list[Any], seconds: float) -> tuple[float, float]:
    """CheckBulkPermissions one in flight for ``seconds``: (checks/s, ms per request)."""
    from authzed.api import v1

    client = v1.InsecureClient(target, "bench")
    client.CheckBulkPermissions(requests[0])  # warm-up
    items = done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or done == 0:
        request = requests[done % len(requests)]
        answer = client.CheckBulkPermissions(request)
        assert len(answer.pairs) == len(request.items)
        items += len(request.items)
        done += 1
    elapsed = time.perf_counter() - started
    return items / elapsed, elapsed / done * 1000


# -- one server, every measure -------------------------------------------------------------


@dataclass
class Options:
    seconds: float
    checks: int
    spicedb_checks: int
    spicedb_budget: float
    clients: int
    processes: int
    bulk: int


def measure(target: str, pairs: list[tuple[str, str]], opt: Options, *, spicedb: bool,
            token: str | None = None) -> dict[str, Any]:  # fmt: skip
    consistency = consistency_of(token)
    bulk_size = min(opt.bulk, SPICEDB_BULK) if spicedb else opt.bulk
    n = opt.spicedb_checks if spicedb else opt.checks
    budget = opt.spicedb_budget if spicedb else 600.0
    one = single(target, pairs, n, budget, token, warmup=20 if spicedb else 500)
    base = floor(target, min(n, 2_000)) if not spicedb else None
    machine_floors = None
    if not spicedb:
        from bench.floors import stock_grpc_health, tcp_round_trip

        machine_floors = {"tcp": tcp_round_trip(), "stock_grpc": stock_grpc_health()}
    requests = [check_request(p, consistency) for p in pairs]
    seconds = min(opt.seconds * 2, opt.spicedb_budget) if spicedb else opt.seconds
    rate, errors = concurrent(target, requests, "CheckPermission", opt.clients, opt.processes,
                              seconds, warmup=0.5 if spicedb else 1.0)  # fmt: skip
    rng = random.Random(3)
    bulks = [bulk_request([rng.choice(pairs) for _ in range(bulk_size)], consistency)
             for _ in range(8)]  # fmt: skip
    bulk_rate, bulk_ms = bulk_one(target, bulks, seconds)
    bulk_many, bulk_errors = concurrent(target, bulks, "CheckBulkPermissions",
                                        max(2, opt.processes), opt.processes, seconds,
                                        warmup=0.5)  # fmt: skip
    return {
        "check": {"n": one.n, "p50_us": one.p50_us, "p99_us": one.p99_us,
                  "members": one.members},
        "floor": None if base is None else {"n": base.n, "p50_us": base.p50_us,
                                            "p99_us": base.p99_us},
        "machine_floors": machine_floors,
        "answers": one.answers,
        "throughput": {"clients": opt.clients, "processes": opt.processes,
                       "calls_per_s": round(rate), "errors": errors, "seconds": seconds},
        "bulk": {"items": bulk_size, "checks_per_s": round(bulk_rate),
                 "ms_per_request": round(bulk_ms, 2),
                 "concurrent_clients": max(2, opt.processes),
                 "concurrent_checks_per_s": round(bulk_many * bulk_size),
                 "errors": bulk_errors},
    }  # fmt: skip


# -- the run -------------------------------------------------------------------------------


def schema_text() -> str:
    from bench.spicedb_peer import default_schema

    return default_schema(rewrites=False)


def spicedb_side(name: str, lines: list[str], pairs: list[tuple[str, str]], opt: Options,
                 options: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """SpiceDB embedded on one datastore: its figures, or why there are none."""
    try:
        with spicedb_server(schema_text(), lines, options) as (target, token, load_s):
            print(f"  {name}: loaded {len(lines):,} tuples in {load_s:.1f} s; measuring",
                  file=sys.stderr)  # fmt: skip
            out = measure(target, pairs[: max(opt.spicedb_checks, 1)], opt, spicedb=True,
                          token=token)  # fmt: skip
            out["load_s"] = round(load_s, 2)
            return out
    except RuntimeError as exc:
        return {"error": str(exc)}


def postgres_side(lines: list[str], pairs: list[tuple[str, str]], opt: Options) -> dict[str, Any]:
    try:
        with postgres() as uri:
            got = spicedb_side("SpiceDB on PostgreSQL", lines, pairs, opt,
                               {"datastore": "postgres", "datastore_uri": uri})  # fmt: skip
    except RuntimeError as exc:
        return {"error": f"PostgreSQL could not be started: {exc}"}
    error = got.get("error")
    if error and "does not exist" in error:
        got["error"] = (
            "PostgreSQL 15 (Debian) started, but SpiceDB embedded 0.7.1 does not migrate "
            f"its database: the first write fails ({error.split(': ', 1)[-1]}). Migrating "
            "takes `spicedb migrate head`, the SpiceDB command, which nothing reachable "
            "here ships: the PyPI wrapper and npm's libspicedb.so export only "
            "spicedb_start/dispose and seven RPC calls, and building the command from "
            "the Go module github.com/authzed/spicedb needs a Go far newer than "
            "Debian's golang 1.19 (which cannot fetch another toolchain)"
        )
    return got


def disagreements(ours: list[int], theirs: list[int]) -> int:
    return sum(a != b for a, b in zip(ours, theirs, strict=False))


def ratio(slow: float | None, fast: float | None) -> str:
    if not slow or not fast:
        return "-"
    return f"{slow / fast:,.1f}x"


def rows_of(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    leo = res["leopard"]
    sides = [(k, res[k]) for k in ("spicedb_memdb", "spicedb_postgres")]
    c, t, b, f = leo["check"], leo["throughput"], leo["bulk"], leo["floor"]
    tcp, stock = leo["machine_floors"]["tcp"], leo["machine_floors"]["stock_grpc"]
    rows = [
        ("loopback TCP round trip p50 / p99", f"{tcp['p50_us']:,.1f} / {tcp['p99_us']:,.1f} us",
         "50 bytes to another process and back: the machine's floor"),
        ("stock grpcio health Check p50 / p99",
         f"{stock['p50_us']:,.0f} / {stock['p99_us']:,.0f} us",
         "grpcio's own servicer and server, plain channel: no code of ours"),
        ("gRPC floor: health Check p50 / p99", f"{f['p50_us']:,.0f} / {f['p99_us']:,.0f} us",
         "Leopard's server, the authzed client's stack, no index work"),
        ("CheckPermission p50 (1 in flight)", f"{c['p50_us']:,.0f} us",
         f"<= {TARGET_P50_US:g} us: {verdict(c['p50_us'] <= TARGET_P50_US)}"),
        ("CheckPermission p99 (1 in flight)", f"{c['p99_us']:,.0f} us",
         f"<= {TARGET_P99_US:g} us: {verdict(c['p99_us'] <= TARGET_P99_US)}"),
        (f"CheckPermission, {t['clients']} client threads in {t['processes']} processes",
         f"{t['calls_per_s']:,} calls/s", f"errors {t['errors']}"),
        (f"CheckBulkPermissions of {b['items']:,} (1 in flight)",
         f"{b['checks_per_s']:,} checks/s",
         f">= {TARGET_BULK:,}: {verdict(b['checks_per_s'] >= TARGET_BULK)}"),
        (f"  {b['concurrent_clients']} in flight", f"{b['concurrent_checks_per_s']:,} checks/s",
         f">= {TARGET_BULK:,}: {verdict(b['concurrent_checks_per_s'] >= TARGET_BULK)}"),
    ]  # fmt: skip
    for key, side in sides:
        label = "SpiceDB memdb" if key == "spicedb_memdb" else "SpiceDB PostgreSQL"
        if "error" in side:
            rows.append((f"{label}", "not measured", side["error"][:200]))
            continue
        sc, st, sb = side["check"], side["throughput"], side["bulk"]
        rows += [
            (f"{label}: CheckPermission p50 / p99", f"{sc['p50_us']:,.0f} / {sc['p99_us']:,.0f} us",
             f"Leopard {ratio(sc['p50_us'], c['p50_us'])} / "
             f"{ratio(sc['p99_us'], c['p99_us'])} faster; {sc['n']} calls, "
             f"{side['disagreements']} disagreements"),
            (f"{label}: {st['clients']} client threads", f"{st['calls_per_s']:,} calls/s",
             f"Leopard {ratio(t['calls_per_s'], st['calls_per_s'])} more"),
            (f"{label}: bulk of {sb['items']}, 1 / {sb['concurrent_clients']} in flight",
             f"{sb['checks_per_s']:,} / {sb['concurrent_checks_per_s']:,} checks/s",
             f"Leopard {ratio(b['checks_per_s'], sb['checks_per_s'])} / "
             f"{ratio(b['concurrent_checks_per_s'], sb['concurrent_checks_per_s'])} more"),
        ]  # fmt: skip
    return rows


def record(res: dict[str, Any], path: Path = LATEST) -> None:
    """Put ``res`` under ``"grpc"`` in the results file, leaving the rest as it is."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data["grpc"] = res
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tuples", type=int, default=20_000, help="org size (default 20k)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    parser.add_argument("--checks", type=int, default=5_000, help="Leopard's timed checks")
    parser.add_argument("--spicedb-checks", type=int, default=300)
    parser.add_argument("--spicedb-budget", type=float, default=20.0,
                        help="most seconds per SpiceDB measure")  # fmt: skip
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--bulk", type=int, default=1_000, help="items per bulk (max 10,000)")
    parser.add_argument("--no-spicedb", action="store_true", help="Leopard alone")
    parser.add_argument("--no-postgres", action="store_true", help="skip SpiceDB on PostgreSQL")
    parser.add_argument("--no-record", action="store_true", help="leave latest.json alone")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    opt = Options(args.seconds, args.checks, args.spicedb_checks, args.spicedb_budget,
                  args.clients, args.client_processes, min(args.bulk, 10_000))  # fmt: skip
    started = time.time()
    snapshot, _, report = org(args.tuples, cycles=False, rewrites=False)
    index, _ = built_index(args.tuples, cycles=False, rewrites=False)
    pairs = workload(snapshot, max(opt.checks, 2_000))
    load1 = os.getloadavg()[0]
    res: dict[str, Any] = {
        "tuples": args.tuples, "groups": report.get("groups"), "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_at_start": round(load1, 2),
        "targets": {"p50_us": TARGET_P50_US, "p99_us": TARGET_P99_US, "bulk": TARGET_BULK},
        "options": asdict(opt),
    }  # fmt: skip
    print(f"Leopard: {args.tuples:,} tuples, measuring", file=sys.stderr)
    with leopard_server(index) as target:
        res["leopard"] = measure(target, pairs, opt, spicedb=False)
    ours = res["leopard"]["answers"]
    lines = snapshot.read_text().splitlines()
    for key, run in (
        ("spicedb_memdb", lambda: spicedb_side("SpiceDB memdb", lines, pairs, opt)),
        ("spicedb_postgres", lambda: postgres_side(lines, pairs, opt)),
    ):
        skip = args.no_spicedb or (key == "spicedb_postgres" and args.no_postgres)
        res[key] = {"error": "not asked (--no-spicedb/--no-postgres)"} if skip else run()
        if "answers" in res[key]:
            res[key]["disagreements"] = disagreements(ours, res[key]["answers"])
    for side in ("leopard", "spicedb_memdb", "spicedb_postgres"):
        res[side].pop("answers", None)
    res["load_at_end"] = round(os.getloadavg()[0], 2)
    res["seconds"] = round(time.time() - started, 1)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(table(
            f"SpiceDB's gRPC API: Leopard beside SpiceDB embedded, authzed client on loopback; "
            f"{args.tuples:,} tuples ({res['groups']:,} groups); {machine()}; load "
            f"{res['load_at_start']} -> {res['load_at_end']}",
            rows_of(res),
        ))  # fmt: skip
        for key in ("spicedb_memdb", "spicedb_postgres"):
            if "error" in res[key]:
                print(f"\n{key}: {res[key]['error']}")
    if not args.no_record:
        record(res)


if __name__ == "__main__":
    main()
