"""Leopard's schema index against the peers themselves, on generated data.

A docs-shape store (``leopard gen --shape docs``: nested groups, folders six deep with
``parent->view`` arrows, documents, owners, viewers, editors, public documents; a few
thousand tuples, acyclic, as SpiceDB refuses cycles) is indexed by Leopard from the
SpiceDB schema and, separately, from the OpenFGA model; every indexable permission is
asked of Leopard, SpiceDB embedded and OpenFGA's own engine (``fga model test``):
checks, lookups of resources (``groups_of`` with a type and permission) and of
subjects (``members_of``). The same again after random changes applied through the
incremental layer. The disagreement count must be 0; the permission that is an
exclusion is refused by Leopard, naming it.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.fga import fga_run
from support.spicedb_schema import SpiceDBOracle

import leopard
from leopard.core.incremental import DeltaWriter
from leopard.core.index import Index
from leopard.errors import InvalidInput
from leopard.gen import OrgSpec, docs_model, docs_schema, generate
from leopard.model.names import RelationTuple, format_tuple, parse_tuple

PERMISSIONS = {"doc": ("view", "edit", "viewer"), "folder": ("view", "edit")}


@dataclass
class Data:
    tuples: list[RelationTuple]
    users: list[str]
    docs: list[str]
    folders: list[str]
    groups: list[str]


def _names(tuples: list[RelationTuple], type_: str, *, subjects: bool = True) -> list[str]:
    found = {f"{t.resource_type}:{t.resource_id}" for t in tuples if t.resource_type == type_}
    if subjects:
        found |= {
            f"{t.subject_type}:{t.subject_id}"
            for t in tuples
            if t.subject_type == type_ and not t.is_wildcard
        }
    return sorted(found)


@pytest.fixture(scope="module")
def data() -> Data:
    buf = io.BytesIO()
    generate(OrgSpec(tuples=3_000, seed=9, shape="docs", max_depth=6, cycles=False), buf)
    tuples = [parse_tuple(line) for line in buf.getvalue().decode().splitlines()]
    return Data(
        tuples,
        _names(tuples, "user"),
        _names(tuples, "doc"),
        _names(tuples, "folder"),
        _names(tuples, "group", subjects=False),
    )


def questions(d: Data, seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Checks ``(subject, set)`` and resource lookups ``(subject, type, permission)``."""
    rng = random.Random(seed)
    checks = []
    for _ in range(500):
        subject = rng.choice(d.users) if rng.random() < 0.9 else f"{rng.choice(d.groups)}#member"
        if rng.random() < 0.7:
            checks.append((subject, f"{rng.choice(d.docs)}#{rng.choice(PERMISSIONS['doc'])}"))
        else:
            folder_permission = rng.choice(PERMISSIONS["folder"])
            checks.append((subject, f"{rng.choice(d.folders)}#{folder_permission}"))
    lookups = [
        (u, t, p) for u in rng.sample(d.users, 12) for t, ps in PERMISSIONS.items() for p in ps
    ]
    return checks, lookups


def leopard_answers(ix: Index, d: Data, seed: int) -> tuple[list[bool], list[list[str]], list]:
    checks, lookups = questions(d, seed)
    found = [sorted(ix.groups_of(u, type=t, permission=p)) for u, t, p in lookups]
    objects = [[name.rpartition("#")[0] for name in names] for names in found]
    members = [
        sorted(m for m in ix.members_of(f"{o}#view") if m.startswith("user:")) for o in d.docs[:40]
    ]
    return [ix.check(s, g) for s, g in checks], objects, members


@pytest.fixture(scope="module")
def indexes(data: Data, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("peers")
    (root / "docs.zed").write_text(docs_schema())
    (root / "docs.fga").write_text(docs_model())
    lines = [format_tuple(t) for t in data.tuples]
    out = {}
    for name, schema in (("spicedb", root / "docs.zed"), ("openfga", root / "docs.fga")):
        leopard.build_index([lines], root / name, schema=schema)
        out[name] = root / name
    yield out


def _disagree(what: str, questions_: list, ours: list, theirs: list) -> None:
    pairs = zip(questions_, ours, theirs, strict=True)
    bad = [f"{q}: leopard {a!r}, peer {b!r}" for q, a, b in pairs if a != b]
    assert not bad, f"{what}: {len(bad)} of {len(questions_)} disagree; " + "; ".join(bad[:6])


def _spicedb_answers(peer: SpiceDBOracle, d: Data, seed: int) -> tuple[list, list, list]:
    checks, lookups = questions(d, seed)
    answers = [peer.check(s, g.rpartition("#")[0], g.rpartition("#")[2]) for s, g in checks]
    objects = [sorted(peer.lookup_resources(t, p, u)) for u, t, p in lookups]
    members = [sorted(peer.lookup_subjects(o, "view", "user")) for o in d.docs[:40]]
    return answers, objects, members


def _compare_spicedb(ix: Index, tuples: list[RelationTuple], d: Data, seed: int) -> None:
    ours = leopard_answers(ix, d, seed)
    with SpiceDBOracle(docs_schema(), tuples) as peer:
        theirs = _spicedb_answers(peer, d, seed)
    checks, lookups = questions(d, seed)
    assert 20 < sum(ours[0]) < len(ours[0]) - 20  # both kinds of answer are asked for
    _disagree("checks", checks, ours[0], theirs[0])
    _disagree("lookup resources", lookups, ours[1], theirs[1])
    _disagree("lookup subjects", d.docs[:40], ours[2], theirs[2])


@pytest.mark.spicedb
def test_spicedb_and_leopard_agree_before_and_after_changes(
    data: Data, indexes: dict[str, Path]
) -> None:
    with Index(indexes["spicedb"]) as ix:
        with pytest.raises(InvalidInput, match="view_unbanned is not indexed"):
            ix.check(data.users[0], f"{data.docs[0]}#view_unbanned")
        _compare_spicedb(ix, data.tuples, data, seed=1)
        # changes: documents moved and emptied, folders reparented, viewers removed
        rng = random.Random(3)
        present = list(data.tuples)
        writer = DeltaWriter(ix.reader)
        try:
            deleted = rng.sample(present, 300)
            gone = set(deleted)
            present = [t for t in present if t not in gone]
            moves = [
                parse_tuple(f"{rng.choice(data.docs)}#parent@{rng.choice(data.folders)}")
                for _ in range(60)
            ]
            moves = [m for m in dict.fromkeys(moves) if m not in set(present)]
            present += moves
            writer.apply([("delete", t) for t in deleted] + [("touch", t) for t in moves])
        finally:
            writer.close()
        _compare_spicedb(ix, present, data, seed=2)


def test_openfga_and_leopard_agree(data: Data, indexes: dict[str, Path]) -> None:
    checks, lookups = questions(data, 4)
    with Index(indexes["openfga"]) as ix:
        ours = leopard_answers(ix, data, 4)
    run = fga_run(
        docs_model(),
        data.tuples,
        [(s, g.rpartition("#")[2], g.rpartition("#")[0]) for s, g in checks],
        [(u, p, t) for u, t, p in lookups],
        [(o, "view", "user") for o in data.docs[:40]],
    )
    run.raise_errors()
    _disagree("OpenFGA checks", checks, ours[0], run.checks)
    _disagree("OpenFGA list objects", lookups, ours[1], [sorted(a) for a in run.list_objects])
    _disagree("OpenFGA list users", data.docs[:40], ours[2], [sorted(a) for a in run.list_users])
