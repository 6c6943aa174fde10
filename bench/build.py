#!/usr/bin/env python3
"""Build benchmark: time, peak memory and bytes per tuple of ``leopard build``.

Builds a generated org (10M tuples by default) with both group id orders, to show
what numbering related groups close together does to the index size. Figures are
printed beside the targets of the offline build:

    python bench/build.py                  # 10M tuples
    python bench/build.py --tuples 1000000 --json
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


def measure(tuples: int, order: str) -> dict:
    snapshot, config, _ = org(tuples)
    index = DATA / f"bench-build-{tuples}-{order}.idx"
    shutil.rmtree(index, ignore_errors=True)
    wall, peak, out = run_measured(build_argv(snapshot, config, index, "--id-order", order))
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
    args = ap.parse_args()
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
            f"<= 20 s (goal 10 s): {verdict(dfs['wall_seconds'] <= 20)}"
            if args.tuples == 10_000_000
            else "",
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


if __name__ == "__main__":
    main()
