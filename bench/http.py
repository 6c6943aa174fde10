"""HTTP query service throughput and latency, beside their targets.

Why: the service exists to answer checks fast enough for an application's hot
path; the targets are single checks >= 15k req/s with p99 <= 5 ms and batch checks
>= 500k checks/s, on one server process with load from another process on
loopback. This runs exactly that, in bounded runs of a few seconds:

1. single checks at peak (closed loop: every connection sends its next request
   as soon as the last is answered), over 10,000 distinct (subject, group) pairs,
   half of them memberships that the snapshot holds;
2. batch checks, 1,000 pairs per POST /v1/check;
3. single checks at half the peak rate (paced: each connection sends on a fixed
   schedule; latency counts from the actual send, and the share of requests sent
   more than 1 ms behind schedule is reported, since on 2 shared cores that lag
   is often the load generator's own, not the server's);
4. 1 and 3 again while a consumer in the server process applies about 1,000
   changes/s that another process publishes through the local broker.

Load comes from wrk (``apt-get install wrk``) when installed, else from a Python
load generator in separate processes (asyncio, keep-alive connections); paced runs
always use the Python generator, since wrk cannot pace. The machine has 2 cores:
server and load generator each get about one, and the broker and publisher share
them in step 4, so figures are indicative. Timings never decide a test.

    python -m bench.http                  # 1M tuples (built once under bench/.data)
    python -m bench.http --tuples 100000 --seconds 2 --no-wrk

Run it with ``-m`` from the repository root: as ``python bench/http.py`` this file
would shadow the standard library's ``http`` package, which the guard below undoes.
"""

from __future__ import annotations

import sys

if sys.path and sys.path[0].rstrip("/").endswith("bench"):  # run as a script: unshadow `http`
    del sys.path[0]
    sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import quote, urlsplit  # noqa: E402

from bench.common import built_index, machine, org, table, verdict  # noqa: E402

TARGET_RPS = 15_000
TARGET_P99_MS = 5.0
TARGET_BATCH = 500_000
BATCH = 1_000
CHANGES_PER_S = 1_000


# -- workload ----------------------------------------------------------------------------


def workload(snapshot: Path, n: int = 10_000, seed: int = 7) -> list[tuple[str, str]]:
    """``n`` (subject, group) pairs: half direct memberships of the snapshot, half random."""
    rng = random.Random(seed)
    members: list[tuple[str, str]] = []
    users: set[str] = set()
    groups: set[str] = set()
    with open(snapshot, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= 400_000:
                break
            resource, _, subject = line.rstrip("\n").partition("@")
            group = resource.split("#", 1)[0]
            groups.add(group)
            if subject.startswith("user:"):
                users.add(subject)
                members.append((subject, group))
    user_list, group_list = sorted(users), sorted(groups)
    pairs = []
    for _ in range(n):
        if rng.random() < 0.5:
            pairs.append(rng.choice(members))
        else:
            pairs.append((rng.choice(user_list), rng.choice(group_list)))
    return pairs


def check_path(subject: str, group: str) -> str:
    return f"/v1/check?subject={quote(subject, safe='')}&group={quote(group, safe='')}"


def batch_body(pairs: list[tuple[str, str]], size: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    picked = [rng.choice(pairs) for _ in range(size)]
    return json.dumps({"checks": [{"subject": s, "group": g} for s, g in picked]}).encode()


# -- the server --------------------------------------------------------------------------


@contextmanager
def server(index: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``leopard serve`` on a free port in its own process; yields its URL."""
    proc = subprocess.Popen(
        # one process, the figures' premise (--workers in ``extra`` overrides it)
        [sys.executable, "-m", "leopard", "serve", "--index", str(index), "--port", "0",
         "--ready-max-lag", "1000000", "--workers", "1", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        m = re.search(r"on (http://[^\s,]+)", line)
        if not m:
            raise SystemExit(f"leopard serve did not start: {line}{proc.stderr.read().decode()}")
        yield m.group(1), proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read())


def metrics(url: str) -> dict[str, float]:
    """Unlabelled samples, and labelled ones summed by name, of /metrics."""
    out: dict[str, float] = {}
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:  # noqa: S310
        for line in resp.read().decode().splitlines():
            if line.startswith("#") or not line:
                continue
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(value)
    return out


def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get_json(url + "/readyz")["ready"]:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not become ready within {timeout:g} s")


# -- load: wrk ---------------------------------------------------------------------------

_WRK_PATHS = """
local paths = {}
for line in io.lines(os.getenv("LEOPARD_PATHS")) do paths[#paths + 1] = line end
local i = math.random(#paths)
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
"""
_WRK_BODY = """
local fh = io.open(os.getenv("LEOPARD_BODY"), "rb")
wrk.method = "POST"
wrk.body = fh:read("*a")
fh:close()
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str
    late: float = 0.0  # paced runs: share of requests sent > 1 ms behind schedule


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def wrk(url: str, seconds: float, connections: int, script: str, env: dict[str, str]) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
             "-s", fh.name, url],
            capture_output=True, text=True, env={**os.environ, **env}, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(fh.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    n_err = int(errors.group(1)) if errors else 0
    if socket_errors:
        n_err += sum(int(x) for x in re.findall(r"\d+", socket_errors.group(1)))
    return Result(rps, p50, p99, n_err, "wrk")


# -- load: the Python generator ----------------------------------------------------------


def _py_worker(
    url: str,
    requests: list[bytes],
    connections: int,
    seconds: float,
    rate: float | None,
    warmup: float,
) -> tuple[int, int, int, list[float]]:
    """One load process: (answered, errors, sent late, latencies in ms).

    ``rate``: paced at that many requests/s over all connections, else closed loop.
    """
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    parts = urlsplit(url)

    async def connection(index: int, start: float, stop: float, out: list[Any]) -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        clock = time.perf_counter  # not loop.time(): uvloop's ticks in whole milliseconds
        k = 0
        answered = errors = late = 0
        latencies: list[float] = []
        try:
            while True:
                if rate is None:
                    intended = clock()
                else:  # request k of this connection is due at start + (k*C + i)/rate
                    intended = start + (k * connections + index) / rate
                    delay = intended - clock()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if intended >= stop:
                    break
                sent = clock()
                writer.write(requests[(k * connections + index) % len(requests)])
                k += 1
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                found = _LENGTH.search(head)
                assert found is not None, head
                length = int(found.group(1))
                await reader.readexactly(length)
                if intended >= start + warmup:
                    answered += 1
                    errors += status != 200
                    late += sent - intended > 0.001
                    latencies.append((clock() - sent) * 1000)
        finally:
            writer.close()
        out.append((answered, errors, late, latencies))

    async def main() -> tuple[int, int, int, list[float]]:
        start = time.perf_counter() + 0.2
        stop = start + warmup + seconds
        out: list[Any] = []
        await asyncio.gather(*(connection(i, start, stop, out) for i in range(connections)))
        lat = [x for *_, ls in out for x in ls]
        return sum(o[0] for o in out), sum(o[1] for o in out), sum(o[2] for o in out), lat

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


def python_load(
    url: str,
    requests: list[bytes],
    *,
    seconds: float,
    connections: int,
    processes: int = 1,
    rate: float | None = None,
    warmup: float = 1.0,
) -> Result:
    host = urlsplit(url).netloc
    raw = [r.replace(b"HOST", host.encode()) for r in requests]
    ctx = multiprocessing.get_context("spawn")
    per = max(1, connections // processes)
    with ctx.Pool(processes) as pool:
        jobs = [
            pool.apply_async(
                _py_worker,
                (
                    url,
                    raw[i::processes] or raw,
                    per,
                    seconds,
                    None if rate is None else rate / processes,
                    warmup,
                ),
            )  # fmt: skip
            for i in range(processes)
        ]
        parts = [j.get(timeout=seconds + warmup + 60) for j in jobs]
    latencies = sorted(x for *_, ls in parts for x in ls)
    answered = sum(p[0] for p in parts)
    errors = sum(p[1] for p in parts)
    late = sum(p[2] for p in parts)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] if latencies else 0

    return Result(
        answered / seconds, pct(50), pct(99), errors, "python", late / answered if answered else 0
    )


_LENGTH = re.compile(rb"(?i)content-length: (\d+)")


def get_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: HOST\r\n\r\n".encode()


def post_request(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# -- the changes -------------------------------------------------------------------------


def _publisher(brokers: str, topic: str, lines: list[str], rate: float, stop_at: float) -> int:
    """Publish change lines at ``rate``/s until ``stop_at`` (time.time()); how many were sent."""
    from ingest.codecs import encode_native, message_key
    from ingest.kafka.client import KafkaProducer
    from ingest.kafka.publish import parse_change_lines

    changes = list(parse_change_lines(lines, "bench"))
    producer = KafkaProducer(bootstrap_servers=brokers, acks=1, linger_ms=5)
    sent = 0
    started = time.time()
    try:
        while time.time() < stop_at and sent < len(changes):
            due = int((time.time() - started) * rate)
            while sent < min(due, len(changes)):
                c = changes[sent]
                producer.send(topic, key=message_key(c.tuple), value=encode_native(c))
                sent += 1
            time.sleep(0.01)
        producer.flush(30)
    finally:
        producer.close(5)
    return sent


# -- the runs ----------------------------------------------------------------------------


@dataclass
class Options:
    seconds: float
    connections: int
    use_wrk: bool
    processes: int


def peak(url: str, paths_file: Path, paths: list[str], opt: Options) -> Result:
    if opt.use_wrk:
        # warm-up: the server resolves and caches each group name on first use
        wrk(url, 3, opt.connections, _WRK_PATHS, {"LEOPARD_PATHS": str(paths_file)})
        return wrk(
            url, opt.seconds, opt.connections, _WRK_PATHS, {"LEOPARD_PATHS": str(paths_file)}
        )
    return python_load(
        url,
        [get_request(p) for p in paths],
        seconds=opt.seconds,
        connections=opt.connections,
        processes=opt.processes,
    )


def paced(url: str, paths: list[str], rate: float, opt: Options) -> Result:
    return python_load(
        url,
        [get_request(p) for p in paths],
        seconds=opt.seconds,
        connections=opt.connections,
        processes=opt.processes,
        rate=rate,
    )


def batch(url: str, body_file: Path, body: bytes, opt: Options) -> Result:
    connections = 4
    if opt.use_wrk:
        wrk(url + "/v1/check", 1, connections, _WRK_BODY, {"LEOPARD_BODY": str(body_file)})
        return wrk(
            url + "/v1/check", opt.seconds, connections, _WRK_BODY, {"LEOPARD_BODY": str(body_file)}
        )
    return python_load(
        url, [post_request("/v1/check", body)], seconds=opt.seconds, connections=connections
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tuples", type=int, default=1_000_000, help="org size (default 1M)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--processes", type=int, default=1, help="Python load processes")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator")
    parser.add_argument("--no-consumer", action="store_true", help="skip the runs with changes")
    args = parser.parse_args(argv)
    use_wrk = not args.no_wrk and shutil.which("wrk") is not None
    opt = Options(args.seconds, args.connections, use_wrk, args.processes)

    index, report = built_index(args.tuples)
    snapshot, _, _ = org(args.tuples)
    pairs = workload(snapshot)
    paths = [check_path(s, g) for s, g in pairs]
    body = batch_body(pairs, BATCH)
    work = Path(tempfile.mkdtemp(prefix="leopard-bench-http-"))
    try:
        paths_file = work / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        body_file = work / "batch.json"
        body_file.write_bytes(body)
        served = work / "idx"
        shutil.copytree(index, served, symlinks=True)  # the consumer run writes to it

        rows: list[tuple[str, str, str]] = []
        with server(served) as (url, _):
            wait_ready(url)
            top = peak(url, paths_file, paths, opt)
            rows += single_rows("single checks", top)
            b = batch(url, body_file, body, opt)
            checks = b.rps * BATCH
            rows.append(
                (
                    f"batch checks ({BATCH:,} per request, {b.tool})",
                    f"{checks:,.0f} checks/s",
                    f">= {TARGET_BATCH:,} checks/s: {verdict(checks >= TARGET_BATCH)}",
                )
            )
            rows.append(
                ("  p50 / p99 per batch request", f"{b.p50_ms:.2f} / {b.p99_ms:.2f} ms", "")
            )
            half = paced(url, paths, top.rps / 2, opt)
            rows.append(
                (
                    f"single checks at half peak ({top.rps / 2:,.0f} req/s, paced)",
                    f"p50 {half.p50_ms:.2f} / p99 {half.p99_ms:.2f} ms",
                    paced_note(half),
                )
            )
            errors = top.errors + b.errors + half.errors
        if not args.no_consumer:
            rows += with_consumer(served, snapshot, paths_file, paths, opt)
        print(
            table(
                f"leopard serve: {args.tuples:,} tuples ({report.get('groups', '?'):,} groups), "
                f"{opt.connections} connections, {opt.seconds:g} s runs, load from "
                f"{'wrk' if use_wrk else 'Python'}; {machine()}",
                rows,
            )
        )
        if errors:
            print(f"\nnon-200 answers or socket errors without changes: {errors}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def paced_note(r: Result) -> str:
    return f"answered {r.rps:,.0f} req/s, {r.late:.0%} sent > 1 ms late"


def single_rows(label: str, r: Result) -> list[tuple[str, str, str]]:
    return [
        (
            f"{label}, peak ({r.tool})",
            f"{r.rps:,.0f} req/s",
            f">= {TARGET_RPS:,} req/s: {verdict(r.rps >= TARGET_RPS)}",
        ),
        (
            "  p50 / p99 at peak",
            f"{r.p50_ms:.2f} / {r.p99_ms:.2f} ms",
            f"p99 <= {TARGET_P99_MS:g} ms: {verdict(r.p99_ms <= TARGET_P99_MS)}",
        ),
    ]


def with_consumer(
    served: Path, snapshot: Path, paths_file: Path, paths: list[str], opt: Options
) -> list[tuple[str, str, str]]:
    """The single-check runs again while ~1k changes/s stream into the server's consumer."""
    from ingest.kafka.local_broker import LocalBroker, create_topic
    from leopard.gen import generate_changes

    duration = 2 * (opt.seconds + 2) + 8  # both runs, their warm-ups, the join
    lines = generate_changes(snapshot, int(CHANGES_PER_S * (duration + 5)), seed=11)
    rows: list[tuple[str, str, str]] = []
    with LocalBroker() as broker:
        topic = "bench-changes"
        create_topic(broker.bootstrap, topic)
        with server(served, "--brokers", broker.bootstrap, "--topic", topic) as (url, _):
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(1) as pool:
                stop_at = time.time() + duration
                job = pool.apply_async(
                    _publisher, (broker.bootstrap, topic, lines, CHANGES_PER_S, stop_at)
                )
                wait_ready(url)
                time.sleep(2)  # the first changes are applied: steady state
                before = metrics(url)
                t0 = time.monotonic()
                top = peak(url, paths_file, paths, opt)
                half = paced(url, paths, top.rps / 2, opt)
                after = metrics(url)
                elapsed = time.monotonic() - t0
                sent = job.get(timeout=duration + 60)
        applied = after.get("leopard_consumer_changes_total", 0) - before.get(
            "leopard_consumer_changes_total", 0
        )
        rows += single_rows(f"with ~{CHANGES_PER_S:,} changes/s: single checks", top)
        rows.append(
            (
                f"  at half peak ({top.rps / 2:,.0f} req/s, paced)",
                f"p50 {half.p50_ms:.2f} / p99 {half.p99_ms:.2f} ms",
                paced_note(half),
            )
        )
        rows.append(
            (
                "  changes applied meanwhile",
                f"{applied / elapsed:,.0f} /s",
                f"lag at end {after.get('leopard_consumer_lag', 0):,.0f}; {sent:,} published",
            )
        )
    return rows


if __name__ == "__main__":
    main()
