"""Damage on disk is an error, never an answer.

Each test builds a small index, damages it for real (a value written over, bytes of a
table file or a write-ahead log overwritten, a file cut short, ``CURRENT`` pointed
elsewhere) and asserts the one clear error naming the family, the key and the
database, or, where the damage only loses writes, an earlier consistent state: never
a different answer.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from pyroaring import BitMap
from rocksdict import Options, Rdict
from support.damage import (
    GROUPS_OF,
    base_dir,
    build_big,
    build_small,
    copy_index,
    delete,
    delta_dir,
    drop_checksum,
    group_id,
    log_of,
    overwrite_middle,
    put,
    subject_id,
    table_file,
    truncate,
    value_of,
    writable,
)
from support.index_model import REWRITE

import leopard
from leopard.core import loading
from leopard.core.incremental import DeltaWriter
from leopard.core.index import Index
from leopard.core.verify import verify_index
from leopard.errors import IndexNotFound, StorageError
from leopard.model.names import parse_tuple
from leopard.store.layout import (
    CHECKSUM_KEY,
    FAMILIES,
    FORMAT_KEY,
    FORMAT_VERSION,
    GROUPS_KEY,
    META_KEY,
    POSITION_KEY,
    gkey,
    m2g_value,
    new_group_key,
    support_key,
)
from leopard.store.rocks import RocksDB, log_files


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return build_small(tmp_path / "idx")


def damaged(path: Path, what: str, reason: str) -> str:
    """The start of the message of damage to ``what`` in the live base of ``path``."""
    return f"index at {path} is damaged: {what} in {base_dir(path)}: {reason}"


def answers(path: Path) -> dict[str, list[str]]:
    with Index(path) as ix:
        return {s: ix.groups_of(s) for s in GROUPS_OF}


# -- a sound index ----------------------------------------------------------------------


def test_a_sound_index_answers_and_verifies(small: Path) -> None:
    assert answers(small) == GROUPS_OF
    report = verify_index(small)
    assert report.ok, report.problems
    assert (report.groups, report.subjects, report.databases) == (4, 4, 1)
    assert report.summary().startswith(f"index at {small} is sound: gen-000001, 4 groups")


def test_the_build_leaves_nothing_needed_in_the_write_ahead_log(tmp_path: Path) -> None:
    """Every family is flushed into table files: the logs of the base are empty, and an
    index whose logs are lost answers the same."""
    path = build_big(tmp_path / "idx", subjects=2_000)
    base = base_dir(path)
    db = RocksDB(base)
    try:  # one table file for each family but the empty ones (no schema, no support)
        empty = {"support", "dchild", "dparent", "dsupport"}
        assert len(db.raw.live_files()) == len(FAMILIES) - len(empty)
    finally:
        db.close()
    assert all(p.stat().st_size == 0 for p in log_files(base))
    for log in log_files(base):
        log.unlink()
    with Index(path) as ix:
        assert ix.check("user:u001999", "group:all")
        assert len(ix.members_of("group:all")) == 2_000
    assert verify_index(path).ok


def test_an_index_without_checksums_reads_as_before(small: Path) -> None:
    drop_checksum(small)
    assert value_of(base_dir(small), CHECKSUM_KEY) is None
    assert answers(small) == GROUPS_OF
    assert verify_index(small).ok


# -- a damaged block of a table file -----------------------------------------------------


def test_a_damaged_block_of_m2g_fails_the_reads_through_it(tmp_path: Path) -> None:
    path = build_big(tmp_path / "idx")
    sst = table_file(base_dir(path), b"user:u000000")
    overwrite_middle(sst)
    failed = []
    with Index(path) as ix:
        for i in range(0, 50_000, 37):
            user = f"user:u{i:06d}"
            try:
                assert ix.check(user, "group:all")  # never False: every user is in it
                assert ix.groups_of(user) == ["group:all#member", f"group:g{i % 50}#member"]
            except StorageError as exc:
                failed.append((user, str(exc)))
        with pytest.raises(StorageError, match=r"scan of m2g in .* failed: Corruption"):
            ix.warm()
    assert failed, "no read went through the damaged block"
    user, msg = failed[0]
    assert f"read of m2g key '{user}' from {base_dir(path)} failed: Corruption" in msg
    problems = verify_index(path).problems
    assert len(problems) == 1 and "scan of m2g" in problems[0] and sst.name in problems[0]


def test_a_damaged_block_of_sname_fails_members_of(tmp_path: Path) -> None:
    path = build_big(tmp_path / "idx")
    overwrite_middle(table_file(base_dir(path), gkey(0), entries=50_000))  # sname
    with Index(path) as ix:
        assert len(ix.members_of("group:all", limit=100)) == 100  # before the damage
        with pytest.raises(StorageError, match=r"read of sname key 0x0000[0-9a-f]{4} from .*"):
            ix.members_of("group:all")


# -- values written over ----------------------------------------------------------------


@pytest.mark.parametrize("value", [b"", b"not a bitmap", BitMap([1]).serialize()[:-1]])
@pytest.mark.parametrize("family", ["g2g", "g2m", "child", "parent"])
def test_a_damaged_set_is_an_error(small: Path, family: str, value: bytes) -> None:
    gid = group_id(small, "group:eng#member")
    put(base_dir(small), family, gkey(gid), value)
    reason = "value is empty" if not value else "value is not a stored set"
    expected = damaged(small, f"{family} key 0x{gid:08x}", reason)
    with Index(small) as ix, pytest.raises(StorageError) as info:
        if family == "g2g":
            ix.check("user:alice", "group:eng")
        elif family == "g2m":
            ix.members_of("group:all")
        elif family == "child":
            ix.explain("user:bob", "group:eng")
        else:  # a change of nesting reads the parents
            unnest = parse_tuple("group:all#member@group:eng#member")
            writer = DeltaWriter(ix.reader)
            try:
                writer.apply([("delete", unnest)])
            finally:
                writer.close()
    assert str(info.value).startswith(expected), str(info.value)
    assert [p for p in verify_index(small).problems if p.startswith(expected)]


def test_a_missing_closure_is_an_error(small: Path) -> None:
    gid = group_id(small, "group:all#member")
    with writable(base_dir(small)) as db:
        db.raw.get_column_family("g2g").delete(gkey(gid))
    with Index(small) as ix, pytest.raises(StorageError) as info:
        ix.check("user:carol", "group:all")  # would read as "in no group": false
    assert str(info.value) == damaged(
        small, f"g2g key 0x{gid:08x}", "no value (every group has one)"
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "value is 0 bytes, too short for a subject id"),
        (b"\x00\x00", "value is 2 bytes, too short for a subject id"),
        (gkey(0), "groups value is empty"),
        (gkey(0) + b"garbage", "groups value is not a stored set"),
    ],
)
def test_a_damaged_m2g_value_is_an_error(small: Path, value: bytes, reason: str) -> None:
    put(base_dir(small), "m2g", b"user:alice", value)
    expected = damaged(small, "m2g key 'user:alice'", reason)
    with Index(small) as ix:
        for ask in (
            lambda: ix.check("user:alice", "group:eng"),  # was false: "unknown subject"
            lambda: ix.check_many([("user:alice", "group:eng"), ("user:bob", "group:eng")]),
            lambda: ix.groups_of("user:alice"),
            lambda: ix.warm(),
        ):
            with pytest.raises(StorageError) as info:
                ask()
            assert str(info.value).startswith(expected), str(info.value)
        assert ix.check("user:bob", "group:eng")  # the rest still answers
    assert [p for p in verify_index(small).problems if p.startswith(expected)]


def test_a_damaged_subject_name_is_an_error(small: Path) -> None:
    sid = subject_id(small, "user:bob")
    put(base_dir(small), "sname", gkey(sid), b"")
    with Index(small) as ix, pytest.raises(StorageError) as info:
        ix.members_of("group:all")  # was a list with "" in it
    assert str(info.value) == damaged(small, f"sname key 0x{sid:08x}", "name is empty")


def test_a_group_id_past_the_last_is_an_error(small: Path) -> None:
    """A set that deserializes but names a group that does not exist."""
    gid = group_id(small, "group:eng#member")
    put(base_dir(small), "parent", gkey(gid), BitMap([999]).serialize())
    with Index(small) as ix, pytest.raises(StorageError) as info:
        ix.groups_of("user:alice")  # was an IndexError
    assert "a stored set holds a group id past its 4 groups" in str(info.value)
    problems = verify_index(small).problems
    assert any(f"parent key 0x{gid:08x}" in p and "past the last" in p for p in problems)


def test_a_set_that_still_decodes_is_found_by_verify(small: Path) -> None:
    gid = group_id(small, "group:all#member")
    put(base_dir(small), "g2g", gkey(gid), BitMap([gid]).serialize())  # lost its children
    problems = verify_index(small).problems
    assert any(
        p.startswith(damaged(small, f"g2g key 0x{gid:08x}", "the set differs in 2 ids"))
        for p in problems
    ), problems


# -- the header of the base -------------------------------------------------------------


def test_a_truncated_group_name_list_is_an_error(small: Path) -> None:
    base = base_dir(small)
    names = value_of(base, GROUPS_KEY)
    assert names is not None
    put(base, "default", GROUPS_KEY, names[: names.rindex(b"\n")])
    with pytest.raises(StorageError) as info:
        Index(small)
    assert str(info.value).startswith(damaged(small, "groups", "value ("))
    assert "does not match the checksum recorded in the base" in str(info.value)
    drop_checksum(small)  # as an index built before checksums: the count still tells
    with pytest.raises(StorageError) as info:
        Index(small)
    size = names.rindex(b"\n")
    assert str(info.value) == damaged(
        small, "groups", f"group-name list holds 3 names ({size} bytes); meta records 4 groups"
    )


def test_a_group_name_changed_in_place_is_caught_by_the_checksum(small: Path) -> None:
    base = base_dir(small)
    names = value_of(base, GROUPS_KEY)
    assert names is not None
    swapped = b"\n".join(reversed(names.split(b"\n")))  # same names, other ids
    put(base, "default", GROUPS_KEY, swapped)
    with pytest.raises(StorageError, match="groups in .* does not match the checksum"):
        Index(small)
    problems = verify_index(small).problems
    assert len(problems) == 1 and "does not match the checksum" in problems[0]


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (META_KEY, b"{not json", "value (9 bytes) does not match the checksum"),
        (FORMAT_KEY, b"one", "format version b'one' is not a number"),
        (CHECKSUM_KEY, b"\x00garbage", "checksum is not JSON"),
        (CHECKSUM_KEY, b'{"meta": 1}', "not a checksum of format, meta, groups"),
    ],
)
def test_damaged_metadata_is_an_error(small: Path, key: bytes, value: bytes, reason: str) -> None:
    put(base_dir(small), "default", key, value)
    with pytest.raises(StorageError) as info:
        Index(small)
    assert str(info.value).startswith(damaged(small, key.decode(), reason)), str(info.value)
    assert not verify_index(small).ok


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "metadata is not JSON"),
        (b"[]", "metadata is not a JSON object"),
        (b'{"groups": 4}', "metadata has no count of subjects"),
        (
            b'{"groups": 4, "subjects": 4, "config": {"sets": 5}}',
            "metadata holds no valid set configuration",
        ),
    ],
)
def test_damaged_metadata_without_checksums_is_an_error(
    small: Path, value: bytes, reason: str
) -> None:
    drop_checksum(small)
    put(base_dir(small), "default", META_KEY, value)
    with pytest.raises(StorageError) as info:
        Index(small)
    assert str(info.value).startswith(damaged(small, "meta", reason)), str(info.value)


def test_an_index_of_the_previous_format_is_refused_with_rebuild(small: Path) -> None:
    # format 3 stored every set as roaring; a reader of it would misread compact values
    drop_checksum(small)
    put(base_dir(small), "default", FORMAT_KEY, str(FORMAT_VERSION - 1).encode())
    with pytest.raises(StorageError) as info:
        Index(small)
    assert f"has index format {FORMAT_VERSION - 1}; this Leopard reads format " in str(info.value)
    assert "rebuild the index with 'leopard build'" in str(info.value)


def test_a_base_without_a_format_is_not_an_index(small: Path) -> None:
    delete(base_dir(small), FORMAT_KEY)
    with pytest.raises(IndexNotFound) as info:
        Index(small)
    assert str(info.value) == f"{small} is not a Leopard index (no format version)"
    assert verify_index(small).problems == [f"index at {small}: {info.value}"]


# -- CURRENT ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda link: os.symlink("gen-000009", link), "gen-000009 has no base"),
        (lambda link: os.symlink("gen-000001/base", link), "points to 'gen-000001/base'"),
        (lambda link: os.symlink("/etc", link), "points to '/etc', not to a generation"),
        (lambda link: link.write_bytes(b"\x00\xffgarbage"), "is a file, not a symlink"),
        (lambda link: link.mkdir(), "is a directory, not a symlink"),
    ],
)
def test_a_damaged_current_is_an_error(small: Path, make, reason: str) -> None:  # type: ignore[no-untyped-def]
    link = small / "CURRENT"
    link.unlink()
    make(link)
    with pytest.raises(IndexNotFound) as info:
        Index(small)
    msg = str(info.value)
    assert msg.startswith(f"index at {str(small)!r} is damaged: ") and reason in msg, msg
    assert "\n" not in msg
    assert verify_index(small).problems == [msg]


# -- the incremental layer ---------------------------------------------------------------


def test_a_damaged_write_ahead_log_of_the_delta_loses_writes_not_answers(
    tmp_path: Path,
) -> None:
    """Cut short or overwritten, the log of the delta reads as an earlier batch
    boundary (its answers and its position together), or fails: never anything else."""
    path = build_small(tmp_path / "idx")

    def state(ix: Index) -> tuple[bool, bool, dict[str, int]]:
        return ix.check("user:dave", "group:all"), ix.check("user:carol", "group:all"), ix.position

    with Index(path) as ix:
        seen = [state(ix)]
        writer = DeltaWriter(ix.reader)
        writer.apply([("touch", parse_tuple("group:all#member@user:dave"))], {"t:0": 1})
        seen.append(state(ix))
        writer.apply([("delete", parse_tuple("group:all#member@user:carol"))], {"t:0": 2})
        seen.append(state(ix))
        crashed = copy_index(path, tmp_path / "crashed")  # as a crash leaves it
        writer.close()
    assert seen == [(False, True, {}), (True, True, {"t:0": 1}), (True, False, {"t:0": 2})]
    log = log_of(delta_dir(crashed))
    size = log.stat().st_size
    damages = {
        "cut in the second batch": lambda f: truncate(f, size - 3),
        "cut in the first batch": lambda f: truncate(f, 10),
        "overwritten at the end": lambda f: _overwrite(f, size - 8),
        "overwritten in the middle": lambda f: _overwrite(f, size // 2),
        "overwritten at the start": lambda f: _overwrite(f, 0),
    }
    for name, damage in damages.items():
        copy = copy_index(crashed, tmp_path / name.replace(" ", "-"))
        damage(log_of(delta_dir(copy)))
        try:
            with Index(copy) as ix:
                got = state(ix)
        except StorageError:
            continue
        assert got in seen[:2], (name, got)
        problems = verify_index(copy).problems
        assert len(problems) == 1 and "write-ahead log" in problems[0], (name, problems)
        assert log.name in problems[0]
    shutil.rmtree(crashed)


def _overwrite(file: Path, offset: int) -> None:
    with open(file, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x5a" * 8)


def _with_delta(path: Path) -> Path:
    with Index(path) as ix:
        writer = DeltaWriter(ix.reader)
        writer.apply([("touch", parse_tuple("group:new#member@user:zed"))], {"t:0": 7})
        writer.close()
    return delta_dir(path)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (POSITION_KEY, b"{oops", "position is not JSON"),
        (POSITION_KEY, b'{"t:0": -1}', "position is not a map of topic:partition to offset"),
        (b"seq", b"", "value b'' is not a non-negative number"),
        (b"next_subject", b"x", "value b'x' is not a non-negative number"),
    ],
)
def test_damaged_values_of_the_delta_are_an_error(
    small: Path, key: bytes, value: bytes, reason: str
) -> None:
    delta = _with_delta(small)
    put(delta, "default", key, value)
    with pytest.raises(StorageError) as info:
        Index(small)
    expected = f"index at {small} is damaged: {key.decode()} in {delta}: {reason}"
    assert str(info.value).startswith(expected), str(info.value)


def test_a_name_of_a_group_added_lost_from_the_delta_is_an_error(small: Path) -> None:
    delta = _with_delta(small)
    with Index(small) as ix:
        assert ix.check("user:zed", "group:new")
        writer = DeltaWriter(ix.reader)
        writer.apply([("touch", parse_tuple("group:newer#member@user:zed"))], {"t:0": 8})
        writer.close()
    with writable(delta) as db:
        db.raw.delete(new_group_key(4))  # group:new, the first group added
    with pytest.raises(StorageError) as info:
        Index(small)  # group:newer would have read as group:new's id
    assert str(info.value) == (
        f"index at {small} is damaged: name of group 5 in {delta}: "
        "the names of groups added skip group 4"
    )


@pytest.mark.parametrize("damage", ["its CURRENT file is missing", "it lacks the column"])
def test_a_delta_that_lost_what_every_created_one_has_is_an_error(small: Path, damage: str) -> None:
    """Not read as a delta a writer has not created yet: every change applied since
    the build would vanish from the answers, the version with them."""
    delta = _with_delta(small)
    if damage.startswith("its CURRENT"):
        (delta / "CURRENT").unlink()
    else:
        raw = Options(raw_mode=True)
        families = {f: Options(raw_mode=True) for f in Rdict.list_cf(str(delta), raw)}
        families.pop("default")
        db = Rdict(str(delta), options=raw, column_families=families)
        db.drop_column_family("dsupport")
        db.close()
    with pytest.raises(StorageError) as info:
        Index(small)
    said = str(info.value)
    assert said.startswith(f"the incremental layer at {str(delta)!r} is damaged: {damage}"), said
    assert "though it holds data" in said
    assert said in " ".join(verify_index(small).problems)


def test_a_delta_that_lost_its_subject_counter_is_an_error(small: Path) -> None:
    """Read as absent, the next new subject would take the id of one the layer added
    (user:zed), and members_of would name the one for the other."""
    delta = _with_delta(small)
    with writable(delta) as db:
        db.raw.delete(b"next_subject")
    with pytest.raises(StorageError) as info:
        Index(small)
    assert str(info.value) == (
        f"index at {small} is damaged: next_subject in {delta}: "
        "it is missing, though the layer has added subjects"
    )


def test_a_damaged_set_of_the_delta_names_the_delta(small: Path) -> None:
    delta = _with_delta(small)
    put(delta, "m2g", b"user:zed", m2g_value(4, BitMap())[:3])
    with Index(small) as ix, pytest.raises(StorageError) as info:
        ix.check("user:zed", "group:new")
    assert str(info.value).startswith(
        f"index at {small} is damaged: m2g key 'user:zed' in {delta}: value is 3 bytes"
    )
    assert re.search(r"m2g key 'user:zed' in .*delta", verify_index(small).problems[0])


def test_an_empty_support_mask_means_no_entry_in_the_delta_only(tmp_path: Path) -> None:
    """A member fed by two relations has a support mask; the delta drops it with an
    empty value, which the base never holds."""
    lines = ["group:eng#member@user:alice", "group:eng#manager@user:alice"]
    path = tmp_path / "idx"
    leopard.build_index([lines], path, REWRITE)
    key = support_key(group_id(path, "group:eng#member"), False, subject_id(path, "user:alice"))
    twin = copy_index(path, tmp_path / "twin")
    drop_manager = [("delete", parse_tuple("group:eng#manager@user:alice"))]
    assert value_of(base_dir(path), key, "support") == (3).to_bytes(8, "little")
    with Index(path) as ix:
        writer = DeltaWriter(ix.reader)
        writer.apply(drop_manager)
        writer.close()
        assert ix.check("user:alice", "group:eng")  # still fed by member
    assert value_of(delta_dir(path), key, "support") == b""
    assert verify_index(path).ok
    put(base_dir(twin), "support", key, b"")
    with Index(twin) as ix, pytest.raises(StorageError) as info:
        writer = DeltaWriter(ix.reader)
        try:
            writer.apply(drop_manager)
        finally:
            writer.close()
    expected = damaged(twin, f"support key 0x{key.hex()}", "support mask has 0 bytes, not 8")
    assert str(info.value) == expected
    assert verify_index(twin).problems == [expected]


@pytest.mark.parametrize(("family", "ids"), [("m2g", 2), ("g2g", 2), ("g2g", 3000)])
def test_damage_that_deserializing_finds(small: Path, family: str, ids: int) -> None:
    """A value whose header looks sound but whose body is cut short. warm() holds the
    subjects' values and small closures as stored and deserializes each when first
    asked: a damaged one passes warm() and fails the first check that reads it, with
    the message of a cold read. A larger closure is deserialized by warm() itself,
    which fails the same way."""
    gid = group_id(small, "group:eng#member")
    body = BitMap(range(gid, gid + 2 * ids, 2)).serialize()[:-3]
    if family == "m2g":
        key, value = b"user:alice", gkey(subject_id(small, "user:alice")) + body
    else:
        key, value = gkey(gid), body
    put(base_dir(small), family, key, value)
    with Index(small) as cold, pytest.raises(StorageError) as was:
        cold.check("user:alice", "group:eng")
    what = "m2g key 'user:alice'" if family == "m2g" else f"g2g key 0x{gid:08x}"
    assert str(was.value).startswith(damaged(small, what, "")), str(was.value)
    with Index(small) as ix:
        if len(value) > loading._HELD_AS_STORED and family == "g2g":
            with pytest.raises(StorageError) as info:
                ix.warm()
            assert str(info.value) == str(was.value)
            return
        assert ix.warm() > 0
        assert ix.check("user:carol", "group:all")  # the rest answers
        for ask in (
            lambda: ix.check("user:alice", "group:eng"),
            lambda: ix.check_many([("user:alice", "group:eng"), ("user:bob", "group:sales")]),
        ):
            with pytest.raises(StorageError) as info:
                ask()
            assert str(info.value) == str(was.value)


def test_a_support_mask_naming_no_source_of_its_set_is_found_by_verify(tmp_path: Path) -> None:
    """A mask's bits are the relations feeding its set (here two: member, manager): a
    bit past them would keep the edge once every tuple of it is gone, and compaction
    would then drop it, so answers would change with no change applied."""
    lines = ["group:eng#member@user:alice", "group:eng#manager@user:bob"]
    path = tmp_path / "idx"
    leopard.build_index([lines], path, REWRITE)
    assert verify_index(path).ok
    key = support_key(group_id(path, "group:eng#member"), False, subject_id(path, "user:bob"))
    assert value_of(base_dir(path), key, "support") == (2).to_bytes(8, "little")
    put(base_dir(path), "support", key, (2 | 1 << 40).to_bytes(8, "little"))
    problems = verify_index(path).problems
    assert problems == [
        damaged(
            path,
            f"support key 0x{key.hex()}",
            "a mask naming relations its set is not fed by (bits 0x10000000000)",
        )
    ]
