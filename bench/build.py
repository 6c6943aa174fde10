#!/usr/bin/env python3
"""Build benchmark: time, peak memory and bytes per tuple of ``leopard build``.

Builds a generated org (10M tuples by default) with both group id orders, to show
what numbering related groups close together does to the index size. Figures are
printed beside the targets of the offline build:

    python bench/build.py                  # 10M tuples
    python bench/build.py --tuples 1000000 --json
    python bench/build.py --scaling        # 10M and 40M: does the cost grow linearly?

``--scaling`` builds two sizes (``--scaling-sizes``, 10M and 40M by default) one after
the other and prints each one's time, peak memory and bytes per tuple beside the
one-machine targets, and the ratio of the times beside the ratio of the sizes (for
10M and 40M: time(40M)/time(10M) <= 4.5, i.e. nearly linear).

``--memory GiB`` builds ``--tuples`` twice, without a budget (half the machine: no
spilling) and with ``leopard build --memory GiB``, and prints both builds' time and
peak memory, the rows spilled, and whether the peak stayed within the budget:

    python bench/build.py --tuples 40000000 --memory 1.5
    python bench/build.py --tuples 100000000 --memory 4
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DATA, build_argv, machine, org, run_measured, table, verdict  # noqa: E402

GiB = 1 << 30
#: one-machine targets per size: wall seconds, peak GiB (None: not set)
TARGETS = {10_000_000: (10.0, None), 40_000_000: (50.0, None), 100_000_000: (150.0, 12.0)}
BYTES_PER_TUPLE = 10.0  # at 10M and 40M
MAX_RATIO_40_10 = 4.5


def measure(tuples: int, order: str, *extra: str) -> dict:
    snapshot, config, _ = org(tuples)
    index = DATA / f"bench-build-{tuples}-{order}.idx"
    shutil.rmtree(index, ignore_errors=True)
    argv = build_argv(snapshot, config, index, "--id-order", order, *extra)
    wall, peak, out = run_measured(argv)
    report = json.loads(out)
    shutil.rmtree(index, ignore_errors=True)
    return {
        "tuples": tuples,
        "id_order": order,
        "wall_seconds": round(wall, 2),
        "build_seconds": report["seconds"],
        "peak_bytes": peak,
        "bytes_on_disk": report["bytes_on_disk"],
        "bytes_per_tuple": round(report["bytes_on_disk"] / tuples, 2),
        "phases": report["phases"],
        "groups": report["groups"],
        "subjects": report["subjects"],
        "memory_budget": report["memory_budget"],
        "peak_memory": report["peak_memory"],
        "spilled_rows": report["spilled_rows"],
        "subject_ranges": report["subject_ranges"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tuples", type=int, default=10_000_000)
    ap.add_argument(
        "--no-order-comparison", action="store_true", help="Skip the --id-order input build."
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--scaling", action="store_true", help="Build two sizes and print the ratio of times."
    )
    ap.add_argument(
        "--scaling-sizes", default="10000000,40000000", metavar="A,B",
        help="The sizes --scaling builds (default: 10M and 40M tuples).",
    )  # fmt: skip
    ap.add_argument(
        "--memory", type=float, metavar="GiB",
        help="Build --tuples without a budget and with --memory GiB; print both.",
    )  # fmt: skip
    args = ap.parse_args()
    if args.memory:
        within_budget(args.tuples, args.memory, args.json)
        return
    if args.scaling:
        scaling([int(x) for x in args.scaling_sizes.split(",")], args.json)
        return
    org(args.tuples)  # generate outside the timed runs
    results = [measure(args.tuples, "dfs")]
    if not args.no_order_comparison:
        results.append(measure(args.tuples, "input"))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    dfs = results[0]
    rows = [
        ("tuples", f"{args.tuples:,}", ""),
        ("groups / subjects", f"{dfs['groups']:,} / {dfs['subjects']:,}", ""),
        (
            "build wall time",
            f"{dfs['wall_seconds']:.1f} s",
            f"<= 10 s: {verdict(dfs['wall_seconds'] <= 10)}" if args.tuples == 10_000_000 else "",
        ),
        (
            "peak memory (PSS)",
            f"{dfs['peak_bytes'] / GiB:.2f} GiB",
            f"<= 4 GiB: {verdict(dfs['peak_bytes'] <= 4 * GiB)}",
        ),
        ("bytes on disk", f"{dfs['bytes_on_disk']:,}", ""),
        ("bytes per tuple", f"{dfs['bytes_per_tuple']:.1f}", ""),
    ]
    for name, secs in dfs["phases"].items():
        rows.append((f"  phase {name}", f"{secs:.2f} s", ""))
    if len(results) > 1:
        inp = results[1]
        saved = 100 * (1 - dfs["bytes_on_disk"] / inp["bytes_on_disk"])
        rows.append(
            (
                "bytes/tuple, ids by first appearance",
                f"{inp['bytes_per_tuple']:.1f}",
                f"depth-first ids save {saved:.1f}%",
            )
        )
    print(table(f"leopard build ({machine()})", rows))


def within_budget(tuples: int, gib: float, as_json: bool) -> None:
    """The build without a budget, then within ``gib``: time, peak memory, spilling."""
    org(tuples)  # generate outside the timed runs
    results = [measure(tuples, "dfs"), measure(tuples, "dfs", "--memory", str(gib))]
    if as_json:
        print(json.dumps(results, indent=2))
        return
    rows = [("tuples", f"{tuples:,}", "")]
    for r, name in zip(results, ("no budget (half the machine)", f"--memory {gib:g}"), strict=True):
        budget = r["memory_budget"]
        rows += [
            (name, "", ""),
            ("  wall time", f"{r['wall_seconds']:.1f} s", ""),
            (
                "  peak memory (the build's own, ru_maxrss)",
                f"{r['peak_memory'] / GiB:.2f} GiB",
                f"<= {budget / GiB:.2f} GiB: {verdict(r['peak_memory'] <= budget)}",
            ),
            ("  peak memory (PSS, with children)", f"{r['peak_bytes'] / GiB:.2f} GiB", ""),
            (
                "  rows spilled / subject ranges",
                f"{r['spilled_rows']:,} / {r['subject_ranges']}",
                "",
            ),
            ("  bytes per tuple", f"{r['bytes_per_tuple']:.1f}", ""),
        ]
        for phase, secs in r["phases"].items():
            rows.append((f"    phase {phase}", f"{secs:.2f} s", ""))
    print(table(f"leopard build within a memory budget ({machine()})", rows))


def scaling(sizes: list[int], as_json: bool) -> None:
    """Each size built once (depth-first ids), then the ratio of the times."""
    if len(sizes) != 2 or sizes[0] >= sizes[1]:
        raise SystemExit(f"--scaling-sizes wants two sizes, smaller first, not {sizes}")
    for n in sizes:
        org(n)  # generate outside the timed runs
    results = [measure(n, "dfs") for n in sizes]
    small, large = results
    ratio = large["wall_seconds"] / small["wall_seconds"]
    if as_json:
        print(json.dumps({"builds": results, "time_ratio": round(ratio, 2)}, indent=2))
        return
    rows = []
    for r in results:
        n = r["tuples"]
        secs, gib = TARGETS.get(n, (None, None))
        rows.append(
            (
                f"{n:,} tuples: wall time",
                f"{r['wall_seconds']:.1f} s",
                f"<= {secs:g} s: {verdict(r['wall_seconds'] <= secs)}" if secs else "",
            )
        )
        rows.append(
            (
                "  peak memory (PSS)",
                f"{r['peak_bytes'] / GiB:.2f} GiB",
                f"<= {gib:g} GiB: {verdict(r['peak_bytes'] <= gib * GiB)}" if gib else "",
            )
        )
        rows.append(
            (
                "  bytes per tuple",
                f"{r['bytes_per_tuple']:.1f}",
                f"<= {BYTES_PER_TUPLE:g}: {verdict(r['bytes_per_tuple'] <= BYTES_PER_TUPLE)}"
                if n in (10_000_000, 40_000_000)
                else "",
            )
        )
        for name, secs_ in r["phases"].items():
            rows.append((f"  phase {name}", f"{secs_:.2f} s", ""))
    linear = sizes[1] / sizes[0]
    target = (
        f"<= {MAX_RATIO_40_10:g}: {verdict(ratio <= MAX_RATIO_40_10)}"
        if sizes == [10_000_000, 40_000_000]
        else f"sizes x{linear:g}"
    )
    rows.append((f"time({sizes[1]:,}) / time({sizes[0]:,})", f"{ratio:.2f}", target))
    print(table(f"leopard build, scaling ({machine()})", rows))


if __name__ == "__main__":
    main()
