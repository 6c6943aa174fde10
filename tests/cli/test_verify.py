"""``leopard verify``, and every command on a damaged index: one line, exit status 1.

``verify`` prints one line per finding and exits 1, or a summary and exits 0. The
query commands print one line on stderr (``Error: ...``) and exit 1 on damage, never
a partial answer on stdout nor a traceback, in process and as a real process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from pyroaring import BitMap
from support.damage import (
    arrow_tuples,
    base_dir,
    build_big,
    build_docs,
    build_small,
    drop_member,
    group_id,
    overwrite_middle,
    put,
    table_file,
    value_of,
)

from leopard.cli import main
from leopard.core.incremental import DeltaWriter
from leopard.core.index import Index
from leopard.model.names import parse_tuple
from leopard.store.layout import GROUPS_KEY, META_KEY, gkey


def cli(*args: str | Path) -> Result:
    env = {k: v for k, v in os.environ.items() if k != "LEOPARD_INDEX"}
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def error_line(result: Result) -> str:
    """The one line of a failed command (without ``Error: ``)."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0][len("Error: ") :]


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return build_small(tmp_path / "idx")


def test_verify_a_sound_index(small: Path) -> None:
    result = cli("verify", "--index", small)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"index at {small} is sound: gen-000001, 4 groups, 4 subjects")
    assert result.stdout.count("\n") == 1
    report = json.loads(cli("verify", "--index", small, "--json").stdout)
    assert report["ok"] is True and report["problems"] == []


def test_verify_an_index_a_consumer_wrote_to(small: Path) -> None:
    """A consumer's batch stores its position and its source's state in the delta:
    both are keys the delta holds, and the index is sound."""
    with Index(small) as ix:
        writer = DeltaWriter(ix.reader)
        try:
            change = ("touch", parse_tuple("group:eng#member@user:zoe"))
            writer.apply([change], {"changes:0": 1}, source_state={"anchors": {"changes:0": 0}})
        finally:
            writer.close()
    result = cli("verify", "--index", small)
    assert result.exit_code == 0, result.output
    assert "is sound" in result.stdout


def _m2g_garbage(path: Path) -> str:
    put(base_dir(path), "m2g", b"user:alice", b"\x00\x00\x00\x01garbage")
    return f"m2g key 'user:alice' in {base_dir(path)}: groups value is not a stored set"


def _g2g_empty(path: Path) -> str:
    gid = group_id(path, "group:eng#member")
    put(base_dir(path), "g2g", gkey(gid), b"")
    return f"g2g key 0x{gid:08x} in {base_dir(path)}: value is empty"


def _parent_out_of_range(path: Path) -> str:
    gid = group_id(path, "group:eng#member")
    put(base_dir(path), "parent", gkey(gid), BitMap([77]).serialize())
    return f"parent key 0x{gid:08x} in {base_dir(path)}: the set holds id 77, past the last"


def _names_truncated(path: Path) -> str:
    names = value_of(base_dir(path), GROUPS_KEY)
    assert names is not None
    put(base_dir(path), "default", GROUPS_KEY, names[:-3])
    return f"groups in {base_dir(path)}: value ({len(names) - 3} bytes) does not match the checksum"


def _meta_garbage(path: Path) -> str:
    put(base_dir(path), "default", META_KEY, b"\xff\xfe")
    return f"meta in {base_dir(path)}: value (2 bytes) does not match the checksum"


def _current_garbage(path: Path) -> str:
    (path / "CURRENT").unlink()
    (path / "CURRENT").write_bytes(b"\x00garbage")
    return f"{path / 'CURRENT'} is a file, not a symlink to a generation"


DAMAGES: dict[str, Callable[[Path], str]] = {
    "m2g garbage": _m2g_garbage,
    "g2g empty": _g2g_empty,
    "parent out of range": _parent_out_of_range,
    "group names truncated": _names_truncated,
    "meta garbage": _meta_garbage,
    "CURRENT garbage": _current_garbage,
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_verify_names_the_damage(small: Path, damage: str) -> None:
    what = DAMAGES[damage](small)
    result = cli("verify", "--index", small)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines and all(" is damaged: " in line for line in lines), result.stdout
    assert any(what in line for line in lines), (what, result.stdout)
    assert "Traceback" not in result.output
    report = json.loads(cli("verify", "--index", small, "--json").stdout)
    assert report["ok"] is False and report["problems"] == lines


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_queries_on_a_damaged_index_fail_in_one_line(small: Path, damage: str) -> None:
    what = DAMAGES[damage](small)
    if damage == "parent out of range":  # a query cannot tell which set: verify can
        what = f"index at {small} is damaged: a stored set holds a group id past its 4 groups"
    asks = [
        ("check", "user:alice", "group:eng"),
        ("groups", "user:alice"),
        ("members", "group:all"),
        ("explain", "user:alice", "group:all"),
    ]
    messages = []
    for ask in asks:
        result = cli(*ask, "--index", small)
        if result.exit_code == 0:  # the damage is not on this query's way
            continue
        messages.append(error_line(result))
    assert any(what in m for m in messages), (what, messages)


def test_members_over_a_damaged_block_prints_nothing_but_the_error(tmp_path: Path) -> None:
    path = build_big(tmp_path / "idx")
    sname = table_file(base_dir(path), gkey(0), entries=50_000)
    overwrite_middle(sname)
    msg = error_line(cli("members", "group:all", "--index", path))
    assert msg.startswith("read of sname key 0x0000") and "Corruption" in msg
    assert f"{sname}" in msg
    result = cli("verify", "--index", path)
    assert result.exit_code == 1
    assert result.stdout.startswith(f"index at {path} is damaged: scan of sname in ")
    assert sname.name in result.stdout


def test_a_damaged_header_block_is_told_once(small: Path) -> None:
    """A bad block of the header's family is the damage, not a sign of no index."""
    header = table_file(base_dir(small), b"checksum")
    with open(header, "r+b") as fh:
        fh.seek(20)
        fh.write(b"\xa5" * 8)
    result = cli("verify", "--index", small)
    assert result.exit_code == 1
    assert result.stdout.startswith(f"index at {small} is damaged: scan of ")
    assert header.name in result.stdout
    assert "not a Leopard index" not in result.output, result.output


def test_a_damaged_index_fails_cleanly_in_a_real_process(small: Path) -> None:
    _current_garbage(small)
    env = {k: v for k, v in os.environ.items() if k != "LEOPARD_INDEX"}
    for args in (("check", "user:alice", "group:eng"), ("verify",)):
        proc = subprocess.run(
            [sys.executable, "-m", "leopard", *args, "--index", str(small)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 1, proc
        assert "Traceback" not in proc.stderr
        out = proc.stderr if args[0] == "check" else proc.stdout
        assert len(out.strip().splitlines()) == 1 and "is a file, not a symlink" in out, proc


def test_verify_without_an_index(tmp_path: Path) -> None:
    msg = error_line(cli("verify", "--index", tmp_path / "nothing"))
    assert msg == f"no index at {str(tmp_path / 'nothing')!r}: the directory does not exist"


def test_verify_names_derived_edges_no_tuple_supports(tmp_path: Path) -> None:
    """The reviewer's damage (finding 6): an arrow tuple ``doc:X#parent@folder:F`` out
    of the delta's member families, the derived edges it fed kept (the document keeps
    the folder's viewers): exit 1, each derived edge named with what would derive it."""
    path, lines = build_docs(tmp_path / "idx")
    doc, folder = next(iter(arrow_tuples(lines).items()))
    assert cli("verify", "--index", path).exit_code == 0
    drop_member(path, f"{doc}#parent", folder)
    result = cli("verify", "--index", path)
    assert result.exit_code == 1, result.output
    found = result.stdout.splitlines()
    assert len(found) == 2, found
    view = group_id(path, f"{doc}#view")
    assert (
        f"index at {path} is damaged: dchild key 0x{view:08x} in {base_dir(path)}: "
        f"{doc}#view -> {folder}#view (id {group_id(path, f'{folder}#view')}) is stored, "
        f"but nothing derives it: parent->view derives it only from a tuple "
        f"{doc}#parent@{folder}, which is not stored"
    ) in found
    report = json.loads(cli("verify", "--index", path, "--json").stdout)
    assert report["ok"] is False and report["problems"] == found
