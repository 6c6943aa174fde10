"""The route table of the HTTP service and the OpenAPI document made from it.

Each ``Route`` names its handler and the pydantic models (``leopard.http.schemas``) the
handler reads and writes; ``openapi_document`` describes exactly those, so the
document cannot drift from what the app answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from leopard.http import schemas as S

__all__ = ["ROUTES", "Route", "openapi_document"]


@dataclass(frozen=True)
class Route:
    """One operation: the handler, the models it reads and writes, and how to describe it."""

    method: str
    path: str
    handler: str  # name of the method of ``leopard.http.handlers.Handlers`` that answers it
    summary: str
    params: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    result: type[BaseModel] | None = None
    content_type: str = "application/json"
    errors: tuple[int, ...] = ()
    public: bool = False  # answered without the bearer token


_READ_ERRORS = (400, 414, 503)
ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/v1/check",
        "get_check",
        "Is the subject in the group (directly or through nested groups)?",
        params=S.CheckParams,
        result=S.CheckResult,
        errors=_READ_ERRORS,
    ),
    Route(
        "POST",
        "/v1/check",
        "post_check",
        "Many checks at once, answered from one version of the index.",
        body=S.CheckBatchRequest,
        result=S.CheckBatchResult,
        errors=(400, 413, 503),
    ),
    Route(
        "GET",
        "/v1/groups",
        "get_groups",
        "Every group the subject is in, transitively.",
        params=S.GroupsParams,
        result=S.GroupsResult,
        errors=_READ_ERRORS,
    ),
    Route(
        "GET",
        "/v1/members",
        "get_members",
        "A page of the group's leaf subjects, transitively, in name order.",
        params=S.MembersParams,
        result=S.MembersResult,
        errors=_READ_ERRORS,
    ),
    Route(
        "GET",
        "/v1/explain",
        "get_explain",
        "A shortest chain of groups from the group down to the subject.",
        params=S.ExplainParams,
        result=S.ExplainResult,
        errors=_READ_ERRORS,
    ),
    Route(
        "GET",
        "/v1/version",
        "get_version",
        "The version the index has applied (waiting for `at_least` if given).",
        params=S.VersionParams,
        result=S.VersionResult,
        errors=_READ_ERRORS,
    ),
    Route(
        "GET", "/healthz", "get_health", "The process is up.", result=S.HealthResult, public=True
    ),
    Route(
        "GET",
        "/readyz",
        "get_ready",
        "Ready for traffic: the index is open and any consumer keeps up (503 if not).",
        result=S.ReadyResult,
        public=True,
    ),
    Route(
        "GET",
        "/metrics",
        "get_metrics",
        "Prometheus text exposition: requests, latency, offsets, lag, dead letters, sizes.",
        content_type="text/plain; version=0.0.4; charset=utf-8",
        errors=(503,),
    ),
    Route("GET", "/openapi.json", "get_openapi", "This document."),
)


def _parameter_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """A field's JSON schema as a query parameter's: no null branch, no title."""
    schema = {k: v for k, v in prop.items() if k not in ("title", "description", "examples")}
    options = schema.pop("anyOf", None)
    if options is not None:
        non_null = [o for o in options if o.get("type") != "null"]
        schema = {**(non_null[0] if len(non_null) == 1 else {"anyOf": non_null}), **schema}
        if schema.get("default", 0) is None:
            del schema["default"]
    return schema


def _parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        param: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": _parameter_schema(prop),
        }
        if "description" in prop:
            param["description"] = prop["description"]
        if "examples" in prop:
            param["example"] = prop["examples"][0]
        params.append(param)
    return params


_STATUS_TEXT = {
    400: "The request is malformed: a bad name, token, parameter, body or header (the "
    "`Authorization` header given twice).",
    401: "A bearer token is needed, or the one given is wrong.",
    408: "The request line and headers, or the body, did not arrive in time; the "
    "connection is closed.",
    413: "The body is too large, or the batch holds too many checks.",
    414: "The query string is too long.",
    431: "The request line and headers are larger than this server accepts; the "
    "connection is closed.",
    500: "A fault of the server (logged).",
    503: "The server cannot answer now: `at_least` was not reached within `max_wait` "
    "(`token` is the current version), the index's storage failed (`/readyz` reports "
    "it until another generation is served), or the server has as many connections "
    "open as it serves (`too_many_connections`, with `Connection: close`).",
}
#: answered on any route, before the request reaches the app (``leopard.http.connections``)
_CONNECTION_ERRORS = (408, 431, 503)


def openapi_document(
    routes: Iterable[Route] = ROUTES, *, max_batch: int = S.DEFAULT_MAX_BATCH, auth: bool = False
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``, from their pydantic models."""
    routes = list(routes)
    wanted: list[tuple[type[BaseModel], Any]] = [(S.ErrorBody, "serialization")]
    for r in routes:
        if r.body is not None:
            wanted.append((r.body, "validation"))
        if r.result is not None:
            wanted.append((r.result, "serialization"))
    refs, defs = models_json_schema(
        list(dict.fromkeys(wanted)), ref_template="#/components/schemas/{model}"
    )
    schemas = defs.get("$defs", {})
    batch = schemas.get("CheckBatchRequest")
    if batch is not None:  # the cap is the server's setting, beyond it a 413
        batch["properties"]["checks"]["maxItems"] = max_batch
    error_ref = refs[(S.ErrorBody, "serialization")]

    def json_content(schema: dict[str, Any]) -> dict[str, Any]:
        return {"application/json": {"schema": schema}}

    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        if r.result is not None:
            ok = json_content(refs[(r.result, "serialization")])
        elif r.content_type == "application/json":
            ok = json_content({"type": "object"})
        else:
            ok = {r.content_type.split(";")[0]: {"schema": {"type": "string"}}}
        responses: dict[str, Any] = {"200": {"description": r.summary, "content": ok}}
        if r.path == "/readyz":
            # not ready, or too many connections open to serve this one
            either = {"oneOf": [ok["application/json"]["schema"], error_ref]}
            responses["503"] = {
                "description": "Not ready (`reasons` says why), or too many connections.",
                "content": json_content(either),
            }
        statuses = set(r.errors) | set(_CONNECTION_ERRORS) | {500}
        if auth and not r.public:
            statuses |= {400, 401}
        for status in sorted(statuses):
            responses.setdefault(
                str(status),
                {"description": _STATUS_TEXT[status], "content": json_content(error_ref)},
            )
        op: dict[str, Any] = {
            "operationId": r.handler,
            "summary": r.summary,
            "responses": responses,
        }
        if r.params is not None:
            op["parameters"] = _parameters(r.params)
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": json_content(refs[(r.body, "validation")]),
            }
        if auth and r.public:
            op["security"] = []
        paths.setdefault(r.path, {})[r.method.lower()] = op
    try:
        pkg_version = version("leopard-index")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        pkg_version = "0"
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Leopard",
            "version": pkg_version,
            "description": "Group membership queries over a Leopard index. Every read "
            "answers with a version token; pass one as `at_least` to read your own write.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
