"""The AuthZEN Authorization API 1.0 over the index (the OpenID AuthZEN working group's
interface between a policy enforcement point and a decision point).

The mapping onto the schema: a subject ``{"type": "user", "id": "alice"}`` is the
subject ``user:alice``; a resource ``{"type": "doc", "id": "d1"}`` the object
``doc:d1``; an action's ``name`` is a relation or permission of the resource's type,
so that evaluating ``can subject do action on resource`` checks whether ``user:alice``
is in the set ``doc:d1#<name>``. ``properties`` and ``context`` are accepted and not
used: the relations the index holds carry no conditions, so they cannot change a
decision. An id may not hold ``#`` or ``:`` (they separate Leopard's names); ``*`` is
the wildcard subject (``user:*``: every user, where the schema allows it).

Names the index cannot answer for, by kind:

* a type, or an action of a type, that the schema does not define: nothing can match
  it. An evaluation is refused with a 400 naming it (a typo should not pass for a
  deny); a search answers empty ``results`` (the certification scenario of the
  specification asks so), its ``context.reason`` saying why;
* a permission the schema defines but the index does not hold (an exclusion, an
  intersection, a caveat): the index cannot decide it, and a 400 says why, in every
  API (a deny or an empty search would be a wrong answer, not a refusal);
* an id that Leopard's grammar refuses (whitespace, control characters, over 1 KiB):
  a 400 naming it.

* Access Evaluation: ``Index.check``. Access Evaluations: the top-level entities are
  the defaults of each item (whole entities, never merged field by field); the items
  are answered by ``Index.check_many`` from one version, and
  ``options.evaluations_semantic`` (``execute_all``, ``deny_on_first_deny``,
  ``permit_on_first_permit``) cuts the answer after the first deny or permit. An item
  that cannot be evaluated (malformed, missing an entity without a default, refused
  as above) is a deny whose ``context.error`` says why (``status`` 400 and a
  ``message``), and counts as a deny for the semantics; only a malformed top level is
  a 400 for the whole request.
* Subject Search: the leaf members of the set (``Index.members_of``) of the subject's
  type; Resource Search: ``Index.groups_of`` with the type and the action; Action
  Search: every relation of the resource's type the index holds, checked (those it
  does not hold are named, with why, in ``context.not_evaluated``). The searched-for
  entity's ``id`` is ignored. Results are sorted by id and paged: ``page.limit`` (0 or
  none: ``MAX_PAGE``; more is served ``MAX_PAGE`` at a time), ``page.token`` the
  previous page's ``next_token``. A token is valid for the same request only: the
  entities and ``context`` must not change, nor ``page.limit`` if given again (left
  out, the token's own limit holds). ``count`` is always given, ``total`` where it
  costs nothing more (resource and action search).
* Transport: a POST's ``Content-Type`` must be ``application/json`` (400 otherwise);
  errors have the status of Leopard's one table and the message as ``text/plain``
  (the specification's "error message string"); every answer echoes ``X-Request-ID``
  (``leopard.http.peers``).
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from leopard.core.index import Index
from leopard.errors import InvalidInput
from leopard.http import authzen_schemas as Z
from leopard.http.errors import HttpError, error_answer
from leopard.http.parsing import describe
from leopard.http.reply import PeerRequest, Reply, parse_body
from leopard.http.types import Scope

__all__ = ["AuthZen", "check_public_url"]

Entity = Z.Subject | Z.SubjectFilter | Z.Resource | Z.ResourceFilter
M = TypeVar("M", bound=BaseModel)
_JSON = b"application/json"
#: a single decision's answer, as ``Decision`` serializes it (the hot path skips pydantic)
_DECISIONS = (b'{"decision":false}', b'{"decision":true}')
#: a Host header the discovery document may name: host or [IPv6], and a port
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?")


def check_public_url(url: str) -> str:
    """``url`` without a trailing slash when it can be the base of the endpoints' URLs
    (http or https, a host, no query, fragment or user); InvalidInput naming it if not."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is no number in range
    except ValueError as exc:
        raise InvalidInput(f"public URL {url!r} is no URL: {exc}") from None
    why = None
    if parts.scheme not in ("http", "https"):
        why = "it must start with http:// or https://"
    elif not parts.hostname:
        why = "it names no host"
    elif parts.query or parts.fragment or url.endswith(("?", "#")):
        why = "it may not have a query or a fragment"
    elif parts.username is not None:
        why = "it may not name a user"
    elif any(c.isspace() for c in url):
        why = "it may not hold spaces"
    if why is not None:
        raise InvalidInput(f"public URL {url!r}: {why}")
    return url.rstrip("/")


def _bad(message: str) -> HttpError:
    return HttpError(400, "invalid_request", message)


class _Unknown(Exception):
    """A type or action the schema does not define: no entity can match it."""


class AuthZen:
    """The handlers of ``leopard.http.peer_routes.AUTHZEN_ROUTES`` over one index."""

    def __init__(self, index: Index, *, max_batch: int, public_url: str | None = None) -> None:
        self.index = index
        self.max_batch = max_batch
        # the base of the endpoints' URLs in the discovery document (else the request's)
        self.public_url = check_public_url(public_url) if public_url else None

    # -- reading -----------------------------------------------------------------------

    async def _read(self, request: PeerRequest, model: type[M]) -> M:
        """The body as ``model``, after the Content-Type the HTTPS binding requires."""
        given = request.header(b"content-type")
        if given is None or given.split(b";", 1)[0].strip().lower() != _JSON:
            shown = "none" if given is None else repr(given.decode("latin-1")[:80])
            raise _bad(f"the Content-Type must be application/json, not {shown}")
        return parse_body(await request.body(), model)

    # -- names -------------------------------------------------------------------------

    def _type(self, entity: Entity, what: str) -> str:
        plan = self.index.config.plan
        if plan is not None and entity.type not in plan.schema.types:
            raise _Unknown(f"{what}.type {entity.type!r} is not a type of the schema")
        return entity.type

    def _name(self, entity: Entity, what: str) -> str:
        typ = self._type(entity, what)
        oid = entity.id or ""
        if not isinstance(oid, str) or "#" in oid or ":" in oid:
            raise _bad(f"{what}.id {oid!r} cannot hold '#' or ':' (they separate Leopard's names)")
        if oid == "*" and what == "resource":  # a subject's is every subject of its type
            raise _bad(f"resource.id {oid!r}: a resource id cannot be a wildcard")
        return f"{typ}:{oid}"

    def _relation(self, typ: str, action: Z.Action) -> str:
        config = self.index.config
        name = action.name
        if config.is_set(typ, name):
            return name
        why = config.why_not(typ, name)
        plan = config.plan
        if plan is not None and (typ, name) in plan.refused:  # defined, not answerable
            raise _bad(
                f"action {name!r} on {typ!r} cannot be evaluated: {typ}#{name} is not indexed "
                f"({why})"
            )
        raise _Unknown(f"action {name!r} is not a relation or permission of {typ!r} ({why})")

    def _pair(self, subject: Z.Subject, action: Z.Action, resource: Z.Resource) -> tuple[str, str]:
        group = f"{self._name(resource, 'resource')}#{self._relation(resource.type, action)}"
        return self._name(subject, "subject"), group

    def _decide(self, subject: Z.Subject, action: Z.Action, resource: Z.Resource) -> Reply:
        try:
            pair = self._pair(subject, action, resource)
        except _Unknown as exc:
            raise _bad(str(exc)) from None
        return Reply(200, _DECISIONS[self.index.check(*pair)])

    # -- evaluations -------------------------------------------------------------------

    async def evaluation(self, request: PeerRequest) -> Reply:
        body = await self._read(request, Z.EvaluationRequest)
        return self._decide(body.subject, body.action, body.resource)

    async def evaluations(self, request: PeerRequest) -> Reply:
        body = await self._read(request, Z.EvaluationsBody)
        items = body.evaluations or []
        if not items:  # as a single evaluation
            for what in ("subject", "action", "resource"):
                if getattr(body, what) is None:
                    raise _bad(f"body field {what!r} is missing (and there are no evaluations)")
            assert body.subject and body.action and body.resource
            return self._decide(body.subject, body.action, body.resource)
        if len(items) > self.max_batch:
            raise HttpError(
                413,
                "batch_too_large",
                f"{len(items):,} evaluations in one request; at most {self.max_batch:,} are "
                "accepted (split the batch)",
            )
        pairs: dict[int, tuple[str, str]] = {}
        errors: dict[int, str] = {}
        for i, raw in enumerate(items):
            try:
                pairs[i] = self._item(i, raw, body)
            except (HttpError, _Unknown) as exc:
                errors[i] = exc.detail if isinstance(exc, HttpError) else str(exc)
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

    def _item(self, i: int, raw: Any, body: Z.EvaluationsBody) -> tuple[str, str]:
        """The subject and set of item ``i``, its missing entities from the top level."""
        try:
            item = Z.EvaluationItem.model_validate(raw)
        except ValidationError as exc:
            raise _bad(describe(exc, Z.EvaluationItem, f"evaluations[{i}]")) from None
        s, a, r = item.subject or body.subject, item.action or body.action, item.resource
        r = r or body.resource
        missing = [w for w, v in (("subject", s), ("action", a), ("resource", r)) if v is None]
        if missing:
            raise _bad(
                f"evaluations[{i}] has no {' and no '.join(missing)}, and the request gives "
                "no default"
            )
        assert s is not None and a is not None and r is not None
        return self._pair(s, a, r)

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
        body = await self._read(request, Z.SubjectSearchRequest)
        limit, after, stamp = self._page(body, body.page)
        try:
            group = f"{self._name(body.resource, 'resource')}#"
            group += self._relation(body.resource.type, body.action)
            prefix = self._type(body.subject, "subject") + ":"
        except _Unknown as exc:
            return Reply.of(Z.SubjectSearchResponse(**self._nothing(exc)))
        if self.index.placement is not None:  # a shard served alone
            raise _bad(self.index.placement.alone(f"the subject search of {group}"))
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
        body = await self._read(request, Z.ResourceSearchRequest)
        self._page(body, body.page)  # a bad token is refused whatever the names
        try:
            typ = self._type(body.resource, "resource")
            relation = self._relation(typ, body.action)
            subject = self._name(body.subject, "subject")
        except _Unknown as exc:
            return Reply.of(Z.ResourceSearchResponse(**self._nothing(exc)))
        names = self.index.groups_of(subject, type=typ, permission=relation)
        tail = len(relation) + 1
        ids = sorted(n[len(typ) + 1 : -tail] for n in names)
        shown, page = self._slice(ids, body, body.page)
        return Reply.of(
            Z.ResourceSearchResponse(page=page, results=[Z.Resource(type=typ, id=i) for i in shown])
        )

    async def search_action(self, request: PeerRequest) -> Reply:
        body = await self._read(request, Z.ActionSearchRequest)
        self._page(body, body.page)
        config = self.index.config
        try:
            obj = self._name(body.resource, "resource")
            subject = self._name(body.subject, "subject")
        except _Unknown as exc:
            return Reply.of(Z.ActionSearchResponse(**self._nothing(exc)))
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

    @staticmethod
    def _nothing(why: _Unknown) -> dict[str, Any]:
        """An empty search answer saying why nothing can match."""
        return {
            "page": Z.PageResponse(next_token="", count=0, total=0),
            "context": {"reason": str(why)},
            "results": [],
        }

    # -- paging ------------------------------------------------------------------------

    def _page(self, body: BaseModel, page: Z.PageRequest | None) -> tuple[int, str | None, str]:
        """The page size, the name to start after (None: the start) and the request's
        stamp (a digest of everything but ``page``)."""
        asked = page.limit if page is not None else None
        limit = min(asked or Z.MAX_PAGE, Z.MAX_PAGE)
        shape = body.model_dump(mode="json", exclude={"page"})
        stamp = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]
        token = page.token if page is not None else None
        if not token:
            return limit, None, stamp
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            after, given, size = data["a"], data["s"], data["l"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise _bad(f"page.token {token[:40]!r} is not a token this server gave") from None
        if given != stamp or not isinstance(after, str) or not after:
            raise _bad(
                "page.token belongs to another request: the subject, action, resource and "
                "context must stay the same from page to page"
            )
        if not isinstance(size, int) or not 0 < size <= Z.MAX_PAGE:
            raise _bad(f"page.token {token[:40]!r} is not a token this server gave")
        if asked is not None and limit != size:
            raise _bad(
                f"page.limit changed from {size} to {asked} in the middle of a search: give "
                "the first page's limit, or none"
            )
        return size, after, stamp

    @staticmethod
    def _next(
        found: Sequence[str], limit: int, stamp: str, total: int | None = None
    ) -> Z.PageResponse:
        shown = min(len(found), limit)
        if len(found) <= limit:
            return Z.PageResponse(next_token="", count=shown, total=total)
        data = json.dumps({"a": found[limit - 1], "s": stamp, "l": limit}, separators=(",", ":"))
        token = base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")
        return Z.PageResponse(next_token=token, count=shown, total=total)

    def _slice(
        self, names: list[str], body: BaseModel, page: Z.PageRequest | None
    ) -> tuple[list[str], Z.PageResponse]:
        """One page of sorted ``names``."""
        limit, after, stamp = self._page(body, page)
        start = bisect.bisect_right(names, after) if after is not None else 0
        found = names[start : start + limit + 1]
        return found[:limit], self._next(found, limit, stamp, total=len(names))

    # -- metadata and errors -----------------------------------------------------------

    async def configuration(self, request: PeerRequest) -> Reply:
        base = self.public_url or self._base(request)
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

    @staticmethod
    def _base(request: PeerRequest) -> str:
        """The URL the request came to, from its Host header (checked)."""
        scope = request.scope
        host = request.header(b"host")
        if host is None:
            server = scope.get("server") or ("localhost", None)
            host = (f"{server[0]}:{server[1]}" if server[1] else server[0]).encode()
        elif not _HOST.fullmatch(host):  # reflected into every endpoint's URL
            raise _bad(f"the Host header {host.decode('latin-1')!r} is no host[:port]")
        return f"{scope.get('scheme', 'http')}://{host.decode('latin-1')}"

    def error_reply(self, exc: Exception, scope: Scope) -> Reply:
        """``exc`` as the specification's error: its status, the message as text."""
        status, body, headers = error_answer(exc, scope["method"], scope["path"])
        message = json.loads(body)["detail"]
        return Reply(status, message.encode(), "text/plain; charset=utf-8", headers=headers)
