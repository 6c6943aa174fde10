"""Indexing a schema as written: what is indexed, what is refused and why, and the
answers and messages a user sees, in SpiceDB's language and in OpenFGA's DSL and JSON.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import leopard
from leopard.core.incremental import DeltaWriter
from leopard.core.index import Index
from leopard.core.verify import verify_index
from leopard.errors import InvalidInput, InvalidSchema
from leopard.model.config import schema_config
from leopard.model.names import parse_tuple
from leopard.model.schema import load_schema, to_openfga_json

ZED = """use expiration

definition user {}
definition group {
  relation member: user | group#member
}
definition folder {
  relation parent: folder
  relation owner: user
  relation viewer: user | user:* | group#member
  permission edit = owner + parent->edit
  permission view = viewer + edit + parent->view
}
definition doc {
  relation parent: folder
  relation viewer: user | group#member
  relation banned: user
  relation auditor: user with expiration
  permission view = viewer + parent->view
  permission view_ok = view - banned
  permission view_or_ok = view + view_ok
  permission audit = auditor + view
}
"""

FGA = """
model
  schema 1.1
type user
type group
  relations
    define member: [user, group#member]
type folder
  relations
    define parent: [folder]
    define owner: [user]
    define viewer: [user, user:*, group#member]
    define edit: owner or edit from parent
    define view: viewer or edit or view from parent
type doc
  relations
    define parent: [folder]
    define viewer: [user, group#member] or view from parent
    define view: viewer
"""

TUPLES = [
    "group:eng#member@user:anne",
    "group:all#member@group:eng#member",
    "folder:root#viewer@group:all#member",
    "folder:root#viewer@user:*",
    "folder:sub#parent@folder:root",
    "folder:sub#owner@user:bob",
    "doc:d1#parent@folder:sub",
    "doc:d1#viewer@user:carol",
    "doc:d1#banned@user:carol",
    "doc:d3#viewer@folder:root",  # doc#viewer does not allow folders: skipped
]


@pytest.fixture
def zed(tmp_path: Path) -> Path:
    path = tmp_path / "schema.zed"
    path.write_text(ZED)
    return path


def build(tmp_path: Path, schema: Path, tuples: list[str] = TUPLES, **kw: object) -> Path:
    path = tmp_path / "idx"
    leopard.build_index([tuples], path, schema=schema, **kw)  # type: ignore[arg-type]
    return path


def test_the_report_names_what_is_not_indexed_and_what_was_skipped(
    tmp_path: Path, zed: Path
) -> None:
    report = leopard.build_index([TUPLES], tmp_path / "idx", schema=zed)
    assert report.not_indexed == {
        "doc#audit": "depends on doc#auditor, which is not indexed (allows expiring subjects "
        "(user with expiration))",
        "doc#auditor": "allows expiring subjects (user with expiration)",
        "doc#view_ok": "uses an exclusion (-, but not): not a union",
        "doc#view_or_ok": "depends on doc#view_ok, which is not indexed (uses an exclusion "
        "(-, but not): not a union)",
    }
    assert report.skipped == {"doc#viewer does not allow subjects of type folder": 1}
    assert report.tuples_indexed == len(TUPLES) - 1
    # a write to a permission is named as one (the permission itself is indexed)
    report = leopard.build_index([[*TUPLES, "doc:x#view@user:bob"]], tmp_path / "p", schema=zed)
    assert report.skipped["doc#view stores no tuples (it is computed)"] == 1
    assert report.derived_edges > 0


def test_answers_through_arrows_and_computed_usersets(tmp_path: Path, zed: Path) -> None:
    with Index(build(tmp_path, zed)) as ix:
        assert ix.check("user:anne", "doc:d1#view")  # eng < all < root viewer, parents
        assert ix.check("user:bob", "doc:d1#view")  # owner -> edit -> view, then parent
        assert ix.check("user:zed", "folder:root#view")  # the folder's wildcard viewer
        assert ix.check("user:zed", "doc:d1#view")  # ... inherited through two parents
        assert not ix.check("user:zed", "doc:d1#viewer")
        assert ix.check("user:bob", "folder:sub#edit")
        assert not ix.check("user:anne", "folder:sub#edit")
        assert ix.groups_of("user:bob", type="doc", permission="view") == ["doc:d1#view"]
        assert ix.groups_of("user:carol", type="folder", permission="edit") == []
        assert ix.groups_of("user:carol", type="folder", permission="view") == [
            "folder:root#view",
            "folder:sub#view",
        ]
        assert "user:carol" in ix.members_of("doc:d1#view")
        assert "user:*" in ix.members_of("doc:d1#view")
        # two chains are shortest (bob owns sub; root's wildcard viewer takes him too):
        # of those, the one whose sets come first by name is told, whatever the ids
        steps = ix.explain("user:bob", "doc:d1#view", steps=True)
        assert [s.via for s in steps] == [  # type: ignore[union-attr]
            None,
            "doc#view includes parent->view, through the tuple doc:d1#parent@folder:sub",
            "folder#view includes parent->view, through the tuple folder:sub#parent@folder:root",
            "folder#view includes viewer",
            "tuple folder:root#viewer@user:*",
        ]
        steps = ix.explain("user:bob", "folder:sub#edit", steps=True)
        assert [s.via for s in steps] == [  # type: ignore[union-attr]
            None,
            "folder#edit includes owner",
            "tuple folder:sub#owner@user:bob",
        ]
        # a userset's chain ends at its own set: no tuple is made up below it
        steps = ix.explain("folder:sub#owner", "folder:sub#edit", steps=True)
        assert [(s.set, s.via) for s in steps] == [  # type: ignore[union-attr]
            ("folder:sub#edit", None),
            ("folder:sub#owner", "folder#edit includes owner"),
        ]
        steps = ix.explain("folder:sub#owner", "folder:sub#owner", steps=True)
        assert [(s.set, s.via) for s in steps] == [("folder:sub#owner", None)]  # type: ignore[union-attr]


def test_a_query_on_a_set_not_indexed_names_it_and_why(tmp_path: Path, zed: Path) -> None:
    with Index(build(tmp_path, zed)) as ix:
        # as check, LookupResources of a set not indexed is refused, not answered empty
        with pytest.raises(InvalidInput, match=r"doc#view_ok is not indexed: uses an exclusion"):
            ix.groups_of("user:anne", type="doc", permission="view_ok")
        with pytest.raises(InvalidInput, match=r"doc#nope is not indexed"):
            ix.groups_of("user:anne", type="doc", permission="nope")
        # without a type too: a "no" would hide every doc where the exclusion holds
        with pytest.raises(InvalidInput, match=r"doc#view_ok is not indexed: uses an exclusion"):
            ix.groups_of("user:anne", permission="view_ok")
        with pytest.raises(InvalidInput, match=r"no type of the schema defines 'nope'"):
            ix.groups_of("user:anne", permission="nope")
        by_type = [ix.groups_of("user:anne", type=t, permission="view") for t in ("doc", "folder")]
        assert ix.groups_of("user:anne", permission="view") == sorted(by_type[0] + by_type[1])
        assert by_type[0] and by_type[1]
        with pytest.raises(InvalidInput, match=r"doc#view_ok is not indexed: uses an exclusion"):
            ix.check("user:anne", "doc:d1#view_ok")
        with pytest.raises(InvalidInput, match=r"doc#nope is not indexed: the type 'doc' has"):
            ix.check("user:anne", "doc:d1#nope")
        with pytest.raises(InvalidInput, match=r"doc#audit is not indexed: depends on"):
            ix.members_of("doc:d1#audit")


def test_a_subject_of_a_type_the_schema_does_not_define_is_refused(
    tmp_path: Path, zed: Path
) -> None:
    """As SpiceDB refuses it ("object definition not found"): a typo in the subject's
    type or in a userset's relation is an error, never a "no" (before and after warm)."""
    cases = {
        "usr:anne": "subject 'usr:anne': the schema defines no type 'usr'",
        "usr:*": "subject 'usr:*': the schema defines no type 'usr'",
        "group:eng#membr": "subject 'group:eng#membr': the schema defines no relation 'membr'",
    }
    with Index(build(tmp_path, zed)) as ix:
        for warm in (False, True):
            if warm:
                ix.warm()
            for subject, why in cases.items():
                asks = (
                    lambda s: ix.check(s, "doc:d1#view"),
                    lambda s: ix.check_many([("user:anne", "doc:d1#view"), (s, "doc:d1#view")]),
                    lambda s: ix.groups_of(s, type="doc", permission="view"),
                    lambda s: ix.explain(s, "doc:d1#view"),
                )
                for ask in asks:
                    with pytest.raises(InvalidInput, match=re.escape(why)):
                        ask(subject)
            # a subject of a defined type the index does not hold is a plain "no"
            assert not ix.check("user:zed", "group:eng#member")
            assert ix.check("user:zed", "doc:d1#view")  # folder:root holds user:*
            assert not ix.check("group:new#member", "doc:d1#view")
    org = tmp_path / "org"  # without a schema every namespace may hold subjects
    leopard.build_index([["group:eng#member@user:anne"]], org)
    with Index(org) as ix:
        assert not ix.check("usr:anne", "group:eng") and ix.groups_of("usr:anne") == []


def test_only_narrows_to_what_the_named_sets_depend_on(tmp_path: Path, zed: Path) -> None:
    report = leopard.build_index([TUPLES], tmp_path / "idx", schema=zed, only=["folder#edit"])
    assert report.not_indexed["doc#view"] == "not asked for (--only)"
    assert "folder#view" in report.not_indexed and "folder#owner" not in report.not_indexed
    with Index(tmp_path / "idx") as ix:
        assert ix.check("user:bob", "folder:sub#edit")
        with pytest.raises(InvalidInput, match="not asked for"):
            ix.check("user:bob", "doc:d1#view")
    with pytest.raises(InvalidSchema, match=r"--only 'doc#view_ok': not indexable: uses an excl"):
        schema_config(zed, ["doc#view_ok"])
    with pytest.raises(InvalidSchema, match=r"--only 'doc#nothing': the schema has no set"):
        schema_config(zed, ["doc#nothing"])


def test_openfga_dsl_and_json_answer_as_the_spicedb_schema(tmp_path: Path) -> None:
    fga = tmp_path / "model.fga"
    fga.write_text(FGA)
    as_json = tmp_path / "model.json"
    as_json.write_text(json.dumps(to_openfga_json(load_schema(fga))))
    tuples = [t for t in TUPLES if "#banned" not in t and not t.startswith("doc:d3")]
    answers = []
    for schema in (fga, as_json):
        out = tmp_path / schema.suffix[1:]
        leopard.build_index([tuples], out, schema=schema)
        with Index(out) as ix:
            answers.append(
                [
                    ix.check(u, f"{o}#{p}")
                    for u in ("user:anne", "user:bob", "user:carol", "user:zed")
                    for o in ("doc:d1", "folder:sub", "folder:root")
                    for p in ("view", "viewer")
                ]
            )
    assert answers[0] == answers[1]
    assert answers[0][:6] == [True, True, True, False, True, True]  # anne: as through groups


def test_changes_follow_arrows_and_objects_coming_and_going(tmp_path: Path, zed: Path) -> None:
    path = build(tmp_path, zed)
    with Index(path) as ix:
        w = DeltaWriter(ix.reader)
        try:
            w.apply([("delete", parse_tuple("doc:d1#parent@folder:sub"))])
            assert not ix.check("user:bob", "doc:d1#view")
            assert ix.check("user:carol", "doc:d1#view")  # still its own viewer
            w.apply([("touch", parse_tuple("doc:d9#parent@folder:sub"))])  # a new object
            assert ix.check("user:bob", "doc:d9#view")
            w.apply([("delete", parse_tuple("doc:d1#viewer@user:carol"))])
            assert not ix.check("user:carol", "doc:d1#view")
            report = w.apply([("touch", parse_tuple("doc:d1#viewer@folder:root"))])
            assert report.skipped_reasons == {
                "doc#viewer does not allow subjects of type folder": 1
            }
        finally:
            w.close()


def test_a_wildcard_coming_and_going_is_seen_by_a_subject_asked_before(
    tmp_path: Path, zed: Path
) -> None:
    """A resource-tier check caches what meets a set for each subject asked, its
    namespace wildcard's groups included: a wildcard tuple written later changes the
    answer for a subject already asked, and so does its deletion."""
    tuples = [t for t in TUPLES if t != "folder:root#viewer@user:*"]
    tuples.append("folder:other#viewer@user:*")  # the namespace's wildcard is in a set
    path = build(tmp_path, zed, tuples)
    with Index(path) as ix:
        w = DeltaWriter(ix.reader)
        try:
            # carol is a known subject (a doc's viewer), not in folder:sub#view
            assert not ix.check("user:carol", "folder:sub#view")
            assert not ix.check("user:zed", "folder:sub#view")  # unknown: wildcard alone
            w.apply([("touch", parse_tuple("folder:root#viewer@user:*"))])
            assert ix.check("user:carol", "folder:sub#view")
            assert ix.check("user:zed", "folder:sub#view")
            w.apply([("delete", parse_tuple("folder:root#viewer@user:*"))])
            assert not ix.check("user:carol", "folder:sub#view")
            assert not ix.check("user:zed", "folder:sub#view")
            assert ix.check("user:bob", "folder:sub#view")  # the owner still
        finally:
            w.close()


def test_a_cycle_of_group_sets_broken_by_a_change(tmp_path: Path) -> None:
    """A permission naming one set of a cycle of group sets holds that set, not the
    whole cycle: once a change breaks the cycle, the other set is no longer in it
    (the build once stored the whole cycle, which went stale here)."""
    schema = tmp_path / "cycle.zed"
    schema.write_text(
        "definition user {}\n"
        "definition team {\n"
        "  relation member: user | team#member\n"
        "  permission access = member\n"
        "}\n"
    )
    tuples = [
        "team:a#member@team:b#member",
        "team:b#member@team:a#member",
        "team:b#member@user:bo",
        "team:a#member@user:al",
    ]
    path = build(tmp_path, schema, tuples)
    report = verify_index(path)  # a permission's closure holds what its edges name
    assert report.ok, report.problems
    with Index(path) as ix:
        assert ix.check("team:b#member", "team:a#access")
        assert ix.check("user:bo", "team:a#access")
        w = DeltaWriter(ix.reader)
        try:
            w.apply([("delete", parse_tuple("team:a#member@team:b#member"))])
            assert not ix.check("team:b#member", "team:a#access")
            assert not ix.check("user:bo", "team:a#access")
            assert ix.check("user:al", "team:a#access")
            assert ix.check("team:a#member", "team:b#access")  # b still holds a
            assert ix.check("user:al", "team:b#access")
        finally:
            w.close()


def test_giving_a_config_and_a_schema_is_an_error(tmp_path: Path, zed: Path) -> None:
    with pytest.raises(InvalidInput, match="either a set configuration or a schema"):
        leopard.build_index([TUPLES], tmp_path / "idx", config=zed, schema=zed)
    out = subprocess.run(
        [sys.executable, "-m", "leopard", "build", "-", "--index", str(tmp_path / "i"),
         "--schema", str(zed), "--config", str(zed)],
        input="", capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and "give --config or --schema, not both" in out.stderr


def test_a_bad_schema_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zed"
    bad.write_text("definition user {}\ndefinition doc {\n  relation viewer: usr\n}\n")
    out = subprocess.run(
        [sys.executable, "-m", "leopard", "build", "-", "--index", str(tmp_path / "i"),
         "--schema", str(bad)],
        input="doc:d#viewer@user:a\n", capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"Error: {bad}:3:")
    assert "usr" in out.stderr
    with pytest.raises(InvalidSchema, match=r"unknown schema extension '\.txt'"):
        schema_config(tmp_path / "schema.txt")
