"""Bootstrap from SpiceDB and follow its Watch: the index answers exactly as SpiceDB.

SpiceDB embedded serves its whole gRPC API on a local port through the test fixture
``support.spicedb_front`` (every answer is SpiceDB's; its ExportBulkRelationships is
the fixture's composition of ReadRelationships pages). The schema has nested groups,
arrows (``parent->view``) and wildcards (``world.py``). After the bootstrap and after
every streamed batch of writes and deletes, every check of every user on every set is
asked of both and compared; a write's ZedToken is waited for through Leopard
(read-your-own-write); the follower is stopped and restarted with writes in between;
a revision older than SpiceDB's watch window stops it with a clear error (SpiceDB
embedded never expires one: that answer is emulated by a labelled stand-in), as does a
schema change, or with ``rebuild_on_gap`` the index is rebuilt; ``leopard build
--from`` and ``leopard follow`` run as commands. The token of a write that changed
nothing is honoured by the checkpoint Watch sends for its revision.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.spicedb_front import SpiceDBFront, missing_reason
from world import SCHEMA, disagreements, random_relationship

from ingest.upstream.spicedb import SpiceDBSource, bootstrap
from ingest.upstream.watch import SpiceDBFollower
from leopard.core.build import build_from_batches
from leopard.core.incremental import DeltaWriter
from leopard.core.index import Index
from leopard.errors import StaleIndex, UpstreamGap
from leopard.grpc.consistency import FULL, Freshness, StreamHead, Want
from leopard.grpc.status import Refusal
from leopard.http.freshness import Waits
from leopard.http.headwait import consumer_head, reach_head
from leopard.http.server import ConsumerThread
from leopard.model.config import Config
from leopard.model.tokens import decode_token, encode_token
from leopard.model.zedtoken import (
    SPICEDB_KEY,
    decode_zedtoken,
    encode_zedtoken,
    revision_number,
    zedtoken_position,
)

_MISSING = missing_reason()
pytestmark = [
    pytest.mark.spicedb,
    pytest.mark.skipif(_MISSING is not None, reason=f"SpiceDB not installed: {_MISSING}"),
]


@pytest.fixture
def front() -> Iterator[SpiceDBFront]:
    with SpiceDBFront(SCHEMA) as f:
        yield f


def initial(front: SpiceDBFront, rng: random.Random, n: int = 60) -> list[str]:
    rels = sorted({random_relationship(rng) for _ in range(n)})
    front.write(rels)
    return rels


class Running:
    """A follower run in a thread of this test."""

    def __init__(self, path: Path, front: SpiceDBFront, **kw: Any) -> None:
        self.follower = SpiceDBFollower(path, SpiceDBSource(front.target), **kw)
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


def stream(front: SpiceDBFront, rng: random.Random, rels: list[str], n: int) -> Any:
    """``n`` random writes, each a change: touches of absent relationships and
    deletes of present ones; the ZedToken of the last."""
    token = None
    for _ in range(n):
        if rels and rng.random() < 0.4:
            gone = rels.pop(rng.randrange(len(rels)))
            token = front.write([gone], operation="DELETE")
        else:
            new = random_relationship(rng)
            while new in rels:  # a touch of a present one changes nothing: no update
                new = random_relationship(rng)
            token = front.write([new])
            rels.append(new)
    return token


def test_bootstrap_records_the_revision_and_agrees(front: SpiceDBFront, tmp_path: Path) -> None:
    rng = random.Random(1)
    rels = initial(front, rng)
    path = tmp_path / "ix"
    report = bootstrap(path, SpiceDBSource(front.target))
    assert report.relationships == len(rels)
    assert report.method == "ExportBulkRelationships"
    with Index(path) as ix:
        assert ix.position == {
            SPICEDB_KEY: revision_number(decode_zedtoken(report.revision).revision)
        }
        assert decode_token(ix.version) == ix.position  # the version carries the revision
        assert disagreements(ix, front) == []
        # the write token of the data is honoured at once
        assert ix.wait_for(front.token.token, timeout=0) == ix.version


def test_follow_streamed_writes_and_deletes(front: SpiceDBFront, tmp_path: Path) -> None:
    rng = random.Random(2)
    rels = initial(front, rng)
    path = tmp_path / "ix"
    bootstrap(path, SpiceDBSource(front.target))
    run = Running(path, front)
    try:
        ix = run.follower.index
        for _ in range(6):
            token = stream(front, rng, rels, 15)
            # read-your-own-write: SpiceDB's ZedToken, waited for through Leopard
            ix.wait_for(token.token, timeout=15)
            assert disagreements(ix, front) == []
        # a delete and a re-touch in one request batch, a userset and a wildcard
        token = front.write(["folder:f0#viewer@user:*", "doc:d0#parent@folder:f1"])
        ix.wait_for(token.token, timeout=15)
        assert ix.check("user:stranger", "folder:f0#view")
        assert disagreements(ix, front) == []
        token = front.write(["folder:f0#viewer@user:*"], operation="DELETE")
        ix.wait_for(token.token, timeout=15)
        assert disagreements(ix, front) == []
        assert run.follower.stats.dead_letters == 0
    finally:
        run.stop()
    assert run.error is None


def test_a_token_not_yet_applied_is_refused_in_time(front: SpiceDBFront, tmp_path: Path) -> None:
    initial(front, random.Random(3))
    path = tmp_path / "ix"
    bootstrap(path, SpiceDBSource(front.target))
    token = front.write(["group:g0#member@user:u7"])  # no follower: never applied
    with Index(path) as ix:
        with pytest.raises(StaleIndex, match=r"has not reached version Gh"):
            ix.wait_for(token.token, timeout=0.2)


def test_a_noop_write_token_is_honoured_by_its_checkpoint(
    front: SpiceDBFront, tmp_path: Path
) -> None:
    from authzed.api import v1

    rels = initial(front, random.Random(4))
    path = tmp_path / "ix"
    bootstrap(path, SpiceDBSource(front.target))
    run = Running(path, front)
    try:
        ix = run.follower.index
        ix.wait_for(front.write(["group:g4#member@user:u6"]).token, timeout=15)
        # present already: Watch sends a checkpoint of its revision and no update
        noop = front.write(rels[:1])
        ix.wait_for(noop.token, timeout=15)
        nothing = front.client().DeleteRelationships(
            v1.DeleteRelationshipsRequest(
                relationship_filter=v1.RelationshipFilter(
                    resource_type="group", optional_resource_id="absent"
                )
            )
        )
        ix.wait_for(nothing.deleted_at.token, timeout=15)
    finally:
        run.stop()
    # the checkpoint's revision is stored: a restart resumes from there
    with Index(path) as ix:
        ix.wait_for(nothing.deleted_at.token, timeout=0)


def test_restart_resumes_from_the_stored_revision(front: SpiceDBFront, tmp_path: Path) -> None:
    rng = random.Random(5)
    rels = initial(front, rng)
    path = tmp_path / "ix"
    bootstrap(path, SpiceDBSource(front.target))
    for _ in range(3):
        run = Running(path, front)
        token = stream(front, rng, rels, 10)
        run.follower.index.wait_for(token.token, timeout=15)
        run.stop()
        stream(front, rng, rels, 10)  # while no follower runs
    run = Running(path, front)
    try:
        token = stream(front, rng, rels, 3)
        run.follower.index.wait_for(token.token, timeout=15)
        assert disagreements(run.follower.index, front) == []
    finally:
        run.stop()


def _too_old(path: Path) -> None:
    """Make the index's stored token name a revision far older than SpiceDB keeps."""
    with Index(path) as ix:
        writer = DeltaWriter(ix.reader)
        try:
            writer.apply([], None, source_state={SPICEDB_KEY: {"token": encode_zedtoken("1000")}})
        finally:
            writer.close()


def test_watching_from_before_a_schema_change_is_a_gap(front: SpiceDBFront, tmp_path: Path) -> None:
    # SpiceDB's memory datastore keeps every revision: from one before the schema was
    # written, the Watch replays the schema change, which the index cannot follow.
    initial(front, random.Random(6))
    path = tmp_path / "ix"
    bootstrap(path, SpiceDBSource(front.target))
    _too_old(path)
    follower = SpiceDBFollower(path, SpiceDBSource(front.target))
    with pytest.raises(UpstreamGap, match=r"the schema changed at revision 'Gh.*rebuild the index"):
        follower.run()
    with Index(path) as ix:  # stored: readers refuse tokens past it, naming the gap
        assert SPICEDB_KEY in ix.reader.source_state.get("gaps", {})
        token = front.write(["group:g0#member@user:u7"])
        with pytest.raises(StaleIndex, match="the schema changed"):
            ix.wait_for(token.token, timeout=0.1)


def test_a_revision_older_than_the_watch_window_is_a_gap(tmp_path: Path) -> None:
    # SpiceDB embedded never expires a revision; this answers the Watch as SpiceDB does
    # for one past its window (internal/services/shared/errors.go: OUT_OF_RANGE
    # "invalid zedtoken: revision has expired"): an emulation, labelled as such.
    def watch(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        context.abort(grpc.StatusCode.OUT_OF_RANGE, "invalid zedtoken: revision has expired")
        yield b""

    handler = grpc.method_handlers_generic_handler(
        "authzed.api.v1.WatchService", {"Watch": grpc.unary_stream_rpc_method_handler(watch)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        path = tmp_path / "ix"
        token = encode_zedtoken("1700000000000000000")
        build_from_batches(
            [],
            path,
            Config(),
            position={SPICEDB_KEY: 1700000000000000000},
            source_state={SPICEDB_KEY: {"token": token}},
            max_shrink=None,
        )
        follower = SpiceDBFollower(path, SpiceDBSource(f"127.0.0.1:{port}"))
        with pytest.raises(
            UpstreamGap,
            match=r"no longer has the changes after the index's "
            r"revision .*revision has expired.*older than SpiceDB's watch window",
        ):
            follower.run()
    finally:
        server.stop(None)


def test_rebuild_on_gap(front: SpiceDBFront, tmp_path: Path) -> None:
    rng = random.Random(7)
    rels = initial(front, rng)
    path = tmp_path / "ix"
    bootstrap(path, SpiceDBSource(front.target))
    _too_old(path)
    stream(front, rng, rels, 10)
    run = Running(path, front, rebuild_on_gap=True)
    try:
        token = stream(front, rng, rels, 5)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                run.follower.index.wait_for(token.token, timeout=1)
                break
            except StaleIndex:
                continue
        assert run.follower.rebuilds == 1
        assert disagreements(run.follower.index, front) == []
    finally:
        run.stop()
    assert run.error is None


def test_build_from_and_follow_commands(front: SpiceDBFront, tmp_path: Path) -> None:
    rng = random.Random(8)
    rels = initial(front, rng)
    path = tmp_path / "ix"
    leopard = [sys.executable, "-m", "leopard"]
    out = subprocess.run(
        [*leopard, "build", "--index", str(path), "--from", f"spicedb:{front.target}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"read {len(rels)} relationships from spicedb:{front.target}" in out.stdout
    follow = subprocess.Popen(
        [*leopard, "follow", "--index", str(path), "--source", f"spicedb:{front.target}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        token = stream(front, rng, rels, 10)
        check = [*leopard, "check", "--index", str(path), "--at-least", token.token]
        out = subprocess.run(
            [*check, "--max-wait", "20", "user:u1", "group:g0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        with Index(path) as ix:
            ix.wait_for(token.token, timeout=10)
            assert disagreements(ix, front) == []
    finally:
        follow.terminate()
        _, err = follow.communicate(timeout=30)
    assert follow.returncode == 0, err
    assert "followed spicedb:" in err


def _served_follower(front: SpiceDBFront, tmp_path: Path, seed: int) -> tuple[Any, Any, str]:
    """An index of ``front``'s random relationships, following it in this process and
    served over gRPC: the follower, the server and its address."""
    from leopard.grpc.server import GrpcOptions, GrpcServer

    initial(front, random.Random(seed))
    path = tmp_path / "ix"
    bootstrap(path, SpiceDBSource(front.target))
    run = Running(path, front)
    server = GrpcServer(run.follower.index, GrpcOptions(port=0, max_wait=15.0))
    return run, server, server.start()


def _g0_member(target: str, user: str, consistency: Any) -> Any:
    """CheckPermission of ``user`` in group:g0#member, asked of the gRPC server at
    ``target`` with ``consistency``."""
    from authzed.api import v1

    return v1.InsecureClient(target, "unused").CheckPermission(
        v1.CheckPermissionRequest(
            resource=v1.ObjectReference(object_type="group", object_id="g0"),
            permission="member",
            subject=v1.SubjectReference(
                object=v1.ObjectReference(object_type="user", object_id=user)
            ),
            consistency=consistency,
        )
    )


def test_spicedb_api_waits_for_a_spicedb_write_token(front: SpiceDBFront, tmp_path: Path) -> None:
    """Read your own write through Leopard's SpiceDB API: the ZedToken SpiceDB gave a
    write, as ``at_least_as_fresh``, is waited for while the index follows SpiceDB;
    an index that does not follow SpiceDB refuses it as SpiceDB refuses a token it
    does not know."""
    from authzed.api import v1

    from leopard.api import build_index
    from leopard.grpc.server import GrpcOptions, GrpcServer

    run, server, target = _served_follower(front, tmp_path, 5)
    try:
        for user in ("fresh1", "fresh2", "fresh3"):
            token = front.write([f"group:g0#member@user:{user}"])
            answer = _g0_member(target, user, v1.Consistency(at_least_as_fresh=token))
            assert answer.permissionship == v1.CheckPermissionResponse.PERMISSIONSHIP_HAS_PERMISSION
            wanted = revision_number(decode_zedtoken(token.token).revision)
            assert decode_token(answer.checked_at.token)[SPICEDB_KEY] >= wanted
    finally:
        server.stop(grace=1.0)
        run.stop()
    assert run.error is None
    # an index that does not follow SpiceDB: the same token is foreign to it
    plain = tmp_path / "plain"
    build_index([["group:g0#member@user:fresh1"]], plain)
    with Index(plain) as ix:
        server = GrpcServer(ix, GrpcOptions(port=0))
        target = server.start()
        try:
            with pytest.raises(grpc.RpcError) as refused:
                _g0_member(target, "fresh1", v1.Consistency(at_least_as_fresh=token))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        finally:
            server.stop(grace=1.0)


def test_spicedb_api_answers_a_spicedb_snapshot_of_the_revision_it_is_at(
    front: SpiceDBFront, tmp_path: Path
) -> None:
    """``at_exact_snapshot`` with SpiceDB's own ZedToken, at an index that follows
    SpiceDB: answered when it names the revision the index is at (as SpiceDB answers
    it), refused as SpiceDB refuses a revision it no longer keeps when it names an
    older one, naming both, never as garbage."""
    from authzed.api import v1

    run, server, target = _served_follower(front, tmp_path, 6)

    def ask(token: v1.ZedToken) -> Any:
        return _g0_member(target, "snap", v1.Consistency(at_exact_snapshot=token))

    try:
        older = front.write(["group:g1#member@user:before-snap"])
        token = front.write(["group:g0#member@user:snap"])
        run.follower.index.wait_for(encode_token(zedtoken_position(token.token)), 15)
        revision = decode_token(run.follower.index.version)[SPICEDB_KEY]
        mine = v1.ZedToken(token=encode_zedtoken(str(revision)))
        answer = ask(mine)
        assert answer.permissionship == v1.CheckPermissionResponse.PERMISSIONSHIP_HAS_PERMISSION
        assert answer.checked_at.token == run.follower.index.version
        with pytest.raises(grpc.RpcError) as refused:
            ask(older)
        assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert "revision has expired" in refused.value.details()
        assert run.follower.index.version in refused.value.details()
    finally:
        server.stop(grace=1.0)
        run.stop()
    assert run.error is None


class _SlowWatch(SpiceDBFront):
    """SpiceDB whose Watch sends each response half a second late, as a datastore
    polled for changes does: a write is acknowledged before the Watch tells of it."""

    def _streamed(self, method: str) -> Any:
        inner = super()._streamed(method)
        if not method.endswith("/Watch"):
            return inner

        def handle(request: bytes, context: Any) -> Any:
            for raw in inner(request, context):
                time.sleep(0.5)
                yield raw

        return handle


def test_fully_consistent_waits_for_spicedbs_head_not_the_watch(tmp_path: Path) -> None:
    """A fully consistent answer has every write SpiceDB acknowledged before the
    request, though its Watch has not sent it yet: the follower asks SpiceDB its head."""
    from authzed.api import v1

    with _SlowWatch(SCHEMA) as front:
        initial(front, random.Random(8))
        path = tmp_path / "ix"
        bootstrap(path, SpiceDBSource(front.target))
        follower = SpiceDBFollower(path, SpiceDBSource(front.target))
        fresh = Freshness(follower.index, max_wait=20, head=StreamHead(follower))

        def follow() -> None:
            with pytest.raises(UpstreamGap):  # the schema change below stops it
                follower.run()

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        try:
            for i in range(3):  # SpiceDB's API: fully_consistent
                front.write([f"group:g{i}#member@user:fresh{i}"])
                fresh.reach(Want(FULL))
                assert follower.index.check(f"user:fresh{i}", f"group:g{i}#member")

            running = ConsumerThread(follower)
            running._thread = thread  # the follower as the server runs it

            async def higher() -> None:  # OpenFGA's API: HIGHER_CONSISTENCY
                waits = Waits(follower.index)
                waits.bind()
                await reach_head(follower.index, waits, consumer_head(follower.index, running), 20)

            for i in range(3, 5):
                front.write([f"group:g{i}#member@user:fresh{i}"])
                asyncio.run(higher())
                assert follower.index.check(f"user:fresh{i}", f"group:g{i}#member")
            # a follower stopped (here by a schema change) is said at once, not waited on
            changed = SCHEMA + "\ndefinition extra {}"
            front.client().WriteSchema(v1.WriteSchemaRequest(schema=changed))
            thread.join(30)
            started = time.monotonic()
            with pytest.raises(Refusal, match="the follower has stopped: .*schema changed"):
                fresh.reach(Want(FULL))
            assert time.monotonic() - started < 5
        finally:
            follower.stop()
            thread.join(30)
