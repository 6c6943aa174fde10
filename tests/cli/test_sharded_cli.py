"""The commands on a sharded index built on one machine (``leopard build --shards N``):
the query commands and ``stats`` treat it as one index; the commands that work on one
index (``compact``, ``verify``, ``consume``) say it is sharded and how to name a shard.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_cli import fails, ok

import leopard
from leopard.cli import build as cli_build
from leopard.model.routing import shard_of

LINES = [
    "group:all#member@group:eng#member",
    "group:eng#member@group:backend#member",
    "group:all#member@user:*",
    *(f"group:backend#member@user:u{i:02d}" for i in range(30)),
    *(f"group:sales#member@user:s{i:02d}" for i in range(10)),
]


def test_a_sharded_index_is_queried_as_one_and_named_where_one_index_is_needed(
    tmp_path: Path,
) -> None:
    src = tmp_path / "org.txt"
    src.write_text("\n".join(LINES) + "\n")
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    ok("build", src, "--index", one)
    out = ok("build", src, "--index", sharded, "--shards", "3")
    assert "tuples read" in out
    # its report says which counts add the shards' (the 3 replicated tuples count on
    # each) and which figures are one shard's, not the whole index's
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.splitlines()[1:13])
    assert rows["shards"].startswith("3; 3 tuples (userset or wildcard subjects)"), out
    assert rows["indexed"] == f"{len(LINES) + 2 * 3} (summed over the 3 shards)", out
    assert "on one shard: its members are spread over the shards" in rows["largest group"]
    assert "summed" not in ok("build", src, "--index", one)
    for args in (
        ("check", "user:u07", "group:all"),
        ("check", "user:s03", "group:eng"),
        ("groups", "user:u07"),
        ("members", "group:all"),
        ("explain", "user:u07", "group:all"),
    ):
        assert ok(*args, "--index", sharded) == ok(*args, "--index", one), args
    stats = json.loads(ok("stats", "--index", sharded, "--json"))
    assert len(stats["shards"]) == 3
    assert sum(s["subjects"] for s in stats["shards"]) == 40 + 3  # user:* on each
    text = ok("stats", "--index", sharded)
    assert text.startswith("sharded index of 3 shards") and "-- shard 2" in text
    for command in ("compact", "verify"):
        message = fails(command, "--index", sharded)
        assert "is a sharded index" in message and "shard-K" in message, message
    ok("compact", "--index", sharded / "shard-1")
    with leopard.open_index(sharded) as ix, leopard.open_index(one) as whole:
        assert ix.members_of("group:all") == whole.members_of("group:all")
    assert "--shards" in fails("build", src, "--index", tmp_path / "x", "--shards", "0")


def test_a_shard_opened_alone_refuses_what_it_cannot_answer_alone(tmp_path: Path) -> None:
    """``--index DIR/shard-K`` (which verify and consume ask for) or ``open_index`` of a
    shard: a subject placed on another shard is refused, naming both shards, not
    answered "no"; the members of a set, which every shard holds in part, too."""
    src = tmp_path / "org.txt"
    src.write_text("\n".join(LINES) + "\n")
    sharded = tmp_path / "sharded"
    ok("build", src, "--index", sharded, "--shards", "3")
    with leopard.open_index(sharded) as whole:
        assert whole.check("user:u07", "group:all")
    home = shard_of("user:u07", 3)
    other = (home + 1) % 3
    assert ok("check", "user:u07", "group:all", "--index", sharded / f"shard-{home}") == "true\n"
    said = fails("check", "user:u07", "group:all", "--index", sharded / f"shard-{other}")
    assert f"user:u07 is placed on shard {home} of 3, this index is shard {other}" in said
    with leopard.open_index(sharded / f"shard-{other}") as alone:
        with pytest.raises(leopard.LeopardError, match="is placed on shard"):
            alone.check("user:u07", "group:all")
        with pytest.raises(leopard.LeopardError, match="needs every shard"):
            alone.members_of("group:all")
    said = fails("members", "group:all", "--index", sharded / f"shard-{home}")
    assert "needs every shard of this sharded index (3 shards)" in said


def test_max_shrink_and_the_empty_refusal_hold_for_a_sharded_build(tmp_path: Path) -> None:
    src = tmp_path / "org.txt"
    src.write_text("\n".join(LINES) + "\n")
    small, skipped = tmp_path / "small.txt", tmp_path / "skipped.txt"
    small.write_text("\n".join(LINES[3:6]) + "\n")
    skipped.write_text("group:eng#owner@user:alice\n")
    sharded = tmp_path / "sharded"
    ok("build", src, "--index", sharded, "--shards", "2")
    message = fails("build", small, "--index", sharded, "--shards", "2", "--max-shrink", "10")
    assert "over the limit of 10% (--max-shrink)" in message, message
    message = fails("build", skipped, "--index", sharded, "--shards", "2")
    assert "with an empty one" in message and "(1 records read)" in message, message
    assert ok("check", "user:u07", "group:all", "--index", sharded).strip() == "true"
    ok("build", small, "--index", sharded, "--shards", "2", "--force")
    assert ok("check", "user:u07", "group:all", "--index", sharded).strip() == "false"


def test_shards_0_is_refused_with_from(tmp_path: Path) -> None:
    for shards in ("0", "1"):
        message = fails(
            "build", "--index", tmp_path / "x", "--from", "spicedb:127.0.0.1:1",
            "--shards", shards, code=2,
        )  # fmt: skip
        assert "--from reads the schema and data itself: drop ['--shards']" in message, shards


def test_the_spark_engine_is_given_wait_and_max_shrink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--wait`` and ``--max-shrink`` reach ``build_on_spark`` (no Spark runs here)."""
    given: dict[str, Any] = {}

    def fake(sources: list[str], index: str, config: Any, **kw: Any) -> leopard.BuildReport:
        given.update(kw)
        return leopard.BuildReport(shards=kw["shards"])

    monkeypatch.setattr(cli_build, "build_on_spark", fake)
    src = tmp_path / "org.txt"
    src.write_text("\n".join(LINES) + "\n")
    common = ("build", src, "--index", tmp_path / "sx", "--engine", "spark", "--shards", "2")
    ok(*common, "--wait", "--max-shrink", "10")
    assert given["wait"] is True and given["max_shrink"] == 0.1 and not given["force"]
    ok(*common)
    assert given["wait"] is False and given["max_shrink"] == 0.5
