"""A base's families as compressed SST files: the same answers, sound, and measured.

Why: a build writes a family as an SST file (compressed per family, see
``leopard.store.rocks._TABLES``) only when it holds 20,000 keys or more, or from the
forked subject writer; small test indexes go through a write batch instead. Here
every family is forced through SST files, and the index must answer exactly as the
one written by batches, pass ``verify``, and report its table sizes
(``RocksDB.table_stats``, what ``bench/sizes.py`` prints).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import leopard
from leopard.core.verify import verify_index
from leopard.gen import OrgSpec, generate
from leopard.store.generations import IndexDir, base_of
from leopard.store.layout import FAMILIES
from leopard.store.rocks import RocksDB
from leopard.store.writers import FamilyWriter


def _answers(path: Path, subjects: list[str]) -> dict[str, object]:
    with leopard.open_index(path) as ix:
        groups = list(ix.reader.base_groups)
        return {
            "groups_of": {s: ix.groups_of(s) for s in subjects},
            "members_of": {g: ix.members_of(g) for g in groups},
            "check": [ix.check(s, g) for s in subjects[:40] for g in groups],
        }


def _stats(path: Path) -> dict[str, dict[str, int]]:
    db = RocksDB(base_of(IndexDir(path).current()))
    try:
        return {name: db.table_stats(name) for name in FAMILIES}
    finally:
        db.close()


def test_families_written_as_sst_files_answer_as_batches_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = tmp_path / "org.txt"
    generate(OrgSpec(tuples=6_000, seed=3), snapshot)
    subjects = sorted({line.split("@", 1)[1] for line in snapshot.read_text().splitlines()})
    subjects = [s for s in subjects if s.startswith("user:") and "#" not in s][:300]

    batched = leopard.build_index(snapshot, tmp_path / "batched")
    monkeypatch.setattr(FamilyWriter, "SMALL", 0)  # every family through a file
    filed = leopard.build_index(snapshot, tmp_path / "filed")

    assert filed.tuples_indexed == batched.tuples_indexed
    assert _answers(tmp_path / "filed", subjects) == _answers(tmp_path / "batched", subjects)
    report = verify_index(tmp_path / "filed")
    assert report.ok, report.problems

    stats = _stats(tmp_path / "filed")
    assert stats["m2g"]["entries"] == stats["sname"]["entries"] == batched.subjects
    assert stats["g2g"]["entries"] == batched.groups
    for name in ("m2g", "sname", "g2g", "g2m"):
        family = stats[name]
        assert family["sst_bytes"] > 0 and family["value_bytes"] > 0, (name, family)
    assert stats["dchild"] == {"entries": 0, "key_bytes": 0, "value_bytes": 0, "sst_bytes": 0}
