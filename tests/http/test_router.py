"""Sharded serving: four ``leopard serve --shard K`` processes and a ``leopard serve
--route`` in front of them answer every query exactly as one index does.

A generated org (``leopard.gen``: nesting 15 deep, cycles, wildcards, ``manager``
rewrites) is built twice, as one index and as four shards. Every query, asked of the
router over HTTP and of ``ShardedClient`` (the shard servers straight from Python),
is compared with the one index and with the BFS oracle (``support.oracle``): checks
of sampled subjects (plain and usersets) against sampled groups, one by one and in
batches, ``groups_of``, ``members_of`` page by page with pages smaller than a
shard's share, ``explain``. Then the shards follow a topic of the local broker:
member and nested-edge changes are published, read back through the router with the
publish token as ``at_least``, and every answer is the oracle's of the changed
tuples. A shard that goes down is a 503 naming it; the command line's mistakes are
one line and exit status 1.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.http import call, leopard_serve, q, wait_until
from support.oracle import Oracle

import leopard
from ingest.codecs import Change
from ingest.kafka.local_broker import LocalBroker
from ingest.kafka.publish import publish
from leopard.cli.serve import serve_command
from leopard.client import Client, ShardedClient, ShardUnavailable
from leopard.errors import StaleIndex
from leopard.gen import OrgSpec, config_toml, generate
from leopard.model.config import load_config
from leopard.model.names import parse_tuple
from leopard.model.routing import shard_of
from leopard.model.tokens import decode_token, encode_token

SHARDS = 4

pytestmark = pytest.mark.slow


def _tuples(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("org")
    spec = OrgSpec(tuples=3000, seed=3)
    generate(spec, d / "org.txt")
    (d / "org.toml").write_text(config_toml(spec))
    return d / "org.txt", d / "org.toml"


def _build(org: tuple[Path, Path], where: Path, engine: str = "local") -> tuple[Path, Path]:
    snapshot, config = org
    leopard.build_index([snapshot], where / "one", config)
    if engine == "spark":  # the Spark build in local mode, served as the local one is
        from leopard.spark import build_on_spark

        build_on_spark(
            [str(snapshot)], str(where / "sharded"), load_config(config), shards=SHARDS,
            master="local[2]",
        )  # fmt: skip
    else:
        leopard.build_index([snapshot], where / "sharded", config, shards=SHARDS)
    return where / "one", where / "sharded"


@contextlib.contextmanager
def cluster(sharded: Path, *extra: str) -> Iterator[tuple[str, list[str], list]]:
    """The shard servers of ``sharded`` and a router; yields (router URL, shard URLs,
    shard processes)."""
    with contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(
                leopard_serve("--index", str(sharded), "--shard", str(k), "--workers", "1", *extra)
            )
            for k in range(SHARDS)
        ]
        urls = [u for u, _ in started]
        given = [a for k, u in enumerate(urls) for a in ("--shard-url", f"{k}={u}")]
        router, _ = stack.enter_context(leopard_serve("--route", "--index", str(sharded), *given))
        yield router, urls, [p for _, p in started]


@pytest.fixture(scope="module")
def built(org: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _build(org, tmp_path_factory.mktemp("built"))


@pytest.fixture(scope="module")
def served(built: tuple[Path, Path]) -> Iterator[tuple[str, list[str], list]]:
    with cluster(built[1]) as running:
        yield running


@pytest.fixture(scope="module")
def oracle(org: tuple[Path, Path]) -> Oracle:
    return Oracle(_tuples(org[0]), load_config(org[1]))


def _sample(oracle: Oracle, seed: int = 5) -> tuple[list[str], list[str], list[str]]:
    """Plain subjects (and one nobody holds), userset subjects, groups: sampled."""
    rng = random.Random(seed)
    leaves = sorted(n for n in oracle.leaf_names() if not n.endswith(":*"))
    groups = sorted(oracle.groups)
    plain = rng.sample(leaves, 40) + ["user:nobody-at-all"]
    usersets = rng.sample(groups, 6)
    return plain, usersets, rng.sample(groups, 25) + ["group:all-employees#member"]


def _pages(fetch, group: str, limit: int) -> list[str]:
    """Every member of ``group``, page by page; each ``next`` the page's last name."""
    seen: list[str] = []
    after = None
    while True:
        page = fetch(group, limit, after)
        seen += page.members
        if page.next is None:
            return seen
        assert page.next == page.members[-1] and len(page.members) == limit
        after = page.next


# -- every query, through the router and through ShardedClient ----------------------------


def test_every_query_routed_equals_one_index_and_the_oracle(
    built: tuple[Path, Path], served: tuple[str, list[str], list], oracle: Oracle
) -> None:
    router, urls, _ = served
    plain, usersets, groups = _sample(oracle)
    subjects = plain + usersets
    pairs = [(s, g) for s in subjects for g in groups]
    with (
        leopard.open_index(built[0]) as one,
        leopard.open_index(built[1]) as sharded_ix,
        Client(router) as rc,
        ShardedClient(dict(enumerate(urls))) as sc,
    ):
        expected = [oracle.check(s, g) for s, g in pairs]
        assert 0.05 < sum(expected) / len(expected) < 0.95  # members and not, plain and sets
        assert any(oracle.check(s, g) for s in usersets for g in groups)
        assert one.check_many(pairs) == expected
        assert rc.check_many(pairs) == expected  # batches split by shard
        assert sc.check_many(pairs) == expected
        for (s, g), want in list(zip(pairs, expected, strict=True))[::7]:
            assert rc.check(s, g) is want, (s, g)
            assert sc.check(s, g) is want, (s, g)
        for s in subjects:
            want = one.groups_of(s)
            assert want == oracle.groups_of(s) or "#" in s, s
            assert rc.groups_of(s) == want == sc.groups_of(s), s
        for s in plain[:15]:
            for g in groups[:10]:
                assert rc.explain(s, g) == one.explain(s, g) == sc.explain(s, g), (s, g)
        for s in usersets:
            for g in groups[:10]:
                want = sharded_ix.explain(s, g)
                assert rc.explain(s, g) == want == sc.explain(s, g), (s, g)
                assert (want is None) is (not oracle.check(s, g))
        for g in groups[:8] + ["group:all-employees#member"]:
            want = one.members_of(g)
            assert want == oracle.members_of(g)
            assert rc.members_of(g) == want == sc.members_of(g), g
            assert rc.members_of(g, 9, want[3] if len(want) > 3 else None) == sc.members_of(
                g, 9, want[3] if len(want) > 3 else None
            )
            for limit in (1, 7, 50):
                assert (
                    _pages(lambda g, n, a: rc.members_page(g, limit=n, after=a), g, limit) == want
                )
                assert (
                    _pages(lambda g, n, a: sc.members_page(g, limit=n, after=a), g, limit) == want
                )
        assert rc.version == sharded_ix.version == sc.version
        assert rc.position == sharded_ix.position == sc.position


def test_the_router_answers_as_a_shard_server_does(
    served: tuple[str, list[str], list], oracle: Oracle
) -> None:
    """Same shapes, same refusals, same tokens; one shard's answer is passed on as it came."""
    router, urls, _ = served
    subject = "user:u000001"
    k = shard_of(subject, SHARDS)
    for target in (
        "/v1/check?" + q(subject=subject, group="group:all-employees"),
        "/v1/explain?" + q(subject=subject, group="group:all-employees", steps="true"),
        "/v1/groups?" + q(subject=subject),
        "/v1/check?" + q(subject="not a name", group="group:eng"),  # 400 naming it
        "/v1/check?" + q(subject=subject),  # group missing
        "/v1/check?" + q(subject=subject, group="group:eng", at_least="garbage"),
    ):
        a, b = call(router, "GET", target), call(urls[k], "GET", target)
        assert (a.status, a.body) == (b.status, b.body), target
    for target, status in (
        ("/v1/members?" + q(group="group:eng", limit="0"), 400),
        ("/v1/members?" + q(group="group:eng", limit="5", limit2="x"), 400),
        ("/v1/members?group=group:eng&group=group:x", 400),
        ("/v1/nothing", 404),
    ):
        a, b = call(router, "GET", target), call(urls[0], "GET", target)
        assert a.status == b.status == status, (target, a.body)
        if status == 400:
            assert a.body == b.body
    assert call(router, "DELETE", "/v1/check").status == 405
    big = json.dumps({"checks": [{"subject": "user:a", "group": "group:eng"}] * 10_001})
    assert call(router, "POST", "/v1/check", big).status == 413
    assert call(router, "POST", "/v1/check", '{"checks": []}').json["results"] == []
    assert call(router, "GET", "/healthz").json == {"status": "ok"}
    ready = wait_until(lambda: call(router, "GET", "/readyz").status == 200)
    assert ready, call(router, "GET", "/readyz").body
    assert "leopard_http_requests_total" in call(router, "GET", "/metrics").body.decode()
    assert "/v1/check" in call(router, "GET", "/openapi.json").json["paths"]
    # a version no shard has reached: the shard's 503 with its token, passed on
    version = call(router, "GET", "/v1/version").json["token"]
    future = encode_token({"t:0": 10**9})
    a = call(router, "GET", "/v1/groups?" + q(subject="group:eng#member", at_least=future,
                                               max_wait="0.1"))  # fmt: skip
    assert a.status == 503 and a.json["error"] == "stale" and a.json["token"] == version
    with Client(router) as rc, pytest.raises(StaleIndex):
        rc.check(subject, "group:eng", at_least=future, max_wait=0.1)


def test_a_shard_down_is_a_503_naming_it(served: tuple[str, list[str], list]) -> None:
    """Runs last of the module's servers: it stops shard 2."""
    router, urls, procs = served
    procs[2].send_signal(signal.SIGTERM)
    procs[2].wait(20)
    subject = next(f"user:u{i:06d}" for i in range(100) if shard_of(f"user:u{i:06d}", 4) == 2)
    a = call(router, "GET", "/v1/check?" + q(subject=subject, group="group:eng"))
    assert a.status == 503 and a.json["error"] == "shard_unavailable", a.body
    assert "shard 2" in a.json["detail"] and urls[2] in a.json["detail"]
    other = next(f"user:u{i:06d}" for i in range(100) if shard_of(f"user:u{i:06d}", 4) == 0)
    assert call(router, "GET", "/v1/check?" + q(subject=other, group="group:eng")).status == 200
    a = call(router, "GET", "/v1/members?" + q(group="group:eng"))
    assert a.status == 503 and "shard 2" in a.json["detail"]
    a = call(router, "GET", "/readyz")
    assert a.status == 503 and any("shard 2" in r for r in a.json["reasons"]), a.body
    with Client(router) as rc, pytest.raises(ShardUnavailable, match="shard 2"):
        rc.check(subject, "group:eng")
    with ShardedClient(urls) as sc:
        with pytest.raises(ShardUnavailable, match=f"shard 2 at {urls[2]}"):
            sc.check(subject, "group:eng")
        assert sc.check(other, "group:eng") in (True, False)


def test_shards_that_refuse_the_routers_token_are_unavailable_saying_why(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    """Shards that require a bearer token the router does not send (or another one)
    refused every query through the router with their 401, which told the client its
    own token was missing or wrong, while the router's /readyz said ready."""
    shards_token, other = tmp_path / "shards.token", tmp_path / "other.token"
    shards_token.write_text("the-shards-token-0123456789\n")
    other.write_text("another-token-0123456789\n")
    with cluster(built[1], "--auth-token-file", str(shards_token)) as (_, urls, _procs):
        given = [a for k, u in enumerate(urls) for a in ("--shard-url", f"{k}={u}")]
        for extra, said in (([], "the shards require a bearer token; give the router theirs"),
                            (["--auth-token-file", str(other)], "which take another")):  # fmt: skip
            with leopard_serve("--route", "--index", str(built[1]), *given, *extra) as (r, _):
                headers = {"Authorization": "Bearer another-token-0123456789"} if extra else {}
                a = call(r, "GET", "/v1/check?" + q(subject="user:u000001", group="group:eng"),
                         headers=headers)  # fmt: skip
                assert a.status == 503 and a.json["error"] == "shard_unavailable", a.body
                assert "refused the router's request (HTTP 401)" in a.json["detail"]
                assert said in a.json["detail"]
                ready = call(r, "GET", "/readyz")
                assert ready.status == 503, ready.body
                assert any(said in reason for reason in ready.json["reasons"]), ready.json


# -- changes through the broker ------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.parametrize("engine", ["local", "spark"])
def test_changes_read_through_the_router_with_the_publish_token(
    org: tuple[Path, Path], tmp_path: Path, broker: LocalBroker, topic: str, engine: str
) -> None:
    """Built on one machine or on Spark (local mode), served in shards following the
    broker: every answer through the router is the oracle's of the changed tuples."""
    one, sharded = _build(org, tmp_path, engine)
    tuples = _tuples(org[0])
    config = load_config(org[1])
    before = Oracle(tuples, config)
    plain, usersets, groups = _sample(before, seed=11)
    nested = [t for t in tuples if t.endswith("#member") and "@group:" in t]
    members = [t for t in tuples if "@user:" in t and not t.endswith("*")]
    added = [
        *(f"group:eng-team-{10 + i}#member@user:newbie{i}" for i in range(6)),
        f"group:{plain[0].split(':')[1]}-solo#member@{plain[0]}",
        "group:eng-leads#member@group:sales#member",  # a nested edge: every shard applies it
    ]
    removed = [nested[3], nested[10], members[0], members[1], members[2]]
    changes = [Change("touch", parse_tuple(t)) for t in added]
    changes += [Change("delete", parse_tuple(t)) for t in removed]
    after = Oracle([t for t in tuples if t not in removed] + added, config)
    broker_args = ("--brokers", broker.bootstrap, "--topic", topic)
    with cluster(sharded, *broker_args) as (router, urls, _), Client(router) as rc:
        written = publish(changes, broker.bootstrap, topic)
        subjects = plain + usersets + [f"user:newbie{i}" for i in range(6)]
        subjects += [parse_tuple(t).subject for t in removed]
        subjects = [s if isinstance(s, str) else str(s) for s in subjects]
        # read your own write: the first read waits for every shard it asks
        assert after.check("user:newbie0", "group:all-employees")
        assert rc.check("user:newbie0", "group:all-employees", at_least=written.token, max_wait=20)
        assert rc.wait_for(written.token, 20)
        assert decode_token(rc.version) == written.position
        pairs = [(s, g) for s in subjects for g in groups]
        assert any(before.check(s, g) != after.check(s, g) for s, g in pairs)  # it changed
        fresh = {"at_least": written.token, "max_wait": 20.0}
        assert rc.check_many(pairs, **fresh) == [after.check(s, g) for s, g in pairs]
        with ShardedClient(urls) as sc:
            assert sc.check_many(pairs, **fresh) == [after.check(s, g) for s, g in pairs]
            for s in subjects:
                if "#" not in s:
                    assert rc.groups_of(s, **fresh) == after.groups_of(s) == sc.groups_of(s), s
            for g in groups[:10] + ["group:eng-team-10#member", "group:eng-leads#member"]:
                assert rc.members_of(g, **fresh) == after.members_of(g) == sc.members_of(g), g
                assert _pages(lambda g, n, a: rc.members_page(g, limit=n, after=a), g, 7) == (
                    after.members_of(g)
                )
    assert before.check("user:newbie0", "group:all-employees") is False


# -- the command line ------------------------------------------------------------------------


def test_serving_a_sharded_index_wrongly_is_one_line_and_status_1(
    built: tuple[Path, Path],
) -> None:
    one, sharded = built
    runner = CliRunner()
    url = "http://127.0.0.1:1"
    cases = [
        (["--index", str(sharded)], "is a sharded index of 4 shards: serve each with --shard K"),
        (["--index", str(sharded), "--shard", "4"], "--shard 4: "),
        (["--index", str(one), "--shard", "0"], "--shard 0: "),
        (["--route"], "--route needs the shard servers"),
        (["--route", "--shard-url", f"0={url}", "--shard-url", f"2={url}"], "shard 1 is missing"),
        (
            ["--route", "--shard-url", f"0={url}", "--shard-url", f"0={url}"],
            "shard 0 is given twice",
        ),
        (["--route", "--shard-url", "zero=http://x"], "'zero=http://x' is not K=URL"),
        (["--route", "--shard-url", "0=ftp://x"], "not an http:// URL"),
        (["--route", "--index", str(sharded), "--shard-url", f"0={url}"], "has 4 shards, but 1"),
        (["--route", "--index", str(one), "--shard-url", f"0={url}"], "not a sharded index"),
    ]
    for args, message in cases:
        r = runner.invoke(serve_command, args)
        lines = r.output.strip().splitlines()
        assert r.exit_code == 1 and len(lines) == 1, (args, r.output)
        assert lines[0].startswith("Error: ") and message in lines[0], (args, r.output)
    r = runner.invoke(serve_command, ["--route", "--brokers", "b:9092", "--shard-url", f"0={url}"])
    assert r.exit_code == 2 and "--brokers belongs on the shard servers" in r.output
