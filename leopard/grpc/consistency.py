"""SpiceDB's consistency modes over Leopard's versions.

A ZedToken that Leopard hands out (``checked_at``, ``looked_up_at``, ``read_at``)
carries the index's version token in ``ZedToken.token`` (``v1.…``). A request's
``consistency`` then means:

``minimize_latency`` (or none)
    the current version, at once.
``at_least_as_fresh``
    wait, at most ``max_wait`` seconds, until the index has applied that version;
    else ``OUT_OF_RANGE`` with SpiceDB's message for an unavailable revision
    (``invalid zedtoken: revision was invalid``) followed by what was waited for, and,
    for a version of a stream the index has applied nothing of, what it follows
    (``leopard.core.freshness.unreachable``).
``fully_consistent``
    wait, as long in all, until the index has applied the change stream's head as of
    the request: the high watermarks of a fetch the consumer in this process sent
    after the request came (``StreamHead``), so every change acknowledged before it
    is applied. Not reached in time: ``UNAVAILABLE``, naming both. Without a consumer
    in the process, an index built from files is its own head (the current version);
    one whose version names a stream (kept fresh by a separate ``leopard follow`` or
    ``consume``, or by none) cannot know that stream's head: the request goes to the
    SpiceDB behind Leopard, or is ``UNAVAILABLE`` saying why
    (``leopard.core.freshness.followed_elsewhere``).
``at_exact_snapshot``
    answered when it is the current version (or, at an index that follows SpiceDB, a
    ZedToken of SpiceDB's naming the revision the index is at), otherwise
    ``OUT_OF_RANGE`` as SpiceDB refuses a snapshot its datastore cannot read
    (``invalid revision: revision has expired`` for an older version, ``... revision
    was invalid`` for one not reached), naming both: the index keeps no past versions.

A version not reached within the wait (``at_least_as_fresh``, ``fully_consistent``)
goes to the SpiceDB behind Leopard when there is one (``Answering.reach``): it has
that version, and answers rather than failing the request.

A token that is no Leopard version (garbage, or a real SpiceDB's) is ``Foreign``:
forwarded to the SpiceDB behind Leopard when there is one, which understands its own
tokens, and refused as SpiceDB refuses garbage (``INVALID_ARGUMENT invalid revision
requested``) otherwise; for a genuine ZedToken at an index that holds no SpiceDB
revision, the message says so. ``minimize_latency: false`` and ``fully_consistent: false``
are ``INVALID_ARGUMENT`` (SpiceDB answers them with an internal error).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc

from leopard.core.freshness import POLL, wait_steps
from leopard.core.index import Index
from leopard.errors import InvalidInput, StaleIndex, UpstreamError
from leopard.grpc.status import Refusal
from leopard.model.tokens import decode_token, encode_token, reached

__all__ = [
    "AT_LEAST",
    "EXACT",
    "FULL",
    "Foreign",
    "Freshness",
    "StreamHead",
    "Want",
    "INVALID_REVISION",
]

INVALID_REVISION = "invalid revision requested"  # SpiceDB's words for a garbage ZedToken

LATEST, AT_LEAST, EXACT, FULL = "latest", "at_least", "exact", "full"


class Foreign(Exception):
    """The request names a ZedToken that is not one of this index's versions."""


class Want:
    """What a request's ``consistency`` asks for: ``kind`` and, for a token, ``token``."""

    __slots__ = ("kind", "token")

    def __init__(self, kind: str, token: str | None = None) -> None:
        self.kind = kind
        self.token = token

    @classmethod
    def of(cls, request: Any) -> Want:
        """Read a request's consistency; ``Foreign`` for a token that is not ours."""
        if not request.HasField("consistency"):
            return _LATEST
        c = request.consistency
        which = c.WhichOneof("requirement")
        if which is None or (which == "minimize_latency" and c.minimize_latency):
            return _LATEST
        if which == "fully_consistent" and c.fully_consistent:
            return _FULL
        if which in ("at_least_as_fresh", "at_exact_snapshot"):
            token = getattr(c, which).token
            try:
                decode_token(token)
            except InvalidInput:
                raise Foreign(token) from None
            return cls(AT_LEAST if which == "at_least_as_fresh" else EXACT, token)
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"validation error: consistency.{which}: must equal true",
        )


_LATEST = Want(LATEST)
_FULL = Want(FULL)


class StreamHead:
    """The change stream's head as of a moment, as the consumer in this process sees it.

    Every change acknowledged before a request is below the high watermark that any
    fetch answered after it reports. The consumer's loop polls (a fetch), applies the
    batch and measures its lag against that fetch's high watermarks, then polls again;
    so when a poll starts, the one before it is complete, and the head is the position
    applied plus the lag measured. ``as_of(moment)`` waits for two complete polls that
    started after ``moment`` (kafka-python may hand the first one a fetch answered
    before it, prefetched; the second's was sent after it) and returns that head. An
    idle consumer polls every ``poll_ms`` (100 ms), so the wait is about two of them.

    Until the consumer has joined its group nothing is assigned and the head is the
    position; a poll that fails (the broker away) does not count.
    """

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self._done = threading.Condition()
        self._polling: float | None = None  # when the poll under way started
        self._starts = (-1.0, -1.0)  # when the last two complete polls started
        self._head: dict[str, int] = {}  # measured after the last complete poll
        source = consumer.source
        inner = source.poll

        def poll() -> Any:
            self._complete()
            self._polling = time.monotonic()
            try:
                return inner()
            except BaseException:
                self._polling = None  # a failed fetch tells nothing of the head
                raise

        source.poll = poll

    def _complete(self) -> None:
        """The poll under way, its batch applied and its lag measured, is complete."""
        started = self._polling
        if started is None:
            return
        self._polling = None
        position = dict(self.consumer.source.position_of())
        for partition, behind in dict(self.consumer.stats.lag).items():
            position[partition] = position.get(partition, 0) + behind
        with self._done:
            self._head = position
            self._starts = (self._starts[1], started)
            self._done.notify_all()

    def as_of(self, moment: float, timeout: float) -> dict[str, int] | None:
        """The head as of ``moment`` (``time.monotonic()``); None if the consumer has
        not polled twice since within ``timeout`` seconds. A followed SpiceDB is asked
        its head revision instead (its Watch may not have sent the latest changes yet);
        UpstreamError if it does not answer."""
        upstream = self.consumer.upstream_head(timeout)
        if upstream is not None:
            return upstream
        with self._done:
            if self._done.wait_for(lambda: self._starts[0] >= moment, timeout):
                return dict(self._head)
        return None


class Freshness:
    """Turns a ``Want`` into the version to answer at, waiting when it must.

    ``local_writer``: batches are applied by a consumer in this process, so waits
    wake on every batch; otherwise a wait re-reads what another process applied
    every ``POLL`` seconds (one refresh at a time).
    """

    def __init__(
        self,
        index: Index,
        *,
        max_wait: float = 1.0,
        head: StreamHead | None = None,
    ) -> None:
        self.index = index
        self.max_wait = max_wait
        self.head = head
        self._refreshing = threading.Lock()

    def reach(self, want: Want) -> None:
        """Return once the index may answer ``want`` (``at_exact_snapshot`` is checked
        by ``exact`` under the index's lock, together with the answer)."""
        kind = want.kind
        if kind == LATEST or kind == EXACT:
            return
        if kind == AT_LEAST:
            assert want.token is not None
            try:
                self._wait(want.token)
            except StaleIndex as exc:
                raise Refusal(
                    grpc.StatusCode.OUT_OF_RANGE, f"invalid zedtoken: revision was invalid: {exc}"
                ) from None
            except InvalidInput as exc:  # no version: SpiceDB's unusable revision
                raise Refusal(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{INVALID_REVISION}: {exc}"
                ) from None
            return
        if self.head is None:
            return  # no stream followed here: the current version is the freshest
        asked = time.monotonic()
        try:
            head = self.head.as_of(asked, self.max_wait)
        except UpstreamError as exc:
            raise Refusal(
                grpc.StatusCode.UNAVAILABLE, f"fully consistent: the head is not known: {exc}"
            ) from None
        if head is None:
            raise Refusal(
                grpc.StatusCode.UNAVAILABLE,
                "fully consistent: the change stream's head was not fetched within "
                f"{self.max_wait:g} s (is the consumer running, the broker up?)",
            )
        target = encode_token(head)
        try:
            self._wait(target, self.max_wait - (time.monotonic() - asked))
        except StaleIndex as exc:
            raise Refusal(
                grpc.StatusCode.UNAVAILABLE,
                "fully consistent: the index has not applied the change stream's head "
                f"({target}) within {self.max_wait:g} s (it is at {exc.current})",
            ) from None

    def exact(self, want: Want) -> str:
        """The version to report; call with the index's lock held, before answering."""
        current = self.index.version
        if want.kind == EXACT and want.token != current:
            assert want.token is not None
            wanted, now = decode_token(want.token), decode_token(current)
            if wanted != now:
                # SpiceDB's words for a snapshot its datastore cannot read: one older
                # than it keeps has expired, one it has not reached is invalid
                why = "revision has expired" if reached(now, wanted) else "revision was invalid"
                raise Refusal(
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"invalid revision: {why}: at_exact_snapshot {want.token} is not the "
                    f"index's current version {current}; Leopard answers at its current "
                    "version only",
                )
        return current

    def _wait(self, token: str, timeout: float | None = None) -> None:
        index = self.index
        timeout = self.max_wait if timeout is None else max(0.0, timeout)
        if self.head is not None:  # a consumer in this process wakes the wait
            index.wait_for(token, timeout)
            return
        steps = wait_steps(
            lambda: index.position,
            lambda: index.version,
            token,
            timeout,
            gaps=lambda: index.gaps,
            topics=index.topics,
        )
        try:
            while True:
                pause = next(steps)
                threading.Event().wait(min(pause, POLL))
                with self._refreshing:
                    index.refresh()
        except StopIteration:
            return
