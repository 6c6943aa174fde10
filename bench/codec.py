#!/usr/bin/env python3
"""Why stored sets have a compiled codec: the compact form's bytes and the cost of
reading it, on an index's own values, beside the roaring form read by pyroaring in
the same run.

Every set value of an index (format 4) is roaring or, where smaller, the compact form
of ``leopard.model.setcodec`` (ascending ids as varint gaps). For the MEMBER2GROUP and
GROUP2GROUP values of a built index, by size of set, this prints the raw bytes of both
forms, then microseconds to read one: pyroaring's ``BitMap.deserialize`` of the roaring
form (the baseline: what format 3 read), the compiled ``load`` of the stored form, and
the same codec in Python (what runs where ``leopard.model._sets`` was not compiled).

    python bench/codec.py --index bench/.data/org-10000000-s1.idx
    python bench/codec.py --index ./idx --sample 20000 --json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from pyroaring import BitMap

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from leopard.model import setcodec  # noqa: E402
from leopard.store.generations import IndexDir, base_of  # noqa: E402
from leopard.store.rocks import RocksDB  # noqa: E402

CLASSES = ((1, 16), (17, 64), (65, 512), (513, 4096), (4097, 1 << 32))


def _values(index: Path, family: str) -> list[bytes]:
    db = RocksDB(base_of(IndexDir(index).current()), read_only=True)
    try:
        start = 4 if family == "m2g" else 0  # a MEMBER2GROUP value: the subject's id first
        return [v[start:] for v in db.family(family).columns()[1]]
    finally:
        db.close()


def _per_read(fn, values: list[bytes], rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for v in values:
            fn(v)
        best = min(best, time.perf_counter() - t0)
    return best * 1e6 / max(len(values), 1)


def measure(index: Path, family: str, sample: int) -> list[dict[str, object]]:
    stored = _values(index, family)
    sets = [setcodec.load(v) for v in stored]
    rows = []
    rng = random.Random(1)
    for lo, hi in CLASSES:
        pick = [i for i, s in enumerate(sets) if lo <= len(s) <= hi]
        if not pick:
            continue
        roaring = []
        for i in pick:
            bm = sets[i]
            bm.run_optimize()
            roaring.append(bm.serialize())
        raw_roaring = sum(map(len, roaring))
        raw_stored = sum(len(stored[i]) for i in pick)
        few = rng.sample(range(len(pick)), min(sample, len(pick)))
        r_few = [roaring[j] for j in few]
        s_few = [stored[pick[j]] for j in few]
        rows.append(
            {
                "family": family,
                "ids": f"{lo:,}-{hi:,}" if hi < 1 << 32 else f"{lo:,}+",
                "sets": len(pick),
                "compact_share": round(
                    sum(stored[i][:1] == bytes((setcodec.TAG,)) for i in pick) / len(pick), 3
                ),
                "roaring_mb": round(raw_roaring / 1e6, 2),
                "stored_mb": round(raw_stored / 1e6, 2),
                "deserialize_us": round(_per_read(BitMap.deserialize, r_few), 2),
                "load_us": round(_per_read(setcodec.load, s_few), 2),
                "python_load_us": round(_per_read(setcodec._py_load, s_few, 1), 2),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, required=True, help="a built index (format 4)")
    ap.add_argument("--sample", type=int, default=5_000, help="sets read per size class")
    ap.add_argument("--json", action="store_true")
    opt = ap.parse_args()
    if not setcodec.COMPILED:
        raise SystemExit("leopard.model._sets is not compiled here: pip install -e . builds it")
    rows = [r for family in ("m2g", "g2g") for r in measure(opt.index, family, opt.sample)]
    if opt.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        "| family | ids in the set | sets | stored compact | raw MB roaring / stored | "
        "read: pyroaring (roaring) | compiled load (stored) | Python load (stored) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['family']} | {r['ids']} | {r['sets']:,} | {r['compact_share']:.0%} | "
            f"{r['roaring_mb']} / {r['stored_mb']} | {r['deserialize_us']} us | "
            f"{r['load_us']} us | {r['python_load_us']} us |"
        )


if __name__ == "__main__":
    main()
