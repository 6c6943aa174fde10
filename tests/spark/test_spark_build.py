"""``leopard build --engine spark``: a sharded index built by Spark answers as one index.

One SparkSession (``local[2]``) serves the module: starting a JVM takes seconds. Each
build is compared with the one-machine build of the same tuples (``build_index``
without shards) and with the BFS oracle, query by query: checks, groups, members in
pages, explanations. Then changes are streamed into every shard (each shard's
``DeltaWriter`` skips other shards' subjects by itself) and into the one index, and
the answers are compared again.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.index_model import Model, compare_all, universe
from support.oracle import Oracle

import leopard
from leopard.core.incremental import DeltaWriter
from leopard.core.sharded import ShardedIndex
from leopard.errors import InvalidInput, StorageError
from leopard.gen import OrgSpec, config_toml, docs_schema, generate, generate_docs
from leopard.model.config import Config, load_config, schema_config
from leopard.model.names import parse_tuple
from leopard.spark import build_on_spark
from leopard.spark.session import spark_session
from leopard.store.generations import IndexDir
from leopard.store.manifest import MANIFEST

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    with spark_session("local[2]") as session:
        yield session


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Config, list[str]]:
    """A generated org of 3,000 tuples: nesting, cycles, rewrites, wildcards."""
    d = tmp_path_factory.mktemp("org")
    spec = OrgSpec(tuples=3000, seed=3)
    generate(spec, d / "org.txt")
    (d / "org.toml").write_text(config_toml(spec))
    config = load_config(d / "org.toml")
    lines = [ln for ln in (d / "org.txt").read_text().splitlines() if ln.strip()]
    return d / "org.txt", config, lines


def same_answers(a: Any, b: Any, oracle: Oracle, sample: int = 40) -> None:
    """Every query of a sample of the universe answered alike by ``a`` and ``b``."""
    subjects, groups = universe(oracle, sample)
    groups = [g for g in groups if g in oracle.groups]
    pairs = [(s, g) for s in subjects for g in groups]
    assert a.check_many(pairs) == b.check_many(pairs)
    for s in subjects:
        assert a.groups_of(s) == b.groups_of(s), s
    for g in groups:
        assert a.members_of(g) == b.members_of(g), g
        assert a.members_of(g, limit=2, after="user:u000100") == b.members_of(
            g, limit=2, after="user:u000100"
        )


# -- the org, in 1, 2 and 4 shards --------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_a_spark_build_answers_as_one_index_and_the_oracle(
    spark: Any, org: tuple[Path, Config, list[str]], tmp_path: Path, shards: int
) -> None:
    path, config, lines = org
    report = build_on_spark([str(path)], str(tmp_path / "sx"), config, shards=shards, session=spark)
    one = leopard.build_index([path], tmp_path / "one", config)
    assert report.tuples_read == one.tuples_read == len(lines)
    assert report.groups == one.groups and report.shards == shards
    assert 0 < report.replicated < len(lines)  # nesting and wildcards: every shard's
    oracle = Oracle(lines, config)
    with leopard.open_index(tmp_path / "sx") as sx, leopard.open_index(tmp_path / "one") as ix:
        assert isinstance(sx, ShardedIndex) and sx.n == shards
        assert sx.manifest.engine == "spark"
        compare_all(sx, oracle, sample=25)  # type: ignore[arg-type]
        same_answers(sx, ix, oracle)


def test_parquet_gives_the_index_text_gives(
    spark: Any, org: tuple[Path, Config, list[str]], tmp_path: Path
) -> None:
    path, config, lines = org
    tuples = [parse_tuple(ln) for ln in lines]
    columns = {
        "user_type": [t.subject_type for t in tuples],
        "user_id": [t.subject_id for t in tuples],
        "user_relation": [t.subject_relation or "" for t in tuples],
        "relation": [t.relation for t in tuples],
        "object_type": [t.resource_type for t in tuples],
        "object_id": [t.resource_id for t in tuples],
    }
    (tmp_path / "org.parquet").mkdir()
    half = len(tuples) // 2  # a directory of two part files
    table = pa.table(columns)
    pq.write_table(table.slice(0, half), tmp_path / "org.parquet" / "part-0.parquet")
    pq.write_table(table.slice(half), tmp_path / "org.parquet" / "part-1.parquet")
    a = build_on_spark([str(path)], str(tmp_path / "t"), config, shards=2, session=spark)
    b = build_on_spark(
        [str(tmp_path / "org.parquet")], str(tmp_path / "p"), config, shards=2, session=spark
    )
    assert a.tuples_read == b.tuples_read == len(lines)
    assert (a.tuples_indexed, a.subjects, a.groups) == (b.tuples_indexed, b.subjects, b.groups)
    with leopard.open_index(tmp_path / "t") as ta, leopard.open_index(tmp_path / "p") as pb:
        same_answers(ta, pb, Oracle(lines, config))


def test_a_directory_of_snapshots_is_read_file_by_file(
    spark: Any, org: tuple[Path, Config, list[str]], tmp_path: Path
) -> None:
    """Every file under a directory, in any format its name says (Spark's ``_SUCCESS``
    and hidden files left out); a ``file://`` URI as the index directory."""
    path, config, lines = org
    d = tmp_path / "dump"
    (d / "more").mkdir(parents=True)
    third = len(lines) // 3
    (d / "a.txt").write_text("\n".join(lines[:third]) + "\n")
    (d / "more" / "b.txt").write_text("\n".join(lines[third:]) + "\n")
    (d / "_SUCCESS").write_text("")
    (d / ".b.txt.crc").write_text("not a snapshot")
    report = build_on_spark([str(d)], f"file://{tmp_path / 'sx'}", config, shards=2, session=spark)
    assert report.tuples_read == len(lines)
    leopard.build_index([path], tmp_path / "one", config)
    with leopard.open_index(tmp_path / "sx") as sx, leopard.open_index(tmp_path / "one") as ix:
        same_answers(sx, ix, Oracle(lines, config))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="holds no snapshot file"):
        build_on_spark(
            [str(tmp_path / "empty")], str(tmp_path / "e"), config, shards=2, session=spark
        )


def test_bad_records_are_named_or_counted(spark: Any, tmp_path: Path) -> None:
    good = ["group:eng#member@user:alice", "group:all#member@group:eng#member"]
    (tmp_path / "t.txt").write_text("\n".join([good[0], "group:eng#member", good[1]]) + "\n")
    with pytest.raises(InvalidInput, match=r"t\.txt:2: .*group:eng#member"):
        build_on_spark(
            [str(tmp_path / "t.txt")], str(tmp_path / "a"), Config(), shards=2, session=spark
        )
    report = build_on_spark(
        [str(tmp_path / "t.txt")], str(tmp_path / "b"), Config(), shards=2, skip_invalid=True,
        session=spark,
    )  # fmt: skip
    assert (report.tuples_read, report.rejected) == (2, 1)
    pq.write_table(
        pa.table({c: ["a"] for c in ("user_type", "relation", "object_type", "object_id")}
                 | {"user_id": ["x#y"], "user_relation": [""]}),
        tmp_path / "bad.parquet",
    )  # fmt: skip
    with pytest.raises(InvalidInput, match=r"bad\.parquet: row 1: .*user_id 'x#y'"):
        build_on_spark(
            [str(tmp_path / "bad.parquet")], str(tmp_path / "c"), Config(), shards=1, session=spark
        )


# -- a schema with arrows -----------------------------------------------------------------


def test_a_sharded_schema_build_on_spark_answers_as_one_machine(spark: Any, tmp_path: Path) -> None:
    (tmp_path / "docs.zed").write_text(docs_schema())
    generate_docs(OrgSpec(tuples=2000, seed=5, shape="docs"), tmp_path / "docs.txt")
    config = schema_config(tmp_path / "docs.zed")
    # the schema's configuration reaches the executors as JSON, arrows and all
    again = Config.from_json(config.to_json())
    assert again.plan is not None and config.plan is not None
    assert again.plan.arrow_tuplesets() == config.plan.arrow_tuplesets()
    lines = [ln for ln in (tmp_path / "docs.txt").read_text().splitlines() if ln.strip()]
    build_on_spark(
        [str(tmp_path / "docs.txt")], str(tmp_path / "sx"), config, shards=3, session=spark
    )
    leopard.build_index([tmp_path / "docs.txt"], tmp_path / "one", config)
    oracle = Oracle(lines, config)
    with leopard.open_index(tmp_path / "sx") as sx, leopard.open_index(tmp_path / "one") as ix:
        same_answers(sx, ix, oracle, sample=30)
        docs = sorted(g for g in oracle.groups if g.startswith("doc:") and g.endswith("#view"))
        users = sorted(s for s in oracle.leaf_names() if s.startswith("user:"))[:30]
        pairs = [(u, d) for u in users for d in docs[:30]]
        assert sx.check_many(pairs) == [oracle.check(u, d) for u, d in pairs]
        for u in users:
            assert sx.groups_of(u, type="doc", permission="view") == ix.groups_of(
                u, type="doc", permission="view"
            )


# -- changes streamed into every shard ----------------------------------------------------


def _changes(lines: list[str], seed: int) -> list[tuple[str, Any]]:
    """Member adds and deletes, nested edges added and deleted, half of the deletes of
    tuples that exist."""
    rng = random.Random(seed)
    groups = sorted({ln.split("#", 1)[0] for ln in lines})
    users = sorted(
        {ln.rsplit("@", 1)[1] for ln in lines if "@user:" in ln and "#" not in ln.rsplit("@", 1)[1]}
    )
    nested = [ln for ln in lines if ln.endswith("#member") and "@group:" in ln]
    members = [ln for ln in lines if "@user:" in ln and ln.split("#", 1)[1].startswith("member@")]
    out: list[tuple[str, Any]] = []
    for _ in range(40):
        out.append(("touch", parse_tuple(f"{rng.choice(groups)}#member@{rng.choice(users)}")))
        out.append(
            ("touch", parse_tuple(f"{rng.choice(groups)}#member@user:new{rng.randrange(20)}"))
        )
    for _ in range(8):
        a, b = rng.sample(groups, 2)
        out.append(("touch", parse_tuple(f"{a}#member@{b}#member")))
    out += [("delete", parse_tuple(ln)) for ln in rng.sample(members, 30)]
    out += [("delete", parse_tuple(ln)) for ln in rng.sample(nested, 6)]
    out += [
        ("delete", parse_tuple(f"{rng.choice(groups)}#member@user:nobody{i}")) for i in range(10)
    ]
    rng.shuffle(out)
    return out


def test_changes_applied_to_every_shard_keep_it_one_index(
    spark: Any, org: tuple[Path, Config, list[str]], tmp_path: Path
) -> None:
    path, config, lines = org
    position = {"changes:0": 0}
    build_on_spark(
        [str(path)], str(tmp_path / "sx"), config, shards=3, session=spark, position=position
    )
    leopard.build_index([path], tmp_path / "one", config, position=position)
    model = Model(config, (parse_tuple(ln) for ln in lines))
    with leopard.open_index(tmp_path / "sx") as sx, leopard.open_index(tmp_path / "one") as ix:
        assert isinstance(sx, ShardedIndex)
        writers = [DeltaWriter(s.reader) for s in sx.shards]
        one = DeltaWriter(ix.reader)  # type: ignore[union-attr]
        try:
            offset = 0
            for seed in range(3):
                batch = _changes(lines, seed)
                offset += len(batch)
                at = {"changes:0": offset}
                reports = [w.apply(batch, at) for w in writers]
                one.apply(batch, at)
                model.apply(batch)
                assert sum(r.other_shard for r in reports) > 0
                sx.refresh()
                ix.refresh()
                oracle = model.oracle()
                compare_all(sx, oracle, sample=20)  # type: ignore[arg-type]
                same_answers(sx, ix, oracle, sample=30)
            assert sx.position == ix.position == {"changes:0": offset}
        finally:
            for w in [*writers, one]:
                w.close()


# -- the command line ---------------------------------------------------------------------


def _leopard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leopard", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_the_command_line_builds_on_spark(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text(
        "group:eng#member@user:alice\ngroup:all#member@group:eng#member\ngroup:all#member@user:bob\n"
    )
    ix = tmp_path / "ix"
    out = _leopard(
        "build", str(tmp_path / "t.txt"), "--index", str(ix), "--engine", "spark",
        "--shards", "2", "--master", "local[1]",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"built {ix}" in out.stdout and "tuples read         3" in out.stdout
    assert out.stderr == ""  # Spark's own log stays off stderr
    with leopard.open_index(ix) as sx:
        assert sx.check("user:alice", "group:all")
    assert _leopard("check", "user:alice", "group:all", "--index", str(ix)).stdout.strip() == "true"


@pytest.mark.parametrize(
    "args, message",
    [
        (["MISSING", "--shards", "2"], "cannot read 'MISSING'"),
        (["FILE", "--shards", "0"], "--shards must be a whole number from 1 to 4096, not 0"),
        (["FILE", "--index", "FULL"], "is not empty and is not a sharded index"),
    ],
)
def test_bad_command_lines_say_one_error(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "t.txt").write_text("group:eng#member@user:alice\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    names = {"MISSING": str(tmp_path / "missing.txt"), "FILE": str(tmp_path / "t.txt"),
             "FULL": str(tmp_path / "full")}  # fmt: skip
    argv = [names.get(a, a) for a in args]
    if "--index" not in argv:
        argv += ["--index", str(tmp_path / "ix")]
    out = _leopard("build", *argv, "--engine", "spark", "--master", "local[1]")
    assert out.returncode == 1
    errors = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error: "), out.stderr
    expected = message.replace("MISSING", str(tmp_path / "missing.txt"))
    assert expected in errors[0]


def test_without_pyspark_the_engine_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['pyspark'] = None\n"
        "import leopard, leopard.spark\n"
        "from leopard.errors import InvalidInput\n"
        "try:\n"
        "    leopard.spark.session.pyspark_modules()\n"
        "except InvalidInput as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert (
        out.stdout.strip() == "the Spark engine needs pyspark: pip install 'leopard-index[spark]'"
    )
    probe = "import sys, leopard, leopard.cli.build; print('pyspark' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert loaded.stdout.strip() == "False"  # importing leopard (and its CLI) loads no Spark


# -- refusals and locks: the live shards untouched, all swapped in or none -----------------


def test_a_refused_or_blocked_spark_build_leaves_the_live_shards_as_they_were(
    spark: Any, org: tuple[Path, Config, list[str]], tmp_path: Path
) -> None:
    path, config, lines = org
    live = tmp_path / "live"
    build_on_spark([str(path)], str(live), config, shards=2, session=spark)

    def generations() -> list[str]:
        return [IndexDir(live / f"shard-{k}").current().name for k in range(2)]

    def unchanged() -> None:
        assert generations() == ["gen-000001", "gen-000001"]
        assert sorted(p.name for p in live.iterdir()) == ["LOCK", "shard-0", "shard-1", MANIFEST]
        with leopard.open_index(live) as ix:
            assert ix.check("user:u000001", "group:all-employees")
            assert ix.members_of("group:newgrp") == []

    empty, skipped, small = (tmp_path / n for n in ("empty.txt", "skipped.txt", "small.txt"))
    empty.write_text("")
    skipped.write_text("group:eng#owner@user:alice\n")  # no set of the config's
    small.write_text("\n".join(lines[:3]) + "\n")
    for source, message in (
        (empty, "the sources hold no tuple"),
        (skipped, "with an empty one"),
        (small, "over the limit of 50% (--max-shrink)"),
    ):
        with pytest.raises(InvalidInput, match=re.escape(message)):
            build_on_spark([str(source)], str(live), config, shards=2, session=spark)
        unchanged()

    # shard 1 busy (a consumer compacting it): refused before Spark runs, or waited for
    changed = tmp_path / "changed.txt"
    changed.write_text("\n".join([*lines, "group:newgrp#member@group:eng#member"]) + "\n")
    holder = IndexDir(live / "shard-1")
    holder.acquire()
    try:
        with pytest.raises(StorageError, match="shard-1' is locked by another build"):
            build_on_spark([str(changed)], str(live), config, shards=2, session=spark)
        unchanged()
        threading.Timer(1.0, holder.release).start()
        build_on_spark([str(changed)], str(live), config, shards=2, session=spark, wait=True)
    finally:
        holder.release()
    assert generations() == ["gen-000002", "gen-000002"]
    with leopard.open_index(live) as ix:
        eng = ix.members_of("group:eng")
        assert eng and ix.members_of("group:newgrp") == eng

    # a first build refused leaves its directory to a retry
    new = tmp_path / "new"
    with pytest.raises(InvalidInput, match="the sources hold no tuple"):
        build_on_spark([str(empty)], str(new), config, shards=2, session=spark)
    assert not (new / MANIFEST).exists()
    build_on_spark([str(path)], str(new), config, shards=2, session=spark)
    with leopard.open_index(new) as ix:
        assert ix.check("user:u000001", "group:all-employees")
