"""A small world for following SpiceDB: a schema with nested groups, arrows and
wildcards (on a folder's viewers: SpiceDB refuses a wildcard reached through a
nested group), random writes and deletes over it, and the comparison of every check of
Leopard's index with SpiceDB's own answer (CheckBulkPermissions, fully consistent)."""

from __future__ import annotations

import random
from typing import Any

from authzed.api import v1
from authzed.api.v1 import permission_service_pb2 as perm
from support.schemas import FOLDERS

SCHEMA = FOLDERS

USERS = [f"u{i}" for i in range(8)] + ["stranger"]
GROUPS = [f"g{i}" for i in range(5)]
FOLDERS = [f"f{i}" for i in range(4)]
DOCS = [f"d{i}" for i in range(5)]
#: (type, ids, permissions asked about)
ASKED = [
    ("group", GROUPS, ["member"]),
    ("folder", FOLDERS, ["viewer", "view"]),
    ("doc", DOCS, ["viewer", "view"]),
]


def random_relationship(rng: random.Random) -> str:
    """One relationship of the schema; never a cycle of parents (SpiceDB refuses deep
    recursion) and nesting only from a higher to a lower group (no cycles)."""
    kind = rng.random()
    user = rng.choice(USERS[:-1])
    if kind < 0.3:
        g = rng.randrange(len(GROUPS))
        if rng.random() < 0.35 and g + 1 < len(GROUPS):
            sub = rng.randrange(g + 1, len(GROUPS))
            return f"group:{GROUPS[g]}#member@group:{GROUPS[sub]}#member"
        return f"group:{GROUPS[g]}#member@user:{user}"
    if kind < 0.55:
        f = rng.randrange(len(FOLDERS))
        r = rng.random()
        if r < 0.25 and f + 1 < len(FOLDERS):
            return (
                f"folder:{FOLDERS[f]}#parent@folder:{FOLDERS[rng.randrange(f + 1, len(FOLDERS))]}"
            )
        if r < 0.55:
            return f"folder:{FOLDERS[f]}#viewer@group:{rng.choice(GROUPS)}#member"
        if r < 0.6:
            return f"folder:{FOLDERS[f]}#viewer@user:*"
        return f"folder:{FOLDERS[f]}#viewer@user:{user}"
    d = rng.choice(DOCS)
    r = rng.random()
    if r < 0.3:
        return f"doc:{d}#parent@folder:{rng.choice(FOLDERS)}"
    if r < 0.6:
        return f"doc:{d}#viewer@group:{rng.choice(GROUPS)}#member"
    return f"doc:{d}#viewer@user:{user}"


def spicedb_answers(front: Any) -> dict[tuple[str, str], bool]:
    """``(subject, set) -> member`` for every question, as SpiceDB answers it."""
    items, keys = [], []
    for t, ids, perms in ASKED:
        for i in ids:
            for p in perms:
                for u in USERS:
                    items.append(
                        perm.CheckBulkPermissionsRequestItem(
                            resource=v1.ObjectReference(object_type=t, object_id=i),
                            permission=p,
                            subject=v1.SubjectReference(
                                object=v1.ObjectReference(object_type="user", object_id=u)
                            ),
                        )
                    )
                    keys.append((f"user:{u}", f"{t}:{i}#{p}"))
    out: dict[tuple[str, str], bool] = {}
    has = perm.CheckPermissionResponse.PERMISSIONSHIP_HAS_PERMISSION
    for start in range(0, len(items), 500):
        request = perm.CheckBulkPermissionsRequest(
            consistency=v1.Consistency(fully_consistent=True), items=items[start : start + 500]
        )
        answer = front.call("/authzed.api.v1.PermissionsService/CheckBulkPermissions", request)
        for key, pair in zip(keys[start : start + 500], answer.pairs, strict=True):
            assert pair.WhichOneof("response") == "item", pair
            out[key] = pair.item.permissionship == has
    return out


def disagreements(ix: Any, front: Any) -> list[str]:
    """Every question Leopard's index answers otherwise than SpiceDB."""
    expected = spicedb_answers(front)
    answers = ix.check_many(list(expected))
    return [
        f"{s} in {g}: SpiceDB {want}, Leopard {got}"
        for ((s, g), want), got in zip(expected.items(), answers, strict=True)
        if want != got
    ]
