"""Options that would do nothing, or nothing sensible, are usage errors naming them;
an empty list prints no line."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from leopard.cli import main


def cli(*args: str | Path, input: str | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


@pytest.fixture
def index(tmp_path: Path) -> Path:
    snapshot = tmp_path / "t.txt"
    snapshot.write_text("group:eng#member@user:alice\n")
    result = cli("build", snapshot, "--index", tmp_path / "idx")
    assert result.exit_code == 0, result.output
    return tmp_path / "idx"


def usage_error(*args: str | Path) -> str:
    result = cli(*args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stdout == ""
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("extra", "said"),
    [(["--source-key", "K"], "Error: --source-key needs --from spicedb:TARGET"),
     (["--source-insecure"], "Error: --source-insecure needs --from spicedb:TARGET"),
     (["--master", "spark://nowhere:7077"], "Error: --master needs --engine spark")],
)  # fmt: skip
def test_build_refuses_options_of_another_source_or_engine(
    tmp_path: Path, extra: list[str], said: str
) -> None:
    snapshot = tmp_path / "t.txt"
    snapshot.write_text("group:eng#member@user:alice\n")
    assert usage_error("build", snapshot, "--index", tmp_path / "idx", *extra) == said
    assert not (tmp_path / "idx").exists()


def test_build_from_refuses_master(tmp_path: Path) -> None:
    said = usage_error(
        "build", "--index", tmp_path / "idx", "--from", "spicedb:127.0.0.1:1", "--master", "x"
    )
    assert said == "Error: --from reads the schema and data itself: drop ['--master']"
    said = usage_error(
        "build", "--index", tmp_path / "idx", "--from", "spicedb:127.0.0.1:1", "--rejects", "r"
    )
    assert said == "Error: --from reads the schema and data itself: drop ['--rejects']"


def test_negative_max_wait_and_limit_0_are_refused(index: Path) -> None:
    said = usage_error("check", "user:alice", "group:eng", "--index", index,
                       "--at-least", "v1.x", "--max-wait", "-5")  # fmt: skip
    assert said == "Error: Invalid value for '--max-wait': -5.0 is not in the range x>=0."
    said = usage_error("members", "group:eng", "--index", index, "--limit", "0")
    assert said == "Error: Invalid value for '--limit': 0 is not in the range x>=1."
    assert cli("members", "group:eng", "--index", index, "--limit", "1").stdout == "user:alice\n"


@pytest.mark.parametrize(
    "args",
    [("groups", "user:nobody"), ("members", "group:nosuch"),
     ("members", "group:eng", "--after", "user:alice")],
)  # fmt: skip
def test_an_empty_list_prints_no_line(index: Path, args: tuple[str, ...]) -> None:
    result = cli(*args, "--index", index)
    assert result.exit_code == 0 and result.stdout == ""
    result = cli(*args, "--index", index, "--json")
    assert result.exit_code == 0 and result.stdout == "[]\n"


@pytest.mark.parametrize(
    ("extra", "said"),
    [(["--topic", "bad topic"], "--topic 'bad topic' is no Kafka topic name"),
     (["--topic", "t", "--dlq-topic", "dead/letters"], "--dlq-topic 'dead/letters' is no Kafka"),
     (["--topic", "t", "--dlq-topic", ".."], "--dlq-topic '..' is no Kafka topic name"),
     (["--topic", "t", "--topic", "u", "--dlq-topic", "u"], "--dlq-topic 'u' is also consumed"),
     (["--topic", "t", "--topic", "t.dlq"], "the dead-letter topic (default) 't.dlq' is also"),
     (["--topic", "t", "--codec-option", "subject_id=m"],
      "--codec-option: the native change format takes no options, got ['subject_id']"),
     (["--topic", "t", "--format", "debezium", "--codec-option", "tuple_column=t",
       "--codec-option", "subject_id=m"],
      "--codec-option: debezium option 'tuple_column' names the one column holding the whole")],
)  # fmt: skip
def test_a_topic_kafka_would_refuse_is_refused_at_the_start(
    index: Path, extra: list[str], said: str
) -> None:
    """Not at the first dead letter, with a traceback, after changes were read."""
    result = cli("consume", "--index", index, "--brokers", "127.0.0.1:1", *extra)
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.stderr.startswith(f"Error: {said}"), result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "said"),
    [(["publish", "--brokers", "127.0.0.1:1", "--topic", "bad topic"],
      "--topic 'bad topic' is no Kafka topic name"),
     (["publish", "--brokers", "127.0.0.1:1", "--topic", "t" * 250], "is no Kafka topic name"),
     (["bridge", "--source", "spicedb:127.0.0.1:1", "--brokers", "127.0.0.1:1",
       "--topic", "a/b", "--checkpoint", "cp.json"], "--topic 'a/b' is no Kafka topic name"),
     (["build", "-", "--index", "new-idx", "--position", "a b:0=5"],
      "--position 'a b:0=5': the topic 'a b' is no Kafka topic name")],
)  # fmt: skip
def test_every_command_refuses_a_topic_kafka_would_refuse(
    args: list[str], said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """publish, bridge and build --position as consume: one line, before any work."""
    monkeypatch.chdir(tmp_path)
    result = cli(*args, input="+group:eng#member@user:alice\n")
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.stderr.startswith("Error: ") and said in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


def test_gen_sizes_out_of_range_are_usage_errors_naming_the_option() -> None:
    said = usage_error("gen", "-n", "10", "--out", "x.txt")
    assert "Invalid value for '-n' / '--tuples': 10 is not in the range 1000<=x<=" in said
    said = usage_error("gen", "--max-depth", "0", "--out", "x.txt")
    assert "Invalid value for '--max-depth': 0 is not in the range 1<=x<=64" in said


@pytest.mark.parametrize("rejects", ["same", "same/rejects.txt"])
def test_rejects_in_the_index_directory_is_refused_before_any_file_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rejects: str
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("r.txt").write_text("group:eng#member@user:a\n")
    said = usage_error("build", "r.txt", "--index", "same", "--skip-invalid", "--rejects", rejects)
    assert f"--rejects {rejects!r} is the index directory 'same' or in it" in said
    assert not Path("same").exists()  # (an empty file was left where the index was to be)
