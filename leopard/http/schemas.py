"""The HTTP API's requests and responses, as pydantic models.

These models are the single description of the wire format: the service validates
query strings and bodies with them and serializes its answers through them, and
``GET /openapi.json`` is generated from their JSON schemas (``leopard.http.openapi``
adds only the route table), so the document cannot drift from what the handlers
do. They hold no index logic: names are plain strings here, and the index itself
judges whether ``user:alice`` or ``group:eng#member`` is well formed, so that a bad
name gets the index's own message, naming the bad value.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_WAIT",
    "DEFAULT_PAGE",
    "ERROR_CODES",
    "MAX_PAGE",
    "MAX_WAIT_CAP",
    "CheckBatchRequest",
    "CheckBatchResult",
    "CheckPair",
    "CheckParams",
    "CheckResult",
    "ErrorBody",
    "ExplainParams",
    "ExplainResult",
    "ExplainStep",
    "Freshness",
    "GroupsParams",
    "GroupsResult",
    "HealthResult",
    "MembersParams",
    "MembersResult",
    "ReadyResult",
    "VersionParams",
    "VersionResult",
]

#: ``max_wait`` when a request names ``at_least`` but no ``max_wait`` (seconds)
DEFAULT_MAX_WAIT = 1.0
#: the longest a request may ask to wait: a waiting request holds a connection
MAX_WAIT_CAP = 30.0
#: the most checks one ``POST /v1/check`` may carry by default (413 beyond)
DEFAULT_MAX_BATCH = 10_000
#: ``GET /v1/members`` page size when no ``limit`` is given, and the largest allowed
DEFAULT_PAGE = 1_000
MAX_PAGE = 10_000

#: every value of ``ErrorBody.error``; those of ``leopard.errors.HTTP_ERRORS`` come back
#: as the same exceptions from ``leopard.client``
ERROR_CODES = (
    "invalid_tuple",  # a subject or group name is malformed (InvalidTuple)
    "invalid_input",  # a well-formed request the index refuses, e.g. a bad token (InvalidInput)
    "invalid_request",  # the query string or body does not fit the schema, or is not JSON
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "body_too_large",
    "batch_too_large",
    "uri_too_long",
    "header_too_large",  # the request line and headers exceed the server's bound (431)
    "request_timeout",  # the head or the body did not arrive in time (408)
    "too_many_connections",  # the server has as many connections open as it serves (503)
    "stale",  # at_least was not reached within max_wait (StaleIndex)
    "index_not_found",  # the served index is gone (IndexNotFound)
    "storage_error",  # RocksDB failed (StorageError)
    "broker_error",  # the Kafka broker failed (BrokerError)
    "shard_unavailable",  # the router cannot reach a shard server (ShardUnavailable)
    "internal",
)


def _subject() -> Any:
    return Field(
        min_length=1,
        description="A subject: `ns:id`, `ns:id#...`, a wildcard `ns:*` or a userset `ns:id#rel`.",
        examples=["user:alice"],
    )


def _group() -> Any:
    return Field(
        min_length=1,
        description="A group: `ns:id#relation`, or `ns:id` when the namespace has one indexed set.",
        examples=["group:eng#member"],
    )


def _token() -> Any:
    return Field(
        description="An opaque version token: the change-stream position the answer reflects.",
        examples=["v1.eyJjaGFuZ2VzOjAiOjQyfQ"],
    )


class _Model(BaseModel):
    # Unknown fields are refused, so a misspelt parameter (`subjet=`) is a 400 that
    # names it instead of a silently ignored filter.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# -- requests -------------------------------------------------------------------------


class Freshness(_Model):
    """How fresh an answer must be: at least version `at_least`, waiting up to `max_wait` s."""

    at_least: str | None = Field(
        None,
        min_length=1,
        description="Answer only once the index has applied this version token "
        "(e.g. one returned by `leopard publish`); 503 with the current token if it "
        "has not within `max_wait` seconds.",
    )
    max_wait: float = Field(
        DEFAULT_MAX_WAIT,
        ge=0,
        le=MAX_WAIT_CAP,
        description="Seconds to wait for `at_least`.",
    )


class CheckParams(Freshness):
    """Query of `GET /v1/check`."""

    subject: str = _subject()
    group: str = _group()


class GroupsParams(Freshness):
    """Query of `GET /v1/groups`; with `type` and `permission`, only those sets (with a
    schema: every object of `type` on which the subject has `permission`)."""

    subject: str = _subject()
    type: str | None = Field(None, min_length=1, description="Only sets of this object type.")
    permission: str | None = Field(
        None, min_length=1, description="Only sets of this relation or permission."
    )


class MembersParams(Freshness):
    """Query of `GET /v1/members`: one page of a group's leaf subjects, in name order."""

    group: str = _group()
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="Page size.")
    after: str | None = Field(
        None,
        min_length=1,
        description="Start after this subject name: the `next` of the previous page.",
    )


class ExplainParams(Freshness):
    """Query of `GET /v1/explain`."""

    subject: str = _subject()
    group: str = _group()
    steps: bool = Field(
        False, description="Also say, for each step, the tuple or the rewrite it came from."
    )


class ExplainStep(_Model):
    """A set of the chain and how the one before it includes it (null for the first)."""

    set: str
    via: str | None


class VersionParams(Freshness):
    """Query of `GET /v1/version`; with `at_least`, it answers once that version is applied."""


class CheckPair(_Model):
    """One question of a batch: is `subject` in `group`?"""

    subject: str = _subject()
    group: str = _group()


class CheckBatchRequest(Freshness):
    """Body of `POST /v1/check`: every check is answered from one version of the index."""

    checks: list[CheckPair] = Field(
        description="The checks, answered in order. Too many of them is a 413."
    )


# -- responses ------------------------------------------------------------------------


class CheckResult(_Model):
    """Whether the subject is in the group, and the version the answer reflects (at least)."""

    member: bool
    token: str = _token()


class CheckBatchResult(_Model):
    """One boolean per check, in the order asked."""

    results: list[bool]
    token: str = _token()


class GroupsResult(_Model):
    """Every group the subject is in, transitively, sorted by name."""

    groups: list[str]
    token: str = _token()


class MembersResult(_Model):
    """A page of the group's leaf subjects (wildcards as `ns:*`), sorted by name."""

    members: list[str]
    next: str | None = Field(
        description="Pass as `after` for the next page; null on the last page.",
    )
    token: str = _token()


class ExplainResult(_Model):
    """A shortest chain of groups from `group` down to one the subject is directly in."""

    member: bool
    chain: list[str] | None = Field(description="Null when the subject is not a member.")
    steps: list[ExplainStep] | None = Field(
        None,
        description="Only with `steps=true`: the chain step by step, each with what it "
        "came from (a stored tuple, or a schema's rewrite), the subject last; null when "
        "the subject is not a member.",
    )
    token: str = _token()


class VersionResult(_Model):
    """The version of the index: its token and the stream position inside it."""

    token: str = _token()
    position: dict[str, int] = Field(
        description="Per `topic:partition`, the next offset to apply (for people; "
        "programs should only pass the token around)."
    )


class HealthResult(_Model):
    """The process is up."""

    status: Literal["ok"] = "ok"


class ReadyResult(_Model):
    """Whether to send traffic here: the index is open and, with a consumer, it keeps up."""

    ready: bool
    reasons: list[str] = Field(description="Why not, when not ready.")
    token: str | None = _token()
    lag: int | None = Field(
        description="Messages the consumer is behind, summed over partitions (null "
        "without a consumer or before its first fetch)."
    )
    shard: str | None = Field(
        default=None,
        description="A shard server's shard: `k/n/build` (shard k of n, of that build), as "
        "its `Leopard-Shard` header on every answer; null from any other server.",
    )


class ErrorBody(_Model):
    """Every error answer: a code for programs and a message naming the bad value."""

    error: Literal[ERROR_CODES]  # type: ignore[valid-type]
    detail: str
    token: str | None = Field(None, description="With `stale`: the version the index has reached.")
