"""The README's command-line statements, followed literally: the docs example's
report and explain output, the gen command of the Schemas section, the members cursor."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from leopard.cli import main

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def heredoc(name: str, end: str) -> str:
    found = re.search(rf"^cat > {re.escape(name)} <<'{end}'\n(.*?)^{end}$", README, re.M | re.S)
    assert found is not None
    return found.group(1)


def test_the_docs_example_prints_what_the_readme_shows(tmp_path: Path) -> None:
    (tmp_path / "docs.zed").write_text(heredoc("docs.zed", "ZED"))
    (tmp_path / "tuples.txt").write_text(heredoc("tuples.txt", "TXT"))
    index = tmp_path / "docs-idx"
    report = cli(
        "build", tmp_path / "tuples.txt", "--index", index, "--schema", tmp_path / "docs.zed"
    )
    derived = re.search(r"derived edges (\d+)", README)
    assert derived is not None
    assert f"  derived edges       {derived.group(1)}\n" in report.stdout
    shown = re.search(r"^# (doc:roadmap#view\n(?:#   -> .*\n)+)", README, re.M)
    assert shown is not None
    printed = cli("explain", "user:alice", "doc:roadmap#view", "--steps", "--index", index)
    assert printed.stdout == shown.group(1).replace("# ", "", 1).replace("\n#   ", "\n  ")


def test_the_schemas_gen_command_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # it writes where it is run
    line = re.search(r"`(leopard gen --shape docs [^`]*)`", README.replace("\n", " "))
    assert line is not None
    args = shlex.split(line.group(1))[1:]
    result = CliRunner().invoke(main, [*args, "-n", "1000"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_the_members_cursor_is_a_name_gen_gives(tmp_path: Path) -> None:
    cursor = re.search(r"leopard members group:eng --limit 100 --after (user:\S+)", README)
    assert cursor is not None
    snapshot = tmp_path / "org.txt"
    assert cli("gen", "-n", "2000", "--out", snapshot).exit_code == 0
    users = set(re.findall(r"user:u\d+", snapshot.read_text()))
    assert cursor.group(1) in users
