"""The route table of the HTTP service and the OpenAPI document made from it.

Each ``Route`` names its handler and the pydantic models (``leopard.http.schemas``, and
for the OpenFGA and AuthZEN faces ``openfga_schemas`` and ``authzen_schemas``) the
handler reads and writes; ``openapi_document`` describes exactly those, with each
face's error body, so the document cannot drift from what the app answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from leopard.http import schemas as S
from leopard.http.openfga_schemas import OpenFgaError
from leopard.http.peer_routes import AUTHZEN_ROUTES, OPENFGA_ROUTES
from leopard.http.route import Route

__all__ = ["ROUTES", "Route", "allow_headers", "openapi_document"]


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
    *OPENFGA_ROUTES,
    *AUTHZEN_ROUTES,
)


def allow_headers(table: dict[str, dict[str, Any]]) -> dict[str, bytes]:
    """The ``Allow`` header of each path of a method table (path -> method -> op): its
    methods, and HEAD wherever GET (RFC 9110 9.1: probes and balancers use it)."""
    return {
        path: ", ".join(sorted({*ops, *(("HEAD",) if "GET" in ops else ())})).encode()
        for path, ops in table.items()
    }


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


def _parameters(model: type[BaseModel] | None, path: Iterable[str] = ()) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in path
    ]
    if model is None:
        return params
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", ()))
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
    404: "No such store (`store_id_not_found`), or the operation is not answered here "
    "(`unimplemented`).",
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
_FACE_TEXT = {
    "openfga": " OpenFGA's error body: `code` is OpenFGA's (`validation_error`, "
    "`type_not_found`, `relation_not_found`, `authorization_model_not_found`, "
    "`store_id_not_found`, `unimplemented`, `exceeded_entity_limit`, `deadline_exceeded`, "
    "`unavailable`, `internal_error`, ...).",
    "authzen": " The body is the message, as text.",
}
_TAGS = {"openfga": "OpenFGA", "authzen": "AuthZEN", "leopard": "Leopard"}
#: answered on any route, before the request reaches the app (``leopard.http.connections``)
_CONNECTION_ERRORS = (408, 431, 503)


def openapi_document(
    routes: Iterable[Route] = ROUTES, *, max_batch: int = S.DEFAULT_MAX_BATCH, auth: bool = False
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``, from their pydantic models."""
    routes = list(routes)
    wanted: list[tuple[type[BaseModel], Any]] = [
        (S.ErrorBody, "serialization"),
        (OpenFgaError, "serialization"),
    ]
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
    face_errors = {
        "leopard": {"application/json": {"schema": error_ref}},
        "openfga": {"application/json": {"schema": refs[(OpenFgaError, "serialization")]}},
        "authzen": {"text/plain": {"schema": {"type": "string"}}},
    }

    def json_content(schema: dict[str, Any]) -> dict[str, Any]:
        return {"application/json": {"schema": schema}}

    def error_content(r: Route, status: int) -> dict[str, Any]:
        """The face's error body; what the connection protocol answers is Leopard's."""
        content = face_errors[r.face]
        if r.face == "leopard" or status not in _CONNECTION_ERRORS:
            return content
        if status not in r.errors:  # only the connection protocol answers it
            return json_content(error_ref)
        theirs = content.get("application/json")
        if theirs is None:
            return {**content, **json_content(error_ref)}
        return json_content({"oneOf": [theirs["schema"], error_ref]})

    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        if r.result is not None:
            ok = {r.content_type: {"schema": refs[(r.result, "serialization")]}}
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
        if r.method == "GET":
            statuses.add(414)  # any query string is measured before routing
        if auth and not r.public:
            statuses |= {400, 401}
        for status in sorted(statuses):
            theirs = r.face != "leopard" and (
                status in r.errors or status not in _CONNECTION_ERRORS
            )
            responses.setdefault(
                str(status),
                {
                    "description": _STATUS_TEXT[status] + (_FACE_TEXT[r.face] if theirs else ""),
                    "content": error_content(r, status),
                },
            )
        op: dict[str, Any] = {
            "operationId": r.handler if r.face == "leopard" else f"{r.face}_{r.handler}",
            "summary": r.summary,
            "responses": responses,
        }
        if r.face != "leopard":
            op["tags"] = [_TAGS[r.face]]
        if r.description:
            op["description"] = r.description
        if r.params is not None or r.path_params:
            op["parameters"] = _parameters(r.params, r.path_params)
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
