"""OpenFGA as a source: its HTTP API, a store's tuples as the index, and the bootstrap.

``OpenFGASource`` says how to reach one store of an OpenFGA server (``openfga:URL``
and a store id, with an API token or none) and asks it with the standard library's
HTTP client: OpenFGA's HTTP API is JSON with the protos' snake_case field names
(``openfga/v1/openfga_service.proto`` of openfga/api). ``bootstrap`` builds an index
from it:

1. ``ReadAuthorizationModels`` (``GET /stores/{id}/authorization-models``, newest
   first): the latest model is the index's schema (its union-only relations are the
   sets), its id recorded;
2. ``ReadChanges`` (``GET /stores/{id}/changes``) paged to its end, *before* the
   tuples are read: the last continuation token is where following starts. Changes
   made while the tuples are read come after it and are applied again by the
   follower; applying a change again in order is harmless (a write of a present
   tuple, a delete of a missing one), so nothing is lost;
3. ``Read`` (``POST /stores/{id}/read`` without a tuple key: every tuple), in pages of
   ``page_size`` with ``continuation_token``;
4. the build, recording the token (and the model id) in the index's source state under
   ``OPENFGA_KEY``, and as its position the time of the last change (microseconds),
   which the follower moves on with each page it applies.

Conditional tuples cannot be indexed: they are left out and counted, as the
ReadChanges codec refuses them.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from ingest.codecs.fields import timestamp
from leopard.core.batches import table_from_tuples
from leopard.core.build import BuildReport, build_from_batches
from leopard.errors import DecodeError, InvalidInput, InvalidTuple, UpstreamError
from leopard.model.config import Config, SchemaSource
from leopard.model.names import RelationTuple, parse_openfga
from leopard.model.zedtoken import OPENFGA_KEY

__all__ = [
    "OPENFGA_KEY",
    "OpenFGABootstrap",
    "OpenFGAError",
    "OpenFGASource",
    "bootstrap_openfga",
    "change_time",
]

log = logging.getLogger("leopard.upstream")

#: tuples a Read page asks for (OpenFGA allows 1 to 100)
READ_PAGE = 100
#: changes a ReadChanges page asks for (OpenFGA's default is 50, its maximum 100)
CHANGES_PAGE = 100
#: seconds one request may take
TIMEOUT = 30.0
#: rows of one Arrow batch handed to the build
BATCH_ROWS = 1 << 16


class OpenFGAError(UpstreamError):
    """OpenFGA answered with an error status; ``status`` and ``code`` say which."""

    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class OpenFGASource:
    """One store of an OpenFGA server: ``url`` (``http://127.0.0.1:8080``), the store
    id, and the API token sent as a bearer token (OpenFGA's preshared key)."""

    url: str
    store_id: str
    key: str | None = None
    timeout: float = TIMEOUT
    _parts: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(
                f"openfga:{self.url}: expected the URL of an OpenFGA server's HTTP API, "
                "such as openfga:http://127.0.0.1:8080"
            )
        if not self.store_id:
            raise InvalidInput(f"openfga:{self.url} needs --store-id, the store to follow")
        self._parts = parts

    @property
    def name(self) -> str:
        return f"openfga:{self.url} store {self.store_id}"

    def close(self) -> None:
        """Nothing held: each request opens its own connection."""

    # -- the calls ----------------------------------------------------------------------

    def latest_model(self) -> dict[str, Any]:
        """The newest authorization model of the store (ReadAuthorizationModels)."""
        answer = self._ask(
            "GET", "authorization-models", {"page_size": 1}, what="ReadAuthorizationModels"
        )
        models = answer.get("authorization_models")
        if not isinstance(models, list) or not models:
            raise UpstreamError(f"{self.name} has no authorization model; write one first")
        model = models[0]
        if not isinstance(model, dict):
            raise UpstreamError(f"{self.name}: ReadAuthorizationModels answered {model!r}")
        return model

    def read_changes(self, token: str, page_size: int = CHANGES_PAGE) -> dict[str, Any]:
        """One page of ReadChanges after ``token`` (``""``: from the first change)."""
        params: dict[str, Any] = {"page_size": page_size}
        if token:
            params["continuation_token"] = token
        return self._ask("GET", "changes", params, what="ReadChanges")

    def read(self, token: str, page_size: int = READ_PAGE) -> dict[str, Any]:
        """One page of Read of every tuple after ``token``."""
        body: dict[str, Any] = {"page_size": page_size}
        if token:
            body["continuation_token"] = token
        return self._ask("POST", "read", body=body, what="Read")

    def _ask(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        body: dict[str, Any] | None = None,
        what: str,
    ) -> dict[str, Any]:
        parts = self._parts
        target = f"{parts.path.rstrip('/')}/stores/{self.store_id}/{path}"
        if params:
            target += "?" + urlencode(params)
        headers = {"Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn_type = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_type(parts.hostname, parts.port, timeout=self.timeout)
        try:
            conn.request(method, target, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException) as exc:
            raise UpstreamError(f"{self.name}: {what} failed: {exc}") from None
        finally:
            conn.close()
        try:
            doc = json.loads(raw) if raw else {}
        except (ValueError, RecursionError):
            doc = None
        if status != 200:
            code = doc.get("code", "") if isinstance(doc, dict) else ""
            message = (
                doc.get("message", "")
                if isinstance(doc, dict)
                else raw[:200].decode(errors="replace")
            )
            raise OpenFGAError(
                f"{self.name}: {what} failed: HTTP {status} {code}: {message}", status, str(code)
            )
        if not isinstance(doc, dict):
            raise UpstreamError(f"{self.name}: {what} answered {raw[:200]!r}, not a JSON object")
        return doc


def change_time(item: Any) -> int:
    """The time of one ReadChanges item in microseconds since the epoch (0 without one)."""
    ts = item.get("timestamp") if isinstance(item, dict) else None
    if ts is None:
        return 0
    try:
        return int(timestamp(ts, "timestamp") * 1_000_000)
    except DecodeError:
        return 0


def changes_end(source: OpenFGASource) -> tuple[str, int]:
    """The continuation token after the store's last change, and that change's time."""
    token, last = "", 0
    while True:
        page = source.read_changes(token)
        changes = page.get("changes") or []
        last = max([last, *(change_time(c) for c in changes)])
        following = page.get("continuation_token") or ""
        if not changes or not following or following == token:
            return following or token, last
        token = following


# -- the bootstrap -------------------------------------------------------------------


@dataclass
class OpenFGABootstrap:
    """What a bootstrap from OpenFGA read and built."""

    source: str
    model_id: str
    token: str  # the ReadChanges continuation token following starts from
    tuples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    build: BuildReport | None = None

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def bootstrap_openfga(
    path: str | Path,
    source: OpenFGASource,
    *,
    only: list[str] | None = None,
    max_shrink: float | None = 0.5,
    wait: bool | float = False,
    progress: Callable[[int], None] | None = None,
    memory: int | None = None,
) -> OpenFGABootstrap:
    """Build the index at ``path`` from the store's latest model and every tuple, and
    record where its ReadChanges goes on (see the module docstring). ``memory`` is
    the build's budget in bytes (``build_from_batches``)."""
    model = source.latest_model()
    model_id = str(model.get("id", ""))
    text = json.dumps({k: v for k, v in model.items() if k != "id"}, indent=2)
    config = Config.model_validate(
        {
            "schema": SchemaSource(
                dialect="openfga",
                text=text,
                filename=f"{source.name} model {model_id}",
                only=only or [],
            )
        }
    )
    token, last = changes_end(source)  # before the tuples: see the module docstring
    report = OpenFGABootstrap(source.name, model_id, token)
    report.build = build_from_batches(
        _batches(_tuples(source, report, progress)),
        path,
        config,
        position={OPENFGA_KEY: last},
        source_state={OPENFGA_KEY: {"token": token, "source": source.name, "model_id": model_id}},
        max_shrink=max_shrink,
        wait=wait,
        memory=memory,
    )
    if report.skipped:
        log.warning(
            "%s: left out of the index: %s",
            source.name,
            ", ".join(f"{n:,} {why}" for why, n in sorted(report.skipped.items())),
        )
    return report


def _tuples(
    source: OpenFGASource, report: OpenFGABootstrap, progress: Callable[[int], None] | None
) -> Iterator[RelationTuple]:
    token = ""
    while True:
        page = source.read(token)
        tuples = page.get("tuples") or []
        for item in tuples:
            key = item.get("key") if isinstance(item, dict) else None
            if not isinstance(key, dict):
                report.skip("malformed tuples")
                continue
            if key.get("condition"):
                report.skip("conditional tuples")
                continue
            try:
                t = parse_openfga(
                    key.get("user", ""), key.get("relation", ""), key.get("object", "")
                )
            except InvalidTuple as exc:
                report.skip(f"invalid tuples ({exc})")
                continue
            report.tuples += 1
            yield t
        if progress is not None:
            progress(len(tuples))
        following = page.get("continuation_token") or ""
        if not following or following == token or not tuples:
            return
        token = following


def _batches(tuples: Iterator[RelationTuple]) -> Iterator[Any]:
    chunk: list[RelationTuple] = []
    for t in tuples:
        chunk.append(t)
        if len(chunk) >= BATCH_ROWS:
            yield table_from_tuples(chunk)
            chunk = []
    if chunk:
        yield table_from_tuples(chunk)
