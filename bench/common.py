"""Shared helpers of the benchmarks: generated orgs cached on disk, timing, tables.

Benchmarks print figures beside their targets and never decide a test's outcome.
Generated data lives under ``bench/.data`` (ignored by git), keyed by size and shape,
so that repeated runs do not regenerate it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("LEOPARD_BENCH_DATA", ROOT / "bench" / ".data"))


def org(
    tuples: int, *, seed: int = 1, cycles: bool = True, rewrites: bool = True
) -> tuple[Path, Path, dict[str, Any]]:
    """A generated org snapshot, its set configuration and the generator's report."""
    from leopard.gen import OrgSpec, config_toml, generate

    DATA.mkdir(parents=True, exist_ok=True)
    tag = f"org-{tuples}-s{seed}{'' if cycles else '-dag'}{'' if rewrites else '-plain'}"
    snapshot, config, report_path = (
        DATA / f"{tag}.txt",
        DATA / f"{tag}.toml",
        DATA / f"{tag}.json",
    )
    if not (snapshot.exists() and report_path.exists()):
        spec = OrgSpec(tuples=tuples, seed=seed, cycles=cycles, rewrites=rewrites)
        report = generate(spec, snapshot)
        config.write_text(config_toml(spec))
        report_path.write_text(json.dumps(report.to_dict()))
    return snapshot, config, json.loads(report_path.read_text())


def build_argv(snapshot: Path, config: Path, index: Path, *extra: str) -> list[str]:
    """The ``leopard build`` command line the benchmarks time."""
    return [
        sys.executable, "-m", "leopard", "build", str(snapshot),
        "--index", str(index), "--config", str(config), "--json", *extra,
    ]  # fmt: skip


def built_index(tuples: int, **kw: Any) -> tuple[Path, dict[str, Any]]:
    """An index built from ``org(tuples)``, reused when already built."""
    snapshot, config, report = org(tuples, **kw)
    index = snapshot.with_suffix(".idx")
    if not (index / "CURRENT").exists() or not _readable(index):
        subprocess.run(
            build_argv(snapshot, config, index),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return index, report


def _readable(index: Path) -> bool:
    """Whether this Leopard reads the index (one of an older format is built again)."""
    import leopard

    try:
        with leopard.open_index(index):
            return True
    except leopard.StorageError:
        return False


def percentiles(samples_ns: Sequence[int], points: Sequence[float] = (50, 99)) -> list[float]:
    """Percentiles of nanosecond samples, in microseconds."""
    ordered = sorted(samples_ns)
    out = []
    for p in points:
        i = min(len(ordered) - 1, int(len(ordered) * p / 100))
        out.append(ordered[i] / 1000)
    return out


def _tree(pid: int) -> list[int]:
    out = [pid]
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                for child in fh.read().split():
                    out += _tree(int(child))
        except OSError:
            pass
    return out


def _pss(pid: int) -> int:
    """Proportional set size of a process tree: shared pages counted once."""
    total = 0
    try:
        pids = _tree(pid)
    except OSError:
        return 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def run_measured(argv: list[str], interval: float = 0.5) -> tuple[float, int, str]:
    """Wall seconds, peak memory in bytes (PSS of the process and its children) and stdout.

    Memory is sampled every ``interval`` seconds from /proc, so that a forked helper
    process counts too, and pages it shares with its parent count once. Reading a
    process's PSS walks its page tables, which slows the process read: the 10M org's
    build took 9.4-9.5 s unobserved, 11.6-11.7 s sampled every 50 ms and 9.9-10.6 s
    every 500 ms (its peak the same to 0.1 GiB), hence the default.
    """
    import threading

    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _pss(proc.pid))
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {proc.returncode}")
    return wall, peak, out.decode()


def table(title: str, rows: list[tuple[str, str, str]]) -> str:
    """A plain table of (measure, figure, target/baseline)."""
    header = ("measure", "figure", "target")
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(3)]
    line = "  ".join("-" * w for w in widths)
    head = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([f"\n{title}", head, line, *body])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"
