"""``build --skip-invalid --rejects FILE`` writes a snapshot of the rejects' own format.

For every snapshot format, the rejects file, once its records are fixed (here by a
program, as a person would fix them), builds with no other edit; CSV, JSON and JSON
lines hold no comments, so their reasons go to ``FILE.reasons``. Snapshots of several
formats give a file a format, each named in the report.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from leopard import open_index
from leopard.cli import main

HEADER = "user_type,user_id,user_relation,relation,object_type,object_id"
GOOD = ["user:anne"]
BAD = ["user:b c", "user:d e"]  # whitespace inside an id: fixed by removing it
REASON = "contains whitespace at position"


def run(*args: str | Path, code: int = 0) -> tuple[str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    return result.stdout, result.stderr


def members(index: Path) -> list[str]:
    with open_index(index) as ix:
        return ix.members_of("group:eng")


def csv_snapshot(users: list[str]) -> str:
    rows = [f"user,{u.split(':', 1)[1]},,member,group,eng" for u in users]
    return "\r\n".join([HEADER, *rows]) + "\r\n"


def json_record(user: str) -> dict[str, str]:
    return {"user": user, "relation": "member", "object": "group:eng"}


def write(path: Path, fmt: str, users: list[str], compress: bool = False) -> None:
    if fmt == "csv":
        text = csv_snapshot(users)
    elif fmt == "json":
        text = json.dumps([json_record(u) for u in users])
    elif fmt == "jsonl":
        text = "".join(json.dumps(json_record(u)) + "\n" for u in users)
    else:
        text = "".join(f"group:eng#member@{u}\n" for u in users)
    data = text.encode()
    path.write_bytes(gzip.compress(data) if compress else data)


def fix(path: Path, fmt: str) -> None:
    """Fix the rejected records in place, each as its format is edited."""
    if fmt == "json":
        doc = json.loads(path.read_text())
        for record in doc:
            record["user"] = record["user"].replace(" ", "")
        path.write_text(json.dumps(doc))
    elif fmt == "jsonl":
        records = [json.loads(line) for line in path.read_text().splitlines()]
        for record in records:
            record["user"] = record["user"].replace(" ", "")
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:  # CSV and text: the lines' bytes, the ids' blanks removed
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(ln if ln.startswith(b"#") else _unblank(ln) for ln in lines))


def _unblank(line: bytes) -> bytes:
    body = line.rstrip(b"\r\n")
    return body.replace(b" ", b"") + line[len(body) :]


FIXED = sorted(u.replace(" ", "") for u in BAD)


@pytest.mark.parametrize(
    ("fmt", "compress"),
    [("csv", False), ("csv", True), ("json", False), ("jsonl", False), ("jsonl", True)],
)
def test_the_fixed_rejects_file_builds_as_a_snapshot(
    tmp_path: Path, fmt: str, compress: bool
) -> None:
    snap = tmp_path / f"dump.{fmt}{'.gz' if compress else ''}"
    write(snap, fmt, [BAD[0], *GOOD, BAD[1]], compress)
    rejects = tmp_path / f"rejects.{fmt}"
    out, _ = run("build", snap, "--index", tmp_path / "idx", "--skip-invalid", "--rejects", rejects)
    reasons = Path(f"{rejects}.reasons")
    assert f"  rejects written to {rejects} ({fmt}, reasons in {reasons})" in out
    assert members(tmp_path / "idx") == GOOD

    body = rejects.read_bytes()
    assert b"#" not in body  # no comment: the reader of the format takes none
    if fmt == "csv":
        assert body.startswith(HEADER.encode() + b"\r\n")
    # the records are numbered as in the rejects file, each with its source and reason
    lines = {"csv": [2, 4], "json": [1, 3], "jsonl": [1, 3]}[fmt]
    got = reasons.read_text().splitlines()
    assert len(got) == 2
    for n, (line, text) in enumerate(zip(lines, got, strict=True), 1):
        assert text.startswith(f"record {n} (source {snap}:{line}): '")
        assert REASON in text

    fix(rejects, fmt)
    out, _ = run("build", rejects, "--index", tmp_path / "again")
    assert members(tmp_path / "again") == FIXED


def test_a_json_array_without_rejects_is_an_empty_array(tmp_path: Path) -> None:
    snap = tmp_path / "dump.json"
    write(snap, "json", GOOD)
    rejects = tmp_path / "rejects.json"
    run("build", snap, "--index", tmp_path / "idx", "--skip-invalid", "--rejects", rejects)
    assert json.loads(rejects.read_text()) == []
    assert Path(f"{rejects}.reasons").read_text() == ""


def test_snapshots_of_several_formats_give_a_rejects_file_each(tmp_path: Path) -> None:
    snaps = []
    for fmt in ("txt", "csv", "jsonl", "json"):
        snaps.append(tmp_path / f"dump.{fmt}")
        write(snaps[-1], fmt, [*GOOD, BAD[0] if fmt in ("txt", "json") else BAD[1]])
    rejects = tmp_path / "rejects.csv"  # its extension: the CSV records go to it
    args = ["--index", tmp_path / "idx", "--skip-invalid", "--rejects", rejects, "--json"]
    out, _ = run("build", *snaps, *args)
    files = json.loads(out)["rejects_files"]
    expected = [
        ("csv", "", ".reasons"),
        ("text", ".txt", None),
        ("jsonl", ".jsonl", ".reasons"),
        ("json", ".json", ".reasons"),
    ]
    assert files == [
        {
            "format": fmt,
            "file": f"{rejects}{ext}",
            "reasons": None if why is None else f"{rejects}{ext}{why}",
        }
        for fmt, ext, why in expected
    ]
    fixed = []
    for entry in files:
        path = Path(entry["file"])
        fix(path, "text" if entry["format"] == "text" else entry["format"])
        index = tmp_path / f"again-{entry['format']}"
        run("build", path, "--index", index)
        fixed += members(index)
    assert sorted(fixed) == sorted([FIXED[0], FIXED[1], FIXED[1], FIXED[0]])


def test_csv_snapshots_of_other_headers_are_refused_with_rejects(tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    write(first, "csv", [BAD[0]])
    second.write_text("object_type,object_id,relation,user_type,user_id,user_relation\n")
    with second.open("a") as f:
        f.write("group,eng,member,user,d e,\n")
    rejects = tmp_path / "rejects.csv"
    _, err = run(
        "build", first, second, "--index", tmp_path / "idx", "--skip-invalid",
        "--rejects", rejects, "--force", code=1,
    )  # fmt: skip
    assert f"--rejects {rejects}: the CSV header of {second} " in err
    assert "a CSV rejects file has one header" in err


def test_a_rejects_name_of_another_format_is_read_back_with_format(tmp_path: Path) -> None:
    snap = tmp_path / "dump.csv"
    write(snap, "csv", [*GOOD, BAD[0]])
    rejects = tmp_path / "rejects.txt"
    out, _ = run("build", snap, "--index", tmp_path / "idx", "--skip-invalid", "--rejects", rejects)
    assert f"rejects written to {rejects} (csv, reasons in {rejects}.reasons; " in out
    assert "build it with --format csv)" in out
    fix(rejects, "csv")
    run("build", rejects, "--index", tmp_path / "again", "--format", "csv")
    assert members(tmp_path / "again") == [FIXED[0]]


def test_a_rejects_file_that_is_a_snapshot_read_is_refused(tmp_path: Path) -> None:
    """``build dump.txt dump.csv --rejects dump``: the CSV's rejects would go to
    ``dump.csv``, the snapshot itself, emptied before it is read; refused, both
    snapshots as they were, nothing built. So is a rejects file named as a snapshot."""
    text, table = tmp_path / "dump.txt", tmp_path / "dump.csv"
    write(text, "txt", [*GOOD, BAD[0]])
    write(table, "csv", GOOD)
    before = table.read_bytes(), text.read_bytes()
    for rejects in (tmp_path / "dump", text):
        _, err = run("build", text, table, "--index", tmp_path / "idx", "--skip-invalid",
                     "--rejects", rejects, code=1)  # fmt: skip
        assert "is a snapshot this build reads" in err, err
        assert (table.read_bytes(), text.read_bytes()) == before
        assert not (tmp_path / "idx").exists()
