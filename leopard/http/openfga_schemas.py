"""OpenFGA's HTTP API, the part Leopard answers, as pydantic models.

The shapes and the validation rules are those of OpenFGA's API definitions
(``openfga/v1/openfga_service.proto`` and ``openfga.proto`` of ``openfga/api``), in their
JSON form: enums by name (``HIGHER_CONSISTENCY``; their numbers are accepted too, as
protobuf's JSON mapping allows), ids as ULIDs. A request is read as OpenFGA's HTTP
gateway reads it (grpc-gateway's protojson, ``DiscardUnknown``): every field by its
proto name (``tuple_key``, ``correlation_id``) or its JSON name (``tupleKey``,
``correlationId``), and fields it does not know ignored (a newer client's). A field of
the wrong type or a missing required one is a ``validation_error`` naming it. Answers
use the proto names, as OpenFGA writes them. An error answer is
``OpenFgaError``: ``{"code": "validation_error", "message": "..."}`` with OpenFGA's codes
(``errors_ignore.proto``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    AliasChoices,
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "AuthorizationModel",
    "BatchCheckItem",
    "BatchCheckRequest",
    "BatchCheckResponse",
    "BatchCheckSingleResult",
    "CheckError",
    "CheckRequest",
    "CheckRequestTupleKey",
    "CheckResponse",
    "ContextualTupleKeys",
    "ExpandRequest",
    "ExpandResponse",
    "FgaObject",
    "GetStoreResponse",
    "ListObjectsRequest",
    "ListObjectsResponse",
    "ListStoresParams",
    "ListStoresResponse",
    "ListUsersRequest",
    "ListUsersResponse",
    "OpenFgaError",
    "PageParams",
    "ReadAuthorizationModelResponse",
    "ReadAuthorizationModelsResponse",
    "Store",
    "StreamedListObjectsResponse",
    "TupleKey",
    "User",
    "UserTypeFilter",
]

#: a store or authorization model id: a ULID (``validate.rules`` of the API)
ULID = r"^[ABCDEFGHJKMNPQRSTVWXYZ0-9]{26}$"
_TYPE = r"^[^:#@\s]{1,254}$"
_RELATION = r"^[^:#@\s]{1,50}$"
_CONSISTENCY = {0: "UNSPECIFIED", 100: "MINIMIZE_LATENCY", 200: "HIGHER_CONSISTENCY"}
_TOKEN = r"^$|^[A-Za-z0-9-_]+={0,2}$"

Consistency = Literal["UNSPECIFIED", "MINIMIZE_LATENCY", "HIGHER_CONSISTENCY"]


class _Fga(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _both_names(name: str) -> AliasChoices | str:
    """A request field read by its proto name or its JSON (lowerCamelCase) name."""
    camel = to_camel(name)
    return AliasChoices(name, camel) if camel != name else name


class _Request(BaseModel):
    """A request, or a part of one: both names of a field, unknown fields ignored, and a
    field given as ``null`` read as not given, as protojson reads it (the Go SDK, and so
    the ``fga`` command, sends ``"contextual_tuples": {"tuple_keys": null}``)."""

    model_config = ConfigDict(
        extra="ignore",
        allow_inf_nan=False,
        populate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=_both_names),
    )

    @model_validator(mode="before")
    @classmethod
    def _nulls_unset(cls, data: Any) -> Any:
        # protojson: JSON null is a field's default, for every field but a
        # google.protobuf.Value (none here: a condition's context is a Struct, whose
        # values are left as they are)
        if isinstance(data, dict) and None in data.values():
            return {k: v for k, v in data.items() if v is not None}
        return data


# -- requests -------------------------------------------------------------------------


class TupleKey(_Request):
    """A relationship tuple: a contextual tuple of a request."""

    user: str = Field(max_length=512, examples=["user:anne"])
    relation: str = Field(pattern=_RELATION, examples=["viewer"])
    object: str = Field(pattern=r"^[^\s]{2,256}$", examples=["document:2021-budget"])
    condition: dict[str, Any] | None = None


class ContextualTupleKeys(_Request):
    tuple_keys: list[TupleKey] = Field(default_factory=list, max_length=100)


class CheckRequestTupleKey(_Request):
    """The question: is `user` related to `object` by `relation`?"""

    user: str = Field(pattern=r"^[^\s]{2,512}$", examples=["user:anne"])
    relation: str = Field(pattern=_RELATION, examples=["viewer"])
    object: str = Field(pattern=r"^[^\s]{2,256}$", examples=["document:2021-budget"])


class _Query(_Request):
    """What every query request may carry besides its question."""

    store_id: str | None = Field(None, description="The store of the path, if repeated here.")
    authorization_model_id: str | None = Field(
        None,
        pattern=r"^$|" + ULID[1:],
        description="Must be the model of the index (or is forwarded upstream).",
    )
    consistency: Consistency = Field(
        "UNSPECIFIED",
        description="`HIGHER_CONSISTENCY`: answer once the index has applied the head "
        "of its change stream (at once without a consumer in the server).",
    )

    @field_validator("consistency", mode="before")
    @classmethod
    def _by_number(cls, v: Any) -> Any:
        return _CONSISTENCY.get(v, v) if isinstance(v, int) and not isinstance(v, bool) else v


class CheckRequest(_Query):
    """Body of `POST /stores/{store_id}/check`."""

    tuple_key: CheckRequestTupleKey
    contextual_tuples: ContextualTupleKeys | None = Field(
        None, description="Forwarded upstream (Leopard answers from its index alone)."
    )
    context: dict[str, Any] | None = Field(
        None, description="Forwarded upstream (indexed relations carry no conditions)."
    )
    trace: bool = False


class BatchCheckItem(_Request):
    tuple_key: CheckRequestTupleKey
    contextual_tuples: ContextualTupleKeys | None = None
    context: dict[str, Any] | None = None
    # OpenFGA's ``^[\w\d-]{1,36}$`` in Go, whose \w is ASCII (Python's is not)
    correlation_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,36}$")


class BatchCheckRequest(_Query):
    """Body of `POST /stores/{store_id}/batch-check`."""

    checks: list[BatchCheckItem] = Field(min_length=1)


class ListObjectsRequest(_Query):
    """Body of `POST /stores/{store_id}/list-objects` (and `streamed-list-objects`)."""

    type: str = Field(pattern=_TYPE, examples=["document"])
    relation: str = Field(pattern=_RELATION, examples=["viewer"])
    user: str = Field(min_length=1, max_length=512, examples=["user:anne"])
    contextual_tuples: ContextualTupleKeys | None = None
    context: dict[str, Any] | None = None


class FgaObject(_Request):
    type: str = Field(pattern=_TYPE, examples=["document"])
    id: str = Field(pattern=r"^[^#:\s]+$", examples=["2021-budget"])


class UserTypeFilter(_Request):
    type: str = Field(pattern=_TYPE, examples=["user"])
    relation: str | None = Field(None, pattern=r"^$|" + _RELATION[1:])


class ListUsersRequest(_Query):
    """Body of `POST /stores/{store_id}/list-users`."""

    object: FgaObject
    relation: str = Field(pattern=_RELATION, examples=["viewer"])
    user_filters: list[UserTypeFilter] = Field(min_length=1, max_length=1)
    contextual_tuples: list[TupleKey] | None = Field(None, max_length=100)
    context: dict[str, Any] | None = None


class ExpandRequestTupleKey(_Request):
    relation: str = Field(pattern=_RELATION)
    object: str = Field(pattern=r"^[^\s]{2,256}$")


class ExpandRequest(_Query):
    """Body of `POST /stores/{store_id}/expand`: forwarded upstream."""

    tuple_key: ExpandRequestTupleKey
    contextual_tuples: ContextualTupleKeys | None = None


class PageParams(_Request):
    """Query of the listings: `page_size` and `continuation_token`."""

    page_size: int | None = Field(None, ge=1, le=100)
    continuation_token: str | None = Field(None, max_length=5120, pattern=_TOKEN)


class ListStoresParams(PageParams):
    """Query of `GET /stores`; `name` keeps only the store of that name."""

    name: str | None = Field(None, pattern=r"^[a-zA-Z0-9\s\.\-\/^_&@]{3,64}$")


# -- responses ------------------------------------------------------------------------


class CheckResponse(_Fga):
    allowed: bool
    resolution: str = ""


class CheckError(_Fga):
    """Why one check of a batch was not answered (OpenFGA's `CheckError`)."""

    input_error: str | None = None
    internal_error: str | None = None
    message: str


class BatchCheckSingleResult(_Fga):
    allowed: bool | None = None
    error: CheckError | None = None


class BatchCheckResponse(_Fga):
    """The answers by `correlation_id`."""

    result: dict[str, BatchCheckSingleResult]


class ListObjectsResponse(_Fga):
    objects: list[str]


class StreamedListObjectsResult(_Fga):
    object: str


class StreamedListObjectsResponse(_Fga):
    """One line of the stream (newline-delimited JSON)."""

    result: StreamedListObjectsResult


class UsersetUser(_Fga):
    type: str
    id: str
    relation: str


class TypedWildcard(_Fga):
    type: str


class User(_Fga):
    """One of `object`, `userset` or `wildcard`."""

    object: FgaObject | None = None
    userset: UsersetUser | None = None
    wildcard: TypedWildcard | None = None


class ListUsersResponse(_Fga):
    users: list[User]


class ExpandResponse(BaseModel):
    """The upstream's answer, as it came."""

    model_config = ConfigDict(extra="allow")
    tree: dict[str, Any] | None = None


class Store(_Fga):
    id: str
    name: str
    created_at: str
    updated_at: str
    deleted_at: str | None = None


class GetStoreResponse(Store):
    """The store of the index."""


class ListStoresResponse(_Fga):
    stores: list[Store]
    continuation_token: str = ""


class AuthorizationModel(BaseModel):
    """The model of the index, as OpenFGA writes it (`fga model transform`)."""

    model_config = ConfigDict(extra="allow")
    id: str
    schema_version: str
    type_definitions: list[dict[str, Any]]
    conditions: dict[str, Any] | None = None


class ReadAuthorizationModelsResponse(_Fga):
    authorization_models: list[AuthorizationModel]
    continuation_token: str = ""


class ReadAuthorizationModelResponse(_Fga):
    authorization_model: AuthorizationModel


class OpenFgaError(_Fga):
    """Every error answer of the OpenFGA face: OpenFGA's code and a message naming the
    bad value."""

    code: str = Field(examples=["validation_error"])
    message: str
