"""The routes of the peer faces: OpenFGA's HTTP API and the AuthZEN Authorization API.

``leopard.http.openapi.ROUTES`` lists them after Leopard's own, so that
``GET /openapi.json`` describes them with their models; ``leopard.http.peers`` mounts
them behind the raw dispatch. The handlers are methods of ``OpenFga``
(``leopard.http.openfga``) and ``AuthZen`` (``leopard.http.authzen``).
"""

from __future__ import annotations

from leopard.http import authzen_schemas as Z
from leopard.http import openfga_schemas as F
from leopard.http.route import Route

__all__ = ["AUTHZEN_PREFIXES", "AUTHZEN_ROUTES", "OPENFGA_ROUTES", "PEER_PREFIXES"]

#: the paths of each peer face start with one of these; the raw dispatch sends a path
#: it does not know that starts so to the mounted routes
OPENFGA_PREFIX = "/stores"
AUTHZEN_PREFIXES = ("/access/", "/.well-known/authzen-configuration")
PEER_PREFIXES = (OPENFGA_PREFIX, *AUTHZEN_PREFIXES)

_QUERY = (400, 404, 413, 503)
_FORWARDED = (
    "Answered from the index; contextual tuples, a `context`, another model and "
    "relations the index does not hold are forwarded to `--upstream-openfga` when "
    "given (its answer is returned as it came), else refused with a 400 saying why."
)


def _fga(method: str, path: str, handler: str, summary: str, **kw: object) -> Route:
    kw.setdefault("description", _FORWARDED if method == "POST" else None)
    return Route(method, path, handler, summary, face="openfga", **kw)  # type: ignore[arg-type]


OPENFGA_ROUTES: tuple[Route, ...] = (
    _fga(
        "GET",
        "/stores",
        "list_stores",
        "OpenFGA ListStores: the store this server answers for (its index).",
        params=F.ListStoresParams,
        result=F.ListStoresResponse,
        errors=(400,),
    ),
    _fga(
        "GET",
        "/stores/{store_id}",
        "get_store",
        "OpenFGA GetStore.",
        result=F.GetStoreResponse,
        errors=(400, 404),
    ),
    _fga(
        "GET",
        "/stores/{store_id}/authorization-models",
        "read_authorization_models",
        "OpenFGA ReadAuthorizationModels: the model of the index (none without an OpenFGA schema).",
        params=F.PageParams,
        result=F.ReadAuthorizationModelsResponse,
        errors=(400, 404),
    ),
    _fga(
        "GET",
        "/stores/{store_id}/authorization-models/{id}",
        "read_authorization_model",
        "OpenFGA ReadAuthorizationModel.",
        result=F.ReadAuthorizationModelResponse,
        errors=(400, 404),
    ),
    _fga(
        "POST",
        "/stores/{store_id}/check",
        "check",
        "OpenFGA Check: is the user related to the object?",
        body=F.CheckRequest,
        result=F.CheckResponse,
        errors=_QUERY,
    ),
    _fga(
        "POST",
        "/stores/{store_id}/batch-check",
        "batch_check",
        "OpenFGA BatchCheck: many checks, answered by correlation id from one version.",
        body=F.BatchCheckRequest,
        result=F.BatchCheckResponse,
        errors=_QUERY,
    ),
    _fga(
        "POST",
        "/stores/{store_id}/list-objects",
        "list_objects",
        "OpenFGA ListObjects: every object of the type the user is related to.",
        body=F.ListObjectsRequest,
        result=F.ListObjectsResponse,
        errors=_QUERY,
    ),
    _fga(
        "POST",
        "/stores/{store_id}/streamed-list-objects",
        "streamed_list_objects",
        "OpenFGA StreamedListObjects: the same, one JSON object a line.",
        body=F.ListObjectsRequest,
        result=F.StreamedListObjectsResponse,
        content_type="application/x-ndjson",
        errors=_QUERY,
    ),
    _fga(
        "POST",
        "/stores/{store_id}/list-users",
        "list_users",
        "OpenFGA ListUsers: every user of the filter's type related to the object.",
        body=F.ListUsersRequest,
        result=F.ListUsersResponse,
        errors=_QUERY,
    ),
    _fga(
        "POST",
        "/stores/{store_id}/expand",
        "expand",
        "OpenFGA Expand: forwarded to --upstream-openfga (the index keeps sets, not the "
        "tuples a userset tree lists); 404 `unimplemented` without one.",
        body=F.ExpandRequest,
        result=F.ExpandResponse,
        errors=_QUERY,
    ),
)

_MAPPING = (
    "`subject` and `resource` are objects of the schema (`type:id`); `action.name` is a "
    "relation or permission of the resource's type that the index holds; `properties` "
    "and `context` are accepted and not used (indexed relations carry no conditions). "
    "The body must be sent as `Content-Type: application/json`. A permission the index "
    "does not hold is a 400 saying why; a type or action the schema does not define is "
    "a 400 for an evaluation and empty `results` for a search."
)


def _az(path: str, handler: str, summary: str, **kw: object) -> Route:
    kw.setdefault("description", _MAPPING)
    return Route("POST", path, handler, summary, face="authzen", **kw)  # type: ignore[arg-type]


_SEARCH = (400, 413, 503)
AUTHZEN_ROUTES: tuple[Route, ...] = (
    _az(
        "/access/v1/evaluation",
        "evaluation",
        "AuthZEN Access Evaluation: may the subject do the action on the resource?",
        body=Z.EvaluationRequest,
        result=Z.Decision,
        errors=_SEARCH,
    ),
    _az(
        "/access/v1/evaluations",
        "evaluations",
        "AuthZEN Access Evaluations: many, with defaults and an evaluation semantic.",
        body=Z.EvaluationsRequest,
        result=Z.EvaluationsResponse,
        errors=_SEARCH,
    ),
    _az(
        "/access/v1/search/subject",
        "search_subject",
        "AuthZEN Subject Search: the subjects of a type that may do the action.",
        body=Z.SubjectSearchRequest,
        result=Z.SubjectSearchResponse,
        errors=_SEARCH,
    ),
    _az(
        "/access/v1/search/resource",
        "search_resource",
        "AuthZEN Resource Search: the resources of a type the subject may act on.",
        body=Z.ResourceSearchRequest,
        result=Z.ResourceSearchResponse,
        errors=_SEARCH,
    ),
    _az(
        "/access/v1/search/action",
        "search_action",
        "AuthZEN Action Search: the indexed relations the subject has on the resource.",
        body=Z.ActionSearchRequest,
        result=Z.ActionSearchResponse,
        errors=_SEARCH,
    ),
    Route(
        "GET",
        "/.well-known/authzen-configuration",
        "configuration",
        "AuthZEN Policy Decision Point metadata: the endpoints above, as URLs.",
        result=Z.PdpMetadata,
        public=True,
        face="authzen",
    ),
)
