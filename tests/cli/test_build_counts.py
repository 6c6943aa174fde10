"""What a build counts: a record repeated is indexed once (counted as a duplicate, and
the --max-shrink guard compares distinct tuples); a configuration that indexes none of
the records read is named in the refusal, with the commonest reasons it skipped them."""

from __future__ import annotations

import json
from pathlib import Path

from test_build_guards import built, cli, refused

TUPLES = """\
group:eng#member@user:alice
group:staff#member@group:eng#member
folder:root#viewer@group:staff#member
folder:plans#parent@folder:root
folder:plans#editor@user:bob
doc:roadmap#parent@folder:plans
"""
SCHEMA = """\
definition user {}
definition group {
    relation member: user | group#member
}
definition folder {
    relation parent: folder
    relation viewer: user | group#member
    relation editor: user | group#member
    permission view = viewer + editor + parent->view
}
definition doc {
    relation parent: folder
    permission view = parent->view
}
"""
UNION = """\
[[sets]]
namespace = "group"
relation = "member"
from = ["member", "manager"]
"""


def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "t.txt").write_text(TUPLES)
    (tmp_path / "s.zed").write_text(SCHEMA)
    return tmp_path / "t.txt", tmp_path / "s.zed"


def test_repeated_records_are_indexed_once_and_a_clean_rebuild_is_no_shrink(
    tmp_path: Path,
) -> None:
    clean, schema = files(tmp_path)
    dump = tmp_path / "dump.txt"
    dump.write_text(TUPLES * 3)
    index = tmp_path / "idx"
    report = built(dump, "--index", index, "--schema", schema)
    assert (report["tuples_read"], report["tuples_indexed"], report["duplicates"]) == (18, 18, 12)
    text = cli("build", dump, "--index", tmp_path / "other", "--schema", schema).stdout
    assert "  duplicates          12 of those (each indexed once)\n" in text
    again = built(clean, "--index", index, "--schema", schema)  # the same index: no shrink
    assert (again["tuples_indexed"], again["duplicates"]) == (6, 0)
    twice = built(clean, clean, "--index", index, "--schema", schema)
    assert (twice["tuples_indexed"], twice["duplicates"]) == (12, 6)


def test_two_sources_of_one_set_are_two_tuples_but_a_repeat_is_not(tmp_path: Path) -> None:
    config = tmp_path / "sets.toml"
    config.write_text(UNION)
    snap = tmp_path / "t.txt"
    lines = ["group:eng#member@user:a", "group:eng#manager@user:a", "group:eng#manager@user:a",
             "group:eng#member@group:x#member", "group:eng#manager@group:x#member",
             "group:eng#member@group:x#member"]  # fmt: skip
    snap.write_text("\n".join(lines) + "\n")
    report = built(snap, "--index", tmp_path / "idx", "--config", config)
    assert (report["tuples_indexed"], report["duplicates"]) == (6, 2)
    assert report["member_edges"] == 1 and report["nested_edges"] == 1


def test_the_guard_compares_with_an_older_report_as_it_counted(tmp_path: Path) -> None:
    """A live build report without 'duplicates' (before they were counted) counted
    every record: a clean rebuild is compared with what it would have counted."""
    clean, schema = files(tmp_path)
    index = tmp_path / "idx"
    built(clean, clean, clean, "--index", index, "--schema", schema)
    report_path = index / (index / "CURRENT").readlink() / "build-report.json"
    old = json.loads(report_path.read_text())
    del old["duplicates"]
    old["tuples_indexed"] = 18
    report_path.write_text(json.dumps(old))
    said = refused(clean, "--index", index, "--schema", schema)
    assert "6 tuples indexed against 18 in the live generation, 67% fewer" in said
    built(clean, clean, clean, "--index", index, "--schema", schema)  # as many as it counted


def test_a_schema_that_indexes_nothing_is_named_with_the_reasons(tmp_path: Path) -> None:
    snap, _ = files(tmp_path)
    empty = tmp_path / "empty.zed"
    empty.write_text("// nothing yet\n")  # SpiceDB takes an empty schema too
    said = refused(snap, "--index", tmp_path / "x", "--schema", empty)
    assert said == (
        f"refusing to build an empty index at '{tmp_path / 'x'}': the schema "
        f"'{empty}' indexes none of the 6 tuples read (skipped "
        "2: group#member is not an indexed relation (the schema has no type 'group'); "
        "1: folder#viewer is not an indexed relation (the schema has no type 'folder'); "
        "1: folder#parent is not an indexed relation (the schema has no type 'folder'); "
        "and 2 more reasons); check it against the snapshots; pass --force (force=True) "
        "to build it anyway"
    )
    forced = built(snap, "--index", tmp_path / "x", "--schema", empty, "--force")
    assert forced["tuples_indexed"] == 0 and sum(forced["skipped"].values()) == 6


def test_a_config_that_indexes_nothing_is_named_with_the_reasons(tmp_path: Path) -> None:
    snap, _ = files(tmp_path)
    typo = tmp_path / "typo.toml"
    typo.write_text(UNION.replace('"group"', '"grp"'))
    said = refused(snap, "--index", tmp_path / "x", "--config", typo)
    assert f"the set configuration '{typo}' indexes none of the 6 tuples read (skipped " in said
    assert "2: group#member is not fed into an indexed set; " in said
    (tmp_path / "nomember.txt").write_text("group:eng#owner@user:a\n")
    said = refused(tmp_path / "nomember.txt", "--index", tmp_path / "y")
    assert (
        "the set configuration (the default: every ns#member is a set) indexes none of the " in said
    )
    assert "(skipped 1: group#owner is not fed into an indexed set)" in said
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    said = refused(empty, "--index", tmp_path / "z", "--config", typo)
    assert said.endswith("the snapshots hold no tuple to index (0 records read); pass --force "
                         "(force=True) to build it anyway")  # fmt: skip


def test_a_sharded_build_reports_the_duplicates_of_its_shards(tmp_path: Path) -> None:
    clean, schema = files(tmp_path)
    dump = tmp_path / "dump.txt"
    dump.write_text(TUPLES * 2)
    one = built(dump, "--index", tmp_path / "one", "--schema", schema)
    sharded = built(dump, "--index", tmp_path / "three", "--schema", schema, "--shards", "3")
    assert (one["tuples_indexed"], one["duplicates"]) == (12, 6)
    # every record is there twice, on each shard that holds it (some on every shard)
    assert sharded["tuples_indexed"] >= 12
    assert sharded["duplicates"] * 2 == sharded["tuples_indexed"]
