"""The AuthZEN Authorization API 1.0 over the index (the OpenID AuthZEN working group's
interface between a policy enforcement point and a decision point).

The mapping onto the schema: a subject ``{"type": "user", "id": "alice"}`` is the
subject ``user:alice``; a resource ``{"type": "doc", "id": "d1"}`` the object
``doc:d1``; an action's ``name`` is a relation or permission of the resource's type,
so that evaluating ``can subject do action on resource`` checks whether ``user:alice``
is in the set ``doc:d1#<name>``. Only relations the index holds can be actions; a name
it does not hold is refused, saying why. ``properties`` and ``context`` are accepted
and not used: the relations the index holds carry no conditions, so they cannot change
a decision. An id may not hold ``#`` (a relation in Leopard's names); ``*`` is the
wildcard subject.

* Access Evaluation: ``Index.check``. Access Evaluations: the top-level entities are
  the defaults of each item; the items are answered by ``Index.check_many`` from one
  version, and ``options.evaluations_semantic`` (``execute_all``,
  ``deny_on_first_deny``, ``permit_on_first_permit``) cuts the answer after the first
  deny or permit. An item that cannot be evaluated is a deny whose ``context.error``
  says why (``status`` 400 and a ``message``).
* Subject Search: the leaf members of the set (``Index.members_of``) of the subject's
  type; Resource Search: ``Index.groups_of`` with the type and the action; Action
  Search: every relation of the resource's type the index holds, checked (those it
  does not hold are named, with why, in ``context.not_evaluated``). Results are
  sorted by id and paged (``page.limit``, at most 1000; ``page.token`` is the previous
  page's ``next_token``, valid for the same request only).
* Errors: the status of Leopard's one table, the body the message as ``text/plain``
  (the specification's "error message string"). Every answer echoes ``X-Request-ID``.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
from collections.abc import Sequence

from pydantic import BaseModel

from leopard.core.index import Index
from leopard.http import authzen_schemas as Z
from leopard.http.errors import HttpError, error_answer
from leopard.http.reply import PeerRequest, Reply, parse_body
from leopard.http.types import Scope

__all__ = ["AuthZen"]

Entity = Z.Subject | Z.SubjectFilter | Z.Resource | Z.ResourceFilter


def _bad(message: str) -> HttpError:
    return HttpError(400, "invalid_request", message)


class AuthZen:
    """The handlers of ``leopard.http.peer_routes.AUTHZEN_ROUTES`` over one index."""

    def __init__(self, index: Index, *, max_batch: int) -> None:
        self.index = index
        self.max_batch = max_batch

    # -- names -------------------------------------------------------------------------

    def _type(self, entity: Entity, what: str) -> str:
        plan = self.index.config.plan
        if plan is not None and entity.type not in plan.schema.types:
            raise _bad(f"{what}.type {entity.type!r} is not a type of the schema")
        return entity.type

    def _name(self, entity: Entity, what: str) -> str:
        typ = self._type(entity, what)
        oid = entity.id or ""
        if "#" in oid or ":" in oid:
            raise _bad(f"{what}.id {oid!r} cannot hold '#' or ':' (they separate Leopard's names)")
        return f"{typ}:{oid}"

    def _relation(self, typ: str, action: Z.Action) -> str:
        config = self.index.config
        name = action.name
        if not config.is_set(typ, name):
            raise _bad(
                f"action {name!r} on {typ!r} cannot be evaluated: {typ}#{name} is not indexed "
                f"({config.why_not(typ, name)})"
            )
        return name

    def _pair(self, subject: Z.Subject, action: Z.Action, resource: Z.Resource) -> tuple[str, str]:
        group = f"{self._name(resource, 'resource')}#{self._relation(resource.type, action)}"
        return self._name(subject, "subject"), group

    # -- evaluations -------------------------------------------------------------------

    async def evaluation(self, request: PeerRequest) -> Reply:
        body = parse_body(await request.body(), Z.EvaluationRequest)
        subject, group = self._pair(body.subject, body.action, body.resource)
        return Reply.of(Z.Decision(decision=self.index.check(subject, group)))

    async def evaluations(self, request: PeerRequest) -> Reply:
        body = parse_body(await request.body(), Z.EvaluationsRequest)
        items = body.evaluations or []
        if not items:  # as a single evaluation
            for what in ("subject", "action", "resource"):
                if getattr(body, what) is None:
                    raise _bad(f"body field {what!r} is missing (and there are no evaluations)")
            assert body.subject and body.action and body.resource
            subject, group = self._pair(body.subject, body.action, body.resource)
            return Reply.of(Z.Decision(decision=self.index.check(subject, group)))
        if len(items) > self.max_batch:
            raise HttpError(
                413,
                "batch_too_large",
                f"{len(items):,} evaluations in one request; at most {self.max_batch:,} are "
                "accepted (split the batch)",
            )
        pairs: dict[int, tuple[str, str]] = {}
        errors: dict[int, str] = {}
        for i, item in enumerate(items):
            s, a, r = item.subject or body.subject, item.action or body.action, item.resource
            r = r or body.resource
            for what, value in (("subject", s), ("action", a), ("resource", r)):
                if value is None:
                    raise _bad(f"evaluations[{i}] has no {what}, and the request no default one")
            assert s is not None and a is not None and r is not None
            try:
                pairs[i] = self._pair(s, a, r)
            except HttpError as exc:
                errors[i] = exc.detail
        decided = dict(
            zip(pairs, self._check_all(list(pairs.values()), errors, list(pairs)), strict=True)
        )
        semantic = body.options.evaluations_semantic if body.options else "execute_all"
        out = []
        for i in range(len(items)):
            if i in errors:
                error = {"status": 400, "message": errors[i]}
                out.append(Z.Decision(decision=False, context={"error": error}))
            else:
                out.append(Z.Decision(decision=bool(decided[i])))
            if (semantic == "deny_on_first_deny" and not out[-1].decision) or (
                semantic == "permit_on_first_permit" and out[-1].decision
            ):
                break
        return Reply.of(Z.EvaluationsResponse(evaluations=out))

    def _check_all(
        self, pairs: list[tuple[str, str]], errors: dict[int, str], keys: list[int]
    ) -> list[bool]:
        """Every pair from one version; when a name is refused, each on its own (its
        error recorded, and a deny)."""
        try:
            return self.index.check_many(pairs)
        except (ValueError, TypeError):
            out = []
            for key, (subject, group) in zip(keys, pairs, strict=True):
                try:
                    out.append(self.index.check(subject, group))
                except (ValueError, TypeError) as exc:
                    errors[key] = str(exc)
                    out.append(False)
            return out

    # -- searches ----------------------------------------------------------------------

    async def search_subject(self, request: PeerRequest) -> Reply:
        body = parse_body(await request.body(), Z.SubjectSearchRequest)
        group = f"{self._name(body.resource, 'resource')}#"
        group += self._relation(body.resource.type, body.action)
        prefix = self._type(body.subject, "subject") + ":"
        limit, after, stamp = self._page(body, body.page)
        found: list[str] = []
        cursor = after if after is not None else prefix
        while len(found) <= limit:
            chunk = self.index.members_of(group, limit=limit + 1, after=cursor)
            for name in chunk:
                if not name.startswith(prefix):
                    chunk = []  # sorted by name: past the type
                    break
                if "#" not in name:
                    found.append(name)
            if len(chunk) <= limit:
                break
            cursor = chunk[-1]
        results = [
            Z.Subject(type=prefix[:-1], id=n[len(prefix) :], properties=None) for n in found[:limit]
        ]
        page = self._next(found, limit, stamp)
        return Reply.of(Z.SubjectSearchResponse(page=page, results=results))

    async def search_resource(self, request: PeerRequest) -> Reply:
        body = parse_body(await request.body(), Z.ResourceSearchRequest)
        typ = self._type(body.resource, "resource")
        relation = self._relation(typ, body.action)
        subject = self._name(body.subject, "subject")
        names = self.index.groups_of(subject, type=typ, permission=relation)
        tail = len(relation) + 1
        ids = [n[len(typ) + 1 : -tail] for n in names]
        shown, page = self._slice(ids, body, body.page)
        return Reply.of(
            Z.ResourceSearchResponse(page=page, results=[Z.Resource(type=typ, id=i) for i in shown])
        )

    async def search_action(self, request: PeerRequest) -> Reply:
        body = parse_body(await request.body(), Z.ActionSearchRequest)
        config = self.index.config
        obj = self._name(body.resource, "resource")
        subject = self._name(body.subject, "subject")
        relations = sorted(config.sets_of(body.resource.type))
        held = self.index.check_many([(subject, f"{obj}#{r}") for r in relations])
        names = [r for r, ok in zip(relations, held, strict=True) if ok]
        shown, page = self._slice(names, body, body.page)
        context = None
        plan = config.plan
        typedef = plan.schema.types.get(body.resource.type) if plan is not None else None
        if typedef is not None:
            left = {r: config.why_not(body.resource.type, r) for r in typedef.relations}
            skipped = {r: why for r, why in left.items() if r not in relations}
            context = {"not_evaluated": skipped} if skipped else None
        results = [Z.Action(name=n) for n in shown]
        return Reply.of(Z.ActionSearchResponse(page=page, context=context, results=results))

    # -- paging ------------------------------------------------------------------------

    def _page(self, body: BaseModel, page: Z.PageRequest | None) -> tuple[int, str | None, str]:
        """The page size, the name to start after (None: the start) and the request's stamp."""
        limit = (page.limit if page is not None else None) or Z.MAX_PAGE
        shape = body.model_dump(mode="json", exclude={"page": {"token"}})
        stamp = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]
        token = page.token if page is not None else None
        if not token:
            return limit, None, stamp
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            after, given = data["a"], data["s"]
        except (ValueError, KeyError, TypeError):
            raise _bad(f"page.token {token[:40]!r} is not a token this server gave") from None
        if given != stamp or not isinstance(after, str) or not after:
            raise _bad(
                "page.token belongs to another request: everything but the token must stay "
                "the same from page to page"
            )
        return limit, after, stamp

    @staticmethod
    def _next(found: Sequence[str], limit: int, stamp: str) -> Z.PageResponse:
        shown = min(len(found), limit)
        if len(found) <= limit:
            return Z.PageResponse(next_token="", count=shown)
        data = json.dumps({"a": found[limit - 1], "s": stamp}, separators=(",", ":"))
        token = base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")
        return Z.PageResponse(next_token=token, count=shown)

    def _slice(
        self, names: list[str], body: BaseModel, page: Z.PageRequest | None
    ) -> tuple[list[str], Z.PageResponse]:
        """One page of sorted ``names``."""
        limit, after, stamp = self._page(body, page)
        start = bisect.bisect_right(names, after) if after is not None else 0
        found = names[start : start + limit + 1]
        return found[:limit], self._next(found, limit, stamp)

    # -- metadata and errors -----------------------------------------------------------

    async def configuration(self, request: PeerRequest) -> Reply:
        scope = request.scope
        host = request.header(b"host")
        if host is None:
            server = scope.get("server") or ("localhost", None)
            host = (f"{server[0]}:{server[1]}" if server[1] else server[0]).encode()
        base = f"{scope.get('scheme', 'http')}://{host.decode('latin-1')}"
        access = base + "/access/v1"
        return Reply.of(
            Z.PdpMetadata(
                policy_decision_point=base,
                access_evaluation_endpoint=access + "/evaluation",
                access_evaluations_endpoint=access + "/evaluations",
                search_subject_endpoint=access + "/search/subject",
                search_resource_endpoint=access + "/search/resource",
                search_action_endpoint=access + "/search/action",
            )
        )

    def error_reply(self, exc: Exception, scope: Scope) -> Reply:
        """``exc`` as the specification's error: its status, the message as text."""
        status, body, headers = error_answer(exc, scope["method"], scope["path"])
        message = json.loads(body)["detail"]
        return Reply(status, message.encode(), "text/plain; charset=utf-8", headers=headers)
