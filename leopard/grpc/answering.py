"""What every method Leopard answers shares: the index, freshness, forwarding, refusals.

A request is answered from the index when it asks about an indexed permission with
nothing only SpiceDB can evaluate (a caveat ``context``, ``with_tracing``); anything
else goes to the SpiceDB behind Leopard when one is configured, unchanged but for a
Leopard ZedToken (``leopard.grpc.forward``), and is refused otherwise:
FAILED_PRECONDITION for what the schema does not define, UNIMPLEMENTED naming why the
index cannot answer (``doc#view_ok is not indexed: uses an exclusion``) and what
would.

SpiceDB counts a userset in its own set, and in every set of the same object that
includes its relation through plain ``+ relation`` terms, even with no relationship
stored (``doc:d#viewer`` is in ``doc:d#view = viewer + ...``). The index counts them
so (``leopard.core.usersets``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from leopard.core.freshness import followed_elsewhere, unreachable
from leopard.core.index import Index
from leopard.errors import InvalidInput
from leopard.grpc.consistency import (
    AT_LEAST,
    EXACT,
    FULL,
    INVALID_REVISION,
    Foreign,
    Freshness,
    Want,
)
from leopard.grpc.forward import Upstream, for_upstream
from leopard.grpc.names import Catalog
from leopard.grpc.status import Refusal
from leopard.model.tokens import decode_token
from leopard.model.zedtoken import SPICEDB_KEY, zedtoken_position

__all__ = ["Answering", "Forward"]

#: the methods whose answers Leopard forwards when it cannot give them
PERMISSIONS = "/authzed.api.v1.PermissionsService/"


#: what ``Freshness.reach`` refuses with when the index is behind what a request asks
_NOT_REACHED = (grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE)


class Forward(Exception):
    """This request is for the SpiceDB behind Leopard (raised where that is decided)."""


class Answering:
    """The shared state of the servicers: ``index``, ``freshness`` and ``upstream``."""

    def __init__(self, index: Index, freshness: Freshness, upstream: Upstream | None) -> None:
        self.index = index
        self.freshness = freshness
        self.upstream = upstream
        self._catalog: tuple[Any, Catalog] | None = None

    def catalog(self) -> Catalog:
        """The catalog of the configuration served now (a new generation may change it)."""
        config = self.index.config
        cached = self._catalog
        if cached is None or cached[0] is not config:
            cached = self._catalog = (config, Catalog(config))
        return cached[1]

    def want(self, request: Any) -> Want:
        """The request's consistency. A SpiceDB ZedToken as ``at_least_as_fresh`` is
        waited for when the index follows SpiceDB (its version carries the revision);
        any other token not of this index goes to SpiceDB, or is refused as SpiceDB
        refuses garbage. A SpiceDB ZedToken as ``at_exact_snapshot`` is answered when it
        names the revision the index is at. ``fully_consistent`` at an index that
        follows a stream this server does not apply goes to SpiceDB, or is refused
        (``followed_elsewhere``)."""
        try:
            want = Want.of(request)
        except Foreign as foreign:
            token = foreign.args[0] if foreign.args else ""
            if self._follows_spicedb(token):  # at_least_as_fresh or at_exact_snapshot
                if request.consistency.WhichOneof("requirement") == "at_least_as_fresh":
                    return Want(AT_LEAST, token)
                return self._spicedb_snapshot(token)
            if self.upstream is not None:
                raise Forward() from None
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, self._foreign(token)) from None
        if want.kind == FULL and self.freshness.head is None:
            index = self.index
            why = followed_elsewhere(index.position, index.gaps)
            if why is not None:
                if self.upstream is not None:
                    raise Forward()
                raise Refusal(
                    grpc.StatusCode.UNAVAILABLE,
                    f"fully consistent: {why}, or start Leopard with --upstream-spicedb "
                    "HOST:PORT to have SpiceDB answer fully consistent requests",
                )
        return want

    def reach(self, want: Want, *, cursor: bool = False) -> None:
        """Return once the index may answer ``want`` (``Freshness.reach``). A version the
        index has not reached within the wait (an ``at_least_as_fresh`` token, or the
        change stream's head for ``fully_consistent``) goes to the SpiceDB behind
        Leopard when there is one, which has it, rather than failing the request; but
        not a request holding a cursor Leopard gave (``cursor``), which SpiceDB cannot
        read: that is refused as without an upstream, saying so."""
        try:
            self.freshness.reach(want)
        except Refusal as stale:
            if self.upstream is not None and stale.code in _NOT_REACHED:
                if not cursor:
                    raise Forward() from None
                raise Refusal(
                    stale.code,
                    f"{stale.message}; the request holds a cursor Leopard gave, which the "
                    "SpiceDB behind it cannot read: ask again, or start the lookup again "
                    "without the cursor to have SpiceDB answer it",
                    stale.reason,
                    stale.metadata,
                ) from None
            raise

    def _spicedb_snapshot(self, token: str) -> Want:
        """``at_exact_snapshot`` of SpiceDB's ZedToken ``token`` at an index that follows
        SpiceDB: answered at the index's current version when the revision is the one
        the index is at (its version may hold a bridged topic's offsets too); otherwise
        the SpiceDB behind Leopard answers it, or it is refused as SpiceDB refuses a
        snapshot it does not keep, naming both revisions."""
        wanted = zedtoken_position(token)[SPICEDB_KEY]
        version, position = self.index.version, decode_token(self.index.version)
        at = position.get(SPICEDB_KEY)
        if at == wanted:
            return Want(EXACT, version)
        if self.upstream is not None:
            raise Forward()
        why = "revision has expired" if at is not None and at > wanted else "revision was invalid"
        raise Refusal(
            grpc.StatusCode.OUT_OF_RANGE,
            f"invalid revision: {why}: at_exact_snapshot {token} names SpiceDB revision "
            f"{wanted}, and the index is at {at} (version {version}); Leopard answers at "
            "its current revision only, or start it with --upstream-spicedb HOST:PORT",
        )

    def _foreign(self, token: str) -> str:
        """SpiceDB's words for a token that is no revision it has; for a genuine
        ZedToken at an index that holds no SpiceDB revision, why (SpiceDB says no more for
        garbage)."""
        try:
            wanted = zedtoken_position(token)
        except InvalidInput:
            return INVALID_REVISION
        index = self.index
        why = unreachable(token, wanted, {*index.position, *index.gaps}, index.topics)
        if why is None and SPICEDB_KEY in index.gaps:
            why = f"the index stopped following SpiceDB at a gap: {index.gaps[SPICEDB_KEY]}"
        if why is None:
            return INVALID_REVISION
        return f"{INVALID_REVISION}: {why}; or start Leopard with --upstream-spicedb HOST:PORT"

    def _follows_spicedb(self, token: str) -> bool:
        """Whether ``token`` is a SpiceDB ZedToken and the index's version carries
        SpiceDB's revision."""
        if SPICEDB_KEY not in self.index.position:
            return False
        try:
            zedtoken_position(token)
        except InvalidInput:
            return False
        return True

    def needs_spicedb(self, request: Any) -> bool:
        """Whether the request carries what only SpiceDB evaluates, and SpiceDB is there."""
        if self.upstream is None:
            return False
        return request.HasField("context") or bool(getattr(request, "with_tracing", False))

    def answerable(self, type: str, permission: str, subject_type: str, relation: str) -> None:
        """Return when the index answers ``type#permission`` for subjects of
        ``subject_type`` (``relation``: a userset's, or empty); else ``Forward``, or
        the refusal SpiceDB gives (unknown names), or UNIMPLEMENTED (not indexed)."""
        cat = self.catalog()
        problem = cat.known(type, permission) or cat.known(subject_type, relation or None)
        if problem is None and cat.indexed(type, permission):
            return
        if self.upstream is not None:
            raise Forward()
        if problem is not None:
            raise problem
        raise self.not_indexed(f"{type}#{permission}", cat.why_not(type, permission))

    @staticmethod
    def not_indexed(what: str, why: str) -> Refusal:
        return Refusal(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{what} is not answered by Leopard's index: {why}; start Leopard with "
            "--upstream-spicedb HOST:PORT to have the SpiceDB it indexes answer it",
        )

    # -- forwarding ------------------------------------------------------------------

    def forward(self, method: str, request: Any, context: grpc.ServicerContext) -> bytes:
        """The upstream's answer to a unary request, as bytes."""
        assert self.upstream is not None
        for_upstream(request)
        return self.upstream.unary(PERMISSIONS + method, request.SerializeToString(), context)

    def forward_stream(
        self, method: str, request: Any, context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        assert self.upstream is not None
        for_upstream(request)
        return self.upstream.stream(PERMISSIONS + method, request.SerializeToString(), context)
