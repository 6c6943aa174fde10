#!/usr/bin/env python3
"""Index size benchmark: bytes per tuple on disk, family by family.

Builds the generated org at each size (1M and 10M tuples by default) and reads the
new base's RocksDB table properties: for every column family its entries, the raw
bytes of its keys and values, and its live SST files on disk (compressed, with
their indexes and filters). What is not in a family's SST files (the logs, the
manifest, the options file, the empty delta) is one more row. The total is printed
beside the target of issue 13 (<= 10 bytes per tuple at 10M and 40M):

    python bench/sizes.py                            # 1M and 10M tuples
    python bench/sizes.py --tuples 1000000 --json
    python bench/sizes.py --index ./idx              # an index already built
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DATA, build_argv, machine, org, run_measured, table, verdict  # noqa: E402

TARGET = 10.0  # bytes per tuple on disk at 10M and 40M (issue 13)


def family_sizes(index: Path) -> dict[str, Any]:
    """Per family of the live generation's base: entries, raw key and value bytes, SST
    bytes; and the bytes of the generation that are in no family's SST files."""
    from leopard.store.generations import IndexDir, base_of, dir_size, report_of
    from leopard.store.layout import FAMILIES
    from leopard.store.rocks import RocksDB

    generation = IndexDir(index).current()
    db = RocksDB(base_of(generation), read_only=True)
    try:
        families = {name: db.table_stats(name) for name in FAMILIES}
    finally:
        db.close()
    total = dir_size(generation)
    other = total - sum(f["sst_bytes"] for f in families.values())
    report = json.loads(report_of(generation).read_text())
    return {"families": families, "other_bytes": other, "total_bytes": total, "report": report}


def measure(tuples: int, keep: bool) -> dict[str, Any]:
    snapshot, config, _ = org(tuples)
    index = DATA / f"bench-sizes-{tuples}.idx"
    shutil.rmtree(index, ignore_errors=True)
    wall, peak, out = run_measured(build_argv(snapshot, config, index))
    build = json.loads(out)
    sizes = family_sizes(index)
    if not keep:
        shutil.rmtree(index, ignore_errors=True)
    return {
        "tuples": tuples,
        "build_seconds": build["seconds"],
        "wall_seconds": round(wall, 2),
        "peak_bytes": peak,
        "bytes_on_disk": build["bytes_on_disk"],
        **sizes,
    }


def rows_of(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    n = result["tuples"]
    rows = []
    for name, f in result["families"].items():
        if not f["entries"] and not f["sst_bytes"]:
            continue
        raw = f["key_bytes"] + f["value_bytes"]
        rows.append(
            (
                f"  {name}",
                f"{f['sst_bytes'] / n:.2f}",
                f"{f['entries']:,} keys, raw {raw / n:.2f} B/tuple "
                f"(keys {f['key_bytes'] / n:.2f}, values {f['value_bytes'] / n:.2f})",
            )
        )
    rows.append(("  other files", f"{result['other_bytes'] / n:.2f}", "logs, manifest, options"))
    per_tuple = result["total_bytes"] / n
    rows.append(
        (
            "bytes per tuple",
            f"{per_tuple:.2f}",
            f"<= {TARGET:g}: {verdict(per_tuple <= TARGET)}",
        )
    )
    rows.append(("build time", f"{result['build_seconds']:.2f} s", ""))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--tuples",
        default="1000000,10000000",
        help="Comma-separated org sizes to build and measure.",
    )
    ap.add_argument("--index", type=Path, help="Measure this index instead of building.")
    ap.add_argument("--keep", action="store_true", help="Keep the built indexes.")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.index is not None:
        sizes = family_sizes(args.index)
        n = sizes["report"]["tuples_read"]
        results = [
            {"tuples": n, "build_seconds": sizes["report"]["seconds"], **sizes},
        ]
    else:
        sizes_wanted = [int(t) for t in args.tuples.split(",") if t]
        for t in sizes_wanted:
            org(t)  # generate outside the timed runs
        results = [measure(t, args.keep) for t in sizes_wanted]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        title = f"bytes per tuple by family, {result['tuples']:,} tuples ({machine()})"
        print(table(title, rows_of(result)))


if __name__ == "__main__":
    main()
