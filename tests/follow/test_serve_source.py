"""``leopard serve --source spicedb:TARGET``: the follower runs in the serving process.

A real ``leopard serve`` child process follows SpiceDB embedded (served over gRPC by
the test fixture ``support.spicedb_front``); a write to SpiceDB returns a ZedToken, and
``GET /v1/check?at_least=<that ZedToken>`` answers with the write applied: an
application reads its own SpiceDB write over Leopard's HTTP. /readyz says ready once
the Watch runs; the server stops cleanly on SIGTERM. ``--source openfga:URL`` follows
an OpenFGA store the same way (the local replay of OpenFGA's API).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.http import call, leopard_serve, q, wait_until
from support.openfga_replay import OpenFGAReplay
from support.spicedb_front import SpiceDBFront, missing_reason
from world import SCHEMA, random_relationship

from ingest.kafka.local_broker import free_port
from ingest.upstream.openfga import OpenFGASource, bootstrap_openfga
from ingest.upstream.spicedb import SpiceDBSource, bootstrap
from leopard.model.tokens import decode_token
from leopard.model.zedtoken import SPICEDB_KEY, zedtoken_position

_MISSING = missing_reason()
needs_spicedb = pytest.mark.skipif(
    _MISSING is not None, reason=f"SpiceDB not installed: {_MISSING}"
)
#: the model of world.py's schema in OpenFGA's DSL
OPENFGA_MODEL = """
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


@pytest.mark.spicedb
@needs_spicedb
def test_serve_source_reads_its_own_spicedb_write(tmp_path: Path) -> None:
    rng = random.Random(21)
    with SpiceDBFront(SCHEMA) as front:
        front.write(sorted({random_relationship(rng) for _ in range(40)}))
        path = tmp_path / "ix"
        bootstrap(path, SpiceDBSource(front.target))
        source = f"spicedb:{front.target}"
        with leopard_serve("--index", str(path), "--source", source) as (url, proc):
            assert wait_until(lambda: call(url, "GET", "/readyz").status == 200), call(
                url, "GET", "/readyz"
            ).json
            for i in range(5):
                # a user no relationship names yet: false until the write is applied
                user = f"user:new{i}"
                token = front.write([f"group:g{i}#member@{user}"]).token
                answer = call(
                    url,
                    "GET",
                    "/v1/check?"
                    + q(subject=user, group=f"group:g{i}#member", at_least=token, max_wait="10"),
                )
                assert answer.status == 200, answer.json
                assert answer.json["member"] is True
                # the answer's version carries SpiceDB's revision, at least the write's
                reached = decode_token(answer.json["token"])[SPICEDB_KEY]
                assert reached >= zedtoken_position(token)[SPICEDB_KEY]
                # a group nesting the new one, through the arrow of a folder
                folder = f"folder:f{i % 4}"
                token = front.write(
                    [f"{folder}#viewer@group:g{i}#member", f"doc:d{i}#parent@{folder}"]
                ).token
                answer = call(
                    url,
                    "GET",
                    "/v1/check?" + q(subject=user, group=f"doc:d{i}#view", at_least=token),
                )
                assert answer.status == 200 and answer.json["member"] is True, answer.json
            ready = call(url, "GET", "/readyz").json
            assert ready["ready"] and ready["lag"] == 0, ready
            proc.send_signal(signal.SIGTERM)
            # uvicorn stops (the follower after its batch), then re-raises the signal
            assert proc.wait(30) in (0, -signal.SIGTERM)
            assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


def test_serve_source_follows_an_openfga_store(tmp_path: Path) -> None:
    # the store is the local replay of OpenFGA's API (support.openfga_replay: no OpenFGA
    # server runs here); OpenFGA's writes return no token, so the answer is polled for
    with OpenFGAReplay(OPENFGA_MODEL) as store:
        store.write(["group:g0#member@user:u0", "folder:f0#viewer@group:g0#member"])
        path = tmp_path / "ix"
        bootstrap_openfga(path, OpenFGASource(store.url, store.store_id))
        source = f"openfga:{store.url}"
        args = ("--index", str(path), "--source", source, "--store-id", store.store_id)
        with leopard_serve(*args, "--interval", "0.05") as (url, proc):
            assert wait_until(lambda: call(url, "GET", "/readyz").status == 200)
            store.write(["group:g0#member@user:late", "doc:d0#parent@folder:f0"])

            def member() -> bool:
                ask = q(subject="user:late", group="doc:d0#view")
                return bool(call(url, "GET", "/v1/check?" + ask).json["member"])

            assert wait_until(member)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) in (0, -signal.SIGTERM)


def test_the_model_id_is_the_one_openfga_gave(tmp_path: Path) -> None:
    """Applications pin the model id OpenFGA gave (``authorization_model_id`` in every
    request): an index built from a store serves its model under that id and answers
    requests naming it, where a derived id made them all 'not found'. A model written
    after the build is another model: named, it is refused (no upstream here)."""
    with OpenFGAReplay(OPENFGA_MODEL) as store:
        store.write(["group:g0#member@user:u0", "folder:f0#viewer@group:g0#member"])
        given = store.models[-1]["id"]
        path = tmp_path / "ix"
        bootstrap_openfga(path, OpenFGASource(store.url, store.store_id))
        later = store.write_model(OPENFGA_MODEL + "type extra\n")
        with leopard_serve("--index", str(path), "--store-id", store.store_id) as (url, _):
            base = f"/stores/{store.store_id}"
            listed = call(url, "GET", base + "/authorization-models").json
            assert [m["id"] for m in listed["authorization_models"]] == [given], listed
            read = call(url, "GET", f"{base}/authorization-models/{given}")
            assert read.status == 200 and read.json["authorization_model"]["id"] == given
            for model, status in ((given, 200), (later, 400)):
                asked = {"tuple_key": {"user": "user:u0", "relation": "view",
                                       "object": "folder:f0"},
                         "authorization_model_id": model}  # fmt: skip
                a = call(url, "POST", base + "/check", json.dumps(asked))
                assert a.status == status, a.body
            assert a.json["code"] == "authorization_model_not_found"
            assert given in a.json["message"]


def test_an_index_without_a_revision_is_refused_at_the_start(tmp_path: Path) -> None:
    """An index built from files records no SpiceDB revision: ``serve --source`` and
    ``follow`` refuse it before serving, in one line naming it (a shard: saying how
    shards follow SpiceDB), not with a traceback once serving."""
    snapshot = tmp_path / "t.txt"
    snapshot.write_text("group:g0#member@user:u1\n")
    leopard = [sys.executable, "-m", "leopard"]
    plain, sharded = tmp_path / "ix", tmp_path / "sharded"
    for argv in (["--index", str(plain)], ["--index", str(sharded), "--shards", "2"]):
        subprocess.run([*leopard, "build", str(snapshot), *argv], check=True, capture_output=True)
    with SpiceDBFront(SCHEMA) as front:
        source = f"spicedb:{front.target}"
        runs = [
            (["serve", "--index", str(plain), "--port", str(free_port())], "built from files"),
            (["follow", "--index", str(plain)], "built from files"),
            (["serve", "--index", str(sharded / "shard-0"), "--port", str(free_port())], "a shard"),
        ]
        for argv, why in runs:
            done = subprocess.run(
                [*leopard, *argv, "--source", source], capture_output=True, text=True, timeout=60
            )
            assert done.returncode != 0, done.stderr
            assert "records no SpiceDB revision" in done.stderr and why in done.stderr
            assert "Traceback" not in done.stderr, done.stderr
