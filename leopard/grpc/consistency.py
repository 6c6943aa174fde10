"""SpiceDB's consistency modes over Leopard's versions.

A ZedToken that Leopard hands out (``checked_at``, ``looked_up_at``, ``read_at``)
carries the index's version token in ``ZedToken.token`` (``v1.…``). A request's
``consistency`` then means:

``minimize_latency`` (or none)
    the current version, at once.
``at_least_as_fresh``
    wait, at most ``max_wait`` seconds, until the index has applied that version;
    else ``OUT_OF_RANGE`` with SpiceDB's message for an unavailable revision
    (``invalid zedtoken: revision was invalid``) followed by what was waited for.
``fully_consistent``
    wait, as long, until the index has applied the change stream's head as of the
    request: the high watermark the consumer in this process last fetched, per
    partition. Without a consumer in the process there is no stream to be behind:
    the current version. Not reached in time: ``UNAVAILABLE``, naming both.
``at_exact_snapshot``
    answered when it is the current version, otherwise ``FAILED_PRECONDITION``
    naming both: the index keeps no past versions.

A token that is no Leopard version (garbage, or a real SpiceDB's) is ``Foreign``:
forwarded to the SpiceDB behind Leopard when there is one, which understands its own
tokens, and refused as SpiceDB refuses garbage (``INVALID_ARGUMENT invalid revision
requested``) otherwise. ``minimize_latency: false`` and ``fully_consistent: false``
are ``INVALID_ARGUMENT`` (SpiceDB answers them with an internal error).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

from leopard.core.freshness import POLL, wait_steps
from leopard.core.index import Index
from leopard.errors import InvalidInput, StaleIndex
from leopard.grpc.status import Refusal
from leopard.model.tokens import decode_token, encode_token

__all__ = ["Foreign", "Freshness", "StreamHead", "Want", "INVALID_REVISION"]

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
    """The change stream's head as the consumer in this process last saw it.

    After every applied batch (the consumer's ``on_batch``, in its thread) the head is
    the position just applied plus the messages still behind each partition's high
    watermark; both are read together there, so the head never runs ahead of the log.
    """

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self._head: dict[str, int] | None = None
        chained = consumer.on_batch

        def on_batch(stats: Any) -> None:
            self._observe()
            if chained is not None:
                chained(stats)

        consumer.on_batch = on_batch

    def _observe(self) -> dict[str, int]:
        position = dict(self.consumer.source.position_of())
        for partition, behind in dict(self.consumer.stats.lag).items():
            position[partition] = position.get(partition, 0) + behind
        self._head = position
        return position

    def __call__(self) -> dict[str, int]:
        head = self._head
        return head if head is not None else self._observe()


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
        head: Callable[[], dict[str, int]] | None = None,
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
            return
        if self.head is None:
            return  # no stream followed here: the current version is the freshest
        target = encode_token(self.head())
        try:
            self._wait(target)
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
            if decode_token(want.token) != decode_token(current):
                raise Refusal(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"at_exact_snapshot {want.token} is not the index's current version "
                    f"{current}: Leopard answers at its current version only",
                )
        return current

    def _wait(self, token: str) -> None:
        index = self.index
        if self.head is not None:  # a consumer in this process wakes the wait
            index.wait_for(token, self.max_wait)
            return
        steps = wait_steps(
            lambda: index.position,
            lambda: index.version,
            token,
            self.max_wait,
            gaps=lambda: index.gaps,
        )
        try:
            while True:
                pause = next(steps)
                threading.Event().wait(min(pause, POLL))
                with self._refreshing:
                    index.refresh()
        except StopIteration:
            return
