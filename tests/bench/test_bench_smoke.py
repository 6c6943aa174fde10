"""Smoke test of the benchmarks: ``bench/run --quick`` at tiny sizes, end to end.

Why: benchmarks nobody runs rot silently (a renamed API, a changed report key). This
runs the whole pipeline (SpiceDB comparison, size and depth sweeps, plots, results
page) into a temporary directory, so bench/results is never touched, and asserts that
everything was produced and that SpiceDB and Leopard agreed on every answer. Timings
never decide the outcome.

Skipped only when SpiceDB is not installed (scripts/install-spicedb; CI runs it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # for `bench`

from bench.spicedb_peer import missing_reason  # noqa: E402

_MISSING = missing_reason()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.spicedb,
    pytest.mark.skipif(
        _MISSING is not None,
        reason=f"SpiceDB not installed ({_MISSING}); see scripts/install-spicedb",
    ),
]

PLOTS = ("scaling-build.png", "scaling-check.png", "depth-latency.png", "peer-latency.png")


def _committed() -> dict[str, float]:
    results = ROOT / "bench" / "results"
    return {p.name: p.stat().st_mtime for p in results.glob("*")} if results.is_dir() else {}


def test_quick_run_writes_results_plots_and_page(tmp_path: Path) -> None:
    before = _committed()
    out = tmp_path / "results"
    env = {**os.environ, "LEOPARD_BENCH_DATA": str(tmp_path / "data"), "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run"),
            "--quick",
            "--out",
            str(out),
            "--peer-tuples",
            "2000",
            "--sizes",
            "5000,20000",
            "--depth-base",
            "1000",
            "--max-depth",
            "8",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    result = json.loads((out / "latest.json").read_text())
    assert result["mode"] == "quick"
    assert result["disagreements"] == 0, result["peer"]["variants"]
    for v in result["peer"]["variants"]:
        assert v["disagreements"] == 0, v["disagreeing"]
        assert v["checks"]["deep"]["n"] > 0  # deeply nested members were found
        assert v["checks"]["deep"]["chain_groups_max"] >= 3
        for cat in ("random", "deep", "non-member"):
            assert v["checks"][cat]["spicedb"]["n"] > 0
    assert {v["rewrites"] for v in result["peer"]["variants"]} == {True, False}
    assert [r["tuples"] for r in result["scaling"]] == [5000, 20000]
    assert result["depth"]["depths"] == list(range(1, 9))
    assert result["depth"]["explain_lengths_ok"]
    assert result["depth"]["disagreements"] == 0
    for key in ("cores", "cpu_model", "python", "date"):
        assert result["machine"][key]

    for name in PLOTS:
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), name
        assert len(data) > 5000, name
    page = (out / "README.md").read_text()
    assert "0 disagreements" in page
    for name in PLOTS:
        assert f"]({name})" in page
    assert _committed() == before  # the committed results were not touched
