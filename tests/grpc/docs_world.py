"""The organisation the gRPC tests ask about, and Leopard serving it over gRPC.

A docs-like SpiceDB schema (users, nested groups, folders whose ``view`` and
``edit`` flow down ``parent->`` arrows, docs in folders) with one exclusion
(``view_ok = view - banned``) that only SpiceDB answers, and deterministic data for
it: acyclic, nesting and folder chains a few hops deep (far under SpiceDB's depth
limit). ``LeopardGrpc`` builds an index of that data and serves SpiceDB's API over
it on a free port, in this process.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import TracebackType
from typing import Any

import leopard
from leopard.core.index import Index
from leopard.grpc.server import GrpcOptions, GrpcServer

SCHEMA = """// a docs-like organisation
definition user {}

definition group {
    relation member: user | group#member
    relation manager: user
    permission membership = member + manager
}

definition folder {
    relation parent: folder
    relation owner: user
    relation viewer: user | user:* | group#member
    relation banned: user
    permission edit = owner + parent->edit
    permission view = viewer + edit + parent->view
    permission view_ok = view - banned
}

definition doc {
    relation parent: folder
    relation owner: user
    relation viewer: user | group#member
    relation banned: user
    permission edit = owner + parent->edit
    permission view = viewer + edit + parent->view
    permission view_ok = view - banned
}
"""

USERS = [f"u{i}" for i in range(24)]
GROUPS = [f"g{i}" for i in range(10)]
FOLDERS = [f"f{i}" for i in range(10)]
DOCS = [f"d{i}" for i in range(24)]
#: permissions and relations the index answers
INDEXED = {
    "folder": ("view", "edit", "viewer", "owner"),
    "doc": ("view", "edit", "viewer"),
    "group": ("member", "membership"),
}


def tuples(seed: int = 7) -> list[str]:
    """The relationships: groups nested as a DAG (g_i only in g_j for j < i), a folder
    tree (f_i's parent is some f_j, j < i), docs in folders; owners, viewers (users,
    groups, one folder open to ``user:*``), managers and a few banned users."""
    rng = random.Random(seed)
    out: list[str] = []
    for i, g in enumerate(GROUPS):
        for u in rng.sample(USERS, 3):
            out.append(f"group:{g}#member@user:{u}")
        if i:
            for j in rng.sample(range(i), min(i, 2)):
                out.append(f"group:{GROUPS[j]}#member@group:{g}#member")
        if i % 3 == 0:
            out.append(f"group:{g}#manager@user:{rng.choice(USERS)}")
    for i, f in enumerate(FOLDERS):
        if i:
            out.append(f"folder:{f}#parent@folder:{FOLDERS[rng.randrange(i)]}")
        out.append(f"folder:{f}#owner@user:{rng.choice(USERS)}")
        out.append(f"folder:{f}#viewer@group:{rng.choice(GROUPS)}#member")
        out.append(f"folder:{f}#viewer@user:{rng.choice(USERS)}")
        out.append(f"folder:{f}#banned@user:{rng.choice(USERS)}")
    out.append(f"folder:{FOLDERS[7]}#viewer@user:*")
    for i, d in enumerate(DOCS):
        if i % 5:  # every fifth doc is in no folder
            out.append(f"doc:{d}#parent@folder:{rng.choice(FOLDERS)}")
        if i % 2:
            out.append(f"doc:{d}#viewer@user:{rng.choice(USERS)}")
        if i % 3 == 0:
            out.append(f"doc:{d}#viewer@group:{rng.choice(GROUPS)}#member")
        if i % 4 == 0:
            out.append(f"doc:{d}#owner@user:{rng.choice(USERS)}")
            out.append(f"doc:{d}#banned@user:{rng.choice(USERS)}")
    return list(dict.fromkeys(out))


def build(directory: Path, data: list[str] | None = None) -> Path:
    """Build the index of ``data`` (default: ``tuples()``) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    schema = directory / "docs.zed"
    schema.write_text(SCHEMA)
    path = directory / "idx"
    leopard.build_index([tuples() if data is None else data], path, schema=schema)
    return path


class LeopardGrpc:
    """Leopard's gRPC server over the index at ``path``; ``target`` is its address."""

    def __init__(self, path: Path, **options: Any) -> None:
        self.index = Index(path)
        self.index.warm()
        try:
            self.server = GrpcServer(self.index, GrpcOptions(port=0, **options))
            self.target = self.server.start()
        except BaseException:
            self.index.close()
            raise
        self.options = options

    def client(self, key: str = "unused") -> Any:
        from authzed.api import v1

        return v1.InsecureClient(self.target, key)

    def close(self) -> None:
        self.server.stop(grace=1.0)
        self.index.close()

    def __enter__(self) -> LeopardGrpc:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
