"""The AuthZEN Authorization API 1.0, as pydantic models.

The information model of the specification (OpenID AuthZEN working group): a
``Subject`` and a ``Resource`` are a ``type`` and an ``id`` (in a search, the searched
one carries a ``type`` alone), an ``Action`` a ``name``, and each may carry
``properties``; a ``context`` describes the environment; a ``Decision`` is a boolean
with an optional ``context``. As the specification's JSON serialization requires,
unknown fields are ignored and a missing required one is a 400.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Action",
    "ActionSearchRequest",
    "ActionSearchResponse",
    "Decision",
    "EvaluationItem",
    "EvaluationRequest",
    "EvaluationsBody",
    "EvaluationsOptions",
    "EvaluationsRequest",
    "EvaluationsResponse",
    "PageRequest",
    "PageResponse",
    "PdpMetadata",
    "Resource",
    "ResourceFilter",
    "ResourceSearchRequest",
    "ResourceSearchResponse",
    "Subject",
    "SubjectFilter",
    "SubjectSearchRequest",
    "SubjectSearchResponse",
]

Semantic = Literal["execute_all", "deny_on_first_deny", "permit_on_first_permit"]
#: the largest page a search answers, and the page when none is asked for (a larger
#: ``page.limit`` is served this many at a time: the PEP follows ``next_token``)
MAX_PAGE = 1000


class _Az(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class Subject(_Az):
    """The user or machine principal: `type` is an object type of the schema."""

    type: str = Field(min_length=1, examples=["user"])
    id: str = Field(min_length=1, examples=["alice"])
    properties: dict[str, Any] | None = Field(
        None, description="Accepted and not used: indexed relations carry no conditions."
    )


class SubjectFilter(_Az):
    """The subject of a subject search: its `type` (an `id`, of any value, is ignored)."""

    type: str = Field(min_length=1, examples=["user"])
    id: Any = Field(None, description="Ignored, as the specification requires.")
    properties: dict[str, Any] | None = None


class Resource(_Az):
    """The target of the access: `type:id` is an object of the schema."""

    type: str = Field(min_length=1, examples=["doc"])
    id: str = Field(min_length=1, examples=["roadmap"])
    properties: dict[str, Any] | None = None


class ResourceFilter(_Az):
    """The resource of a resource search: its `type` (an `id`, of any value, is ignored)."""

    type: str = Field(min_length=1, examples=["doc"])
    id: Any = Field(None, description="Ignored, as the specification requires.")
    properties: dict[str, Any] | None = None


class Action(_Az):
    """The access: `name` is a relation or permission of the resource's type."""

    name: str = Field(min_length=1, examples=["viewer"])
    properties: dict[str, Any] | None = None


class EvaluationRequest(_Az):
    """Body of `POST /access/v1/evaluation`."""

    subject: Subject
    action: Action
    resource: Resource
    context: dict[str, Any] | None = None


class EvaluationItem(_Az):
    """One evaluation of a batch; what it leaves out comes from the request's top level."""

    subject: Subject | None = None
    action: Action | None = None
    resource: Resource | None = None
    context: dict[str, Any] | None = None


class EvaluationsOptions(_Az):
    evaluations_semantic: Semantic = "execute_all"


class EvaluationsRequest(_Az):
    """Body of `POST /access/v1/evaluations`: the top-level entities are defaults."""

    subject: Subject | None = None
    action: Action | None = None
    resource: Resource | None = None
    context: dict[str, Any] | None = None
    evaluations: list[EvaluationItem] | None = None
    options: EvaluationsOptions | None = None


class EvaluationsBody(EvaluationsRequest):
    """`EvaluationsRequest` as the server reads it: the items are validated one by one,
    so that a bad item is a deny with its error, not a 400 for the whole batch."""

    evaluations: list[Any] | None = None  # type: ignore[assignment]


class Decision(_Az):
    decision: bool
    context: dict[str, Any] | None = None


class EvaluationsResponse(_Az):
    """One decision per evaluation, in order (fewer when a semantic stopped early)."""

    evaluations: list[Decision]


class PageRequest(_Az):
    token: str | None = Field(None, description="The `next_token` of the previous page.")
    limit: int | None = Field(
        None,
        ge=0,
        description=f"Page size (0 or none: {MAX_PAGE}; more is served {MAX_PAGE} at a time). "
        "Left out after the first page, the first page's limit holds.",
    )
    properties: dict[str, Any] | None = None


class PageResponse(_Az):
    next_token: str = Field(description="Empty on the last page.")
    count: int | None = None
    total: int | None = None


class SubjectSearchRequest(_Az):
    """Body of `POST /access/v1/search/subject`: who of `subject.type` may do `action`?"""

    subject: SubjectFilter
    action: Action
    resource: Resource
    context: dict[str, Any] | None = None
    page: PageRequest | None = None


class ResourceSearchRequest(_Az):
    """Body of `POST /access/v1/search/resource`: on what of `resource.type`?"""

    subject: Subject
    action: Action
    resource: ResourceFilter
    context: dict[str, Any] | None = None
    page: PageRequest | None = None


class ActionSearchRequest(_Az):
    """Body of `POST /access/v1/search/action`: which indexed relations hold?"""

    subject: Subject
    resource: Resource
    context: dict[str, Any] | None = None
    page: PageRequest | None = None


class SubjectSearchResponse(_Az):
    page: PageResponse | None = None
    context: dict[str, Any] | None = None
    results: list[Subject]


class ResourceSearchResponse(_Az):
    page: PageResponse | None = None
    context: dict[str, Any] | None = None
    results: list[Resource]


class ActionSearchResponse(_Az):
    page: PageResponse | None = None
    context: dict[str, Any] | None = Field(
        None, description="`not_evaluated`: the type's relations the index does not hold, with why."
    )
    results: list[Action]


class PdpMetadata(_Az):
    """`GET /.well-known/authzen-configuration`: where each API is."""

    policy_decision_point: str
    access_evaluation_endpoint: str
    access_evaluations_endpoint: str
    search_subject_endpoint: str
    search_resource_endpoint: str
    search_action_endpoint: str
