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

from leopard.errors import InvalidConfig, InvalidSchema
from leopard.model.names import namespace_problem, relation_problem
from leopard.model.plan import Plan, compile_schema
from leopard.model.schema import Schema, parse_openfga_dsl, parse_openfga_json, parse_spicedb

__all__ = [
    "SetConfig",
    "SchemaSource",
    "Config",
    "load_config",
    "schema_config",
    "DEFAULT_RELATION",
]

#: schema file extension -> dialect
SCHEMA_DIALECTS = {".zed": "spicedb", ".fga": "openfga-dsl", ".json": "openfga"}

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
        problem = namespace_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("relation")
    @classmethod
    def _check_relation(cls, v: str) -> str:
        problem = relation_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("feeds_from")
    @classmethod
    def _check_from(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must name at least one stored relation")
        for i, rel in enumerate(v):
            problem = relation_problem(rel)
            if problem:
                raise ValueError(problem)
            if rel in v[:i]:
                # it would feed the set twice (and take two source bits for one relation)
                raise ValueError(f"{rel!r} is listed twice")
        return v

    @property
    def sources(self) -> list[str]:
        return list(self.feeds_from) if self.feeds_from else [self.relation]


class SchemaSource(BaseModel):
    """A schema as written (SpiceDB ``.zed``, OpenFGA DSL or JSON), stored in the index
    so that every reader interprets tuples as the build did; ``only`` narrows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dialect: str
    text: str
    filename: str = "<schema>"
    only: list[str] = Field(default_factory=list)

    def parse(self) -> Schema:
        if self.dialect == "spicedb":
            return parse_spicedb(self.text, self.filename)
        if self.dialect == "openfga-dsl":
            return parse_openfga_dsl(self.text, self.filename)
        if self.dialect == "openfga":
            return parse_openfga_json(self.text, self.filename)
        raise InvalidConfig(f"unknown schema dialect {self.dialect!r}")


class Config(BaseModel):
    """The whole configuration: TOML ``sets`` (None: the default, every ``ns#member``),
    or a ``schema`` whose union-only relations and permissions are the sets."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    sets: list[SetConfig] | None = None
    schema_source: SchemaSource | None = Field(default=None, alias="schema")

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
        plan = None
        if self.schema_source is not None:
            if self.sets is not None:
                raise InvalidConfig("give either TOML sets or a schema, not both")
            plan = compile_schema(self.schema_source.parse(), self.schema_source.only)
        object.__setattr__(self, "_plan", plan)
        feeds: dict[tuple[str, str], tuple[str, ...]] = {}
        per_ns: dict[str, list[str]] = {}
        for s in self.sets or ():
            for src in s.sources:
                feeds[(s.namespace, src)] = feeds.get((s.namespace, src), ()) + (s.relation,)
            per_ns.setdefault(s.namespace, []).append(s.relation)
        object.__setattr__(self, "_feeds", feeds)
        object.__setattr__(self, "_per_ns", {k: tuple(v) for k, v in per_ns.items()})

    @property
    def origin(self) -> str:
        """Where the sets come from, for messages: the schema or TOML file, or the default."""
        if self.schema_source is not None:
            return repr(self.schema_source.filename)
        origin = getattr(self, "_origin", None)
        if origin:
            return repr(origin)
        return "given" if self.sets is not None else "(the default: every ns#member is a set)"

    @property
    def plan(self) -> Plan | None:
        """The compiled schema, when the sets come from one."""
        return self._plan  # type: ignore[attr-defined,no-any-return]

    @property
    def is_default(self) -> bool:
        return self.sets is None and self.schema_source is None

    def feeds(self, namespace: str, stored_relation: str) -> tuple[str, ...]:
        """The set relations that a stored ``namespace#stored_relation`` tuple feeds."""
        plan = self.plan
        if plan is not None:
            return (stored_relation,) if plan.direct(namespace, stored_relation) else ()
        if self.sets is None:
            return (DEFAULT_RELATION,) if stored_relation == DEFAULT_RELATION else ()
        return self._feeds.get((namespace, stored_relation), ())  # type: ignore[attr-defined]

    def is_set(self, namespace: str, relation: str) -> bool:
        """Whether ``namespace#relation`` is an indexed set."""
        plan = self.plan
        if plan is not None:
            return plan.is_set(namespace, relation)
        if self.sets is None:
            return relation == DEFAULT_RELATION
        return relation in self._per_ns.get(namespace, ())  # type: ignore[attr-defined]

    def sets_of(self, namespace: str) -> tuple[str, ...]:
        """The set relations of a namespace (the default config has ``member`` everywhere)."""
        plan = self.plan
        if plan is not None:
            return plan.sets_of(namespace)
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

    def why_not(self, namespace: str, relation: str) -> str:
        """Why ``namespace#relation`` is not an indexed set, for an error message."""
        plan = self.plan
        if plan is not None:
            return plan.why_not(namespace, relation) or "it is an indexed set"
        sets = ", ".join(self.sets_of(namespace)) or "none"
        return f"{namespace}#{relation} is not an indexed set (sets of {namespace!r}: {sets})"

    def not_a_set(self, namespace: str, relation: str) -> str:
        """The end of a refusal of ``namespace#relation`` as a set: "is not indexed: ..."."""
        plan = self.plan
        if plan is not None:
            return f"is not indexed: {plan.why_not(namespace, relation)}"
        sets = ", ".join(self.sets_of(namespace)) or "none"
        return f"is not an indexed set (sets of {namespace!r}: {sets})"

    def lookup_problem(self, type: str | None, permission: str | None = None) -> str | None:
        """Why the sets of ``type`` (and ``permission``) cannot be looked up: a type the
        schema does not define, or that no configured set is of, or a relation that is
        no indexed set; None when they can (a typo must not pass for "none"). Without a
        type, ``permission`` must be an indexed set of every type that defines it."""
        if type is None:
            return None if permission is None else self._permission_problem(permission)
        if permission is not None:
            if self.is_set(type, permission):
                return None
            return f"{type}#{permission} {self.not_a_set(type, permission)}"
        plan = self.plan
        if plan is not None:
            if type in plan.schema.types:
                return None
            return f"type {type!r} is not defined in the schema (types: {_some(plan.schema.types)})"
        if self.sets is None or self.sets_of(type):
            return None  # the default configuration has a set in every namespace
        namespaces = {s.namespace: None for s in self.sets}
        return f"namespace {type!r} has no indexed set (namespaces with sets: {_some(namespaces)})"

    def _permission_problem(self, permission: str) -> str | None:
        """Why ``permission`` of any type cannot be looked up: no type has it as a set,
        or one that defines it does not index it (its objects would be left out)."""
        plan = self.plan
        if plan is not None:
            types = [t for t, d in plan.schema.types.items() if permission in d.relations]
            where = "no type of the schema defines"
        elif self.sets is None:
            types = [] if permission != DEFAULT_RELATION else ["*"]
            where = f"the default configuration indexes {DEFAULT_RELATION!r} alone, not"
        else:
            types = sorted({s.namespace for s in self.sets if s.relation == permission})
            where = "no configured set is of"
        if not types:
            return f"{where} {permission!r}"
        refused = [t for t in types if t != "*" and not self.is_set(t, permission)]
        if not refused:
            return None
        t, indexed = refused[0], [t for t in types if t not in refused]
        hint = f" (indexed of {_some(indexed)}: name the type)" if indexed else ""
        return f"{t}#{permission} {self.not_a_set(t, permission)}{hint}"

    def to_json(self) -> str:
        return json.dumps(self.model_dump(by_alias=True, exclude_none=True), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls.model_validate(json.loads(text))


def _some(names: Iterable[str], most: int = 20) -> str:
    """Names for a message, sorted, at most ``most`` of them."""
    shown = sorted(names)
    more = f", ... ({len(shown) - most} more)" if len(shown) > most else ""
    return ", ".join(shown[:most]) + more


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
        data = tomllib.loads(raw.decode("utf-8-sig"))  # a BOM is read past, as in snapshots
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidConfig(f"{p}: not valid TOML: {exc}") from exc
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise InvalidConfig(f"{p}: {_describe(exc)}") from None
    object.__setattr__(config, "_origin", str(p))  # named in messages (``origin``)
    return config


def schema_config(path: str | Path, only: Iterable[str] = ()) -> Config:
    """The configuration of a schema file: SpiceDB ``.zed``, OpenFGA ``.fga`` or ``.json``.

    InvalidSchema names the file, the line and what is wrong; ``only`` narrows the
    index to those ``type#relation`` sets and what they depend on.
    """
    p = Path(path)
    dialect = SCHEMA_DIALECTS.get(p.suffix.lower())
    if dialect is None:
        accepted = ", ".join(SCHEMA_DIALECTS)
        raise InvalidSchema(
            f"{p}: unknown schema extension {p.suffix or '(none)'!r}; expected one of {accepted}"
        )
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InvalidSchema(f"cannot read schema {str(p)!r}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidSchema(f"{p}: not UTF-8 text (byte {exc.start})") from exc
    source = SchemaSource(dialect=dialect, text=text, filename=str(p), only=list(only))
    compile_schema(source.parse(), source.only)  # its errors as they are, not wrapped
    return Config.model_validate({"schema": source})
