#!/usr/bin/env python3
"""Scaling curves: Leopard by org size, and Leopard beside SpiceDB by nesting depth.

Why: a single size says little about how an index behaves. Two sweeps:

* **By size** (10k, 100k, 1M tuples; ``--full`` adds 10M, 40M and 100M): the generated
  org of the build benchmark (cycles, wildcards and union rewrites included) is built with
  ``leopard build`` in a child process, timed and sampled for peak memory (PSS, see
  ``bench.common.run_measured``); bytes on disk per tuple; then ``check`` latency in
  process on random pairs, half of them members through 3 or more levels, as
  ``bench/query.py`` samples them (first pass ``cold``, second pass over the same
  pairs ``warm``).
* **By depth** (1 to 20): a fixed base org (no cycles, no rewrites) plus, for every
  depth d, a few chains of d nested groups with one user at the bottom; ``check(user,
  top of chain)`` is timed on Leopard and on SpiceDB embedded loaded with the same
  tuples. Leopard's answer is one intersection whatever the depth; SpiceDB walks the
  chain one dispatch per group. SpiceDB embedded stores relationships in its in-memory
  test datastore, whose cost per dispatch grows with the relationships stored (~0.3 us
  each), so the base is kept small (20k tuples by default, <= ~100k advised).

    python bench/scaling.py                       # 10k, 100k, 1M, and the depth sweep
    python bench/scaling.py --full --json    # adds 10M, 40M, 100M (about 15 minutes more)
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DATA, build_argv, machine, org, percentiles, run_measured  # noqa: E402

Log = Callable[[str], None]
SIZES = (10_000, 100_000, 1_000_000)
FULL_SIZES = (*SIZES, 10_000_000, 40_000_000, 100_000_000)
MiB = 1 << 20


def _lat(samples_ns: Sequence[int]) -> dict[str, Any]:
    if not samples_ns:
        return {"n": 0, "p50_us": None, "p99_us": None}
    p50, p99 = percentiles(samples_ns)
    return {"n": len(samples_ns), "p50_us": round(p50, 2), "p99_us": round(p99, 2)}


# -- by size ----------------------------------------------------------------------------


def measure_size(tuples: int, *, pairs: int = 5000, seed: int = 7, log: Log = print) -> dict:
    """Build the org of ``tuples`` in a child process, then time ``check`` in this one."""
    import leopard
    from bench.query import sample_pairs, timed

    snapshot, config, report = org(tuples)  # generated (and cached) outside the timing
    index = DATA / f"scaling-{tuples}.idx"
    shutil.rmtree(index, ignore_errors=True)
    argv = build_argv(snapshot, config, index)
    try:
        wall, peak, out = run_measured(argv)
        built = json.loads(out)
        rng = random.Random(seed)
        with leopard.open_index(index) as ix:
            n_users = report["users"]
            width = len(report["deep_user"].split(":u")[1]) if report.get("deep_user") else 7
            users = [
                f"user:u{i:0{width}d}" for i in rng.sample(range(n_users), min(n_users, 50_000))
            ]
            sample, n_deep = sample_pairs(ix, users, ix.reader.base_groups, pairs, rng)
            cold = timed(ix.check, sample)
            warm = timed(ix.check, sample)
            members = sum(ix.check(s, g) for s, g in sample)
    finally:
        shutil.rmtree(index, ignore_errors=True)
    row = {
        "tuples": tuples,
        "groups": built["groups"],
        "subjects": built["subjects"],
        "build_wall_s": round(wall, 3),
        "build_s": built["seconds"],
        "peak_bytes": peak,
        "bytes_on_disk": built["bytes_on_disk"],
        "bytes_per_tuple": round(built["bytes_on_disk"] / tuples, 2),
        "pairs": len(sample),
        "deep_members": n_deep,
        "members": members,
        "check_cold": _lat(cold),
        "check_warm": _lat(warm),
    }
    log(
        f"scaling {tuples:>11,}: build {wall:6.2f} s, peak {peak / MiB:7.0f} MiB, "
        f"{row['bytes_per_tuple']:5.1f} B/tuple, check p50 {row['check_warm']['p50_us']} us "
        f"p99 {row['check_warm']['p99_us']} us"
    )
    return row


def by_size(sizes: Sequence[int] = SIZES, *, pairs: int = 5000, log: Log = print) -> list[dict]:
    """``measure_size`` for each size, smallest first."""
    for n in sorted(sizes):
        org(n)  # generate everything before any timing
    return [measure_size(n, pairs=pairs, log=log) for n in sorted(sizes)]


# -- by depth ---------------------------------------------------------------------------


def chain_tuples(max_depth: int, chains: int, fill: int = 2) -> tuple[list[str], dict]:
    """Chains of d nested groups (d = 1..max_depth), ``chains`` of each depth.

    Chain (d, c) is ``group:chain-d{d}-c{c}-l0`` holding ``...-l1`` holding ... down to
    ``...-l{d-1}``, which holds ``user:chain-d{d}-c{c}``; every group of it also holds
    ``fill`` users of its own, so no group is empty but the user's only path is the
    chain. Returns the tuples and ``{d: [(user, top group), ...]}``.
    """
    lines: list[str] = []
    tops: dict[int, list[tuple[str, str]]] = {}
    for d in range(1, max_depth + 1):
        for c in range(chains):
            name = f"chain-d{d}-c{c}"
            for level in range(d):
                g = f"group:{name}-l{level}"
                if level + 1 < d:
                    lines.append(f"{g}#member@group:{name}-l{level + 1}#member")
                lines += [f"{g}#member@user:fill-{name}-l{level}-{j}" for j in range(fill)]
            lines.append(f"group:{name}-l{d - 1}#member@user:{name}")
            tops.setdefault(d, []).append((f"user:{name}", f"group:{name}-l0"))
    return lines, tops


def by_depth(
    base_tuples: int = 20_000,
    *,
    max_depth: int = 20,
    chains: int = 5,
    leopard_reps: int = 200,
    spicedb_reps: int = 3,
    spicedb: bool = True,
    log: Log = print,
) -> dict[str, Any]:
    """Check latency of (user, top of a chain of d groups) for d = 1..max_depth."""
    import leopard

    snapshot, config, report = org(base_tuples, cycles=False, rewrites=False)
    extra, tops = chain_tuples(max_depth, chains)
    out: dict[str, Any] = {
        "base_tuples": base_tuples,
        "chain_tuples": len(extra),
        "chains_per_depth": chains,
        "depths": sorted(tops),
        "leopard": [],
        "spicedb": [],
        "explain_lengths_ok": True,
        "disagreements": 0,
        "disagreeing": [],
    }
    answers: dict[tuple[str, str], bool] = {}
    DATA.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=DATA, prefix="depth-") as tmp:
        chain_file = Path(tmp) / "chains.txt"
        chain_file.write_text("\n".join(extra) + "\n")
        leopard.build_index([snapshot, chain_file], Path(tmp) / "index", config)
        with leopard.open_index(Path(tmp) / "index") as ix:
            clock = time.perf_counter_ns
            for d in out["depths"]:
                samples = []
                for user, top in tops[d]:
                    answers[(user, top)] = ix.check(user, top)
                    if len(ix.explain(user, top) or ()) != d:
                        out["explain_lengths_ok"] = False
                    for _ in range(leopard_reps):
                        t = clock()
                        ix.check(user, top)
                        samples.append(clock() - t)
                out["leopard"].append(_lat(samples))
    if spicedb:
        from bench.spicedb_peer import SpiceDBPeer, SpiceDBPeerError

        with SpiceDBPeer(rewrites=False) as peer:
            t0 = time.perf_counter()
            peer.load([*snapshot.read_text().splitlines(), *extra])
            out["spicedb_load_s"] = round(time.perf_counter() - t0, 3)
            clock = time.perf_counter_ns
            for d in out["depths"]:
                samples = []
                for user, top in tops[d]:
                    for _ in range(spicedb_reps):
                        t = clock()
                        try:
                            theirs: bool | None = peer.check(user, top)
                        except SpiceDBPeerError:
                            theirs = None
                        samples.append(clock() - t)
                        if theirs is not None and theirs != answers[(user, top)]:
                            out["disagreements"] += 1
                            out["disagreeing"].append([user, top, answers[(user, top)], theirs])
                out["spicedb"].append(_lat(samples))
    for i, d in enumerate(out["depths"]):
        ours = out["leopard"][i]["p50_us"]
        theirs_p50 = out["spicedb"][i]["p50_us"] if out["spicedb"] else None
        log(f"depth {d:>2}: leopard p50 {ours} us, spicedb p50 {theirs_p50} us")
    if out["spicedb"]:
        # SpiceDB's cost of one more group on the chain (least squares over depth >= 2,
        # where every step is a nested dispatch), and that per relationship stored.
        pts = [(d, r["p50_us"]) for d, r in zip(out["depths"], out["spicedb"], strict=True)]
        pts = [(d, y) for d, y in pts if d >= 2 and y is not None]
        if len(pts) >= 2:
            mx = sum(d for d, _ in pts) / len(pts)
            my = sum(y for _, y in pts) / len(pts)
            slope = sum((d - mx) * (y - my) for d, y in pts) / sum((d - mx) ** 2 for d, _ in pts)
            stored = out["chain_tuples"] + report["tuples"]
            out["spicedb_us_per_hop"] = round(slope, 1)
            out["spicedb_us_per_hop_per_tuple"] = round(slope / stored, 4)
    return out


# -- printing ---------------------------------------------------------------------------


def render(sizes: Sequence[dict] | None, depth: dict | None) -> str:
    """Text tables of both sweeps."""
    parts = []
    if sizes:
        head = f"{'tuples':>12}  {'build s':>8}  {'peak MiB':>8}  {'B/tuple':>7}  "
        head += f"{'check p50 us':>12}  {'check p99 us':>12}"
        parts += [f"\nLeopard by size ({machine()})", head, "-" * len(head)]
        for r in sizes:
            parts.append(
                f"{r['tuples']:>12,}  {r['build_wall_s']:>8.2f}  {r['peak_bytes'] / MiB:>8.0f}  "
                f"{r['bytes_per_tuple']:>7.1f}  {r['check_warm']['p50_us']:>12.2f}  "
                f"{r['check_warm']['p99_us']:>12.2f}"
            )
    if depth:
        head = f"{'depth':>5}  {'leopard p50 us':>14}  {'spicedb p50 us':>14}  {'ratio':>8}"
        parts += [
            f"\ncheck by nesting depth, base {depth['base_tuples']:,} tuples + "
            f"{depth['chain_tuples']:,} chain tuples ({machine()})",
            head,
            "-" * len(head),
        ]
        for i, d in enumerate(depth["depths"]):
            ours = depth["leopard"][i]["p50_us"]
            theirs = depth["spicedb"][i]["p50_us"] if depth["spicedb"] else None
            ratio = f"{theirs / ours:,.0f}x" if theirs and ours else "-"
            shown = f"{theirs:>14.2f}" if theirs is not None else f"{'-':>14}"
            parts.append(f"{d:>5}  {ours:>14.2f}  {shown}  {ratio:>8}")
        parts.append(f"disagreements: {depth['disagreements']}")
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tuples", help="comma-separated sizes (default 10k,100k,1M)")
    ap.add_argument("--full", action="store_true", help="add 10M, 40M and 100M tuples")
    ap.add_argument("--pairs", type=int, default=5000, help="check pairs per size")
    ap.add_argument("--depth-base", type=int, default=20_000, help="base org of the depth sweep")
    ap.add_argument("--max-depth", type=int, default=20)
    ap.add_argument("--no-sizes", action="store_true", help="only the depth sweep")
    ap.add_argument("--no-depth", action="store_true", help="only the size sweep")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.tuples.split(",")] if args.tuples else list(SIZES)
    if args.full:
        sizes = sorted({*sizes, *FULL_SIZES[len(SIZES) :]})
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    size_rows = None if args.no_sizes else by_size(sizes, pairs=args.pairs, log=log)
    depth = None if args.no_depth else by_depth(args.depth_base, max_depth=args.max_depth, log=log)
    if args.json:
        print(json.dumps({"sizes": size_rows, "depth": depth}, indent=2))
        return
    print(render(size_rows, depth))


if __name__ == "__main__":
    main()
