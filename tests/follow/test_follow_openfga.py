"""Bootstrap from an OpenFGA store and follow its ReadChanges.

No OpenFGA server runs here: the store is ``support.openfga_replay``, a local threaded
HTTP server answering ReadAuthorizationModels, Read and ReadChanges with exchanges
built from OpenFGA's published API definitions (openfga/api:
``openfga/v1/openfga_service.proto``, ``docs/openapiv2/apidocs.swagger.json``): paths,
snake_case fields, page sizes, continuation tokens (the same one back when there is
nothing new, an empty one for a store that never changed), error bodies, RFC 3339
nanosecond timestamps, and, on every other page, writes without ``operation`` (its
zero value omitted, as protobuf's JSON mapping does). The answers the index must give
are OpenFGA's own: its engine (``fga model test``, ``support.fga``) checks every user
on every set of the same model and tuples. The model has nested groups, arrows
(``view from parent``) and a wildcard (``world.py``'s schema, in OpenFGA's DSL).
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.fga import fga_binary, fga_check
from support.openfga_replay import OpenFGAReplay
from world import ASKED, USERS, random_relationship

from ingest.upstream.openfga import OPENFGA_KEY, OpenFGASource, bootstrap_openfga
from ingest.upstream.readchanges import OpenFGAFollower
from leopard.core.incremental import DeltaWriter
from leopard.core.index import Index
from leopard.errors import UpstreamGap

pytestmark = pytest.mark.skipif(fga_binary() is None, reason="the fga CLI is not installed")

MODEL = """
model
  schema 1.1

type user

type group
  relations
    define member: [user, group#member]

type folder
  relations
    define parent: [folder]
    define viewer: [user, user:*, group#member]
    define view: viewer or view from parent

type doc
  relations
    define parent: [folder]
    define viewer: [user, group#member]
    define view: viewer or view from parent
"""


def questions() -> list[tuple[str, str]]:
    return [
        (f"user:{u}", f"{t}:{i}#{p}")
        for t, ids, perms in ASKED
        for i in ids
        for p in perms
        for u in USERS
    ]


def disagreements(ix: Index, store: OpenFGAReplay) -> list[str]:
    """Every question the index answers otherwise than OpenFGA's engine on the store's
    tuples."""
    asked = questions()
    queries = [(s, g.partition("#")[2], g.partition("#")[0]) for s, g in asked]
    expected = fga_check(MODEL, store.present(), queries)
    assert any(expected) and not all(expected)  # a comparison that can fail
    got = ix.check_many(asked)
    return [
        f"{s} in {g}: OpenFGA {want}, Leopard {have}"
        for (s, g), want, have in zip(asked, expected, got, strict=True)
        if want != have
    ]


def churn(store: OpenFGAReplay, rng: random.Random, n: int) -> None:
    """``n`` writes and deletes, a few tuples each."""
    for _ in range(n):
        present = store.present()
        if present and rng.random() < 0.4:
            store.delete(rng.sample(present, min(len(present), rng.randint(1, 3))))
        else:
            store.write({random_relationship(rng) for _ in range(rng.randint(1, 4))})


def caught_up(ix: Index, store: OpenFGAReplay, timeout: float = 15.0) -> None:
    """Wait until the index has applied the store's last change."""
    want = store.end_token()
    deadline = time.monotonic() + timeout
    while ix.reader.source_state.get(OPENFGA_KEY, {}).get("token") != want:
        assert time.monotonic() < deadline, "the follower did not catch up"
        time.sleep(0.02)
        ix.refresh()


class Running:
    """A follower run in a thread of this test."""

    def __init__(self, path: Path, store: OpenFGAReplay, **kw: Any) -> None:
        source = OpenFGASource(store.url, store.store_id)
        self.follower = OpenFGAFollower(path, source, interval=0.05, backoff=(0.05, 0.5), **kw)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.follower.run()
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.follower.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


def store_with_data(seed: int, n: int = 150, **kw: Any) -> OpenFGAReplay:
    store = OpenFGAReplay(MODEL, **kw)
    rng = random.Random(seed)
    store.write({random_relationship(rng) for _ in range(n)})
    return store


def test_bootstrap_pages_through_read_and_records_the_changes_end(tmp_path: Path) -> None:
    with store_with_data(51) as store:
        assert len(store.present()) > 100  # more than one Read page
        path = tmp_path / "ix"
        report = bootstrap_openfga(path, OpenFGASource(store.url, store.store_id))
        assert report.tuples == len(store.present())
        assert report.model_id == store.models[-1]["id"]
        assert report.token == store.end_token()
        assert store.requests.count(f"POST /stores/{store.store_id}/read") >= 2
        with Index(path) as ix:
            assert ix.reader.source_state[OPENFGA_KEY]["token"] == store.end_token()
            assert ix.position[OPENFGA_KEY] > 0
            assert disagreements(ix, store) == []


def test_changes_during_the_bootstrap_are_not_lost(tmp_path: Path) -> None:
    rng = random.Random(52)
    with store_with_data(52) as store:
        # after the changes' end is read and before the tuples are: these come after
        # the recorded token, and the follower applies them (again, harmlessly)
        store.before_read = lambda: churn(store, rng, 10)
        path = tmp_path / "ix"
        bootstrap_openfga(path, OpenFGASource(store.url, store.store_id))
        run = Running(path, store)
        try:
            ix = run.follower.index
            caught_up(ix, store)
            assert disagreements(ix, store) == []
        finally:
            run.stop()
        assert run.error is None


def test_follow_writes_and_deletes_through_outages_and_restarts(tmp_path: Path) -> None:
    rng = random.Random(53)
    with store_with_data(53, omit_zero_enums=True) as store:
        path = tmp_path / "ix"
        bootstrap_openfga(path, OpenFGASource(store.url, store.store_id))
        run = Running(path, store)
        try:
            ix = run.follower.index
            for _ in range(3):
                churn(store, rng, 40)  # more than a page of changes at times
                caught_up(ix, store)
            assert disagreements(ix, store) == []
            # OpenFGA away: retried with backoff, then caught up
            store.pause()
            churn(store, rng, 10)
            time.sleep(0.5)
            assert run.follower.changes.reconnects > 0
            assert not run.follower.stats.broker_up
            store.resume()
            caught_up(ix, store)
            assert run.follower.stats.dead_letters == 0
        finally:
            run.stop()
        assert run.error is None
        churn(store, rng, 20)  # while no follower runs
        run = Running(path, store)
        try:
            caught_up(run.follower.index, store)
            assert disagreements(run.follower.index, store) == []
        finally:
            run.stop()


def test_a_new_model_is_a_gap_or_a_rebuild(tmp_path: Path) -> None:
    with store_with_data(54) as store:
        path = tmp_path / "ix"
        bootstrap_openfga(path, OpenFGASource(store.url, store.store_id))
        store.write_model(MODEL)
        run = Running(path, store)
        run.thread.join(30)
        assert isinstance(run.error, UpstreamGap)
        assert "a new authorization model" in str(run.error)
        run = Running(path, store, rebuild_on_gap=True)
        try:
            ix = run.follower.index
            deadline = time.monotonic() + 30
            while run.follower.rebuilds == 0:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            churn(store, random.Random(54), 10)
            caught_up(ix, store)
            assert ix.reader.source_state[OPENFGA_KEY]["model_id"] == store.models[-1]["id"]
            assert disagreements(ix, store) == []
        finally:
            run.stop()
        assert run.error is None


def test_a_refused_continuation_token_is_a_gap(tmp_path: Path) -> None:
    with store_with_data(55, n=20) as store:
        path = tmp_path / "ix"
        bootstrap_openfga(path, OpenFGASource(store.url, store.store_id))
        with Index(path) as ix:
            writer = DeltaWriter(ix.reader)
            try:
                state = {**ix.reader.source_state[OPENFGA_KEY], "token": "bm90LWEtdG9rZW4"}
                writer.apply([], None, source_state={OPENFGA_KEY: state})
            finally:
                writer.close()
        follower = OpenFGAFollower(path, OpenFGASource(store.url, store.store_id))
        with pytest.raises(UpstreamGap, match="refuses the index's continuation token"):
            follower.run()


class Stuck(OpenFGASource):
    """The store through a proxy that, while ``stuck``, answers ReadChanges pages with the
    token asked with (or none) instead of the next one: a misbehaving upstream."""

    stuck = True
    drop = False

    def read_changes(self, token: str, page_size: int = 50) -> dict[str, Any]:
        page = super().read_changes(token, page_size)
        if self.stuck and page.get("changes"):
            page["continuation_token"] = "" if self.drop else token
        return page


@pytest.mark.parametrize("drop", [False, True], ids=["same token", "no token"])
def test_a_page_whose_token_does_not_move_is_asked_again_not_skipped(
    tmp_path: Path, drop: bool
) -> None:
    with store_with_data(57, n=20) as store:
        path = tmp_path / "ix"
        bootstrap_openfga(path, OpenFGASource(store.url, store.store_id))
        source = Stuck(store.url, store.store_id)
        source.drop = drop
        follower = OpenFGAFollower(path, source, interval=0.05, backoff=(0.05, 0.2))
        run = Running.__new__(Running)  # a thread of this test, with this source
        run.follower, run.error = follower, None
        run.thread = threading.Thread(target=run._run, daemon=True)
        run.thread.start()
        try:
            before = follower.index.version
            store.write({"group:g1#member@user:stranger", "group:g3#member@user:stranger"})
            deadline = time.monotonic() + 5
            while follower.changes.reconnects < 2:  # asked again, with backoff
                assert time.monotonic() < deadline, "the stuck page was not asked again"
                time.sleep(0.02)
            assert follower.index.version == before and not follower.stats.broker_up
            source.stuck = False  # the upstream answers properly again: nothing was lost
            caught_up(follower.index, store)
            assert disagreements(follower.index, store) == []
        finally:
            run.stop()
        assert run.error is None


def test_build_from_and_follow_commands(tmp_path: Path) -> None:
    rng = random.Random(56)
    with store_with_data(56) as store:
        path = tmp_path / "ix"
        leopard = [sys.executable, "-m", "leopard"]
        source = f"openfga:{store.url}"
        out = subprocess.run(
            [
                *leopard,
                "build",
                "--index",
                str(path),
                "--from",
                source,
                "--store-id",
                store.store_id,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert f"read {len(store.present())} tuples from {source}" in out.stdout
        follow = subprocess.Popen(
            [
                *leopard,
                *("follow", "--index", str(path), "--source", source),
                *("--store-id", store.store_id, "--interval", "0.1"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            churn(store, rng, 30)
            with Index(path) as ix:
                caught_up(ix, store, timeout=30)
                assert disagreements(ix, store) == []
        finally:
            follow.terminate()
            _, err = follow.communicate(timeout=30)
        assert follow.returncode == 0, err
        assert f"followed {source}" in err
