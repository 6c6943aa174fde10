"""Tests of the public Python API: the ``leopard`` front door, errors, build and reopen.

``leopard.__all__`` must hold every public name the README names and
nothing that does not exist; every error derives from ``LeopardError``. Builds go
through ``leopard.build_index`` with in-memory iterables of lines; a build that fails
midway (the source raising, or a later phase failing after the subject writer was
forked) must leave the previous index answering, no temporary generation behind, and
no child process unreaped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import leopard
import leopard.core.build
import leopard.errors
from leopard import (
    BuildReport,
    Config,
    Index,
    IndexNotFound,
    InvalidConfig,
    InvalidInput,
    InvalidTuple,
    LeopardError,
    StaleIndex,
    StorageError,
    build_index,
    open_index,
)
from leopard.model.config import SetConfig
from leopard.model.tokens import encode_token
from leopard.model.zedtoken import encode_zedtoken
from leopard.store.layout import FORMAT_VERSION

ORG = [
    "# a small org: a cycle eng <-> backend, a wildcard, an unindexed relation",
    "group:eng#member@user:alice",
    "group:eng#member@group:backend#member",
    "",
    "group:backend#member@user:bob",
    "group:backend#member@group:eng#member",
    "group:all#member@group:eng#member",
    "group:all#member@user:carol",
    "group:sales#member@user:*",
    "group:eng#owner@user:dave",
    "group:eng#member@team:x#lead",
    "group:eng#member@user:alice",  # a duplicate: harmless
]

ERRORS = {
    "LeopardError": LeopardError,
    "InvalidTuple": InvalidTuple,
    "InvalidConfig": InvalidConfig,
    "InvalidInput": InvalidInput,
    "IndexNotFound": IndexNotFound,
    "StaleIndex": StaleIndex,
    "StorageError": StorageError,
}


def leftovers(path: Path) -> list[str]:
    """Temporary entries a build may leave in an index directory."""
    return sorted(e.name for e in path.iterdir() if e.name.startswith("."))


@pytest.fixture
def built(tmp_path: Path) -> Path:
    path = tmp_path / "idx"
    build_index([ORG], path)
    return path


# -- the front door ---------------------------------------------------------------------------


def test_all_names_the_public_api() -> None:
    named = {"open_index", "build_index", "Index", *ERRORS}
    assert named <= set(leopard.__all__)
    assert len(leopard.__all__) == len(set(leopard.__all__))
    for name in leopard.__all__:
        assert hasattr(leopard, name), name


def test_all_is_complete() -> None:
    # every public name leopard/__init__.py binds from its own modules is listed
    public = {
        name
        for name, value in vars(leopard).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("leopard.")
        and callable(value)
    }
    assert public == set(leopard.__all__)


def test_exported_objects_are_the_implementations() -> None:
    from leopard.api import build_index as api_build
    from leopard.api import open_index as api_open
    from leopard.core.index import Index as index_cls

    assert leopard.build_index is api_build
    assert leopard.open_index is api_open
    assert leopard.Index is index_cls
    assert leopard.BuildReport is leopard.core.build.BuildReport


def test_error_tree() -> None:
    for name, cls in ERRORS.items():
        assert getattr(leopard, name) is cls
        assert issubclass(cls, LeopardError)
        assert issubclass(cls, Exception)
    # the input errors are also ValueErrors, as callers of a parser expect
    for cls in (InvalidTuple, InvalidConfig, InvalidInput):
        assert issubclass(cls, ValueError)
    stale = StaleIndex("not fresh", current="v1.e30")
    assert stale.current == "v1.e30" and str(stale) == "not fresh"
    assert StaleIndex("x").current is None
    # the tree in the docstring of leopard.errors names every class
    doc = leopard.errors.__doc__ or ""
    for name in ERRORS:
        assert name in doc


# -- build and query ----------------------------------------------------------------------


def test_build_from_memory_and_query(built: Path) -> None:
    with open_index(built) as ix:
        assert isinstance(ix, Index)
        assert ix.check("user:bob", "group:eng")  # through the cycle
        assert ix.check("user:alice", "group:backend")
        assert ix.check("user:alice", "group:all#member")
        assert not ix.check("user:carol", "group:eng")
        assert ix.check("user:anyone", "group:sales")  # wildcard
        assert not ix.check("user:dave", "group:eng")  # owner does not feed member
        assert ix.check("group:backend#member", "group:all")  # a nested set
        assert ix.check("team:x#lead", "group:all")  # an opaque userset leaf
        assert not ix.check("user:nobody", "group:nosuch")  # unknown: not a member
        assert ix.check_many([("user:bob", "group:all"), ("user:carol", "group:eng")]) == [
            True,
            False,
        ]
        assert ix.groups_of("user:bob") == [
            "group:all#member",
            "group:backend#member",
            "group:eng#member",
            "group:sales#member",
        ]
        assert ix.members_of("group:all") == [
            "team:x#lead",
            "user:alice",
            "user:bob",
            "user:carol",
        ]
        assert ix.members_of("group:all", limit=2) == ["team:x#lead", "user:alice"]
        assert ix.members_of("group:all", limit=2, after="user:alice") == ["user:bob", "user:carol"]
        assert ix.explain("user:bob", "group:all") == [
            "group:all#member",
            "group:eng#member",
            "group:backend#member",
        ]
        assert ix.explain("user:carol", "group:eng") is None
        with pytest.raises(InvalidTuple, match="namespace 'us@er' has the character '@'"):
            ix.check("us@er:bob", "group:eng")
        with pytest.raises(LeopardError):
            ix.groups_of("user:")


def test_build_report(built: Path, tmp_path: Path) -> None:
    report = build_index([ORG], tmp_path / "again")
    assert isinstance(report, BuildReport)
    assert report.tuples_read == 10
    assert report.tuples_indexed == 9 and report.duplicates == 1  # the repeat indexed once
    assert report.skipped == {"group#owner is not fed into an indexed set": 1}
    assert report.rejected == 0
    assert report.groups == 4
    assert report.subjects == 5  # alice, bob, carol, user:*, team:x#lead
    assert report.wildcards == 1
    assert report.opaque_usersets == 1
    assert report.cycles_collapsed == 1 and report.groups_in_cycles == 2
    assert report.largest_group == "group:all#member"
    assert report.largest_group_members == 4
    assert report.deepest_nesting >= 2
    assert report.bytes_on_disk > 0 and report.seconds >= 0
    d = report.to_dict()
    assert d["tuples_read"] == 10 and isinstance(d["skipped"], dict)


def test_build_with_config_object_and_path(tmp_path: Path) -> None:
    lines = [
        "acme/group:eng#direct_member@acme/user:alice",
        "acme/group:eng#manager@acme/user:bob",
        "acme/group:all#direct_member@acme/group:eng#member",
        "acme/group:all#member@acme/user:carol",  # 'member' is not a source here
    ]
    cfg = Config(
        sets=[
            SetConfig(
                namespace="acme/group", relation="member", feeds_from=["direct_member", "manager"]
            )
        ]
    )
    toml = tmp_path / "sets.toml"
    toml.write_text(
        '[[sets]]\nnamespace = "acme/group"\nrelation = "member"\n'
        'from = ["direct_member", "manager"]\n'
    )
    for config, name in ((cfg, "a"), (toml, "b"), (str(toml), "c")):
        report = build_index([lines], tmp_path / name, config)
        assert report.tuples_indexed == 3
        with open_index(tmp_path / name) as ix:
            assert ix.check("acme/user:bob", "acme/group:all")
            assert not ix.check("acme/user:carol", "acme/group:all")
            assert ix.config == cfg


def test_bad_config_path_fails_before_touching_the_index(built: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match="cannot read config"):
        build_index([ORG], built, tmp_path / "missing.toml")
    with open_index(built) as ix:
        assert ix.check("user:bob", "group:eng")
    assert leftovers(built) == []


def test_reopen_round_trip(built: Path) -> None:
    def answers() -> tuple[object, ...]:
        with open_index(built) as ix:
            return (
                ix.groups_of("user:alice"),
                ix.members_of("group:eng"),
                ix.explain("user:bob", "group:all"),
                ix.check("group:eng#member", "group:backend"),
                {k: v for k, v in ix.stats().items() if k != "bytes_on_disk"},
            )

    first = answers()
    assert answers() == first
    ix = open_index(built)  # works without a with block, and close is idempotent
    assert ix.check("user:bob", "group:eng")
    ix.close()
    ix.close()


def test_rebuild_replaces_the_index(built: Path) -> None:
    build_index([["group:eng#member@user:zed"]], built, force=True)  # far smaller
    with open_index(built) as ix:
        assert ix.check("user:zed", "group:eng")
        assert not ix.check("user:bob", "group:eng")
        assert ix.stats()["generation"] == "gen-000002"
    # the replaced generation stays until the next swap (live readers may still use it)
    assert sorted(os.listdir(built)) == ["CURRENT", "LOCK", "gen-000001", "gen-000002"]
    build_index([["group:eng#member@user:yan"]], built)
    assert sorted(os.listdir(built)) == ["CURRENT", "LOCK", "gen-000002", "gen-000003"]
    with open_index(built) as ix:
        assert ix.members_of("group:eng") == ["user:yan"]


def test_stats_fields(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    build_index([ORG], path, position={"changes:0": 15, "changes:1": 7})
    with open_index(path) as ix:
        s = ix.stats()
        assert s["path"] == str(path)
        assert s["generation"] == "gen-000001"
        assert s["format_version"] == FORMAT_VERSION == 4
        assert s["groups"] == 4 and s["base_groups"] == 4
        assert s["subjects"] == 5 and s["base_subjects"] == 5
        assert s["overlay_sets"] == 0
        assert s["position"] == {"changes:0": 15, "changes:1": 7}
        assert ix.position == {"changes:0": 15, "changes:1": 7}
        assert s["version"] == ix.version
        assert s["bytes_on_disk"] > 0
        assert s["config"] == {}
        build = s["build"]
        for key in (
            "tuples_read",
            "tuples_indexed",
            "skipped",
            "groups",
            "subjects",
            "largest_group",
            "deepest_nesting",
            "cycles_collapsed",
            "bytes_on_disk",
            "seconds",
        ):
            assert key in build
        assert build["tuples_read"] == 10


def test_skip_invalid_hands_every_reject_over(tmp_path: Path) -> None:
    rejects: list[object] = []
    lines = ["group:eng#member@user:a", "group:eng#member", "group:eng#member@user:b c"]
    report = build_index([lines], tmp_path / "idx", skip_invalid=True, on_reject=rejects.append)
    assert report.rejected == 2 and report.tuples_indexed == 1
    assert [(r.line, r.text) for r in rejects] == [  # type: ignore[attr-defined]
        (2, "group:eng#member"),
        (3, "group:eng#member@user:b c"),
    ]
    with pytest.raises(InvalidInput, match=r"^<memory>:2: 'group:eng#member' has no '@'"):
        build_index([lines], tmp_path / "idx2")
    assert not (tmp_path / "idx2" / "CURRENT").exists()


def test_id_order_input(tmp_path: Path) -> None:
    report = build_index([ORG], tmp_path / "idx", id_order="input")
    assert report.id_order == "input"
    with open_index(tmp_path / "idx") as ix:
        assert ix.check("user:bob", "group:all")
    with pytest.raises(ValueError, match="id_order"):
        build_index([ORG], tmp_path / "idx", id_order="random")


# -- failures leave the previous index ----------------------------------------------------


def failing_source(n: int, exc: BaseException) -> Iterator[str]:
    for i in range(n):
        yield f"group:big#member@user:u{i}"
    raise exc


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_interrupted_build_leaves_the_previous_index(built: Path, exc: BaseException) -> None:
    with pytest.raises(type(exc)):
        build_index([failing_source(70_000, exc)], built)
    assert leftovers(built) == []
    assert sorted(os.listdir(built)) == ["CURRENT", "LOCK", "gen-000001"]
    with open_index(built) as ix:
        assert ix.check("user:bob", "group:eng")
        assert not ix.check("user:u1", "group:big")


def test_failure_after_the_subject_writer_forked(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure in a later phase must also reap the forked child, not leave a zombie."""
    children: list[int] = []
    real_fork = leopard.core.build._fork

    def recording_fork(work):  # type: ignore[no-untyped-def]
        pid = real_fork(work)
        if pid is not None:
            children.append(pid)
        return pid

    def broken_closures(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("closure failed")

    monkeypatch.setattr(leopard.core.build, "_fork", recording_fork)
    monkeypatch.setattr(leopard.core.build, "serialized_closures", broken_closures)
    with pytest.raises(RuntimeError, match="closure failed"):
        build_index([[f"group:g#member@user:u{i}" for i in range(5000)]], built)
    assert leftovers(built) == []
    with open_index(built) as ix:
        assert ix.check("user:bob", "group:eng")
    for pid in children:
        # the build must have waited for its child already: it is no longer ours to reap
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_failed_first_build_leaves_no_index(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    with pytest.raises(RuntimeError):
        build_index([failing_source(10, RuntimeError("x"))], path)
    assert leftovers(path) == []
    with pytest.raises(IndexNotFound):
        open_index(path)
    # and the directory is still usable for a build
    build_index([ORG], path)
    with open_index(path) as ix:
        assert ix.check("user:bob", "group:eng")


# -- what is not an index ---------------------------------------------------------------


def test_missing_index(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(IndexNotFound) as info:
        open_index(missing)
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)


def test_empty_directory_is_not_an_index(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFound) as info:
        open_index(tmp_path)
    assert repr(str(tmp_path)) in str(info.value)
    assert "leopard build" in str(info.value)


def test_damaged_index(built: Path) -> None:
    os.rename(built / "gen-000001", built / "moved")
    with pytest.raises(IndexNotFound, match="damaged"):
        open_index(built)


def test_build_refuses_a_foreign_directory(tmp_path: Path) -> None:
    target = tmp_path / "home"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    with pytest.raises(StorageError) as info:
        build_index([ORG], target)
    msg = str(info.value)
    assert repr(str(target)) in msg and "not a Leopard index" in msg and "'notes.txt'" in msg
    assert sorted(os.listdir(target)) == ["notes.txt"]
    assert (target / "notes.txt").read_text() == "precious"


def test_build_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(StorageError, match="not a directory"):
        build_index([ORG], target)


def test_build_into_an_empty_directory(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    build_index([ORG], target)
    with open_index(target) as ix:
        assert ix.check("user:alice", "group:eng")


def test_a_list_of_tuple_strings_is_read_as_paths(tmp_path: Path) -> None:
    # sources are paths or iterables of lines: a bare list of lines names files
    with pytest.raises(InvalidInput, match="cannot read 'group:eng#member@user:a'"):
        build_index(["group:eng#member@user:a"], tmp_path / "idx")


def test_lookups_refuse_a_type_and_waits_name_what_was_never_applied(tmp_path: Path) -> None:
    """``groups_of`` with a type the configuration has no set of is refused, naming it
    (as a relation that is no set is); a version of a topic the index has applied
    nothing of, or a SpiceDB ZedToken at an index holding no SpiceDB revision, is waited
    for (either may yet come: a consumer of several topics, a bridged topic's first
    markers), and the time-out says what the index follows."""
    config = Config(sets=[SetConfig(namespace="group", relation="member")])
    build_index([["group:eng#member@user:alice"]], tmp_path / "idx", config,
                position={"changes:0": 1})  # fmt: skip
    with open_index(tmp_path / "idx") as ix:
        assert ix.groups_of("user:alice", type="group") == ["group:eng#member"]
        with pytest.raises(InvalidInput, match=r"namespace 'gruop' has no indexed set.*group"):
            ix.groups_of("user:alice", type="gruop")
        with pytest.raises(StaleIndex, match=r"topic 'other'.*it follows topic 'changes'"):
            ix.wait_for(encode_token({"other:0": 1}), timeout=0.2)
        with pytest.raises(StaleIndex, match="holds no SpiceDB revision"):
            ix.wait_for(encode_zedtoken("42"), timeout=0.2)
        with pytest.raises(StaleIndex, match="applied nothing of changes:3"):
            ix.wait_for(encode_token({"changes:3": 1}), timeout=0.2)
