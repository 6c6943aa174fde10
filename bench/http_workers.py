"""``GET /v1/check`` with ``leopard serve --workers 1`` and ``--workers 2``, in one run.

Why: ``--workers N`` exists so that a server uses every core; the target here is at
least 1.3 times the single process's req/s with 2 workers. The load generator (wrk,
one thread) runs on the same 2-core machine, so it takes part of the second core the
second worker wants: both figures are printed, with the share of CPU each worker
used during the run (the kernel's ``SO_REUSEPORT`` hash spreads wrk's connections),
and timings never decide a test.

    python -m bench.http_workers                     # 1M tuples, 64 connections, 5 s runs
    python -m bench.http_workers --varied            # 10,000 distinct checks (wrk script)
    python -m bench.http_workers --tuples 100000 --seconds 3 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.common import built_index, machine, org, table, verdict
from bench.http import Result, _ms, check_path, server, wait_ready, workload, wrk

TARGET_RATIO = 1.3

_WRK_PATHS = """
local paths = {}
for line in io.lines(os.getenv("LEOPARD_PATHS")) do paths[#paths + 1] = line end
local i = math.random(#paths)
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
"""

_TICKS = 100  # clock ticks per second of /proc/<pid>/stat (USER_HZ on Linux)


def workers_of(pid: int) -> list[int]:
    """The worker processes of a server (itself, with one worker)."""
    kids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return kids or [pid]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def plain_wrk(url: str, seconds: float, connections: int) -> Result:
    """wrk on one URL, without a script: the cheapest load wrk makes (no Lua per request)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return Result(rps, p50, p99, int(errors.group(1)) if errors else 0, "wrk")


def measure(
    index: Path,
    workers: int,
    paths_file: Path | None,
    one: str,
    seconds: float,
    connections: int,
) -> tuple[Result, list[float], float]:
    """Peak single checks against ``--workers N`` (those of ``paths_file``, else ``one``);
    the result, each worker's CPU seconds per second of the run, and wrk's."""
    env = {"LEOPARD_PATHS": str(paths_file)}
    with server(index, "--workers", str(workers)) as (url, proc):
        wait_ready(url)
        target = url + one

        def load(length: float) -> Result:
            if paths_file is None:
                return plain_wrk(target, length, connections)
            return wrk(url, length, connections, _WRK_PATHS, env)

        load(3)  # warm-up: names resolved and cached
        pids = workers_of(proc.pid)
        before = [cpu_seconds(p) for p in pids]
        wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = load(seconds)
        wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        length = max(1, round(seconds))
        used = [(cpu_seconds(p) - b) / length for p, b in zip(pids, before, strict=True)]
        generator = (
            wrk_after.ru_utime + wrk_after.ru_stime - wrk_before.ru_utime - wrk_before.ru_stime
        ) / length
    return result, used, generator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tuples", type=int, default=1_000_000, help="org size (default 1M)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--varied",
        action="store_true",
        help="10,000 distinct checks through a wrk script (costlier for wrk) instead of one",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk (apt-get install wrk)")

    index, report = built_index(args.tuples)
    snapshot, _, _ = org(args.tuples)
    paths = [check_path(s, g) for s, g in workload(snapshot)]
    work = Path(tempfile.mkdtemp(prefix="leopard-bench-workers-"))
    try:
        paths_file = work / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        results = {
            n: measure(
                index,
                n,
                paths_file if args.varied else None,
                paths[0],
                args.seconds,
                args.connections,
            )
            for n in args.workers
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = results[args.workers[0]][0].rps
    rows: list[tuple[str, str, str]] = []
    for n, (r, used, generator) in results.items():
        ratio = r.rps / base if base else 0.0
        target = ""
        if n == 2 and args.workers[0] == 1:
            target = f">= {TARGET_RATIO:g}x --workers 1: {verdict(ratio >= TARGET_RATIO)}"
        rows.append((f"--workers {n}: single checks, peak", f"{r.rps:,.0f} req/s", target))
        rows.append((f"  ratio to --workers {args.workers[0]}", f"{ratio:.2f}x", ""))
        rows.append(("  p50 / p99", f"{r.p50_ms:.2f} / {r.p99_ms:.2f} ms", ""))
        rows.append(
            (
                "  CPU per worker (cores)",
                " / ".join(f"{u:.2f}" for u in used),
                f"wrk {generator:.2f} cores; non-200 answers: {r.errors}",
            )
        )
    print(
        table(
            f"leopard serve --workers: GET /v1/check, {args.tuples:,} tuples "
            f"({report.get('groups', '?'):,} groups), "
            f"{'10,000 distinct checks' if args.varied else 'one check'}, "
            f"wrk -t1 -c{args.connections}, "
            f"{args.seconds:g} s runs, load generator on the same machine; {machine()}",
            rows,
        )
    )


if __name__ == "__main__":
    main()
