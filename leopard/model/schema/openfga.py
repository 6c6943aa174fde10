"""OpenFGA authorization models: the JSON form, read and written.

The JSON form is what ``fga model write`` takes, ``fga model transform`` prints and
the API serves (``openfga.v1.AuthorizationModel``)::

    {"schema_version": "1.1",
     "type_definitions": [
       {"type": "document",
        "relations": {"viewer": {"union": {"child": [
            {"this": {}}, {"computedUserset": {"relation": "editor"}},
            {"tupleToUserset": {"tupleset": {"relation": "parent"},
                                "computedUserset": {"relation": "viewer"}}}]}}},
        "metadata": {"relations": {"viewer": {"directly_related_user_types": [
            {"type": "user"}, {"type": "group", "relation": "member"},
            {"type": "user", "wildcard": {}}, {"type": "user", "condition": "cond"}]}}}}],
     "conditions": {"cond": {"name": "cond", "expression": "x < 100",
                             "parameters": {"x": {"type_name": "TYPE_NAME_INT"}}}}}

A userset is one of ``this``, ``computedUserset``, ``tupleToUserset``, ``union``,
``intersection`` and ``difference``; field names are read in both the JSON spelling
(``computedUserset``) and the proto one (``computed_userset``), and a model wrapped as
the API answers it (``{"authorization_model": {...}}``) is unwrapped. Errors name the
JSON path (``type_definitions[1].relations.viewer``), as JSON carries no lines once
parsed. ``to_openfga_json`` prints a parsed OpenFGA schema back in the form ``fga
model transform`` prints. The DSL parser lives in ``openfga_dsl``; it is re-exported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from leopard.errors import InvalidSchema
from leopard.model.schema.ast import (
    MAX_NESTING,
    Arrow,
    Computed,
    Condition,
    Exclusion,
    Intersection,
    Kind,
    Nil,
    Relation,
    Rewrite,
    Schema,
    Self,
    SubjectType,
    This,
    TypeDef,
    Union,
    fail,
)
from leopard.model.schema.checks import check_schema, openfga_name_problem
from leopard.model.schema.openfga_conditions import PARAM_TYPES
from leopard.model.schema.openfga_dsl import SCHEMA_VERSIONS, parse_openfga_dsl

__all__ = ["parse_openfga_json", "parse_openfga_dsl", "to_openfga_json"]

_USERSET_KEYS = {
    "this": "this",
    "computedUserset": "computedUserset",
    "computed_userset": "computedUserset",
    "tupleToUserset": "tupleToUserset",
    "tuple_to_userset": "tupleToUserset",
    "union": "union",
    "intersection": "intersection",
    "difference": "difference",
}
_CONTAINERS = ("map", "list")


def parse_openfga_json(
    text_or_dict: str | bytes | Mapping[str, Any], filename: str = "<schema>"
) -> Schema:
    """Parse an OpenFGA model in its JSON form (text or an already decoded dict)."""
    if isinstance(text_or_dict, (str, bytes)):
        source = text_or_dict.decode() if isinstance(text_or_dict, bytes) else text_or_dict
        try:
            data = json.loads(source, object_pairs_hook=_unique_keys(filename))
        except json.JSONDecodeError as exc:
            raise fail(filename, exc.lineno, exc.colno, f"not valid JSON: {exc.msg}") from None
        except RecursionError:
            raise fail(filename, None, None, "JSON arrays or objects nested too deeply") from None
    else:
        data = text_or_dict
        try:
            source = json.dumps(data, indent=2)
        except (TypeError, ValueError) as exc:
            raise fail(filename, None, None, f"not a JSON model: {exc}") from None
        except RecursionError:
            raise fail(filename, None, None, "JSON arrays or objects nested too deeply") from None
    return _Reader(filename).model(data, source)


def _unique_keys(filename: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise fail(filename, None, None, f"the key {key!r} appears twice in one object")
            out[key] = value
        return out

    return hook


def _field(obj: Mapping[str, Any], json_name: str, proto_name: str) -> Any:
    return obj.get(json_name, obj.get(proto_name))


def _none_empty(value: Any) -> Any:
    """An absent (null) map is an empty one; any other value is checked as it is."""
    return {} if value is None else value


class _Reader:
    def __init__(self, filename: str) -> None:
        self.filename = filename

    def error(self, path: str, message: str) -> InvalidSchema:
        return fail(self.filename, None, None, f"{path}: {message}" if path else message)

    def obj(self, value: Any, path: str, what: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected {what} (a JSON object), found {_kind(value)}")
        return value

    def string(self, value: Any, path: str, what: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(path, f"expected {what} (a non-empty string), found {_kind(value)}")
        return value

    def model(self, data: Any, source: str) -> Schema:
        data = self.obj(data, "", "an authorization model")
        wrapped = _field(data, "authorizationModel", "authorization_model")
        if isinstance(wrapped, Mapping):
            data = wrapped
        version = _field(data, "schema_version", "schemaVersion")
        if version not in SCHEMA_VERSIONS:
            raise self.error(
                "schema_version",
                f"expected {' or '.join(repr(v) for v in SCHEMA_VERSIONS)}, found {version!r}",
            )
        typedefs = _field(data, "type_definitions", "typeDefinitions")
        typedefs = [] if typedefs is None else typedefs
        if not isinstance(typedefs, list):
            raise self.error("type_definitions", f"expected a list, found {_kind(typedefs)}")
        types: dict[str, TypeDef] = {}
        for i, raw in enumerate(typedefs):
            typedef = self.typedef(raw, f"type_definitions[{i}]")
            if typedef.name in types:
                raise self.error(
                    f"type_definitions[{i}]", f"type {typedef.name!r} is defined twice"
                )
            types[typedef.name] = typedef
        conditions = self.conditions(_none_empty(data.get("conditions")))
        schema = Schema(
            types=types,
            conditions=tuple(c.name for c in conditions),
            dialect="openfga",
            source=source,
            filename=self.filename,
            condition_defs=conditions,
            schema_version=version,
        )
        check_schema(schema)
        return schema

    def typedef(self, raw: Any, path: str) -> TypeDef:
        raw = self.obj(raw, path, "a type definition")
        name = self.string(raw.get("type"), f"{path}.type", "the type name")
        problem = openfga_name_problem(name, is_type=True)
        if problem:
            raise self.error(f"{path}.type", problem)
        usersets = self.obj(_none_empty(raw.get("relations")), f"{path}.relations", "the relations")
        metadata = self.obj(_none_empty(raw.get("metadata")), f"{path}.metadata", "the metadata")
        infos = self.obj(
            _none_empty(metadata.get("relations")), f"{path}.metadata.relations", "a map"
        )
        relations: dict[str, Relation] = {}
        for rel_name, userset in usersets.items():
            where = f"{path}.relations.{rel_name}"
            problem = openfga_name_problem(rel_name, is_type=False)
            if problem:
                raise self.error(where, problem)
            rewrite = self.userset(userset, where)
            info = self.obj(
                _none_empty(infos.get(rel_name)),
                f"{path}.metadata.relations.{rel_name}",
                "the relation's metadata",
            )
            subjects = _field(info, "directly_related_user_types", "directlyRelatedUserTypes") or []
            if not isinstance(subjects, list):
                raise self.error(f"{where} (metadata)", "directly_related_user_types is no list")
            types = tuple(
                self.subject(
                    s, f"{path}.metadata.relations.{rel_name}.directly_related_user_types[{j}]"
                )
                for j, s in enumerate(subjects)
            )
            kind: Kind = "relation" if isinstance(rewrite, This) else "permission"
            relations[rel_name] = Relation(rel_name, kind, types, rewrite)
        return TypeDef(name, relations)

    def subject(self, raw: Any, path: str) -> SubjectType:
        raw = self.obj(raw, path, "a related user type")
        type_name = self.string(raw.get("type"), f"{path}.type", "the type")
        relation = raw.get("relation") or None
        wildcard = raw.get("wildcard") is not None
        if relation is not None:
            self.string(relation, f"{path}.relation", "the relation")
            if wildcard:
                raise self.error(path, "a related user type has a relation or a wildcard, not both")
        condition = raw.get("condition") or None
        if condition is not None:
            self.string(condition, f"{path}.condition", "the condition name")
        return SubjectType(type_name, relation, wildcard, condition)

    def userset(self, raw: Any, path: str, depth: int = 0) -> Rewrite:
        if depth > MAX_NESTING:
            where = f"{path[:60]}...{path[-60:]}"
            raise self.error(where, f"usersets nested more than {MAX_NESTING} deep")
        raw = self.obj(raw, path, "a userset")
        keys = [k for k, v in raw.items() if v is not None]
        if len(keys) != 1 or keys[0] not in _USERSET_KEYS:
            raise self.error(
                path,
                "a userset has exactly one of this, computedUserset, tupleToUserset, union, "
                f"intersection, difference; found {sorted(keys) or 'none'}",
            )
        key = _USERSET_KEYS[keys[0]]
        value = raw[keys[0]]
        inner = f"{path}.{keys[0]}"
        if key == "this":
            self.obj(value, inner, "an empty object")
            return This()
        if key == "computedUserset":
            return Computed(self.object_relation(value, inner))
        if key == "tupleToUserset":
            value = self.obj(value, inner, "a tupleToUserset")
            tupleset = self.object_relation(value.get("tupleset"), f"{inner}.tupleset")
            computed = _field(value, "computedUserset", "computed_userset")
            relation = self.object_relation(computed, f"{inner}.computedUserset")
            return Arrow(tupleset, relation)
        value = self.obj(value, inner, f"a {keys[0]}")
        if key == "difference":
            return Exclusion(
                self.userset(value.get("base"), f"{inner}.base", depth + 1),
                self.userset(value.get("subtract"), f"{inner}.subtract", depth + 1),
            )
        children = value.get("child")
        if not isinstance(children, list) or not children:
            raise self.error(f"{inner}.child", "expected a non-empty list of usersets")
        if len(children) < 2:  # as OpenFGA's model validation
            a = "an" if key == "intersection" else "a"
            raise self.error(f"{inner}.child", f"{a} {key} needs at least 2 children, not 1")
        built = tuple(
            self.userset(c, f"{inner}.child[{i}]", depth + 1) for i, c in enumerate(children)
        )
        return Union(built) if key == "union" else Intersection(built)

    def object_relation(self, raw: Any, path: str) -> str:
        raw = self.obj(raw, path, "an object relation")
        if raw.get("object"):
            raise self.error(f"{path}.object", "an object in a rewrite is not supported")
        return self.string(raw.get("relation"), f"{path}.relation", "the relation")

    def conditions(self, raw: Any) -> tuple[Condition, ...]:
        raw = self.obj(raw, "conditions", "a map of conditions")
        out = []
        for key, cond in raw.items():
            path = f"conditions.{key}"
            cond = self.obj(cond, path, "a condition")
            name = cond.get("name") or key
            if name != key:
                raise self.error(path, f"the condition's name {name!r} is not its key {key!r}")
            expression = self.string(cond.get("expression"), f"{path}.expression", "CEL")
            params = self.obj(_none_empty(cond.get("parameters")), f"{path}.parameters", "a map")
            typed = tuple(
                (p, self.param_type(t, f"{path}.parameters.{p}")) for p, t in params.items()
            )
            out.append(Condition(name, tuple(sorted(typed)), expression))
        return tuple(sorted(out, key=lambda c: c.name))

    def param_type(self, raw: Any, path: str) -> str:
        raw = self.obj(raw, path, "a parameter type")
        name = str(_field(raw, "type_name", "typeName") or "")
        base = name.removeprefix("TYPE_NAME_").lower()
        generics = _field(raw, "generic_types", "genericTypes") or []
        if base in _CONTAINERS:
            if not isinstance(generics, list) or len(generics) != 1:
                raise self.error(path, f"{name} takes one generic type")
            return f"{base}<{self.param_type(generics[0], f'{path}.generic_types[0]')}>"
        if base not in PARAM_TYPES or generics or not name.startswith("TYPE_NAME_"):
            raise self.error(path, f"unknown parameter type {name!r}")
        return base


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if value == "":
        return "an empty string"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )


# -- writing --------------------------------------------------------------------------


def to_openfga_json(schema: Schema) -> dict[str, Any]:
    """The JSON form of a parsed OpenFGA schema, as ``fga model transform`` prints it."""
    if schema.dialect != "openfga":
        raise InvalidSchema(
            f"{schema.filename}: a {schema.dialect} schema has no OpenFGA JSON form here"
        )
    typedefs = []
    for typedef in schema.types.values():
        out: dict[str, Any] = {"type": typedef.name}
        if typedef.relations:
            out["relations"] = {
                name: _userset_json(schema, rel.rewrite) for name, rel in typedef.relations.items()
            }
            out["metadata"] = {
                "relations": {
                    name: (
                        {"directly_related_user_types": [_subject_json(s) for s in rel.types]}
                        if rel.types
                        else {}
                    )
                    for name, rel in typedef.relations.items()
                }
            }
        typedefs.append(out)
    model: dict[str, Any] = {
        "schema_version": schema.schema_version or "1.1",
        "type_definitions": typedefs,
    }
    if schema.condition_defs:
        model["conditions"] = {
            c.name: {
                "name": c.name,
                "expression": c.expression,
                "parameters": {p: _param_json(t) for p, t in c.parameters},
            }
            for c in schema.condition_defs
        }
    return model


def _userset_json(schema: Schema, rewrite: Rewrite) -> dict[str, Any]:
    if isinstance(rewrite, This):
        return {"this": {}}
    if isinstance(rewrite, Computed):
        return {"computedUserset": {"relation": rewrite.relation}}
    if isinstance(rewrite, Arrow) and not rewrite.all:
        return {
            "tupleToUserset": {
                "tupleset": {"relation": rewrite.tupleset},
                "computedUserset": {"relation": rewrite.relation},
            }
        }
    if isinstance(rewrite, (Union, Intersection)):
        key = "union" if isinstance(rewrite, Union) else "intersection"
        return {key: {"child": [_userset_json(schema, c) for c in rewrite.children]}}
    if isinstance(rewrite, Exclusion):
        return {
            "difference": {
                "base": _userset_json(schema, rewrite.base),
                "subtract": _userset_json(schema, rewrite.subtract),
            }
        }
    what = (
        "nil"
        if isinstance(rewrite, Nil)
        else "self"
        if isinstance(rewrite, Self)
        else "an arrow over all subjects"
    )
    raise InvalidSchema(f"{schema.filename}: OpenFGA has no form for {what}")


def _subject_json(subject: SubjectType) -> dict[str, Any]:
    out: dict[str, Any] = {"type": subject.type}
    if subject.relation is not None:
        out["relation"] = subject.relation
    if subject.wildcard:
        out["wildcard"] = {}
    if subject.caveat is not None:
        out["condition"] = subject.caveat
    return out


def _param_json(type_text: str) -> dict[str, Any]:
    base, _, inner = type_text.partition("<")
    out: dict[str, Any] = {"type_name": f"TYPE_NAME_{base.upper()}"}
    if inner:
        out["generic_types"] = [_param_json(inner[:-1])]
    return out
