"""Tests of the ``leopard`` command line (leopard.cli).

Most tests drive ``leopard.cli.main`` in process with click's ``CliRunner``; a few
run ``python -m leopard`` as a real subprocess, because only there do exit codes,
the exact bytes on stderr and the absence of a traceback show as a user sees them.
Every error must be one line on stderr with exit status 1 (2 for usage errors), and
a failed build must leave the previous index at DIR answering as before.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import leopard.cli.stream as stream
from leopard.cli import COMMANDS, main
from leopard.cli.options import parse_position
from leopard.errors import InvalidInput

ORG = """\
# a small org: a cycle eng <-> backend, a wildcard, an unindexed relation
group:eng#member@user:alice
group:eng#member@group:backend#member

group:backend#member@user:bob
group:backend#member@group:eng#member
group:all#member@group:eng#member
group:all#member@user:carol
group:all#member@user:dave
group:sales#member@user:*
group:eng#owner@user:erin
group:eng#member@team:x#lead
"""

FIXED = "group:eng#member@user:fixed"


def cli(*args: str | Path, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    runner = CliRunner()
    return runner.invoke(main, [str(a) for a in args], env=env, input=input)


def ok(*args: str | Path, env: dict[str, str] | None = None, input: str | None = None) -> str:
    result = cli(*args, env=env, input=input)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def fails(*args: str | Path, code: int = 1, env: dict[str, str] | None = None) -> str:
    """Run a command that must fail; return its one-line error (without 'Error: ')."""
    result = cli(*args, env=env)
    assert result.exit_code == code, (result.output, result.exception)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    if code == 1:
        assert len(lines) == 1, result.stderr
    assert lines[-1].startswith("Error: "), result.stderr
    return lines[-1][len("Error: ") :]


def leopard_process(
    *args: str | Path, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "LEOPARD_INDEX"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "leopard", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        input=input,
        timeout=60,
        check=False,
    )


@pytest.fixture
def org(tmp_path: Path) -> Path:
    path = tmp_path / "org.txt"
    path.write_text(ORG)
    return path


@pytest.fixture
def index(tmp_path: Path, org: Path) -> Path:
    path = tmp_path / "idx"
    ok("build", org, "--index", path)
    return path


# -- build ------------------------------------------------------------------------------------


def test_build_report_names_every_field(tmp_path: Path, org: Path) -> None:
    out = ok("build", org, "--index", tmp_path / "idx")
    assert re.match(rf"built {re.escape(str(tmp_path / 'idx'))} in \d+\.\d\d s\n", out)
    expected = {
        "tuples read": "10",
        "indexed": "9",
        "rejected (invalid)": "0",
        "skipped": "1",
        "groups": "4",
        "subjects": "6",
        "largest group": "group:all#member (5 members)",
        "deepest nesting": "2 groups",  # eng and backend are one cycle
        "cycles collapsed": "1 (2 groups)",
    }
    for label, value in expected.items():
        assert re.search(rf"^  {re.escape(label)} +{re.escape(value)}$", out, re.M), (label, out)
    assert re.search(r"^  bytes on disk +[\d,]+$", out, re.M)
    assert "skipped 1: group#owner is not fed into an indexed set" in out


def test_build_json(tmp_path: Path, org: Path) -> None:
    report = json.loads(ok("build", org, "--index", tmp_path / "idx", "--json"))
    assert report["tuples_read"] == 10
    assert report["tuples_indexed"] == 9
    assert report["skipped"] == {"group#owner is not fed into an indexed set": 1}
    assert report["groups"] == 4 and report["subjects"] == 6
    assert report["largest_group"] == "group:all#member"
    assert report["cycles_collapsed"] == 1
    assert report["bytes_on_disk"] > 0 and report["seconds"] >= 0


def _members(index: Path, group: str = "group:eng") -> list[str]:
    return ok("members", group, "--index", index).split()


def test_build_from_every_format(tmp_path: Path) -> None:
    csv = tmp_path / "org.csv"
    csv.write_text(
        "user_type,user_id,user_relation,relation,object_type,object_id,"
        "condition_name,condition_context\n"
        "user,csv1,,member,group,eng,,\n"
        "group,backend,member,member,group,eng,,\n"
    )
    js = tmp_path / "org.json"
    js.write_text(json.dumps([{"user": "user:json1", "relation": "member", "object": "group:eng"}]))
    jsonl = tmp_path / "org.jsonl"
    jsonl.write_text(
        json.dumps({"user": "user:jsonl1", "relation": "member", "object": "group:backend"}) + "\n"
    )
    gz = tmp_path / "org.txt.gz"
    gz.write_bytes(gzip.compress(b"group:backend#member@user:gz1\n"))
    gz_csv = tmp_path / "more.csv.gz"
    gz_csv.write_bytes(
        gzip.compress(
            b"user_type,user_id,user_relation,relation,object_type,object_id\n"
            b"user,csvgz1,,member,group,eng\n"
        )
    )
    idx = tmp_path / "idx"
    out = ok("build", csv, js, jsonl, gz, gz_csv, "-", "--index", idx, input=f"{FIXED}\n")
    assert "tuples read         7" in out
    assert _members(idx) == [
        "user:csv1",
        "user:csvgz1",
        "user:fixed",
        "user:gz1",
        "user:json1",
        "user:jsonl1",
    ]


def test_build_from_stdin_only(tmp_path: Path) -> None:
    ok("build", "-", "--index", tmp_path / "idx", input=ORG)
    assert ok("check", "user:bob", "group:all", "--index", tmp_path / "idx") == "true\n"


def test_format_overrides_the_extension(tmp_path: Path) -> None:
    lines = tmp_path / "export.txt"
    lines.write_text(
        json.dumps({"user": "user:anne@example.com", "relation": "member", "object": "group:eng"})
        + "\n"
    )
    idx = tmp_path / "idx"
    # read as text, the JSON line is malformed
    assert fails("build", lines, "--index", idx).startswith(f"{lines}:1: ")
    ok("build", lines, "--index", idx, "--format", "jsonl")
    assert _members(idx) == ["user:anne@example.com"]
    # and from stdin, which has no extension
    ok("build", "-", "--index", idx, "--format", "jsonl", input=lines.read_text())
    assert _members(idx) == ["user:anne@example.com"]
    assert "Invalid value for '--format'" in fails(
        "build", lines, "--index", idx, "--format", "xml", code=2
    )


def test_build_with_config(tmp_path: Path) -> None:
    snap = tmp_path / "acme.txt"
    snap.write_text(
        "acme/group:eng#direct_member@acme/user:alice\n"
        "acme/group:eng#manager@acme/user:bob\n"
        "acme/group:all#direct_member@acme/group:eng#member\n"
        "acme/group:all#member@acme/user:skipped\n"
    )
    cfg = tmp_path / "sets.toml"
    cfg.write_text(
        '[[sets]]\nnamespace = "acme/group"\nrelation = "member"\n'
        'from = ["direct_member", "manager"]\n'
    )
    idx = tmp_path / "idx"
    out = ok("build", snap, "--index", idx, "--config", cfg)
    assert "skipped 1: acme/group#member is not fed into an indexed set" in out
    assert ok("check", "acme/user:bob", "acme/group:all", "--index", idx) == "true\n"
    assert ok("members", "acme/group:all", "--index", idx).split() == [
        "acme/user:alice",
        "acme/user:bob",
    ]


def test_bad_config_is_one_line(tmp_path: Path, org: Path) -> None:
    cfg = tmp_path / "sets.toml"
    cfg.write_text('[[sets]]\nnamespace = "group"\nrelatoin = "member"\n')
    msg = fails("build", org, "--index", tmp_path / "idx", "--config", cfg)
    assert msg.startswith(f"{cfg}: ") and "sets[0].relatoin: is not a known key" in msg
    msg = fails("build", org, "--index", tmp_path / "idx", "--config", tmp_path / "none.toml")
    assert "cannot read config" in msg and "none.toml" in msg


def test_missing_snapshot_is_one_line(tmp_path: Path, org: Path) -> None:
    msg = fails("build", org, tmp_path / "nope.txt", "--index", tmp_path / "idx")
    assert msg == f"cannot read {str(tmp_path / 'nope.txt')!r}: No such file or directory"
    assert not (tmp_path / "idx" / "CURRENT").exists()


def test_malformed_line_stops_the_build_and_keeps_the_old_index(
    tmp_path: Path, index: Path
) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("group:eng#member@user:zed\n# fine\ngroup:eng#member\n")
    msg = fails("build", bad, "--index", index)
    assert msg == f"{bad}:3: 'group:eng#member' has no '@' between the relation and the subject"
    # the previous index is untouched and still answers as before
    assert ok("check", "user:bob", "group:all", "--index", index) == "true\n"
    assert ok("check", "user:zed", "group:eng", "--index", index) == "false\n"
    assert sorted(os.listdir(index)) == ["CURRENT", "LOCK", "gen-000001"]


def test_malformed_line_in_a_real_process(tmp_path: Path, index: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("group:eng#member@user:zed\ngroup:eng#member@user:a b\n")
    proc = leopard_process("build", bad, "--index", index)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        f"Error: {bad}:2: 'group:eng#member@user:a b' contains whitespace at position 23\n"
    )
    proc = leopard_process("check", "user:bob", "group:eng", "--index", index)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "true\n", "")
    proc = leopard_process("check", "user:zed", "group:eng", "--index", index)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "false\n", "")


def test_skip_invalid_and_rejects(tmp_path: Path, index: Path) -> None:
    snap = tmp_path / "dump.txt"
    good = ["group:eng#member@user:alice", "group:eng#member@user:anne@example.com"]
    bad = [
        "group:eng#member",
        "group:eng#member@user:b c",
        "group:eng#member@user:x[expiration:2030-01-01T00:00:00Z]",
    ]
    snap.write_text("\n".join([good[0], bad[0], bad[1], good[1], bad[2]]) + "\n")
    rejects = tmp_path / "rejects.txt"
    out = ok("build", snap, "--index", index, "--skip-invalid", "--rejects", rejects, "--force")
    assert re.search(r"^  rejected \(invalid\) +3$", out, re.M)
    assert re.search(r"^  indexed +2$", out, re.M)
    assert _members(index) == ["user:alice", "user:anne@example.com"]
    lines = rejects.read_text().splitlines()
    assert lines == [
        f"# {snap}:2: 'group:eng#member' has no '@' between the relation and the subject",
        bad[0],
        f"# {snap}:3: 'group:eng#member@user:b c' contains whitespace at position 23",
        bad[1],
        f"# {snap}:5: '{bad[2]}' has a caveat or expiration ('[...]'); caveated and "
        "expiring relationships are not supported",
        bad[2],
    ]
    # with the bad lines fixed, the rejects file is itself a valid snapshot
    fixed = tmp_path / "fixed.txt"
    fixed.write_text("\n".join(FIXED if line in bad else line for line in lines) + "\n")
    out = ok("build", fixed, "--index", tmp_path / "again")
    assert re.search(r"^  tuples read +3$", out, re.M)
    assert _members(tmp_path / "again") == ["user:fixed"]


def test_skip_invalid_without_rejects(tmp_path: Path) -> None:
    snap = tmp_path / "dump.txt"
    snap.write_text("group:eng#member@user:a\nnonsense\n")
    report = json.loads(ok("build", snap, "--index", tmp_path / "idx", "--skip-invalid", "--json"))
    assert report["rejected"] == 1 and report["tuples_indexed"] == 1


def test_rejects_needs_skip_invalid(tmp_path: Path, org: Path) -> None:
    msg = fails("build", org, "--index", tmp_path / "idx", "--rejects", tmp_path / "r.txt", code=2)
    assert msg == "--rejects needs --skip-invalid"
    assert not (tmp_path / "r.txt").exists()
    assert not (tmp_path / "idx").exists()


def test_position_is_recorded(tmp_path: Path, org: Path) -> None:
    idx = tmp_path / "idx"
    ok("build", org, "--index", idx, "--position", "topic:0=5,other:1=7")
    stats = json.loads(ok("stats", "--index", idx, "--json"))
    assert stats["position"] == {"topic:0": 5, "other:1": 7}
    # spaces around items are tolerated; a topic is named as Kafka allows (no ':')
    ok("build", org, "--index", idx, "--position", "ns.changes:2=10, b:0=0")
    stats = json.loads(ok("stats", "--index", idx, "--json"))
    assert stats["position"] == {"ns.changes:2": 10, "b:0": 0}
    msg = fails("build", org, "--index", idx, "--position", "ns:changes:2=10")
    assert "the topic 'ns:changes' is no Kafka topic name" in msg
    # repeated, every one is kept (not the last alone); a partition given twice is refused
    ok("build", org, "--index", idx, "--position", "t:0=5", "--position", "t:1=7,u:0=1")
    stats = json.loads(ok("stats", "--index", idx, "--json"))
    assert stats["position"] == {"t:0": 5, "t:1": 7, "u:0": 1}
    msg = fails("build", org, "--index", idx, "--position", "t:0=5", "--position", "t:0=6")
    assert msg == "--position: t:0 is given twice"


@pytest.mark.parametrize(
    "bad",
    ["topic", "topic:0", "topic=5", "topic:x=5", ":0=5", "topic:0=-1", "topic:0=5,", "t:0=5 7"],
)
def test_malformed_position(tmp_path: Path, org: Path, bad: str) -> None:
    msg = fails("build", org, "--index", tmp_path / "idx", "--position", bad)
    assert msg.startswith("--position: ") and "is not topic:partition=offset" in msg
    item = bad.split(",")[-1].strip() if bad.endswith(",") else bad
    assert repr(item) in msg
    assert not (tmp_path / "idx").exists()


def test_parse_position() -> None:
    assert parse_position(None) == {}
    assert parse_position("") == {}
    assert parse_position("t:00=007") == {"t:0": 7}
    assert parse_position("a.b_c-d:1=0, t:0=5") == {"a.b_c-d:1": 0, "t:0": 5}
    for bad, says in [
        ("t:0=x", "is not topic"),
        ("changes:\u00b2=1", "is not topic"),  # a digit to str.isdigit, not to int()
        ("changes:0=\u00b2", "is not topic"),
        ("t:0=" + "9" * 26, "the offset must be 0 to 9223372036854775807"),
        ("t:4294967296=1", "the partition must be"),
        ("t:0=1,t:0=2", "t:0 is given twice"),
    ]:
        with pytest.raises(InvalidInput, match=says):
            parse_position(bad)


def test_build_id_order_input(tmp_path: Path, org: Path) -> None:
    idx = tmp_path / "idx"
    report = json.loads(ok("build", org, "--index", idx, "--id-order", "input", "--json"))
    assert report["id_order"] == "input"
    assert ok("check", "user:bob", "group:all", "--index", idx) == "true\n"
    assert ok("groups", "user:alice", "--index", idx).split() == [
        "group:all#member",
        "group:backend#member",
        "group:eng#member",
        "group:sales#member",
    ]


def test_build_refuses_a_foreign_directory(tmp_path: Path, org: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("keep")
    msg = fails("build", org, "--index", home)
    assert "is not a Leopard index" in msg and str(home) in msg
    assert os.listdir(home) == ["notes.txt"]


# -- queries ----------------------------------------------------------------------------------


def test_check(index: Path) -> None:
    assert ok("check", "user:bob", "group:eng", "--index", index) == "true\n"
    assert ok("check", "user:carol", "group:eng", "--index", index) == "false\n"
    assert ok("check", "user:anyone", "group:sales", "--index", index) == "true\n"
    assert ok("check", "group:backend#member", "group:all#member", "--index", index) == "true\n"
    assert ok("check", "user:nobody", "group:nosuch", "--index", index) == "false\n"
    answer = json.loads(ok("check", "user:bob", "group:eng", "--index", index, "--json"))
    assert answer["member"] is True and isinstance(answer["token"], str)


def test_groups(index: Path) -> None:
    assert ok("groups", "user:bob", "--index", index).splitlines() == [
        "group:all#member",
        "group:backend#member",
        "group:eng#member",
        "group:sales#member",
    ]
    assert json.loads(ok("groups", "user:carol", "--index", index, "--json")) == [
        "group:all#member",
        "group:sales#member",
    ]
    assert json.loads(ok("groups", "doc:x", "--index", index, "--json")) == []


def test_members_with_paging(index: Path) -> None:
    everyone = ["team:x#lead", "user:alice", "user:bob", "user:carol", "user:dave"]
    assert ok("members", "group:all", "--index", index).splitlines() == everyone
    assert json.loads(ok("members", "group:all", "--index", index, "--json")) == everyone
    assert ok("members", "group:all", "--limit", "2", "--index", index).splitlines() == everyone[:2]
    page = ok("members", "group:all", "--limit", "2", "--after", "user:alice", "--index", index)
    assert page.splitlines() == everyone[2:4]
    last = ok("members", "group:all", "--after", "user:carol", "--index", index, "--json")
    assert json.loads(last) == ["user:dave"]
    for limit in ("0", "-1"):  # as over HTTP: at least one
        assert "Invalid value for '--limit'" in fails(
            "members", "group:all", "--limit", limit, "--index", index, code=2
        )


def test_explain(index: Path) -> None:
    out = ok("explain", "user:bob", "group:all", "--index", index)
    assert out == "group:all#member -> group:eng#member -> group:backend#member -> user:bob\n"
    chain = json.loads(ok("explain", "user:bob", "group:all", "--index", index, "--json"))
    assert chain == ["group:all#member", "group:eng#member", "group:backend#member"]
    out = ok("explain", "user:carol", "group:eng", "--index", index)
    assert out == "user:carol is not a member of group:eng\n"
    assert ok("explain", "user:carol", "group:eng", "--index", index, "--json") == "null\n"
    # a nested group's chain ends at its own set, named once
    out = ok("explain", "group:backend#member", "group:all", "--index", index)
    assert out == "group:all#member -> group:eng#member -> group:backend#member\n"


def test_stats(index: Path) -> None:
    out = ok("stats", "--index", index)
    for key in ("path", "generation", "groups", "subjects", "overlay_sets", "bytes_on_disk"):
        assert re.search(rf"^{key} +\S", out, re.M), key
    assert re.search(r"^groups +4$", out, re.M)
    assert re.search(r"^position +\{\}$", out, re.M)
    assert "tuples read" in out  # the last build's report
    stats = json.loads(ok("stats", "--index", index, "--json"))
    assert stats["groups"] == 4 and stats["subjects"] == 6
    assert stats["build"]["tuples_read"] == 10


def test_index_from_the_environment(index: Path, tmp_path: Path) -> None:
    env = {"LEOPARD_INDEX": str(index)}
    assert ok("check", "user:bob", "group:eng", env=env) == "true\n"
    assert ok("groups", "user:dave", env=env).split() == ["group:all#member", "group:sales#member"]
    assert json.loads(ok("stats", "--json", env=env))["groups"] == 4
    # --index wins over the environment
    other = tmp_path / "other"
    ok("build", "-", "--index", other, input="group:eng#member@user:zed\n")
    assert ok("check", "user:zed", "group:eng", "--index", other, env=env) == "true\n"
    # and build writes where the environment says
    ok("build", "-", env={"LEOPARD_INDEX": str(other)}, input="group:eng#member@user:yan\n")
    assert ok("members", "group:eng", "--index", other) == "user:yan\n"


def test_no_index_given(tmp_path: Path) -> None:
    msg = fails("check", "user:a", "group:b", code=2, env={"LEOPARD_INDEX": ""})
    assert msg == "no index given: pass --index DIR or set LEOPARD_INDEX"


@pytest.mark.parametrize(
    "args",
    [
        ("check", "user:a", "group:eng"),
        ("groups", "user:a"),
        ("members", "group:eng"),
        ("explain", "user:a", "group:eng"),
        ("stats",),
    ],
)
def test_missing_index_names_the_path(tmp_path: Path, args: tuple[str, ...]) -> None:
    missing = tmp_path / "nope"
    msg = fails(*args, "--index", missing)
    assert msg == f"no index at {str(missing)!r}: the directory does not exist"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert fails(*args, "--index", empty).startswith(f"no index at {str(empty)!r}: ")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ("check", "us@er:bob", "group:eng"),
            "'us@er:bob': namespace 'us@er' has the character '@'",
        ),
        (("check", "user:bob", "group:*"), "'group:*': a group cannot be a wildcard"),
        (("check", "user:bob", "groupeng"), "'groupeng': group 'groupeng' has no ':'"),
        (("check", "user:*#member", "group:eng"), "a wildcard subject cannot carry a relation"),
        (("groups", "user:"), "'user:': subject 'user:' has an empty id"),
        (("groups", "user:a b"), "subject name contains whitespace"),
        (("members", "group:eng#"), "group has an empty relation after '#'"),
        (("explain", "user:bob", "group:e g"), "group name contains whitespace"),
        (("check", "user:bob", "group:eng#owner"), "group#owner is not an indexed set"),
    ],
)
def test_malformed_names_are_one_line_errors(
    index: Path, args: tuple[str, ...], fragment: str
) -> None:
    assert fragment in fails(*args, "--index", index)


def test_errors_in_a_real_process(tmp_path: Path, index: Path) -> None:
    missing = tmp_path / "nope"
    proc = leopard_process("groups", "user:a", "--index", missing)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"Error: no index at {str(missing)!r}: the directory does not exist\n"
    proc = leopard_process("check", "us@er:a", "group:eng", env={"LEOPARD_INDEX": str(index)})
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "namespace 'us@er' has the character '@'" in proc.stderr
    proc = leopard_process("check", "user:a", "group:eng", env={"LEOPARD_INDEX": ""})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.endswith("Error: no index given: pass --index DIR or set LEOPARD_INDEX\n")


# -- help and the generator -------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_an_example(command: str) -> None:
    out = ok(command, "--help")
    assert "Example" in out, out
    assert f"leopard {command}" in out.split("Example", 1)[1]


def test_top_level_help_and_version() -> None:
    out = ok("--help")
    for command in ("build", "check", "groups", "members", "explain", "stats", "gen"):
        assert command in out
    assert "leopard build org.txt --index ./idx" in out
    assert ok("-h") == out
    assert "version" in ok("--version")
    assert "(compiled set codec)" in ok("--version")  # setup.py built leopard.model._sets


def test_the_version_of_a_checkout_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a checkout without the distribution installed, ``--version`` says so in
    one line, not a traceback."""

    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    out = ok("--version")
    assert "version unknown (this checkout is not installed" in out
    assert out.count("\n") == 1


def test_help_in_a_real_process() -> None:
    proc = leopard_process("build", "--help")
    assert proc.returncode == 0 and "Example" in proc.stdout and proc.stderr == ""


def test_gen_writes_a_snapshot_and_a_config(tmp_path: Path) -> None:
    snap, cfg = tmp_path / "org.txt", tmp_path / "org.toml"
    out = ok("gen", "-n", "2000", "--out", snap, "--config-out", cfg, "--seed", "3")
    assert "tuples" in out
    assert len(snap.read_text().splitlines()) == 2000
    assert "[[sets]]" in cfg.read_text()
    again = tmp_path / "again.txt"
    ok("gen", "-n", "2000", "--out", again, "--seed", "3")
    assert again.read_bytes() == snap.read_bytes()  # deterministic by seed
    report = json.loads(ok("build", snap, "--config", cfg, "--index", tmp_path / "idx", "--json"))
    assert report["tuples_read"] == 2000 and report["rejected"] == 0
    assert report["groups"] > 10 and report["subjects"] > 100


def test_gen_json_and_gzip(tmp_path: Path) -> None:
    snap = tmp_path / "org.txt.gz"
    report = json.loads(ok("gen", "-n", "1000", "--out", snap, "--json"))
    assert isinstance(report, dict)
    assert len(gzip.decompress(snap.read_bytes()).splitlines()) == 1000


def test_consume_reads_as_a_consumer_group_of_the_indexs_own(
    tmp_path: Path, org: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Indexes sharing a consumer group would each get part of the partitions: without
    --group-id, each index's consumer is in a group named after it (what the consumer
    does with the group, on a real broker, is tests/ingest/test_consumer.py's)."""
    groups: list[str] = []

    class Stub:  # the consumer, only to see the settings it is given
        def __init__(self, path: str, settings: object, **_: object) -> None:
            groups.append(settings.group_id)  # type: ignore[attr-defined]

        def install_signal_handlers(self) -> None: ...

        def run(self, **_: object) -> object:
            raise SystemExit(0)

    monkeypatch.setattr(stream, "ChangeConsumer", Stub)
    a, b = tmp_path / "a", tmp_path / "b"
    for path in (a, b, a):
        ok("build", org, "--index", path)
        cli("consume", "--index", path, "--brokers", "127.0.0.1:9", "--topic", "t")
    cli("consume", "--index", a, "--brokers", "127.0.0.1:9", "--topic", "t", "--group-id", "g")
    assert groups[0] == groups[2] != groups[1]  # its own, and the same after a restart
    assert groups[0].startswith("leopard-consume-") and groups[3] == "g"


def test_gen_refuses_outputs_it_cannot_write_before_writing_any(tmp_path: Path) -> None:
    out = tmp_path / "org.txt"
    missing = tmp_path / "nowhere" / "x"
    assert fails("gen", "-n", "1000", "--out", tmp_path) == (
        f"--out {str(tmp_path)!r} is a directory; give a file name"
    )
    said = fails("gen", "-n", "1000", "--out", out, "--config-out", missing)
    assert (
        said
        == f"--config-out {str(missing)!r}: the directory {str(missing.parent)!r} does not exist"
    )
    assert not out.exists()  # nothing written before the refusal
    said = fails("gen", "-n", "1000", "--shape", "docs", "--out", out, "--fga-out", tmp_path)
    assert said.startswith("--fga-out") and not out.exists()


def test_empty_lists_and_tokens_are_refused_not_taken_as_none(
    tmp_path: Path, org: Path, index: Path
) -> None:
    schema = tmp_path / "s.zed"
    schema.write_text("definition user {}\ndefinition group {\n  relation member: user\n}\n")
    said = fails("build", org, "--index", tmp_path / "x", "--schema", schema, "--only", ",", code=2)
    assert "--only ',' names no set" in said
    said = fails("check", "user:alice", "group:eng", "--at-least", "", "--index", index)
    assert said.startswith("'' is neither a Leopard version token (expected 'v1.…') nor")
