"""The router and ``ShardedClient`` check which shard, of which build, answers them.

Every ``leopard serve --shard K`` says which shard it serves (``Leopard-Shard:
k/n/build`` on every answer, ``shard`` in ``/readyz``) and switches to a new build
only once the sharded index's manifest names it. A router given URLs that do not
match the shards, or whose shards answer from different builds (a sharded build
killed between two shard swaps, as ``tests/core/test_shards.py`` kills one), refuses
with a 503 naming them, never a joined answer, and its ``/readyz`` says why; once
every shard serves the new build it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from support.http import call, leopard_serve, q, wait_until
from support.killswap import killed_between_swaps

import leopard
from leopard.client import ShardedClient, ShardUnavailable
from leopard.http.router import RouterService
from leopard.http.shardlinks import ShardAnswer
from leopard.model.routing import shard_of
from leopard.store.manifest import read_manifest

SHARDS = 3
USERS = [f"user:u{i}" for i in range(12)]

pytestmark = pytest.mark.slow


def _snapshots(tmp_path: Path) -> tuple[Path, Path]:
    """An old org (group:old) and a new one (group:new of every user as well)."""
    old, new = tmp_path / "old.txt", tmp_path / "new.txt"
    old.write_text("".join(f"group:old#member@{u}\n" for u in USERS))
    new.write_text(old.read_text() + "".join(f"group:new#member@{u}\n" for u in USERS))
    return old, new


@contextlib.contextmanager
def shard_servers(root: Path, shards: range | list[int] = range(SHARDS)) -> Iterator[list[str]]:
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                leopard_serve(
                    "--index",
                    str(root),
                    "--shard",
                    str(k),
                    "--workers",
                    "1",
                    "--refresh-interval",
                    "0.1",
                )  # fmt: skip
            )[0]
            for k in shards
        ]


@contextlib.contextmanager
def router(urls: list[str]) -> Iterator[str]:
    given = [a for k, u in enumerate(urls) for a in ("--shard-url", f"{k}={u}")]
    with leopard_serve("--route", *given) as (url, _):
        yield url


def _on_shard(k: int) -> str:
    return next(u for u in USERS if shard_of(u, SHARDS) == k)


def test_a_router_given_the_wrong_shard_urls_refuses_naming_them(tmp_path: Path) -> None:
    """Shard 1's and shard 2's URLs swapped, or a list one shard short: every answer
    would be 'false' for their subjects; it is a 503 naming the URL and what serves
    there, and /readyz says so. ``ShardedClient`` refuses them the same way."""
    old, _ = _snapshots(tmp_path)
    leopard.build_index([old], tmp_path / "ix", shards=SHARDS)
    with shard_servers(tmp_path / "ix") as urls:
        swapped = [urls[0], urls[2], urls[1]]
        target = "/v1/check?" + q(subject=_on_shard(1), group="group:old")
        with router(urls) as right:
            assert call(right, "GET", target).json["member"] is True
            assert wait_until(lambda: call(right, "GET", "/readyz").status == 200)
        with router(swapped) as wrong:
            a = call(wrong, "GET", target)
            assert a.status == 503 and a.json["error"] == "shard_unavailable", a.body
            assert f"shard 1 at {urls[2]} serves shard 2 of 3, not shard 1 of 3" in a.json["detail"]
            a = call(wrong, "GET", "/v1/members?" + q(group="group:old"))
            assert a.status == 503 and urls[1] in a.json["detail"], a.body
            batch = json.dumps({"checks": [{"subject": _on_shard(2), "group": "group:old"}]})
            assert call(wrong, "POST", "/v1/check", batch).status == 503
            a = call(wrong, "GET", "/readyz")
            assert a.status == 503 and len(a.json["reasons"]) == 2, a.body
            assert any(urls[2] in r and "not shard 1 of 3" in r for r in a.json["reasons"])
        with router(urls[:2]) as short:  # 2 URLs for 3 shards
            a = call(short, "GET", "/v1/members?" + q(group="group:old"))
            assert a.status == 503 and "serves shard 0 of 3, not shard 0 of 2" in a.body.decode()
            assert call(short, "GET", "/readyz").status == 503
        with ShardedClient(swapped) as sc:
            with pytest.raises(ShardUnavailable, match=f"shard 2 at {urls[1]} serves shard 1"):
                sc.check(_on_shard(2), "group:old")
            with pytest.raises(ShardUnavailable, match="not shard 1 of 3"):
                sc.members_of("group:old")
        with ShardedClient(urls) as sc:
            assert sc.members_of("group:old") == sorted(USERS)


def test_a_shard_server_switches_build_only_once_the_manifest_names_it(tmp_path: Path) -> None:
    """A build killed after swapping shard 0 in: the server of shard 0 keeps serving the
    build the manifest names (as ``ShardedIndex`` does), and switches once a build
    finishes; every answer names its build."""
    old, new = _snapshots(tmp_path)
    root = tmp_path / "ix"
    leopard.build_index([old], root, shards=SHARDS)
    first = read_manifest(root).build
    u = _on_shard(0)
    target = "/v1/check?" + q(subject=u, group="group:new")
    with shard_servers(root, [0]) as (url,):
        assert call(url, "GET", target).json["member"] is False
        killed_between_swaps(root, new, SHARDS)
        time.sleep(1.5)  # many refreshes
        a = call(url, "GET", target)
        assert a.json["member"] is False  # still the old build
        assert a.headers["leopard-shard"] == f"0/3/{first}"
        ready = call(url, "GET", "/readyz")
        assert ready.status == 200 and ready.json["shard"] == f"0/3/{first}", ready.body
        leopard.build_index([new], root, shards=SHARDS)
        second = read_manifest(root).build
        assert wait_until(lambda: call(url, "GET", target).json["member"])
        assert call(url, "GET", target).headers["leopard-shard"] == f"0/3/{second}"


def test_shards_of_two_builds_are_refused_until_all_serve_the_new_one(tmp_path: Path) -> None:
    """Served after a build was killed between two swaps, shard 0 serves the new build
    and shards 1 and 2 the old: the router refuses to join them (a 503 naming the
    builds, never 4 members of 12), its /readyz and shard 0's say why; a finished
    build mends it and the router answers again."""
    old, new = _snapshots(tmp_path)
    root = tmp_path / "ix"
    leopard.build_index([old], root, shards=SHARDS)
    killed_between_swaps(root, new, SHARDS)
    members = "/v1/members?" + q(group="group:new")
    with shard_servers(root) as urls, router(urls) as r:
        a = call(r, "GET", members)
        assert a.status == 503 and a.json["error"] == "shard_unavailable", a.body
        assert "different builds" in a.json["detail"] and urls[0] in a.json["detail"]
        userset = "/v1/check?" + q(subject="group:old#member", group="group:new")
        assert call(r, "GET", userset).status == 503
        assert call(r, "GET", "/v1/version").status == 503
        a = call(r, "GET", "/readyz")
        assert a.status == 503, a.body
        assert any("different builds" in why for why in a.json["reasons"])
        assert any(
            f"shard 0 at {urls[0]}" in why and "manifest" in why for why in a.json["reasons"]
        )
        a = call(urls[0], "GET", "/readyz")
        assert a.status == 503 and "the manifest of" in a.json["reasons"][0], a.body
        with ShardedClient(urls) as sc, pytest.raises(ShardUnavailable, match="different builds"):
            sc.members_of("group:new")
        leopard.build_index([new], root, shards=SHARDS)
        assert wait_until(lambda: call(r, "GET", members).status == 200), call(r, "GET", members)
        assert call(r, "GET", members).json["members"] == sorted(USERS)
        assert wait_until(lambda: call(r, "GET", "/readyz").status == 200)
        with ShardedClient(urls) as sc:
            assert sc.members_of("group:new") == sorted(USERS)


def test_a_join_of_two_builds_is_asked_again_while_shards_switch() -> None:
    """After a rebuild each shard server switches at its own next refresh: a join that
    finds two builds is asked again (up to JOIN_WAIT) before it is refused; a wrong
    shard at a URL is refused at once."""
    router = RouterService.__new__(RouterService)  # its joining alone, without servers
    router.links = SimpleNamespace(urls=["http://a", "http://b"])  # type: ignore[assignment]
    labels = iter([("0/2/old", "1/2/new"), ("0/2/new", "1/2/new")])
    asked: list[int] = []

    async def ask() -> list[ShardAnswer]:
        asked.append(1)
        return [ShardAnswer(k, 200, b"{}", label) for k, label in enumerate(next(labels))]

    answers = asyncio.run(router._joined(ask))
    assert len(asked) == 2 and [a.label for a in answers] == ["0/2/new", "1/2/new"]

    async def wrong() -> list[ShardAnswer]:
        asked.append(1)
        return [ShardAnswer(0, 200, b"{}", "1/2/new"), ShardAnswer(1, 200, b"{}", "0/2/new")]

    asked.clear()
    with pytest.raises(ShardUnavailable, match="not shard 0 of 2"):
        asyncio.run(router._joined(wrong))
    assert len(asked) == 1
