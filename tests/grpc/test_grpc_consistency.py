"""SpiceDB's consistency modes over Leopard's versions, through the authzed client.

An index of the docs world is built at stream position ``changes:0 = 0`` and served
over gRPC in this process; changes are applied to it through the incremental layer
(``DeltaWriter``, what the consumer calls) as a stream would, each carrying the next
position. Then:

* ``minimize_latency`` (or no consistency) answers at once, at the current version;
* ``at_least_as_fresh`` with a version the index has not reached waits, bounded by
  ``max_wait``, and is answered as soon as a change brings the index there; not
  reached in time it is refused as SpiceDB refuses a revision it does not have
  (compared with SpiceDB embedded, given a ZedToken of its own from the future);
* ``fully_consistent`` of an index built from files, which follows no stream, is the
  current version; of this one, whose stream this server does not apply (the
  ``DeltaWriter`` stands for a consumer in another process), it is UNAVAILABLE saying
  why, never the current version passed off as the head (with a consumer in the
  process, ``test_grpc_serve.py`` follows a real broker);
* ``at_exact_snapshot`` is answered at the current version and refused, with SpiceDB's
  code, for any other;
* a ZedToken that is no version at all is INVALID_ARGUMENT, as in SpiceDB.

All four methods Leopard answers are asked.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from authzed.api import v1
from docs_world import SCHEMA, LeopardGrpc, build, tuples
from support.spicedb_front import SpiceDBFront, missing_reason

import leopard
from leopard.core.incremental import DeltaWriter
from leopard.model.names import parse_tuple
from leopard.model.tokens import decode_token, encode_token
from leopard.model.zedtoken import encode_zedtoken

PARTITION = "changes:0"
HAS = v1.CheckPermissionResponse.PERMISSIONSHIP_HAS_PERMISSION
NO = v1.CheckPermissionResponse.PERMISSIONSHIP_NO_PERMISSION
NEWBIE = v1.SubjectReference(object=v1.ObjectReference(object_type="user", object_id="newbie"))
FRESH = v1.ObjectReference(object_type="doc", object_id="fresh")
#: the change the waits wait for: the new user may view the new doc
CHANGE = "doc:fresh#viewer@user:newbie"

_MISSING = missing_reason()
needs_spicedb = pytest.mark.skipif(
    _MISSING is not None, reason=f"SpiceDB not installed: {_MISSING}"
)


def at(version: str, *, exact: bool = False) -> Any:
    token = v1.ZedToken(token=version)
    return v1.Consistency(at_exact_snapshot=token) if exact else v1.Consistency(
        at_least_as_fresh=token)  # fmt: skip


class World:
    """Leopard serving the docs world, and a writer applying changes as a stream would."""

    def __init__(self, directory: Path, max_wait: float) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "docs.zed").write_text(SCHEMA)
        path = directory / "idx"
        leopard.build_index([tuples()], path, schema=directory / "docs.zed",
                            position={PARTITION: 0})  # fmt: skip
        self.server = LeopardGrpc(path, max_wait=max_wait)
        self.writer = DeltaWriter(self.server.index.reader)
        self.client = self.server.client()
        self.offset = 0

    @property
    def version(self) -> str:
        return self.server.index.version

    def apply(self, *changes: str) -> str:
        """Apply ``+tuple`` / ``-tuple`` changes at the next offset; the new version."""
        self.offset += 1
        self.writer.apply(
            [("touch" if c[0] == "+" else "delete", parse_tuple(c[1:])) for c in changes],
            {PARTITION: self.offset},
        )
        return self.version

    def ahead(self, by: int = 1) -> str:
        """A version ``by`` changes beyond the index's."""
        return encode_token({PARTITION: self.offset + by})

    def close(self) -> None:
        self.writer.close()
        self.server.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """Waits of at most 5 s: long enough never to end before a change lands."""
    w = World(tmp_path / "patient", max_wait=5.0)
    yield w
    w.close()


@pytest.fixture
def hasty(tmp_path: Path) -> Iterator[World]:
    """Waits of at most 0.4 s."""
    w = World(tmp_path / "hasty", max_wait=0.4)
    yield w
    w.close()


# -- the four methods, asked about the change ----------------------------------------------


def check(c: Any, consistency: Any = None) -> tuple[bool, str]:
    answer = c.CheckPermission(v1.CheckPermissionRequest(
        resource=FRESH, permission="view", subject=NEWBIE, consistency=consistency))  # fmt: skip
    return answer.permissionship == HAS, answer.checked_at.token


def check_bulk(c: Any, consistency: Any = None) -> tuple[bool, str]:
    item = v1.CheckBulkPermissionsRequestItem(resource=FRESH, permission="view", subject=NEWBIE)
    answer = c.CheckBulkPermissions(
        v1.CheckBulkPermissionsRequest(items=[item, item], consistency=consistency)
    )
    (first, second) = [p.item.permissionship for p in answer.pairs]
    assert first == second
    return first == HAS, answer.checked_at.token


def lookup_resources(c: Any, consistency: Any = None) -> tuple[bool, str]:
    answers = list(c.LookupResources(v1.LookupResourcesRequest(
        resource_object_type="doc", permission="view", subject=NEWBIE,
        consistency=consistency)))  # fmt: skip
    tokens = {a.looked_up_at.token for a in answers}
    assert len(tokens) <= 1  # one version for the whole stream
    return "fresh" in [a.resource_object_id for a in answers], tokens.pop() if tokens else ""


def lookup_subjects(c: Any, consistency: Any = None) -> tuple[bool, str]:
    answers = list(c.LookupSubjects(v1.LookupSubjectsRequest(
        resource=FRESH, permission="view", subject_object_type="user",
        consistency=consistency)))  # fmt: skip
    tokens = {a.looked_up_at.token for a in answers}
    assert len(tokens) <= 1
    found = "newbie" in [a.subject.subject_object_id for a in answers]
    return found, tokens.pop() if tokens else ""


ASK: dict[str, Callable[..., tuple[bool, str]]] = {
    "CheckPermission": check,
    "CheckBulkPermissions": check_bulk,
    "LookupResources": lookup_resources,
    "LookupSubjects": lookup_subjects,
}
METHODS = list(ASK)


def refusal(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


# -- minimize_latency and no consistency -----------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_minimize_latency_answers_at_once_at_the_current_version(world: World, method: str) -> None:
    ask = ASK[method]
    latest = v1.Consistency(minimize_latency=True)
    member, token = ask(world.client, latest)
    assert member is False and token in (world.version, "")  # a lookup may stream nothing
    version = world.apply("+" + CHANGE)
    for consistency in (latest, None):
        started = time.monotonic()
        assert ask(world.client, consistency) == (True, version)
        assert time.monotonic() - started < 1.0
    world.apply("-" + CHANGE)
    assert ask(world.client, latest)[0] is False


# -- at_least_as_fresh -----------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_at_least_as_fresh_waits_until_the_change_is_applied(world: World, method: str) -> None:
    """A version ahead of the index: the call waits, and is answered once a change
    brings the index there, with that version."""
    ahead = world.ahead()
    landed = threading.Event()

    def write_soon() -> None:
        time.sleep(0.5)
        world.apply("+" + CHANGE)
        landed.set()

    writer = threading.Thread(target=write_soon)
    started = time.monotonic()
    writer.start()
    try:
        member, token = ASK[method](world.client, at(ahead))
    finally:
        writer.join()
    waited = time.monotonic() - started
    assert landed.is_set() and member is True
    assert decode_token(token) == decode_token(ahead) == {PARTITION: 1}
    assert 0.45 <= waited < 4.5  # waited for the change, not for max_wait


def test_a_waiting_call_does_not_hold_up_the_others(world: World) -> None:
    ahead = world.ahead()
    outcome: list[Any] = []
    waiting = threading.Thread(target=lambda: outcome.append(check(world.client, at(ahead))))
    waiting.start()
    try:
        time.sleep(0.2)
        for _ in range(20):  # answered while the other call waits
            started = time.monotonic()
            assert check(world.client) == (False, world.version)
            assert time.monotonic() - started < 0.5
        assert waiting.is_alive() and not outcome
        world.apply("+" + CHANGE)
    finally:
        waiting.join(10)
    assert outcome and outcome[0][0] is True


@pytest.mark.parametrize("method", METHODS)
def test_an_older_or_equal_version_is_answered_at_once(world: World, method: str) -> None:
    first = world.version
    current = world.apply("+" + CHANGE)
    for version in (first, current):
        started = time.monotonic()
        assert ASK[method](world.client, at(version)) == (True, current)
        assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("method", ["CheckPermission", "LookupResources", "LookupSubjects"])
def test_a_version_not_reached_in_time_is_out_of_range(hasty: World, method: str) -> None:
    ahead = hasty.ahead(5)
    started = time.monotonic()
    refused = refusal(lambda: ASK[method](hasty.client, at(ahead)))
    waited = time.monotonic() - started
    assert refused.code() == grpc.StatusCode.OUT_OF_RANGE  # type: ignore[attr-defined]
    details = refused.details()  # type: ignore[attr-defined]
    assert details.startswith("invalid zedtoken: revision was invalid")
    assert ahead in details and hasty.version in details  # what was wanted, and reached
    assert 0.4 <= waited < 3.0  # bounded by max_wait


def bulk_of_every_kind(c: Any, consistency: Any) -> Any:
    """A bulk check of a good item, an unknown permission, a wildcard subject."""
    wildcard = v1.SubjectReference(object=v1.ObjectReference(object_type="user", object_id="*"))
    return c.CheckBulkPermissions(v1.CheckBulkPermissionsRequest(items=[
        v1.CheckBulkPermissionsRequestItem(resource=FRESH, permission="view", subject=NEWBIE),
        v1.CheckBulkPermissionsRequestItem(resource=FRESH, permission="nope", subject=NEWBIE),
        v1.CheckBulkPermissionsRequestItem(resource=FRESH, permission="view", subject=wildcard),
    ], consistency=consistency))  # fmt: skip


def test_a_bulk_check_not_reached_in_time_is_out_of_range_item_by_item(hasty: World) -> None:
    """As SpiceDB answers a CheckBulkPermissions at a revision it does not have: the
    request succeeds, every item carries OUT_OF_RANGE, checked at the version asked."""
    ahead = hasty.ahead()
    started = time.monotonic()
    answer = bulk_of_every_kind(hasty.client, at(ahead))
    assert time.monotonic() - started >= 0.4
    assert answer.checked_at.token == ahead
    assert len(answer.pairs) == 3
    for pair in answer.pairs:
        assert pair.WhichOneof("response") == "error"
        assert pair.error.code == grpc.StatusCode.OUT_OF_RANGE.value[0]
        assert pair.error.message.startswith("invalid zedtoken: revision was invalid")
    # reached, the same request is answered item by item
    hasty.apply("+" + CHANGE)
    kinds = [p.WhichOneof("response") for p in bulk_of_every_kind(hasty.client, at(ahead)).pairs]
    assert kinds == ["item", "error", "error"]


def _spicedb_future(token: str, by_ns: int = 10**12) -> str:
    """A SpiceDB ZedToken ``by_ns`` after ``token``: its protobuf (``DecodedZedToken``,
    field 3: the V1 token, whose field 1 is the revision, field 2 the datastore id)
    with the revision moved on."""
    raw = base64.b64decode(token + "=" * (-len(token) % 4))
    assert raw[0] == 0x1A and raw[2] == 0x0A, raw  # field 3, holding field 1 first
    revision = raw[4 : 4 + raw[3]]
    rest = raw[4 + raw[3] :]
    moved = str(int(revision) + by_ns).encode()
    inner = b"\x0a" + bytes([len(moved)]) + moved + rest
    return base64.b64encode(b"\x1a" + bytes([len(inner)]) + inner).decode()


@needs_spicedb
@pytest.mark.spicedb
def test_a_version_not_reached_is_refused_with_spicedb_code(hasty: World) -> None:
    """SpiceDB, asked at least as fresh as a revision it does not have (one of its own
    ZedTokens, moved into the future), answers OUT_OF_RANGE ``invalid zedtoken: ...
    revision was invalid``, at once; so does Leopard after its wait; and likewise for
    ``at_exact_snapshot``."""
    with SpiceDBFront(SCHEMA) as front:
        written = front.write(tuples()[:20])
        future = _spicedb_future(written.token)
        for method in METHODS:
            for exact in (False, True):
                if method == "CheckBulkPermissions" and not exact:
                    continue  # item by item: below
                theirs = refusal(lambda: ASK[method](front.client(), at(future, exact=exact)))  # noqa: B023
                ours = refusal(lambda: ASK[method](hasty.client, at(hasty.ahead(), exact=exact)))  # noqa: B023
                assert ours.code() == theirs.code() == grpc.StatusCode.OUT_OF_RANGE  # type: ignore[attr-defined]
                mine, spicedb = ours.details(), theirs.details()  # type: ignore[attr-defined]
                assert "revision was invalid" in mine and "revision was invalid" in spicedb
                prefix = "invalid revision: " if exact else "invalid zedtoken: "
                assert mine.startswith(prefix) and spicedb.startswith(prefix)
        ahead = hasty.ahead()
        ours_bulk = bulk_of_every_kind(hasty.client, at(ahead))
        theirs_bulk = bulk_of_every_kind(front.client(), at(future))
        assert (ours_bulk.checked_at.token, theirs_bulk.checked_at.token) == (ahead, future)
        for a, b in zip(ours_bulk.pairs, theirs_bulk.pairs, strict=True):
            assert a.error.code == b.error.code == grpc.StatusCode.OUT_OF_RANGE.value[0]


# -- fully_consistent ------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_fully_consistent_of_an_index_that_follows_no_stream_is_the_current_version(
    tmp_path: Path, method: str
) -> None:
    full = v1.Consistency(fully_consistent=True)
    with LeopardGrpc(build(tmp_path, [*tuples(), CHANGE])) as leo:
        started = time.monotonic()
        assert ASK[method](leo.client(), full) == (True, leo.index.version)
        assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("method", METHODS)
def test_fully_consistent_of_a_stream_applied_elsewhere_is_refused_saying_why(
    world: World, method: str
) -> None:
    """The index follows ``changes``, applied by a writer that is not this server's
    consumer (as ``leopard follow`` or ``consume`` in another process): this server
    cannot know the stream's head, so the current version is no fully consistent
    answer."""
    full = v1.Consistency(fully_consistent=True)
    world.apply("+" + CHANGE)
    refused = refusal(lambda: ASK[method](world.client, full))
    assert refused.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    details = refused.details()  # type: ignore[attr-defined]
    assert "follows topic 'changes'" in details
    assert "this server does not apply that stream" in details
    assert "--upstream-spicedb" in details


# -- at_exact_snapshot -----------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_at_exact_snapshot_is_answered_at_the_current_version_only(
    world: World, method: str
) -> None:
    ask = ASK[method]
    before = world.version
    assert ask(world.client, at(before, exact=True))[0] is False
    after = world.apply("+" + CHANGE)
    assert ask(world.client, at(after, exact=True)) == (True, after)
    # the index keeps no past versions: an older one has expired, as in SpiceDB
    # beyond its garbage-collection window; one not reached was never there
    for version, why in ((before, "revision has expired"), (world.ahead(), "revision was invalid")):
        refused = refusal(lambda: ask(world.client, at(version, exact=True)))  # noqa: B023
        assert refused.code() == grpc.StatusCode.OUT_OF_RANGE  # type: ignore[attr-defined]
        details = refused.details()  # type: ignore[attr-defined]
        assert details.startswith(f"invalid revision: {why}: ")
        assert version in details and after in details
    # an exact snapshot never waits
    started = time.monotonic()
    refusal(lambda: ask(world.client, at(world.ahead(), exact=True)))
    assert time.monotonic() - started < 1.0


# -- tokens that are no version ------------------------------------------------------------

GARBAGE = ["garbage", "", "v1.", "v1.e30x", "v1." + base64.urlsafe_b64encode(b"[1,2]").decode()]


@pytest.mark.parametrize("method", METHODS)
def test_a_garbage_zedtoken_is_invalid_argument(world: World, method: str) -> None:
    for text in GARBAGE:
        for exact in (False, True):
            refused = refusal(lambda: ASK[method](world.client, at(text, exact=exact)))  # noqa: B023
            assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, text  # type: ignore[attr-defined]
            assert refused.details() == "invalid revision requested"  # type: ignore[attr-defined]


@needs_spicedb
@pytest.mark.spicedb
def test_garbage_and_foreign_zedtokens_are_refused_as_spicedb_refuses_garbage(
    world: World,
) -> None:
    """The same garbage to SpiceDB: the same code and words. A real SpiceDB ZedToken
    means nothing to the index; without an upstream to read it, it is garbage here."""
    with SpiceDBFront(SCHEMA) as front:
        written = front.write(tuples()[:5])
        for method in METHODS:
            for text in GARBAGE:
                theirs = refusal(lambda: ASK[method](front.client(), at(text)))  # noqa: B023
                ours = refusal(lambda: ASK[method](world.client, at(text)))  # noqa: B023
                assert (ours.code(), ours.details()) == (theirs.code(), theirs.details())  # type: ignore[attr-defined]
            foreign = refusal(lambda: ASK[method](world.client, at(written.token)))  # noqa: B023
            assert foreign.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


# -- versions no wait can reach -------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_a_version_of_a_topic_not_followed_is_waited_for_then_named(
    hasty: World, method: str
) -> None:
    """The index follows topic ``changes``; a version of another topic may yet be
    reached (a consumer of several topics applies one first), so it is waited for, and
    the OUT_OF_RANGE after the wait names the topic asked for and the one followed."""
    other = encode_token({"other-topic:0": 1})
    started = time.monotonic()
    if method == "CheckBulkPermissions":  # item by item
        item = v1.CheckBulkPermissionsRequestItem(resource=FRESH, permission="view",
                                                  subject=NEWBIE)  # fmt: skip
        request = v1.CheckBulkPermissionsRequest(items=[item], consistency=at(other))
        (pair,) = hasty.client.CheckBulkPermissions(request).pairs
        code, said = pair.error.code, pair.error.message
    else:
        refused = refusal(lambda: ASK[method](hasty.client, at(other)))
        code, said = refused.code().value[0], refused.details()  # type: ignore[attr-defined]
    assert time.monotonic() - started >= 0.4
    assert code == grpc.StatusCode.OUT_OF_RANGE.value[0]
    assert "topic 'other-topic'" in said and "it follows topic 'changes'" in said, said


def test_a_version_of_a_followed_topic_not_reached_still_waits(hasty: World) -> None:
    """A partition of the followed topic that the index has not seen yet may be one the
    topic gained (read from its start once assigned): waited for, then OUT_OF_RANGE
    saying that nothing of it was applied."""
    started = time.monotonic()
    refused = refusal(lambda: check(hasty.client, at(encode_token({"changes:7": 1}))))
    assert time.monotonic() - started >= 0.4
    assert refused.code() == grpc.StatusCode.OUT_OF_RANGE  # type: ignore[attr-defined]
    assert "applied nothing of changes:7" in refused.details()  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", METHODS)
def test_a_spicedb_zedtoken_says_the_index_holds_no_revision(world: World, method: str) -> None:
    """A genuine SpiceDB ZedToken at an index that holds no SpiceDB revision (and has
    no upstream): SpiceDB's code and words for an unusable revision, and why."""
    zed = encode_zedtoken("1700000000000000000")
    refused = refusal(lambda: ASK[method](world.client, at(zed)))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    said = refused.details()  # type: ignore[attr-defined]
    assert said.startswith("invalid revision requested: "), said
    assert "is a SpiceDB ZedToken" in said and "holds no SpiceDB revision" in said, said
    assert "--upstream-spicedb" in said, said


def test_a_spicedb_token_after_the_spicedb_stream_stopped_at_a_gap_names_the_gap() -> None:
    """An index whose SpiceDB stream stopped at a gap holds no SpiceDB revision in its
    version any more: a SpiceDB ZedToken is then refused naming the gap, not with
    SpiceDB's bare words for garbage."""
    from types import SimpleNamespace

    from leopard.grpc.answering import Answering

    stopped = "SpiceDB's Watch cannot resume from revision 7 (the datastore was replaced)"
    index = SimpleNamespace(position={}, gaps={"spicedb": stopped}, topics=())
    answering = Answering(index, None, None)  # type: ignore[arg-type]
    said = answering._foreign(encode_zedtoken("5"))
    assert said.startswith("invalid revision requested: ")
    assert "stopped following SpiceDB at a gap" in said and stopped in said
