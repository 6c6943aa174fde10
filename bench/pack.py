#!/usr/bin/env python3
"""Why the build serializes its bitmaps with numpy: ``serialize_rows`` beside
pyroaring called once per row, on the same rows, in the same run.

Two shapes, as the offline build meets them:

* ``closures``: a schema's resource sets (the docs shape at 1M tuples has 1.44M sets,
  half of them holding just themselves, the rest a few dozen ids, much of them
  consecutive);
* ``subjects``: MEMBER2GROUP rows, a few direct groups per subject, scattered ids.

Both ways must give the same bytes (checked); the figures are seconds per million
rows and the speed-up. Then the keys of the same number of ids (``id_keys``: numpy's
``V4`` array made into bytes objects) beside a loop slicing one buffer.

    python bench/pack.py                 # 1M rows of each shape
    python bench/pack.py --rows 200000 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from array import array
from pathlib import Path

import numpy as np
from pyroaring import BitMap

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from leopard.model.bitpack import serialize_rows  # noqa: E402
from leopard.store.writers import id_keys  # noqa: E402


def rows_of(shape: str, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if shape == "closures":
        lens = np.where(rng.random(n) < 0.5, 1, rng.integers(2, 60, n))
        starts = rng.integers(0, 1_400_000, n)
        step = np.where(rng.random(n) < 0.7, 1, 7)  # runs of consecutive ids, or not
    else:
        lens = rng.integers(1, 8, n)
        starts = rng.integers(0, 200_000, n)
        step = rng.integers(1_000, 30_000, n)
    ptr = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
    within = np.arange(ptr[-1]) - np.repeat(ptr[:-1], lens)
    values = np.repeat(starts, lens) + within * np.repeat(step, lens)
    return ptr, values.astype(np.uint32)


def one_by_one(ptr: np.ndarray, values: np.ndarray) -> list[bytes]:
    raw, bounds, out = values.tobytes(), ptr.tolist(), []
    for i in range(len(bounds) - 1):
        bm = BitMap(array("I", raw[bounds[i] * 4 : bounds[i + 1] * 4]))
        bm.run_optimize()
        out.append(bm.serialize())
    return out


def measure(shape: str, n: int) -> dict[str, float]:
    ptr, values = rows_of(shape, n)
    t0 = time.perf_counter()
    slow = one_by_one(ptr, values)
    t1 = time.perf_counter()
    fast = serialize_rows(ptr, values)
    t2 = time.perf_counter()
    if fast != slow:
        raise SystemExit(f"{shape}: serialize_rows and pyroaring disagree")
    per_m = 1e6 / n
    return {
        "rows": n,
        "values": int(len(values)),
        "pyroaring_s_per_m_rows": round((t1 - t0) * per_m, 3),
        "numpy_s_per_m_rows": round((t2 - t1) * per_m, 3),
        "speedup": round((t1 - t0) / (t2 - t1), 2),
    }


def measure_keys(n: int) -> dict[str, float]:
    ids = np.arange(n, dtype=np.int64) * 3  # zero bytes at either end of many keys
    t0 = time.perf_counter()
    blob = ids.astype(">u4").tobytes()
    slow = [blob[i : i + 4] for i in range(0, len(blob), 4)]
    t1 = time.perf_counter()
    fast = id_keys(ids)
    t2 = time.perf_counter()
    if fast != slow:
        raise SystemExit("keys: id_keys and the slicing loop disagree")
    return {
        "keys": n,
        "slicing_ns_per_key": round((t1 - t0) * 1e9 / n, 1),
        "id_keys_ns_per_key": round((t2 - t1) * 1e9 / n, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of each shape")
    ap.add_argument("--json", action="store_true")
    opt = ap.parse_args()
    result: dict[str, dict[str, float]] = {
        shape: measure(shape, opt.rows) for shape in ("closures", "subjects")
    }
    keys = measure_keys(opt.rows)
    if opt.json:
        print(json.dumps({**result, "keys": keys}, indent=2))
        return
    print("| shape | rows | values | pyroaring, a call per row | serialize_rows | speed-up |")
    print("|---|---|---|---|---|---|")
    for shape, r in result.items():
        print(
            f"| {shape} | {r['rows']:,} | {r['values']:,} | "
            f"{r['pyroaring_s_per_m_rows']:.2f} s per M rows | "
            f"{r['numpy_s_per_m_rows']:.2f} s per M rows | {r['speedup']:.1f}x |"
        )
    print(
        f"\n{keys['keys']:,} keys of 4 bytes: a loop slicing one buffer "
        f"{keys['slicing_ns_per_key']} ns a key, id_keys {keys['id_keys_ns_per_key']} ns"
    )


if __name__ == "__main__":
    main()
