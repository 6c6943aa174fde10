"""SpiceDB's names: validating request fields as SpiceDB does, and what the schema knows.

``Fields`` checks a request's references against the rules of SpiceDB's API
(``authzed/api/v1``: an object type ``^([a-z][a-z0-9_]{1,61}[a-z0-9]/)*[a-z][a-z0-9_]
{1,62}[a-z0-9]$`` of at most 128 bytes, an object id ``^(([a-zA-Z0-9/_|\\-=+]{1,})|\\*)$``
of at most 1,024, a relation of at most 64) and words its refusal as SpiceDB's
validator does: ``validation error: resource.object_id: must be at most 1024 bytes``,
several as ``validation errors:`` one a line (at most ``MAX_LISTED``). Types and
relations already seen valid are remembered, so that a batch of checks on a few
permissions pays for each once.

``Catalog`` answers what SpiceDB would find in its schema: whether a definition, a
relation or permission exists (``object definition `x` not found`` otherwise), and
whether Leopard indexes it (and why not). An index built without a schema (a TOML set
configuration) knows no definitions: every name is taken as given, and a set is
answerable exactly when the configuration makes it one.
"""

from __future__ import annotations

import re
from typing import Any

import grpc

from leopard.grpc.status import Refusal, unknown_definition, unknown_relation
from leopard.model.config import Config

__all__ = ["Catalog", "Fields", "group_name", "subject_name"]

TYPE = r"([a-z][a-z0-9_]{1,61}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]"
ID = r"(([a-zA-Z0-9/_|\-=+]{1,})|\*)"
RELATION = r"([a-z][a-z0-9_]{1,62}[a-z0-9])?"  # empty allowed: the subject itself
PERMISSION = r"[a-z][a-z0-9_]{1,62}[a-z0-9]"  # LookupResources: never empty
RULES = {
    "type": (re.compile(TYPE), 128, f"^{TYPE}$"),
    "id": (re.compile(ID), 1024, f"^{ID}$"),
    "relation": (re.compile(RELATION), 64, f"^{RELATION}$"),
    "permission": (re.compile(PERMISSION), 64, f"^{PERMISSION}$"),
}
_ID_RE = RULES["id"][0]
#: violations named in one message: SpiceDB names them all, and a bulk check of
#: thousands of malformed items then makes a status message larger than a gRPC
#: client accepts (RESOURCE_EXHAUSTED on its side instead of the refusal)
MAX_LISTED = 40


def group_name(type: str, id: str, permission: str) -> str:
    return f"{type}:{id}#{permission}"


def subject_name(subject: Any) -> str:
    """``user:anne`` or ``group:eng#member`` of a valid ``SubjectReference``."""
    obj = subject.object
    rel = subject.optional_relation
    name = f"{obj.object_type}:{obj.object_id}"
    return f"{name}#{rel}" if rel else name


class Fields:
    """The violations of one request, in SpiceDB's order; ``done()`` raises them."""

    #: values known to satisfy a rule (types and relations repeat across requests)
    _good: dict[str, set[str]] = {"type": set(), "relation": set(), "permission": set()}

    def __init__(self) -> None:
        self.violations: list[str] = []

    def check(self, rule: str, value: str, path: str) -> None:
        good = self._good.get(rule)
        if good is not None and value in good:
            return
        pattern, max_bytes, shown = RULES[rule]
        ok = True
        if len(value.encode()) > max_bytes:
            self.violations.append(f"{path}: must be at most {max_bytes} bytes")
            ok = False
        if pattern.fullmatch(value) is None:
            self.violations.append(f"{path}: does not match regex pattern `{shown}`")
            ok = False
        if ok and good is not None and len(good) < 10_000:
            good.add(value)

    def id(self, value: str, path: str) -> None:
        # the common case in one step: a valid id is ASCII, so characters are bytes
        if len(value) > 1024 or _ID_RE.fullmatch(value) is None:
            self.check("id", value, path)

    def required(self, message: Any, field: str, path: str) -> bool:
        if message.HasField(field):
            return True
        self.violations.append(f"{path}{field}: value is required")
        return False

    def object(self, parent: Any, field: str, prefix: str = "") -> None:
        """An ``ObjectReference`` field of ``parent``, required."""
        if self.required(parent, field, prefix):
            ref = getattr(parent, field)
            self.check("type", ref.object_type, f"{prefix}{field}.object_type")
            self.id(ref.object_id, f"{prefix}{field}.object_id")

    def subject(self, parent: Any, prefix: str = "") -> None:
        """The ``subject`` (a ``SubjectReference``) of ``parent``, required."""
        if self.required(parent, "subject", prefix):
            self.object(parent.subject, "object", f"{prefix}subject.")
            rel = parent.subject.optional_relation
            if rel:
                self.check("relation", rel, f"{prefix}subject.optional_relation")

    def done(self) -> None:
        found = self.violations
        if len(found) == 1:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"validation error: {found[0]}")
        if found:
            lines = "".join(f"\n - {v}" for v in found[:MAX_LISTED])
            if len(found) > MAX_LISTED:
                lines += f"\n - ... and {len(found) - MAX_LISTED} more"
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"validation errors:{lines}")


def resource_wildcard() -> Refusal:
    return Refusal(
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid ObjectReference.ObjectId: alphanumeric value is required",
    )


def wildcard_userset() -> Refusal:
    """SpiceDB's refusal of a subject ``type:*#relation`` in a CheckPermission."""
    return Refusal(
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid SubjectReference.OptionalRelation: optionalrelation must be empty on "
        "subject if object ID is a wildcard",
    )


class Catalog:
    """What the served configuration's schema knows and what the index answers."""

    def __init__(self, config: Config) -> None:
        self.config = config
        plan = config.plan
        self.plan = plan
        #: definition -> its relations and permissions; None: no schema (names as given)
        self.types: dict[str, frozenset[str]] | None = (
            None
            if plan is None
            else {t: frozenset(d.relations) for t, d in plan.schema.types.items()}
        )
        self._indexed: dict[tuple[str, str], bool] = {}

    def known(self, type: str, relation: str | None = None) -> Refusal | None:
        """The refusal for a definition (and relation) the schema lacks; None if known.

        ``relation`` None or empty asks for the object itself (SpiceDB's ``...``).
        """
        types = self.types
        if types is None:
            return None
        relations = types.get(type)
        if relations is None:
            return unknown_definition(type)
        if relation is not None and relation not in relations:
            return unknown_relation(type, relation)
        return None

    def indexed(self, type: str, relation: str) -> bool:
        key = (type, relation)
        found = self._indexed.get(key)
        if found is None:
            found = self._indexed[key] = self.config.is_set(type, relation)
        return found

    def why_not(self, type: str, relation: str) -> str:
        """Why ``type#relation`` is not answered from the index."""
        if self.plan is not None:
            return self.plan.why_not(type, relation) or "it is indexed"
        sets = ", ".join(self.config.sets_of(type)) or "none"
        return f"it is not an indexed set (sets of {type!r}: {sets})"
