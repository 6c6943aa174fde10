#!/usr/bin/env python3
"""Spark build benchmark: ``leopard build --engine spark`` beside the one-machine build.

Builds the same generated org (10M tuples; 40M with ``--full``) twice in one run: with
the local engine (one ordinary index) and with Spark in ``local[2]`` (a sharded index
of ``--shards`` shards), each as its own ``leopard build`` process. For each: wall
time, tuples/s per core, and peak memory sampled every 100 ms from /proc, split by
process: the driver (the ``leopard build`` process and what it forks), the JVM
(Spark's driver and executors in local mode), and the executors' Python workers
(children of the JVM, with the index writers they fork). Then a **projection** for
1 billion tuples on N executor cores, from the measured per-core rate: arithmetic,
not a measurement (it assumes the rate holds per core as cores are added and leaves
out what a real cluster adds: network shuffles, stragglers, the driver's share).

    python bench/spark_build.py                     # 10M tuples
    python bench/spark_build.py --tuples 200000     # a quick run
    python bench/spark_build.py --full              # 10M and 40M
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DATA, build_argv, machine, org  # noqa: E402

CORES = 2  # local[2]
MIN_TUPLES = 1000


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    out += [int(c) for c in fh.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _by_role(root: int) -> dict[str, int]:
    """RSS summed per role over the process tree of ``root``: the driver (``root`` and
    its Python descendants outside the JVM), the JVM, and the JVM's Python workers."""
    out = {"driver": 0, "jvm": 0, "workers": 0}

    def walk(pid: int, under_jvm: bool) -> None:
        is_jvm = _comm(pid) == "java"
        role = "jvm" if is_jvm else ("workers" if under_jvm else "driver")
        out[role] += _rss(pid)
        for child in _children(pid):
            walk(child, under_jvm or is_jvm)

    walk(root, False)
    return out


def run(argv: list[str]) -> dict[str, Any]:
    """Wall seconds, peak RSS per role (each role's peak of its sum), the report."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    peak = {"driver": 0, "jvm": 0, "workers": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for role, rss in _by_role(proc.pid).items():
                peak[role] = max(peak[role], rss)
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {proc.returncode}")
    return {"seconds": wall, "peak": peak, "report": json.loads(out)}


def measure(tuples: int, shards: int) -> dict[str, Any]:
    snapshot, config, _ = org(tuples)
    local_ix = DATA / f"bench-spark-{tuples}-local.idx"
    spark_ix = DATA / f"bench-spark-{tuples}-x{shards}.idx"
    for ix in (local_ix, spark_ix):
        shutil.rmtree(ix, ignore_errors=True)
    local = run(build_argv(snapshot, config, local_ix))
    spark = run(
        build_argv(snapshot, config, spark_ix, "--engine", "spark", "--shards", str(shards))
        + ["--master", f"local[{CORES}]"]
    )
    # the fixed cost (JVM, session, workers' imports), from a build of a tiny org
    tiny_snapshot, tiny_config, _ = org(MIN_TUPLES)
    tiny_ix = DATA / f"bench-spark-{MIN_TUPLES}-x{shards}.idx"
    for ix in (local_ix, spark_ix, tiny_ix):
        shutil.rmtree(ix, ignore_errors=True)
    fixed = run(
        build_argv(
            tiny_snapshot, tiny_config, tiny_ix, "--engine", "spark", "--shards", str(shards)
        )
        + ["--master", f"local[{CORES}]"]
    )
    shutil.rmtree(tiny_ix, ignore_errors=True)
    return {
        "tuples": tuples,
        "shards": shards,
        "local": local,
        "spark": spark,
        "fixed_seconds": fixed["seconds"],
    }


def _mb(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MB"


def show(m: dict[str, Any]) -> str:
    n = m["tuples"]
    loc, spk = m["local"], m["spark"]
    rate_local = n / loc["seconds"] / CORES
    rate_spark = n / spk["seconds"] / CORES
    fixed = m["fixed_seconds"]
    # the rate that scales: what the build takes beyond a tiny build's fixed cost
    beyond = spk["seconds"] - fixed
    scaled = beyond > 0.2 * spk["seconds"]  # else too small a build to tell them apart
    rate = n / beyond / CORES if scaled else rate_spark
    rows = [
        ("wall time", f"{loc['seconds']:.1f} s", f"{spk['seconds']:.1f} s"),
        ("tuples/s per core (2 cores)", f"{rate_local:,.0f}", f"{rate_spark:,.0f}"),
        (
            f"  beyond the fixed cost ({fixed:.1f} s: a {MIN_TUPLES:,}-tuple build)",
            "",
            f"{rate:,.0f}" if scaled else "too small a build to tell",
        ),
        ("peak RSS: driver", _mb(loc["peak"]["driver"]), _mb(spk["peak"]["driver"])),
        ("peak RSS: Spark JVM", "-", _mb(spk["peak"]["jvm"])),
        ("peak RSS: executors' Python workers", "-", _mb(spk["peak"]["workers"])),
        (
            "bytes on disk",
            f"{loc['report']['bytes_on_disk']:,}",
            f"{spk['report']['bytes_on_disk']:,}",
        ),
    ]
    header = ("measure", "local engine", "Spark")
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(3)]
    out = [f"\n{n:,} tuples: one machine vs Spark local[{CORES}], {m['shards']} shards"]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    out.append(
        f"\nprojection for 1,000,000,000 tuples at the measured {rate:,.0f} tuples/s per core"
        + (f" beyond the fixed cost, plus that cost ({fixed:.0f} s)" if scaled else "")
    )
    out.append("(arithmetic, not a measurement: no shuffle over a network, no stragglers):")
    for cores in (16, 64, 256):
        secs = 1e9 / (rate * cores) + fixed
        out.append(f"  projection: {cores:>3} executor cores  {secs / 60:6.1f} min")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tuples", type=int, default=10_000_000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--full", action="store_true", help="also 40M tuples")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sizes = [args.tuples] + ([40_000_000] if args.full else [])
    print(machine(), file=sys.stderr)
    results = [measure(n, args.shards) for n in sizes]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for m in results:
        print(show(m))
        print()


if __name__ == "__main__":
    main()
