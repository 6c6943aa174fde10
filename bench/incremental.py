#!/usr/bin/env python3
"""Incremental-layer benchmark: changes through a real broker into the index.

On the generated org (10M tuples by default; ``--tuples`` for a smaller one), with a
local Tansu broker started here and a fresh copy of the built index per scenario:

* **member**: N member changes (half deletes of stored tuples, half new users) are
  published first, then a ``ChangeConsumer`` is timed from its start until its
  position reaches the end of the topic. The rate is counted from the first applied
  batch (the ~1 s consumer-group join excluded) and from the start (join included);
* **edges**: nested-edge changes in the deep hierarchy, half of them deletes: teams,
  squads and pods (level >= 3) move under another group of their parent's level
  (delete the old edge, touch the new one). Published and consumed like the member
  changes, once with the consumer's default batch limit (20,000: a backlog coalesces
  into few recomputations) and once with batches of at most 500, where the fixed cost
  of a recomputation per batch shows. ``generate_changes(nested_fraction=1.0)`` is
  not used: its random edges between any two groups soon merge much of the org into
  a few huge cycles, which is a worst case, not a hierarchy;
* **clients**: the Kafka client's share alone, kafka-python beside confluent-kafka
  (librdkafka) on the member scenario's messages (``bench/kafka_clients.py``);
* **latency**: a producer process publishes at a steady rate (1k changes/s) and
  records each message's send time and offset; the consumer runs in this process
  beside an ``Index`` whose listener notes when each batch became visible, so a
  change's produce→visible latency is the time of the first batch whose position
  passed its offset, minus its send time (one CLOCK_MONOTONIC for both processes);
* **compaction**: a large incremental layer (applied directly, without the broker) is
  folded into a new base with ``leopard.core.compact.compact``, in this process and, as the
  consumer does it, in a child process; meanwhile another thread checks sampled pairs
  on a fixed schedule (open loop: latency counts from when a check was due, so time
  spent waiting for the GIL or a CPU shows; about 0.1 ms of it is the sleeping
  thread's timer slack), and the same before compaction and after the swap.

What limits throughput is printed too: time in ``DeltaWriter.apply`` (and its
closure recomputation and persisting) against the rest of the consumer loop (poll,
decode, commit), and which CRC-32C kafka-python uses: its pure-Python fallback costs
about as much as applying member changes; with the ``crc32c`` package installed it
does not.

Printed beside the one-machine targets (>= 50k member changes/s, >= 5k nested-edge
changes/s, produce→visible p99 <= 200 ms at 1k changes/s), with the machine's load:

    python bench/incremental.py --tuples 10000000
    python bench/incremental.py --tuples 1000000 --scenarios member,latency --json
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import multiprocessing
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import built_index, machine, org, percentiles, table, verdict  # noqa: E402

SCENARIOS = ("member", "clients", "edges", "latency", "compaction")
_NEVER = 10**15  # a compaction threshold no run reaches: scenarios stay separate
_CLOCK = time.CLOCK_MONOTONIC  # shared by the producer process and this one

# Hierarchy groups of leopard.gen.structure: the org names, then "<org>-<kind>-<id>".
_HIER_RE = re.compile(r"group:(?:[a-z]+|[a-z]+-(?:dept|team|squad|pod)-\d+)")
_ROOT = "group:all-employees"


def now_ns() -> int:
    return time.clock_gettime_ns(_CLOCK)


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def fresh_copy(index: Path, work: Path, name: str) -> Path:
    dst = work / name
    shutil.copytree(index, dst, symlinks=True)
    return dst


# -- change streams ------------------------------------------------------------------


def member_changes(snapshot: Path, count: int, seed: int) -> list[str]:
    """Half deletes of stored member tuples, half new users in existing groups."""
    from leopard.gen import generate_changes

    return generate_changes(snapshot, count, seed=seed, nested_fraction=0.0)


def hierarchy_moves(snapshot: Path, count: int, seed: int) -> tuple[list[str], dict[str, Any]]:
    """``count`` nested-edge changes, half deletes: groups of the deep hierarchy moving.

    Each move takes a team, squad or pod (level >= 3) out of its parent and puts it
    under another group of its parent's level: one delete of a stored edge, one touch
    of a new one. A group moves at most once, so no change coalesces with another, and
    the new parent sits above the group, so the hierarchy stays acyclic.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    table_ = pacsv.read_csv(
        str(snapshot),
        read_options=pacsv.ReadOptions(column_names=["line"]),
        parse_options=pacsv.ParseOptions(delimiter="\x1f", quote_char=False),
        convert_options=pacsv.ConvertOptions(column_types={"line": pa.string()}),
    )
    lines = table_.column("line")
    nested = pc.filter(lines, pc.match_substring(lines, "#member@group:")).to_pylist()
    children: dict[str, list[str]] = {}
    edges: set[tuple[str, str]] = set()
    for line in nested:
        head, _, subject = line.partition("@")
        parent = head.split("#", 1)[0]
        child = subject.split("#", 1)[0]
        edges.add((parent, child))
        if _HIER_RE.fullmatch(child) and (parent == _ROOT or _HIER_RE.fullmatch(parent)):
            children.setdefault(parent, []).append(child)
    # levels by breadth-first search from the root over hierarchy edges
    level = {_ROOT: 0}
    tree_parent: dict[str, str] = {}
    queue = deque([_ROOT])
    while queue:
        g = queue.popleft()
        for c in children.get(g, ()):
            if c not in level:
                level[c] = level[g] + 1
                tree_parent[c] = g
                queue.append(c)
    by_level: dict[int, list[str]] = {}
    for g, lv in level.items():
        by_level.setdefault(lv, []).append(g)
    for groups in by_level.values():
        groups.sort()
    rng = random.Random(seed)
    movable = sorted(g for g, lv in level.items() if lv >= 3)
    rng.shuffle(movable)
    out: list[str] = []
    moved_levels: list[int] = []
    for c in movable:
        if len(out) + 2 > count:
            break
        lv = level[c]
        old = tree_parent[c]
        peers = by_level[lv - 1]
        if len(peers) < 2:
            continue
        new = rng.choice(peers)
        if new == old or (new, c) in edges:
            continue
        out += [f"-{old}#member@{c}#member", f"+{new}#member@{c}#member"]
        moved_levels.append(lv)
    info = {
        "moves": len(moved_levels),
        "mean_level": round(sum(moved_levels) / max(1, len(moved_levels)), 2),
        "max_level": max(moved_levels, default=0),
        "hierarchy_groups": len(level),
        "nested_tuples": len(nested),
    }
    return out, info


def publish_lines(bootstrap: str, topic: str, lines: list[str]) -> tuple[dict[str, int], float]:
    """Publish change lines with the project's producer; (end position, seconds)."""
    from ingest.kafka.publish import parse_change_lines, publish

    t0 = time.perf_counter()
    result = publish(parse_change_lines(lines, "bench"), bootstrap, topic, timeout=120)
    return result.position, time.perf_counter() - t0


# -- a timed consumer ----------------------------------------------------------------


class Instrumented:
    """Wraps a consumer's DeltaWriter to time apply, its recomputation and its persist.

    The last two are private methods: when they are renamed their times read 0.
    """

    def __init__(self, writer: Any) -> None:
        self.apply_s = self.rederive_s = self.persist_s = 0.0
        self.first_apply_at: float | None = None
        self.sets_written = 0
        apply = writer.apply
        rederive = getattr(writer, "_rederive", None)
        persist = getattr(writer, "_persist", None)

        def timed_apply(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            if self.first_apply_at is None:
                self.first_apply_at = t
            rep = apply(*a, **k)
            self.apply_s += time.perf_counter() - t
            self.sets_written += rep.sets_written
            return rep

        def timed(fn: Callable[..., Any], attr: str) -> Callable[..., Any]:
            def inner(*a: Any, **k: Any) -> Any:
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    setattr(self, attr, getattr(self, attr) + time.perf_counter() - t)

            return inner

        writer.apply = timed_apply
        if rederive is not None:
            writer._rederive = timed(rederive, "rederive_s")
        if persist is not None:
            writer._persist = timed(persist, "persist_s")


def consume_to(
    index_dir: Path,
    bootstrap: str,
    topic: str,
    end: dict[str, int],
    *,
    max_batch: int | None,
    timeout: float,
    group: str,
) -> dict[str, Any]:
    """Run a consumer from its start until it has applied ``end``; its timings.

    ``max_batch=None`` keeps the consumer's default.
    """
    from ingest.consumer import ChangeConsumer, ConsumerSettings
    from leopard.model.tokens import reached

    settings = ConsumerSettings(
        brokers=bootstrap, topics=[topic], group_id=group, compact_threshold=_NEVER
    )
    if max_batch is not None:
        settings.max_batch = max_batch
    marks: list[tuple[float, int]] = []  # (time a batch was applied, changes so far)
    consumer: ChangeConsumer

    def on_batch(stats: Any) -> None:
        marks.append((time.perf_counter(), stats.changes))
        if reached(consumer.index.position, end):
            consumer.stop()

    consumer = ChangeConsumer(index_dir, settings, on_batch=on_batch)
    inst = Instrumented(consumer.writer)
    guard = threading.Timer(timeout, consumer.stop)
    guard.daemon = True
    guard.start()
    t0 = time.perf_counter()
    stats = consumer.run()
    guard.cancel()
    done = reached(consumer.index.position, end)
    overlay = consumer.index.reader.overlay.size()
    consumer.index.close()
    if not marks:
        raise SystemExit(f"the consumer applied nothing from {topic!r} within {timeout:g} s")
    t_first, c_first = marks[0]
    t_last, c_last = marks[-1]
    steady = (c_last - c_first) / (t_last - t_first) if len(marks) > 1 else None
    first_apply = inst.first_apply_at or t_first
    return {
        "complete": done,
        "changes": stats.changes,
        "member_changes": stats.member_changes,
        "edge_changes": stats.edge_changes,
        "batches": stats.batches,
        "mean_batch": round(stats.changes / max(1, stats.batches)),
        "seconds_total": round(t_last - t0, 3),
        "seconds_to_first_batch": round(first_apply - t0, 3),
        "seconds_after_first_batch": round(t_last - t_first, 3),
        "rate_after_first_batch": round(steady) if steady is not None else None,
        "rate_including_join": round(c_last / (t_last - t0)),
        # from the start of the first apply: all changes but the first poll's decoding
        "rate_from_first_apply": round(c_last / (t_last - first_apply)),
        "apply_seconds": round(inst.apply_s, 3),
        "rederive_seconds": round(inst.rederive_s, 3),
        "persist_seconds": round(inst.persist_s, 3),
        # poll, decode, offset commit and lag bookkeeping: wall time after the first
        # apply started that was not spent in apply
        "other_seconds": round(t_last - first_apply - inst.apply_s, 3),
        "sets_written": inst.sets_written,
        "overlay_sets": overlay,
        "max_batch": settings.max_batch,
    }


# -- scenarios -----------------------------------------------------------------------


def run_member(ctx: Context) -> dict[str, Any]:
    lines = ctx.member_pool(0, ctx.args.member_changes)
    topic = ctx.topic("member")
    end, pub_s = publish_lines(ctx.bootstrap, topic, lines)
    idx = fresh_copy(ctx.index, ctx.work, "member")
    res = consume_to(
        idx, ctx.bootstrap, topic, end, max_batch=None, timeout=ctx.args.timeout, group=topic
    )
    res.update(published=len(lines), publish_seconds=round(pub_s, 3), load=load())
    res["publish_rate"] = round(len(lines) / pub_s)
    return res


def run_clients(ctx: Context) -> dict[str, Any]:
    """The Kafka client's share alone: ``bench/kafka_clients.py`` on the member
    scenario's messages, kafka-python beside confluent-kafka."""
    from bench.kafka_clients import measure_clients

    lines = ctx.member_pool(0, ctx.args.member_changes)
    topic = ctx.topic("clients")
    end, _ = publish_lines(ctx.bootstrap, topic, lines)
    return measure_clients(ctx.bootstrap, topic, end)


def run_edges(ctx: Context) -> dict[str, Any]:
    pool, info = ctx.moves()
    lines = pool[: ctx.args.edge_changes]
    runs = []
    for n, (max_batch, count) in enumerate(ctx.args.edge_batches):
        topic = ctx.topic("edges")
        end, pub_s = publish_lines(ctx.bootstrap, topic, lines[:count])
        idx = fresh_copy(ctx.index, ctx.work, f"edges-{n}")
        res = consume_to(
            idx,
            ctx.bootstrap,
            topic,
            end,
            max_batch=max_batch,
            timeout=ctx.args.timeout,
            group=f"{topic}-{max_batch}",
        )
        deletes = sum(1 for line in lines[:count] if line[0] == "-")
        res.update(
            max_batch=max_batch,
            published=len(lines[:count]),
            deletes=deletes,
            publish_seconds=round(pub_s, 3),
            load=load(),
        )
        runs.append(res)
    return {"workload": info, "runs": runs}


def _paced_producer(bootstrap: str, topic: str, lines: list[str], rate: float, out: str) -> None:
    """Child process: publish ``lines`` at ``rate``/s; write (send ns, partition, offset)."""
    from ingest.codecs import encode_native, message_key
    from ingest.kafka.client import KafkaProducer
    from ingest.kafka.publish import parse_change_lines

    changes = list(parse_change_lines(lines, "bench"))
    producer = KafkaProducer(
        bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=5, client_id="bench"
    )
    # the first send fetches metadata: do it before the clock starts
    producer.send(topic, key=b"warm-up", value=encode_native(changes[0])).get(timeout=30)
    payloads = [(message_key(c.tuple), encode_native(c)) for c in changes[1:]]
    sent: list[tuple[int, Any]] = []
    start = now_ns()
    step = 1e9 / rate
    for i, (key, value) in enumerate(payloads):
        due = start + int(i * step)
        wait = due - now_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        t = now_ns()
        sent.append((t, producer.send(topic, key=key, value=value)))
    producer.flush(timeout=60)
    rows = []
    for t, fut in sent:
        meta = fut.get(timeout=60)
        rows.append((t, f"{meta.topic}:{meta.partition}", meta.offset))
    producer.close(timeout=5)
    Path(out).write_text(json.dumps({"start": start, "rows": rows}))


def run_latency(ctx: Context) -> dict[str, Any]:
    from ingest.consumer import ChangeConsumer, ConsumerSettings
    from ingest.kafka.publish import parse_change_lines, publish
    from leopard.core.index import Index
    from leopard.model.tokens import reached

    rate, seconds = ctx.args.rate, ctx.args.latency_seconds
    n = int(rate * seconds) + 2
    lines = ctx.member_pool(ctx.args.member_changes, n)
    topic = ctx.topic("latency")
    idx = fresh_copy(ctx.index, ctx.work, "latency")
    index = Index(idx)
    visible: list[tuple[int, dict[str, int]]] = []  # (when, position) per applied batch

    def listener(updates: Any) -> None:  # called under the reader's lock, batch in place
        visible.append((now_ns(), dict(index.reader.position)))

    index.reader.listeners.append(listener)
    settings = ConsumerSettings(
        brokers=ctx.bootstrap, topics=[topic], group_id=topic, compact_threshold=_NEVER
    )
    consumer = ChangeConsumer(idx, settings, index=index)
    inst = Instrumented(consumer.writer)
    thread = threading.Thread(target=consumer.run, name="bench-consumer", daemon=True)
    thread.start()
    try:
        # one change through before the clock starts: the group join is not latency
        warm = publish(parse_change_lines(lines[:1], "bench"), ctx.bootstrap, topic)
        index.wait_for(warm.token, timeout=60)
        visible.clear()
        out = ctx.work / "producer.json"
        proc = multiprocessing.get_context("spawn").Process(
            target=_paced_producer, args=(ctx.bootstrap, topic, lines[1:], rate, str(out))
        )
        load_before = load()
        proc.start()
        proc.join(timeout=seconds * 3 + 60)
        if proc.exitcode != 0:
            raise SystemExit(f"the producer process exited with {proc.exitcode}")
        produced = json.loads(out.read_text())
        rows = produced["rows"]
        end: dict[str, int] = {}
        for _, part, offset in rows:
            end[part] = max(end.get(part, 0), offset + 1)
        deadline = time.monotonic() + 60
        while not reached(index.reader.position, end) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        consumer.stop()
        thread.join(timeout=30)
        index.close()
    # first batch whose position passed each message's offset
    per_part: dict[str, tuple[list[int], list[int]]] = {}
    for when, pos in visible:
        for part, nxt in pos.items():
            times, offsets = per_part.setdefault(part, ([], []))
            times.append(when)
            offsets.append(nxt)
    lat: list[int] = []
    missing = 0
    for sent, part, offset in rows:
        times, offsets = per_part.get(part, ([], []))
        i = bisect.bisect_right(offsets, offset)
        if i == len(offsets):
            missing += 1
        else:
            lat.append(times[i] - sent)
    span = (rows[-1][0] - produced["start"]) / 1e9 if rows else 0.0
    p50, p90, p99, p100 = (x / 1000 for x in percentiles(lat, (50, 90, 99, 100)))
    return {
        "rate_target": rate,
        "rate_sent": round(len(rows) / span) if span else None,
        "messages": len(rows),
        "not_visible": missing,
        "batches": len(visible),
        "mean_batch": round(len(rows) / max(1, len(visible)), 1),
        "latency_ms_p50": round(p50, 1),
        "latency_ms_p90": round(p90, 1),
        "latency_ms_p99": round(p99, 1),
        "latency_ms_max": round(p100, 1),
        "apply_ms_mean": round(1000 * inst.apply_s / max(1, len(visible)), 2),
        "poll_ms": settings.poll_ms,
        "load": load_before,
    }


class GcPauses:
    """Records the collector's pauses while installed (they stop every thread)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._started)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


class Checker(threading.Thread):
    """Checks sampled pairs on a fixed schedule; latency counts from when each was due."""

    def __init__(self, ix: Any, pairs: list[tuple[str, str]], expected: list[bool], rate: float):
        super().__init__(name="bench-checker", daemon=True)
        self.ix, self.pairs, self.expected, self.rate = ix, pairs, expected, rate
        self.halt = threading.Event()
        self.response: list[int] = []  # due -> answered
        self.service: list[int] = []  # call -> answered
        self.wrong = 0

    def run(self) -> None:
        n, step = len(self.pairs), 1e9 / self.rate
        start = now_ns()
        i = 0
        while not self.halt.is_set():
            due = start + int(i * step)
            wait = due - now_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            s, g = self.pairs[i % n]
            t = now_ns()
            got = self.ix.check(s, g)
            done = now_ns()
            self.service.append(done - t)
            self.response.append(done - due)
            if got != self.expected[i % n]:
                self.wrong += 1
            i += 1

    def stop(self) -> Checker:
        self.halt.set()
        self.join()
        return self

    def summary(self, seconds: float) -> dict[str, Any]:
        r50, r99, rmax = percentiles(self.response, (50, 99, 100))
        s50, s99, smax = percentiles(self.service, (50, 99, 100))
        return {
            "checks": len(self.response),
            "checks_per_s": round(len(self.response) / seconds) if seconds else None,
            "response_us_p50": round(r50, 1),
            "response_us_p99": round(r99, 1),
            "response_us_max": round(rmax, 1),
            "service_us_p50": round(s50, 1),
            "service_us_p99": round(s99, 1),
            "service_us_max": round(smax, 1),
            "wrong_answers": self.wrong,
        }


def sample_pairs(ix: Any, report: dict[str, Any], n: int, seed: int) -> list[tuple[str, str]]:
    """n pairs, about half of them members (transitively), half random."""
    rng = random.Random(seed)
    width = len(report["deep_user"].split(":u")[1]) if report.get("deep_user") else 7
    groups = ix.reader.base_groups
    pairs = []
    for _ in range(n):
        u = f"user:u{rng.randrange(report['users']):0{width}d}"
        gs = ix.groups_of(u) if rng.random() < 0.5 else []
        pairs.append((u, rng.choice(gs) if gs else rng.choice(groups)))
    return pairs


def timed_checks(ix: Any, pairs: list, expected: list, rate: float, fn: Callable[[], Any]):
    """Run ``fn`` while a Checker checks; (seconds of fn, its result, check figures)."""
    gc.collect()  # the bench's own garbage is not the index's pause
    checker = Checker(ix, pairs, expected, rate)
    with GcPauses() as pauses:
        checker.start()
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
        checker.stop()
    summary = checker.summary(seconds)
    summary["gc_pauses"] = len(pauses.pauses)
    summary["gc_max_ms"] = round(1000 * max(pauses.pauses, default=0.0), 1)
    return seconds, out, summary


def run_compaction(ctx: Context) -> dict[str, Any]:
    from leopard.core.compact import compact
    from leopard.core.incremental import DeltaWriter
    from leopard.core.index import Index
    from leopard.model.names import parse_tuple

    args = ctx.args
    idx = fresh_copy(ctx.index, ctx.work, "compact")
    moves = ctx.moves()[0][-args.compact_edges :] if args.compact_edges else []
    first = args.member_changes + int(args.rate * args.latency_seconds) + 2
    lines = ctx.member_pool(first, args.compact_changes) + moves
    random.Random(16).shuffle(lines)
    changes = [("touch" if s[0] == "+" else "delete", parse_tuple(s[1:])) for s in lines]
    ix = Index(idx)
    writer = DeltaWriter(ix.reader)
    t0 = time.perf_counter()
    for i in range(0, len(changes), 20_000):
        writer.apply(changes[i : i + 20_000], {"bench:0": i + 20_000})
    layer_s = time.perf_counter() - t0
    overlay = ix.reader.overlay.size()
    writer.close()
    ix.close()
    twin = ctx.work / "compact-child"
    shutil.copytree(idx, twin, symlinks=True)

    result: dict[str, Any] = {
        "layer_changes": len(changes),
        "layer_edge_changes": len(moves),
        "layer_apply_seconds": round(layer_s, 2),
        "overlay_sets": overlay,
        "check_rate": args.check_rate,
    }
    for name, path, how in (("in_process", idx, "thread"), ("child_process", twin, "child")):
        ix = Index(path)
        pairs = sample_pairs(ix, ctx.report, 2_000, seed=17)
        expected = [ix.check(s, g) for s, g in pairs]
        for s, g in pairs:  # warm the group cache, as a serving index would be
            ix.check(s, g)
        quiet_s, _, quiet = timed_checks(
            ix, pairs, expected, args.check_rate, lambda: time.sleep(args.check_seconds)
        )
        load_before = load()
        if how == "thread":
            secs, _, during = timed_checks(
                ix, pairs, expected, args.check_rate, lambda p=path: compact(p)
            )
        else:
            from ingest.consumer import start_compaction

            def child(p: Path = path) -> int:
                proc = start_compaction(p)
                _, err = proc.communicate()
                if proc.returncode:
                    raise SystemExit(f"leopard compact failed: {err.decode()[-2000:]}")
                return proc.returncode

            secs, _, during = timed_checks(ix, pairs, expected, args.check_rate, child)
        swapped = ix.refresh()
        wrong_after = sum(ix.check(s, g) != e for (s, g), e in zip(pairs, expected, strict=True))
        after_s, _, after = timed_checks(
            ix, pairs, expected, args.check_rate, lambda: time.sleep(args.check_seconds)
        )
        ix.close()
        result[name] = {
            "compact_seconds": round(secs, 2),
            "checks_quiet": quiet,
            "checks_during": during,
            "checks_after_swap": after,
            "swapped": swapped,
            "wrong_after_swap": wrong_after,
            "load": load_before,
        }
    return result


# -- driver --------------------------------------------------------------------------


class Context:
    """What the scenarios share: the built index, the broker, change pools, a work dir."""

    def __init__(self, args: argparse.Namespace, work: Path, bootstrap: str) -> None:
        self.args = args
        self.work = work
        self.bootstrap = bootstrap
        self.index, self.report = built_index(args.tuples)
        self.snapshot, _, _ = org(args.tuples)
        self._n = 0
        self._members: list[str] | None = None
        self._moves: tuple[list[str], dict[str, Any]] | None = None

    def member_pool(self, start: int, count: int) -> list[str]:
        """Member changes ``start:start+count`` of one stream drawn for every scenario
        (reading the snapshot once: 400 MB at 10M tuples)."""
        if self._members is None:
            a = self.args
            total = a.member_changes + int(a.rate * a.latency_seconds) + 2 + a.compact_changes
            self._members = member_changes(self.snapshot, total, seed=11)
        return self._members[start : start + count]

    def moves(self) -> tuple[list[str], dict[str, Any]]:
        if self._moves is None:
            want = max(self.args.edge_changes, self.args.compact_edges)
            self._moves = hierarchy_moves(self.snapshot, want, seed=12)
        return self._moves

    def topic(self, name: str) -> str:
        from ingest.kafka.local_broker import create_topic

        self._n += 1
        topic = f"bench-{name}-{os.getpid()}-{self._n}"
        create_topic(self.bootstrap, topic, partitions=self.args.partitions)
        return topic


def us(x: float) -> str:
    """A duration given in microseconds, in the unit that reads best."""
    if x < 1_000:
        return f"{x:.0f} us"
    if x < 10_000:
        return f"{x / 1000:.1f} ms"
    if x < 10_000_000:
        return f"{x / 1000:.0f} ms"
    return f"{x / 1e6:.1f} s"


def headline(run: dict[str, Any]) -> int:
    """Changes/s after the first batch was applied; with fewer than three batches, from
    the start of the first apply (so only the first poll and its decoding are left out)."""
    if run["batches"] >= 3 and run["rate_after_first_batch"]:
        return int(run["rate_after_first_batch"])
    return int(run["rate_from_first_apply"])


def rows_for(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    m = result.get("member")
    if m:
        rate = headline(m)
        rows += [
            (
                "member changes/s, group join excluded",
                f"{rate:,}",
                f">= 50k: {verdict(rate >= 50_000)}",
            ),
            (
                "  from the start (group join included)",
                f"{m['rate_including_join']:,} ({m['seconds_to_first_batch']:.2f} s to 1st batch)",
                "",
            ),
            (
                "  changes, batches, consume time",
                f"{m['changes']:,} in {m['batches']} batches of ~{m['mean_batch']:,}, "
                f"{m['seconds_total']:.1f} s",
                "",
            ),
            (
                "  time in apply (rederive / persist) / rest",
                f"{m['apply_seconds']:.2f} ({m['rederive_seconds']:.2f} / "
                f"{m['persist_seconds']:.2f}) / {m['other_seconds']:.2f} s",
                "rest: poll, decode, commit",
            ),
            (
                "  published first, at",
                f"{m['publish_rate']:,}/s ({m['publish_seconds']:.1f} s)",
                "",
            ),
            ("  load during", m["load"], ""),
        ]
    if result.get("clients"):
        from bench.kafka_clients import rows as client_rows

        rows += client_rows(result["clients"])
    e = result.get("edges")
    if e:
        w = e["workload"]
        rows.append(
            (
                "nested-edge workload: hierarchy moves",
                f"{w['moves']:,} groups at level {w['mean_level']} on average (max "
                f"{w['max_level']}) of {w['hierarchy_groups']:,}",
                "half deletes",
            )
        )
        for n, run in enumerate(e["runs"]):
            rate = headline(run)
            rows += [
                (
                    f"edge changes/s, batches <= {run['max_batch']:,}, join excl.",
                    f"{rate:,}",
                    f">= 5k: {verdict(rate >= 5_000)}" if n == 0 else "cost of small batches",
                ),
                (
                    "  applied, batches, consume time",
                    f"{run['edge_changes']:,} of {run['published']:,} ({run['deletes']:,} "
                    f"deletes) in {run['batches']} batches of ~{run['mean_batch']:,}, "
                    f"{run['seconds_total']:.1f} s",
                    "",
                ),
                (
                    "  time in apply (rederive / persist) / rest",
                    f"{run['apply_seconds']:.2f} ({run['rederive_seconds']:.2f} / "
                    f"{run['persist_seconds']:.2f}) / {run['other_seconds']:.2f} s",
                    "",
                ),
                ("  load during", run["load"], ""),
            ]
    lt = result.get("latency")
    if lt:
        rows += [
            (
                f"produce->visible p50 / p99, {lt['rate_target']:,.0f}/s",
                f"{lt['latency_ms_p50']:.0f} / {lt['latency_ms_p99']:.0f} ms",
                f"p99 <= 200 ms: {verdict(lt['latency_ms_p99'] <= 200 and not lt['not_visible'])}",
            ),
            (
                "  p90 / max",
                f"{lt['latency_ms_p90']:.0f} / {lt['latency_ms_max']:.0f} ms",
                "",
            ),
            (
                "  messages, sent rate, batches",
                f"{lt['messages']:,} at {lt['rate_sent']:,}/s, {lt['batches']:,} batches of "
                f"~{lt['mean_batch']}, apply {lt['apply_ms_mean']} ms each",
                f"consumer poll_ms={lt['poll_ms']}",
            ),
            ("  load before", lt["load"], ""),
        ]
    c = result.get("compaction")
    if c:
        rows.append(
            (
                "incremental layer compacted",
                f"{c['layer_changes']:,} changes ({c['layer_edge_changes']:,} nested), "
                f"{c['overlay_sets']:,} sets",
                "",
            )
        )
        for name, label in (
            ("in_process", "a thread of this process"),
            ("child_process", "a child process (as the consumer)"),
        ):
            k = c[name]
            q, d, a = k["checks_quiet"], k["checks_during"], k["checks_after_swap"]
            wrong = d["wrong_answers"] + k["wrong_after_swap"] + a["wrong_answers"]
            rows += [
                (f"compaction time, {label}", f"{k['compact_seconds']:.1f} s", ""),
                (
                    "  check p50 / p99 (due->answer), quiet",
                    f"{us(q['response_us_p50'])} / {us(q['response_us_p99'])}",
                    f"open loop, {c['check_rate']:,.0f} checks/s",
                ),
                (
                    "  check p50 / p99 (due->answer), compacting",
                    f"{us(d['response_us_p50'])} / {us(d['response_us_p99'])} "
                    f"(max {us(d['response_us_max'])})",
                    f"{d['checks']:,} checks, {wrong} wrong",
                ),
                (
                    "  check p50 / p99 (call only), compacting",
                    f"{us(d['service_us_p50'])} / {us(d['service_us_p99'])} "
                    f"(max {us(d['service_us_max'])})",
                    f"quiet: {us(q['service_us_p50'])} / {us(q['service_us_p99'])}",
                ),
                (
                    "  check p50 / p99 (due->answer), after swap",
                    f"{us(a['response_us_p50'])} / {us(a['response_us_p99'])}",
                    "new generation" if k["swapped"] else "NOT SWAPPED",
                ),
                ("  load before", k["load"], ""),
            ]
    return rows


def _batches(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        batch, _, count = part.partition(":")
        out.append((int(batch), int(count or 10**9)))
    return out


def kafka_crc() -> str:
    """Which CRC-32C kafka-python checks fetched batches with (it dominates a poll)."""
    from kafka.record import util

    return "C (crc32c package)" if util.crc32c_c is not None else "pure Python"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tuples", type=int, default=10_000_000)
    ap.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    ap.add_argument("--member-changes", type=int, default=200_000)
    ap.add_argument("--edge-changes", type=int, default=40_000)
    ap.add_argument(
        "--edge-batches",
        type=_batches,
        default=None,
        help="consumer max_batch:changes of each edge run (default 20000:EDGE_CHANGES,500:4000)",
    )
    ap.add_argument("--rate", type=float, default=1_000.0, help="changes/s of the latency run")
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    ap.add_argument("--compact-changes", type=int, default=200_000)
    ap.add_argument("--compact-edges", type=int, default=2_000)
    ap.add_argument("--check-rate", type=float, default=2_000.0, help="checks/s while compacting")
    ap.add_argument("--check-seconds", type=float, default=3.0)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=120.0, help="bound of each consumer run")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--table-from", metavar="FILE", help="print the table of a saved --json run")
    args = ap.parse_args()
    if args.table_from:
        print_table(json.loads(Path(args.table_from).read_text()))
        return
    if args.edge_batches is None:
        args.edge_batches = [(20_000, args.edge_changes), (500, min(4_000, args.edge_changes))]
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        ap.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")

    from ingest.kafka.local_broker import LocalBroker

    result: dict[str, Any] = {
        "tuples": args.tuples,
        "machine": machine(),
        "load_start": load(),
        "partitions": args.partitions,
        "kafka_crc32c": kafka_crc(),
    }
    runners = {
        "member": run_member,
        "clients": run_clients,
        "edges": run_edges,
        "latency": run_latency,
        "compaction": run_compaction,
    }
    with (
        tempfile.TemporaryDirectory(prefix="leopard-bench-inc-") as tmp,
        LocalBroker() as broker,
    ):
        ctx = Context(args, Path(tmp), broker.bootstrap)
        for name in SCENARIOS:
            if name in chosen:
                result[name] = runners[name](ctx)
    result["load_end"] = load()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


def print_table(result: dict[str, Any]) -> None:
    rows = [
        (
            "index",
            f"{result['tuples']:,} generated tuples, {result['partitions']} partition(s)",
            "",
        ),
        ("kafka-python CRC-32C", result["kafka_crc32c"], ""),
    ]
    rows += rows_for(result)
    rows.append(("load average, start / end", f"{result['load_start']} / {result['load_end']}", ""))
    print(table(f"incremental layer through the local broker ({result['machine']})", rows))


if __name__ == "__main__":
    main()
