"""The HTTP stack, measured: one check handler served bare and under Starlette.

Why: ``leopard.http.app`` is a bare ASGI callable rather than a framework's app, on the
grounds that a framework's per-request work costs more than the check itself. This
measures that claim on this machine, in one run: the very handler of
``GET /v1/check`` (``Handlers.get_check``) is served

* ``raw``        by ``LeopardService``, the app ``leopard serve`` runs (its dispatch,
                 auth hook, error mapping and metrics included);
* ``starlette``  by a ``Starlette`` application with one ``Route`` (its default
                 middleware stack: errors and exceptions);
* ``router``     by a bare ``starlette.routing.Router`` (no middleware at all);

and the drop-in faces, each the same question in its peer's dialect as ``leopard serve``
answers it (the raw dispatch, then the Starlette router of ``leopard.http.peers``):

* ``openfga``    with ``--openfga``, ``POST /stores/{id}/check`` (OpenFGA's Check);
* ``authzen``    with ``--authzen``, ``POST /access/v1/evaluation`` (AuthZEN's Access
                 Evaluation).

Every server is uvicorn with the protocol, loop and settings of ``leopard serve``
(``leopard.http.server.uvicorn_config``), in a process of its own, over the same warmed
index; load comes from wrk (one thread, 16 keep-alive connections) cycling through
10,000 (subject, group) pairs, half of them memberships. The stacks take turns,
``--rounds`` times, so that a change in the machine's load hits them all alike; the
machine has 2 cores shared by server and wrk, so the ratios mean more than the
absolute figures. A second table puts the faces beside the target of the drop-in issue
(OpenFGA ``check`` >= 15k req/s, "as ``/v1/check``"; the same asked of AuthZEN) and
beside ``GET /v1/check`` of the same run, the baseline. ``--json`` prints the figures
as JSON on stdout (the tables go to stderr); the figures are recorded under
``"http_stack"`` in bench/results/latest.json, the rest of that file left as it is
(``--no-record`` to leave it alone; ``bench/run`` records them itself).

    python bench/http_stack.py --tuples 200000 --seconds 3 --rounds 2 --openfga --authzen
"""

from __future__ import annotations

import sys

if sys.path and sys.path[0].rstrip("/").endswith("bench"):  # run as a script: unshadow `http`
    del sys.path[0]
    sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.common import ROOT, built_index, machine, org, table, verdict  # noqa: E402

STACKS = ("raw", "starlette", "router")
#: the drop-in faces: their path, and how a (subject, group) pair is asked in their dialect
FACES = ("openfga", "authzen")
CONNECTIONS = 16
TARGET_RPS = 15_000  # /v1/check's target, which the drop-in issue sets for OpenFGA's check
LATEST = ROOT / "bench" / "results" / "latest.json"
_LABELS = {
    "raw": "GET /v1/check (baseline)",
    "openfga": "OpenFGA POST /stores/{id}/check",
    "authzen": "AuthZEN POST /access/v1/evaluation",
}

_WRK_GET = """
local paths = {}
for line in io.lines(os.getenv("LEOPARD_PATHS")) do paths[#paths + 1] = line end
local i = math.random(#paths)
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
"""
_WRK_POST = """
local bodies = {}
for line in io.lines(os.getenv("LEOPARD_BODIES")) do bodies[#bodies + 1] = line end
local path = os.getenv("LEOPARD_PATH")
local headers = {["Content-Type"] = "application/json"}
local i = math.random(#bodies)
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", path, headers, bodies[i])
end
"""


# -- the servers (run in a child process each) -------------------------------------------


def serve(stack: str, index_dir: str) -> None:
    """Serve ``index_dir`` with ``stack`` on a free port; print the URL, run until SIGTERM."""
    import gc

    import uvicorn

    from leopard.core.index import Index
    from leopard.http.app import LeopardService
    from leopard.http.connections import ConnectionLimits
    from leopard.http.server import listen, uvicorn_config

    index = Index(index_dir)
    index.warm()
    gc.freeze()
    service = LeopardService(index, refresh_interval=0)
    app: Any = service
    if stack in ("starlette", "router"):
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route, Router

        handler = service.handlers.get_check

        async def check(request: Request) -> Response:
            status, body = await handler(request.scope, request.receive)
            return Response(body, status, media_type="application/json")

        routes = [Route("/v1/check", check, methods=["GET"])]
        app = Starlette(routes=routes) if stack == "starlette" else Router(routes=routes)
    sock = listen("127.0.0.1", 0)
    config = uvicorn_config(
        app,
        ConnectionLimits(),
        loop="auto",
        lifespan="on" if stack == "raw" else "off",
        access_log=False,
        log_level="warning",
        server_header=False,
    )
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    index.close()


@contextmanager
def server(stack: str, index_dir: Path) -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", stack, "--index", str(index_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise SystemExit(f"the {stack} server did not start")
        _wait_up(url)
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_up(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(
                url + "/v1/check?subject=user:nobody&group=group:nobody", timeout=5
            ):
                return
        except OSError as exc:
            if getattr(exc, "code", None) is not None:  # an HTTP answer: it is up
                return
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:g} s")


# -- load ----------------------------------------------------------------------------------


def wrk(
    url: str, seconds: float, script: str, env: dict[str, str]
) -> tuple[float, float, float, int]:
    """(req/s, p50 ms, p99 ms, non-2xx and socket errors) of one wrk run."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency",
             "-s", fh.name, url],
            capture_output=True, text=True, env={**os.environ, **env}, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(fh.name)

    def ms(text: str) -> float:
        m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
        assert m, text
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    errors = (int(bad.group(1)) if bad else 0) + (
        sum(int(x) for x in re.findall(r"\d+", sock.group(1))) if sock else 0
    )
    return rps, p50, p99, errors


def pairs_of(snapshot: Path, n: int = 10_000, seed: int = 7) -> list[tuple[str, str]]:
    """``n`` (subject, group) pairs of the snapshot: half memberships, half random."""
    import random

    rng = random.Random(seed)
    members: list[tuple[str, str]] = []
    users: set[str] = set()
    groups: set[str] = set()
    with open(snapshot, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= 400_000:
                break
            resource, _, subject = line.rstrip("\n").partition("@")
            group = resource.split("#", 1)[0]  # the namespace's one set, fed by either relation
            groups.add(group)
            if subject.startswith("user:"):
                users.add(subject)
                members.append((subject, group))
    user_list, group_list = sorted(users), sorted(groups)
    return [
        rng.choice(members)
        if rng.random() < 0.5
        else (rng.choice(user_list), rng.choice(group_list))
        for _ in range(n)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tuples", type=int, default=200_000, help="org size (default 200k)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=2, help="turns of every stack")
    parser.add_argument("--openfga", action="store_true", help="also POST /stores/{id}/check")
    parser.add_argument("--authzen", action="store_true", help="also POST /access/v1/evaluation")
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout")
    parser.add_argument("--no-record", action="store_true", help="leave latest.json alone")
    parser.add_argument("--serve", choices=(*STACKS, *FACES), help=argparse.SUPPRESS)
    parser.add_argument("--index", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve("raw" if args.serve in FACES else args.serve, args.index)
        return
    out = sys.stderr if args.json else sys.stdout
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (apt-get install wrk)")
    started = time.time()
    load_at_start = round(os.getloadavg()[0], 2)
    index, report = built_index(args.tuples)
    snapshot, _, _ = org(args.tuples)
    pairs = pairs_of(snapshot)
    work = Path(tempfile.mkdtemp(prefix="leopard-bench-stack-"))
    faces = [f for f in FACES if getattr(args, f)]
    stacks = [*STACKS, *faces]
    # per stack and round: req/s, p50 ms, p99 ms, errors, server CPU µs per request
    results: dict[str, list[tuple[float, float, float, int, float]]] = {s: [] for s in stacks}
    try:
        paths = work / "paths.txt"
        paths.write_text("".join(f"/v1/check?subject={_q(s)}&group={_q(g)}\n" for s, g in pairs))
        bodies = {}
        for face in faces:
            bodies[face] = work / f"{face}.txt"
            bodies[face].write_text("".join(_BODIES[face](s, g) + "\n" for s, g in pairs))
        for _ in range(args.rounds):
            for stack in stacks:
                with server(stack, index) as (url, pid):
                    if stack in FACES:
                        path = _openfga_path(url) if stack == "openfga" else _AUTHZEN_PATH
                        _answers(url, path, pairs[:200], stack)
                        env = {"LEOPARD_BODIES": str(bodies[stack]), "LEOPARD_PATH": path}
                        script = _WRK_POST
                    else:
                        env, script = {"LEOPARD_PATHS": str(paths)}, _WRK_GET
                    wrk(url, 1, script, env)  # warm-up: every group name resolved once
                    cpu = cpu_seconds(pid)
                    rps, p50, p99, errors = wrk(url, args.seconds, script, env)
                    used = cpu_seconds(pid) - cpu
                    per_request = used / max(1.0, rps * args.seconds) * 1e6
                    results[stack].append((rps, p50, p99, errors, per_request))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    title = (
        f"GET /v1/check, one handler under each stack: {args.tuples:,} tuples "
        f"({report.get('groups', '?'):,} groups), wrk -t1 -c{CONNECTIONS}, "
        f"{args.seconds:g} s runs, {args.rounds} rounds; {machine()}"
    )
    print(title, file=out)
    raw = statistics.median(r[0] for r in results["raw"])
    raw_cpu = statistics.median(r[4] for r in results["raw"])
    print(
        f"{'stack':<10} {'req/s by round':<30} {'median':>8} {'vs raw':>7} "
        f"{'CPU µs/req':>11} {'vs raw':>7} {'p50/p99 ms':>13}",
        file=out,
    )
    for stack, runs in results.items():
        med = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[4] for r in runs)
        rounds = ", ".join(f"{r[0]:,.0f}" for r in runs)
        p50 = statistics.median(r[1] for r in runs)
        p99 = statistics.median(r[2] for r in runs)
        errors = sum(r[3] for r in runs)
        note = f"  ({errors} errors)" if errors else ""
        print(
            f"{stack:<10} {rounds:<30} {med:>8,.0f} {med / raw:>6.0%} {cpu:>11.1f} "
            f"{cpu / raw_cpu:>6.0%} {p50:>6.2f}/{p99:<6.2f}{note}",
            file=out,
        )
    print(
        "CPU µs/req: the server process's CPU time over the run divided by the requests "
        "answered (steadier than req/s on a shared machine).",
        file=out,
    )
    figures = {s: _summary(runs) for s, runs in results.items()}
    if faces:
        rows = []
        for stack in ("raw", *faces):
            f = figures[stack]
            rows.append(
                (
                    _LABELS[stack],
                    f"{f['rps_median']:,.0f} req/s, p50/p99 {f['p50_ms']:.2f}/{f['p99_ms']:.2f} ms",
                    f">= {TARGET_RPS:,} req/s: {verdict(f['rps_median'] >= TARGET_RPS)}"
                    + ("" if stack == "raw" else f"; {f['rps_median'] / raw:.0%} of /v1/check"),
                )
            )
        print(table("The drop-in faces beside their target and /v1/check", rows), file=out)
    result = {
        "tuples": args.tuples,
        "groups": report.get("groups"),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "connections": CONNECTIONS,
        "target_rps": TARGET_RPS,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "load_at_start": load_at_start,
        "load_at_end": round(os.getloadavg()[0], 2),
        "stacks": figures,
    }
    if not args.no_record:
        record(result)
    if args.json:
        print(json.dumps(result, indent=2))


def record(result: dict[str, Any], path: Path = LATEST) -> None:
    """Put ``result`` under ``"http_stack"`` in the results file, leaving the rest as it is."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data["http_stack"] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _summary(runs: list[tuple[float, float, float, int, float]]) -> dict[str, Any]:
    """One stack's rounds: each round's req/s and the medians."""
    return {
        "rps": [round(r[0]) for r in runs],
        "rps_median": round(statistics.median(r[0] for r in runs)),
        "cpu_us_per_request": round(statistics.median(r[4] for r in runs), 1),
        "p50_ms": round(statistics.median(r[1] for r in runs), 3),
        "p99_ms": round(statistics.median(r[2] for r in runs), 3),
        "errors": sum(r[3] for r in runs),
    }


def _q(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _openfga_body(subject: str, group: str) -> str:
    obj, _, relation = group.partition("#")
    return json.dumps(
        {"tuple_key": {"user": subject, "relation": relation or "member", "object": obj}},
        separators=(",", ":"),
    )


def _authzen_body(subject: str, group: str) -> str:
    """AuthZEN's Access Evaluation of ``subject`` in ``group``: the group's one set is
    the action, as ``leopard.http.authzen`` maps a schema's relations."""
    styp, _, sid = subject.partition(":")
    obj, _, relation = group.partition("#")
    gtyp, _, gid = obj.partition(":")
    return json.dumps(
        {
            "subject": {"type": styp, "id": sid},
            "action": {"name": relation or "member"},
            "resource": {"type": gtyp, "id": gid},
        },
        separators=(",", ":"),
    )


_BODIES = {"openfga": _openfga_body, "authzen": _authzen_body}
_AUTHZEN_PATH = "/access/v1/evaluation"


def _openfga_path(url: str) -> str:
    with urllib.request.urlopen(url + "/stores", timeout=10) as resp:  # noqa: S310 - loopback
        store = json.loads(resp.read())["stores"][0]["id"]
    return f"/stores/{store}/check"


def _answers(url: str, path: str, pairs: list[tuple[str, str]], face: str) -> None:
    """Ask ``pairs`` once through the face and once through ``/v1/check``: the same
    answers, or the load would measure error pages."""
    for subject, group in pairs:
        request = urllib.request.Request(
            url + path,
            data=_BODIES[face](subject, group).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            got = json.loads(resp.read())
        target = f"{url}/v1/check?subject={_q(subject)}&group={_q(group)}"
        with urllib.request.urlopen(target, timeout=10) as resp:  # noqa: S310 - loopback
            want = json.loads(resp.read())["member"]
        if got.get("allowed", got.get("decision")) is not want:
            raise SystemExit(f"{face} answers {got} to {subject} in {group}, /v1/check {want}")


if __name__ == "__main__":
    main()
