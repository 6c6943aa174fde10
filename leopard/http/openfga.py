"""OpenFGA's HTTP API over the index, so that an application using an OpenFGA SDK keeps
working against ``leopard serve``.

One store, the index: its id is ``--store-id`` or one derived from the index's
directory (``default_store_id``); its model is the index's OpenFGA schema, with the id
OpenFGA gave it (an index built from a store) or one derived from its content. A check
of ``user`` ``relation`` ``object`` asks whether ``user`` is in the set
``object#relation``; ListObjects is ``Index.groups_of``, ListUsers ``Index.members_of``.

What the index cannot answer exactly (``Unanswerable``): contextual tuples, a
``context`` for conditions, another ``authorization_model_id``, a relation the index
does not hold, ListUsers for usersets and Expand. Such a request goes unchanged to
``--upstream-openfga`` when given (``leopard.http.upstream``; so do the listing of
models and a model not the index's), else it is a 400 saying why (Expand: 404
``unimplemented``). In a batch check, an item the index cannot answer is an error of
that item, unless there is an upstream: then the whole batch goes there.

Errors are OpenFGA's ``{"code", "message"}``: the status comes from the one table of
``leopard.errors`` (through ``leopard.http.errors.error_answer``), the code is OpenFGA's
for the same failure (``error_reply``); the model's own checks use OpenFGA's
``type_not_found``, ``relation_not_found``, ``authorization_model_not_found`` and a
store that is not this one ``store_id_not_found`` (404).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from leopard.core.freshness import followed_elsewhere
from leopard.core.index import Index
from leopard.errors import InvalidInput, InvalidSchema, StaleIndex
from leopard.http import openfga_schemas as F
from leopard.http.errors import HttpError, error_answer
from leopard.http.freshness import Waits
from leopard.http.headwait import HeadOf, reach_head
from leopard.http.parsing import query_params, validate
from leopard.http.reply import PeerRequest, Reply, parse_body
from leopard.http.types import Scope
from leopard.http.upstream import Upstream, UpstreamUnreachable
from leopard.model.config import Config
from leopard.model.schema import to_openfga_json
from leopard.model.zedtoken import OPENFGA_KEY

__all__ = [
    "FgaError",
    "OpenFga",
    "Unanswerable",
    "check_store_id",
    "default_store_id",
    "ulid_of",
]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ULID = re.compile(F.ULID)
#: Leopard's error codes (``leopard.http.schemas.ERROR_CODES``) as OpenFGA's
_CODES = {
    "not_found": "undefined_endpoint",
    "method_not_allowed": "undefined_endpoint",
    "body_too_large": "exceeded_entity_limit",
    "batch_too_large": "exceeded_entity_limit",
    "stale": "deadline_exceeded",
    "index_not_found": "unavailable",
    "storage_error": "unavailable",
    "broker_error": "unavailable",
    "internal": "internal_error",
}
_ALLOWED = (b'{"allowed":false,"resolution":""}', b'{"allowed":true,"resolution":""}')


def ulid_of(data: bytes) -> str:
    """A ULID-shaped id (26 Crockford base32 characters, the first 0-7) from ``data``."""
    n = int.from_bytes(hashlib.sha256(data).digest()[:16], "big")
    return "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in reversed(range(26)))


def default_store_id(index_path: str | Path) -> str:
    """The store id of an index when ``--store-id`` is not given: stable for its directory."""
    return ulid_of(b"leopard-store:" + str(Path(index_path).resolve()).encode())


def _ulid(given: str, what: str) -> str:
    """``given`` (a path parameter) when it is a ULID, else OpenFGA's 400 naming it."""
    if not _ULID.fullmatch(given):
        why = "a ULID (26 characters of 0-9 and A-Z without I, L, O, U) is expected"
        raise FgaError(400, "validation_error", f"invalid {what} {given[:80]!r}: {why}")
    return given


def check_store_id(store_id: str) -> str:
    """``store_id`` when it is a ULID, as OpenFGA's SDKs want; InvalidInput otherwise."""
    if not re.fullmatch(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", store_id):
        raise InvalidInput(
            f"store id {store_id!r} is not a ULID (26 characters of 0-9 and A-Z without "
            "I, L, O, U, the first 0-7), as OpenFGA's store ids are"
        )
    return store_id


class FgaError(Exception):
    """An OpenFGA error answer: status, OpenFGA's code, and the message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Unanswerable(Exception):
    """The index cannot answer this exactly; the message says why, ``code`` is the
    OpenFGA code of the refusal when there is no upstream."""

    def __init__(self, message: str, code: str = "validation_error") -> None:
        super().__init__(message)
        self.code = code


def _timestamp(seconds: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1e6):06d}Z"
    )


class OpenFga:
    """The handlers of ``leopard.http.peer_routes.OPENFGA_ROUTES`` over one index."""

    def __init__(
        self,
        index: Index,
        waits: Waits,
        *,
        head: HeadOf | None = None,
        store_id: str | None = None,
        upstream: Upstream | None = None,
        max_batch: int,
    ) -> None:
        self.index = index
        self.waits = waits
        self.head = head  # the head of the stream applied to the index, when one is
        self.store_id = check_store_id(store_id) if store_id else default_store_id(index.path)
        self.upstream = upstream
        self.max_batch = max_batch
        self._model: tuple[Config | None, Any, F.AuthorizationModel | None] = (None, None, None)

    # -- the store and its model -----------------------------------------------------

    def store(self) -> F.Store:
        path = Path(self.index.path)
        made = path.stat()
        current = path / "CURRENT"
        changed = current.stat().st_mtime if current.exists() else made.st_mtime
        return F.Store(
            id=self.store_id,
            name=path.resolve().name,
            created_at=_timestamp(made.st_ctime),
            updated_at=_timestamp(changed),
        )

    def model(self) -> F.AuthorizationModel | None:
        """The index's OpenFGA model (None without an OpenFGA schema); its id is OpenFGA's
        for an index built from a store (applications pin it), else derived from it."""
        config = self.index.config
        given = self.index.reader.source_state.get(OPENFGA_KEY, {}).get("model_id")
        if self._model[0] is not config or self._model[1] != given:
            plan, found = config.plan, None
            if plan is not None and plan.schema.dialect == "openfga":
                try:
                    data = to_openfga_json(plan.schema)
                except InvalidSchema:
                    data = None
                if data is not None:
                    mid = given if isinstance(given, str) and _ULID.fullmatch(given) else None
                    text = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
                    found = F.AuthorizationModel(id=mid or ulid_of(text), **data)
            self._model = (config, given, found)
        return self._model[2]

    def _store_of(self, request: PeerRequest) -> None:
        given = _ulid(request.params["store_id"], "store_id")
        if given != self.store_id:
            raise FgaError(404, "store_id_not_found", f"Store ID {given!r} not found")

    async def list_stores(self, request: PeerRequest) -> Reply:
        q: F.ListStoresParams = validate(query_params(request.scope), F.ListStoresParams)
        self._no_token(q.continuation_token)
        store = self.store()
        stores = [store] if q.name is None or q.name == store.name else []
        return Reply.of(F.ListStoresResponse(stores=stores))

    async def get_store(self, request: PeerRequest) -> Reply:
        self._store_of(request)
        return Reply.of(F.GetStoreResponse(**self.store().model_dump()))

    async def read_authorization_models(self, request: PeerRequest) -> Reply:
        self._store_of(request)
        if self.upstream is not None:  # the store's models, as OpenFGA lists them
            return await self.upstream_reply(request)
        q: F.PageParams = validate(query_params(request.scope), F.PageParams)
        self._no_token(q.continuation_token)
        model = self.model()
        return Reply.of(
            F.ReadAuthorizationModelsResponse(
                authorization_models=[model] if model is not None else []
            )
        )

    async def read_authorization_model(self, request: PeerRequest) -> Reply:
        self._store_of(request)
        wanted = _ulid(request.params["id"], "id")
        model = self.model()
        if model is None or model.id != wanted:
            if self.upstream is not None:
                return await self.upstream_reply(request)
            raise FgaError(
                400,
                "authorization_model_not_found",
                f"Authorization Model {wanted[:80]!r} not found",
            )
        return Reply.of(F.ReadAuthorizationModelResponse(authorization_model=model))

    @staticmethod
    def _no_token(token: str | None) -> None:
        if token:  # every listing fits one page: no token is ever handed out
            raise FgaError(400, "invalid_continuation_token", "Invalid continuation token")

    # -- the queries -----------------------------------------------------------------

    async def check(self, request: PeerRequest) -> Reply:
        raw = await request.body()
        body = parse_body(raw, F.CheckRequest)
        self._store_of(request)
        tk = body.tuple_key
        try:
            self._plain(body, body.contextual_tuples, body.context)
            subject, group = self._target(tk.user, tk.relation, tk.object)
            await self._consistent(body.consistency)
        except Unanswerable as why:
            return await self._elsewhere(request, why)
        return Reply(200, _ALLOWED[self.index.check(subject, group)])

    async def batch_check(self, request: PeerRequest) -> Reply:
        raw = await request.body()
        body = parse_body(raw, F.BatchCheckRequest)
        self._store_of(request)
        if len(body.checks) > self.max_batch:
            raise FgaError(
                400,
                "exceeded_entity_limit",
                f"batchCheck received {len(body.checks):,} checks, the maximum allowed is "
                f"{self.max_batch:,}",
            )
        try:
            self._plain(body, None, None)
            await self._consistent(body.consistency)
        except Unanswerable as why:
            return await self._elsewhere(request, why)
        targets: dict[str, tuple[str, str]] = {}
        failed: dict[str, F.CheckError] = {}
        for item in body.checks:
            cid = item.correlation_id
            if cid in targets or cid in failed:
                raise FgaError(400, "validation_error", f"duplicate correlation_id {cid!r}")
            tk = item.tuple_key
            try:
                self._plain(None, item.contextual_tuples, item.context)
                targets[cid] = self._target(tk.user, tk.relation, tk.object)
            except Unanswerable as why:
                if self.upstream is not None:
                    return await self.upstream_reply(request)
                failed[cid] = F.CheckError(input_error=why.code, message=self._refusal(why))
            except FgaError as exc:
                failed[cid] = F.CheckError(input_error=exc.code, message=str(exc))
        result = {c: F.BatchCheckSingleResult(error=e) for c, e in failed.items()}
        for cid, error, allowed in self._check_all(targets):
            result[cid] = F.BatchCheckSingleResult(allowed=allowed, error=error)
        return Reply.of(F.BatchCheckResponse(result=result))

    def _check_all(
        self, targets: dict[str, tuple[str, str]]
    ) -> list[tuple[str, F.CheckError | None, bool | None]]:
        """Every check from one version; when one name is refused, each on its own."""
        try:
            found = self.index.check_many(targets.values())
            return [(c, None, a) for c, a in zip(targets, found, strict=True)]
        except (ValueError, TypeError):  # InvalidTuple, InvalidInput: find which
            out: list[tuple[str, F.CheckError | None, bool | None]] = []
            for cid, (subject, group) in targets.items():
                try:
                    allowed = self.index.check(subject, group)
                    out.append((cid, None, allowed))
                except (ValueError, TypeError) as exc:
                    out.append(
                        (cid, F.CheckError(input_error="validation_error", message=str(exc)), None)
                    )
            return out

    async def list_objects(self, request: PeerRequest) -> Reply:
        objects = await self._objects(request)
        if isinstance(objects, Reply):
            return objects
        return Reply.of(F.ListObjectsResponse(objects=objects))

    async def streamed_list_objects(self, request: PeerRequest) -> Reply:
        objects = await self._objects(request)
        if isinstance(objects, Reply):
            return objects

        async def lines() -> AsyncIterator[bytes]:
            for i in range(0, len(objects), 256):
                yield b"".join(
                    b'{"result":{"object":' + json.dumps(o).encode() + b"}}\n"
                    for o in objects[i : i + 256]
                )

        return Reply(200, lines(), "application/x-ndjson")

    async def _objects(self, request: PeerRequest) -> list[str] | Reply:
        raw = await request.body()
        body = parse_body(raw, F.ListObjectsRequest)
        self._store_of(request)
        try:
            self._plain(body, body.contextual_tuples, body.context)
            self._target(body.user, body.relation, f"{body.type}:_")
            await self._consistent(body.consistency)
        except Unanswerable as why:
            return await self._elsewhere(request, why)
        tail = len(body.relation) + 1
        found = self.index.groups_of(body.user, type=body.type, permission=body.relation)
        return [name[:-tail] for name in found]

    async def list_users(self, request: PeerRequest) -> Reply:
        raw = await request.body()
        body = parse_body(raw, F.ListUsersRequest)
        self._store_of(request)
        wanted = body.user_filters[0]
        obj = f"{body.object.type}:{body.object.id}"
        try:
            self._plain(body, body.contextual_tuples, body.context)
            _, group = self._target(f"{wanted.type}:_", body.relation, obj)
            if wanted.relation:
                raise Unanswerable(
                    f"ListUsers for usersets ({wanted.type}#{wanted.relation}) is not answered "
                    "from the index, which lists the leaf subjects of a set"
                )
            if self.index.placement is not None:  # a shard served alone
                raise Unanswerable(self.index.placement.alone(f"ListUsers of {group}"))
            await self._consistent(body.consistency)
        except Unanswerable as why:
            return await self._elsewhere(request, why)
        prefix = wanted.type + ":"
        users = []
        for name in self.index.members_of(group):
            if name.startswith(prefix) and "#" not in name:
                oid = name[len(prefix) :]
                users.append(
                    F.User(wildcard=F.TypedWildcard(type=wanted.type))
                    if oid == "*"
                    else F.User(object=F.FgaObject.model_construct(type=wanted.type, id=oid))
                )
        return Reply.of(F.ListUsersResponse(users=users))

    async def expand(self, request: PeerRequest) -> Reply:
        raw = await request.body()
        parse_body(raw, F.ExpandRequest)
        self._store_of(request)
        if self.upstream is None:
            raise FgaError(
                404,
                "unimplemented",
                "Expand is not answered from the index, which keeps sets rather than the "
                "tuples a userset tree lists; start leopard serve with --upstream-openfga "
                "URL to forward it to OpenFGA",
            )
        return await self.upstream_reply(request)

    # -- mapping and refusing ----------------------------------------------------------

    def _plain(self, body: Any, contextual: Any, context: dict[str, Any] | None) -> None:
        """Unanswerable when the request carries what the index cannot take into account."""
        if body is not None and body.authorization_model_id:
            model = self.model()
            if model is None or model.id != body.authorization_model_id:
                ours = f"the index's is {model.id}" if model else "the index has none"
                raise Unanswerable(
                    f"Authorization Model {body.authorization_model_id!r} not found ({ours})",
                    "authorization_model_not_found",
                )
        tuples = (
            contextual.tuple_keys if isinstance(contextual, F.ContextualTupleKeys) else contextual
        )
        if tuples:
            raise Unanswerable(
                f"{len(tuples)} contextual tuple(s) given: the index answers from its stored "
                "tuples alone"
            )
        if context:
            raise Unanswerable(
                "a context for conditions is given: the index holds no conditional "
                "relationships and evaluates no conditions"
            )

    def _target(self, user: str, relation: str, obj: str) -> tuple[str, str]:
        """The subject and set of ``user relation object``: OpenFGA's errors for what the
        model does not define, Unanswerable for what the index does not hold."""
        otype, sep, oid = obj.partition(":")
        if not (sep and otype and oid):
            raise FgaError(400, "validation_error", f"invalid 'object' field format {obj!r}")
        if oid == "*":
            raise FgaError(
                400, "validation_error", f"object {obj!r}: an object id cannot be a wildcard"
            )
        utype, sep, rest = user.partition(":")
        if not (sep and utype and rest):
            raise FgaError(400, "validation_error", f"invalid 'user' field format {user!r}")
        config = self.index.config
        plan = config.plan
        if plan is not None:
            types = plan.schema.types
            urel = rest.partition("#")[2]
            for t, r in ((otype, relation), (utype, urel)):
                if t not in types:
                    raise FgaError(400, "type_not_found", f"type '{t}' not found")
                if r and r != "..." and r not in types[t].relations:
                    raise FgaError(400, "relation_not_found", f"relation '{t}#{r}' not found")
        if not config.is_set(otype, relation):
            raise Unanswerable(
                f"relation {otype}#{relation} is not indexed: {config.why_not(otype, relation)}"
            )
        return user, f"{obj}#{relation}"

    async def _consistent(self, consistency: str) -> None:
        """Return when this server may answer ``consistency``. ``HIGHER_CONSISTENCY``
        waits for the head of the stream this server applies (``head``); at an index that
        follows a stream no consumer here applies, or a head not reached in time, it is
        Unanswerable (to the upstream) with ``--upstream-openfga``, else a 503 saying why."""
        index = self.index
        if consistency != "HIGHER_CONSISTENCY":
            return
        if self.head is not None:
            try:
                return await reach_head(index, self.waits, self.head)
            except StaleIndex as exc:
                if self.upstream is None:
                    raise
                raise Unanswerable(f"HIGHER_CONSISTENCY: {exc}") from None
        why = None if index.follows_consumer else followed_elsewhere(index.position, index.gaps)
        if why is None:
            return  # no stream followed: the current version is the head
        if self.upstream is not None:
            raise Unanswerable(f"HIGHER_CONSISTENCY: {why}")
        raise FgaError(
            503,
            "unavailable",
            f"HIGHER_CONSISTENCY: {why}, or start leopard serve with --upstream-openfga URL "
            "to forward such requests to OpenFGA",
        )

    def _refusal(self, why: Unanswerable) -> str:
        return (
            f"{why}; start leopard serve with --upstream-openfga URL to forward such "
            "requests to OpenFGA"
        )

    async def _elsewhere(self, request: PeerRequest, why: Unanswerable) -> Reply:
        if self.upstream is None:
            raise FgaError(400, why.code, self._refusal(why))
        return await self.upstream_reply(request)

    async def upstream_reply(self, request: PeerRequest) -> Reply:
        assert self.upstream is not None
        try:
            return await self.upstream.forward(request)
        except UpstreamUnreachable as exc:
            raise FgaError(503, "unavailable", str(exc)) from None

    def error_reply(self, exc: Exception, scope: Scope) -> Reply:
        """``exc`` as OpenFGA's error body, its status from Leopard's one table."""
        headers: list[tuple[bytes, bytes]] = []
        if isinstance(exc, FgaError):
            status, code, message = exc.status, exc.code, str(exc)
        else:
            status, body, headers = error_answer(exc, scope["method"], scope["path"])
            answer = json.loads(body)
            message = answer["detail"]
            code = _CODES.get(answer["error"], "validation_error")
            if status == 401:
                missing = isinstance(exc, HttpError) and "needs a bearer token" in exc.detail
                code = "bearer_token_missing" if missing else "auth_failed_invalid_bearer_token"
            elif code == "internal_error":
                message = "Internal Server Error"
        return Reply(
            status,
            F.OpenFgaError(code=code, message=message).model_dump_json().encode(),
            headers=headers,
        )
