"""Which relations are group memberships: the set configuration.

A *set* is a ``(namespace, relation)`` pair that queries name, fed by one or more
stored relations (a union rewrite)::

    [[sets]]
    namespace = "acme/group"
    relation = "member"                  # the name queries use
    from = ["direct_member", "manager"]  # stored relations that feed it

Without a file every namespace's ``member`` relation is a set fed by ``member``.
The configuration is stored inside the index, so the consumer and the queries
always interpret tuples the way the build did.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from leopard.errors import InvalidConfig
from leopard.model.names import is_namespace, is_relation

__all__ = ["SetConfig", "Config", "load_config", "DEFAULT_RELATION"]

DEFAULT_RELATION = "member"


class SetConfig(BaseModel):
    """One indexed set: ``namespace#relation`` fed by the stored relations ``from``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    namespace: str
    relation: str
    feeds_from: list[str] | None = Field(default=None, alias="from")

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, v: str) -> str:
        if not is_namespace(v):
            raise ValueError(f"{v!r} is not a valid namespace")
        return v

    @field_validator("relation")
    @classmethod
    def _check_relation(cls, v: str) -> str:
        if not is_relation(v):
            raise ValueError(f"{v!r} is not a valid relation name")
        return v

    @field_validator("feeds_from")
    @classmethod
    def _check_from(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must name at least one stored relation")
        for i, rel in enumerate(v):
            if not is_relation(rel):
                raise ValueError(f"{rel!r} is not a valid relation name")
            if rel in v[:i]:
                # it would feed the set twice (and take two source bits for one relation)
                raise ValueError(f"{rel!r} is listed twice")
        return v

    @property
    def sources(self) -> list[str]:
        return list(self.feeds_from) if self.feeds_from else [self.relation]


class Config(BaseModel):
    """The whole configuration. ``sets=None`` means the default: every ``ns#member``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sets: list[SetConfig] | None = None

    @field_validator("sets")
    @classmethod
    def _unique(cls, v: list[SetConfig] | None) -> list[SetConfig] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must list at least one set (or leave the key out for the default)")
        seen: set[tuple[str, str]] = set()
        for s in v:
            key = (s.namespace, s.relation)
            if key in seen:
                raise ValueError(f"the set {s.namespace}#{s.relation} is listed twice")
            seen.add(key)
        return v

    # -- lookups, precomputed once -------------------------------------------------

    def model_post_init(self, __context: Any) -> None:
        feeds: dict[tuple[str, str], tuple[str, ...]] = {}
        per_ns: dict[str, list[str]] = {}
        for s in self.sets or ():
            for src in s.sources:
                feeds[(s.namespace, src)] = feeds.get((s.namespace, src), ()) + (s.relation,)
            per_ns.setdefault(s.namespace, []).append(s.relation)
        object.__setattr__(self, "_feeds", feeds)
        object.__setattr__(self, "_per_ns", {k: tuple(v) for k, v in per_ns.items()})

    @property
    def is_default(self) -> bool:
        return self.sets is None

    def feeds(self, namespace: str, stored_relation: str) -> tuple[str, ...]:
        """The set relations that a stored ``namespace#stored_relation`` tuple feeds."""
        if self.sets is None:
            return (DEFAULT_RELATION,) if stored_relation == DEFAULT_RELATION else ()
        return self._feeds.get((namespace, stored_relation), ())  # type: ignore[attr-defined]

    def is_set(self, namespace: str, relation: str) -> bool:
        """Whether ``namespace#relation`` is an indexed set."""
        if self.sets is None:
            return relation == DEFAULT_RELATION
        return relation in self._per_ns.get(namespace, ())  # type: ignore[attr-defined]

    def sets_of(self, namespace: str) -> tuple[str, ...]:
        """The set relations of a namespace (the default config has ``member`` everywhere)."""
        if self.sets is None:
            return (DEFAULT_RELATION,)
        return self._per_ns.get(namespace, ())  # type: ignore[attr-defined]

    def sources(self, namespace: str, set_relation: str) -> list[str]:
        """The stored relations that feed the set ``namespace#set_relation``, first first."""
        for s in self.sets or ():
            if s.namespace == namespace and s.relation == set_relation:
                return s.sources
        return [set_relation]

    def feed_pairs(self) -> Iterable[tuple[str, str, str]]:
        """``(namespace, stored_relation, set_relation)`` for every explicit feed."""
        for (ns, src), rels in self._feeds.items():  # type: ignore[attr-defined]
            for rel in rels:
                yield ns, src, rel

    def to_json(self) -> str:
        return json.dumps(self.model_dump(by_alias=True, exclude_none=True), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls.model_validate(json.loads(text))


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ""
        for item in err["loc"]:
            loc += f"[{item}]" if isinstance(item, int) else (f".{item}" if loc else str(item))
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            msg = "is not a known key (known: namespace, relation, from; or sets at the top)"
        parts.append(f"{loc or 'top level'}: {msg}")
    return "; ".join(parts)


def load_config(path: str | Path | None) -> Config:
    """Read a TOML set configuration; None gives the default configuration."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InvalidConfig(f"cannot read config {str(p)!r}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidConfig(f"{p}: not valid TOML: {exc}") from exc
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise InvalidConfig(f"{p}: {_describe(exc)}") from None
