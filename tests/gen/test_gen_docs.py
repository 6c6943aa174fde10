"""Tests of the docs shape (leopard.gen.docs): the promises benchmarks and comparisons
with the peers rely on.

Each property is checked on the text actually written: the shape with plain graph
walks, the sample names with the plain schema oracle (tests/support/schema_oracle.py),
never with the generator's own bookkeeping.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.schema_oracle import SchemaOracle

from leopard.cli import main
from leopard.errors import InvalidInput
from leopard.gen import (
    DOCS_GROUP_DEPTH,
    GenReport,
    OrgSpec,
    config_toml,
    docs_model,
    docs_schema,
    generate,
)
from leopard.model.config import Config
from leopard.model.names import RelationTuple, parse_tuple
from leopard.model.schema import (
    Exclusion,
    Union,
    load_schema,
    parse_openfga_dsl,
    parse_spicedb,
)


@dataclass
class Docs:
    """A generated docs shape read back from its text."""

    report: GenReport
    text: bytes
    tuples: list[RelationTuple]
    by_relation: Counter[tuple[str, str]] = field(default_factory=Counter)
    folder_parent: dict[str, str] = field(default_factory=dict)
    doc_parent: dict[str, str] = field(default_factory=dict)
    nested: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def depth(self, folder: str) -> int:
        """Folders from ``folder`` up to its top one, both counted."""
        n = 1
        while folder in self.folder_parent:
            folder = self.folder_parent[folder]
            n += 1
            assert n <= 64, "a loop of folders"
        return n


def make_docs(spec: OrgSpec) -> Docs:
    buf = io.BytesIO()
    report = generate(spec, buf)
    text = buf.getvalue()
    docs = Docs(report, text, [parse_tuple(line) for line in text.decode().splitlines()])
    for t in docs.tuples:
        obj, subject = f"{t.resource_type}:{t.resource_id}", f"{t.subject_type}:{t.subject_id}"
        docs.by_relation[(t.resource_type, t.relation)] += 1
        if t.relation == "parent":
            (docs.folder_parent if t.resource_type == "folder" else docs.doc_parent)[obj] = subject
        elif t.resource_type == "group" and t.subject_relation == "member":
            docs.nested[obj].add(subject)
    return docs


SPEC = OrgSpec(tuples=20_000, seed=11, shape="docs", max_depth=6)


@pytest.fixture(scope="module")
def docs() -> Docs:
    return make_docs(SPEC)


@pytest.fixture(scope="module")
def oracle(docs: Docs) -> SchemaOracle:
    return SchemaOracle(parse_spicedb(docs_schema()), docs.tuples)


# -- output format ------------------------------------------------------------------


def test_same_spec_gives_identical_bytes(docs: Docs) -> None:
    again = io.BytesIO()
    generate(SPEC, again)
    assert again.getvalue() == docs.text
    other = io.BytesIO()
    generate(OrgSpec(tuples=20_000, seed=12, shape="docs", max_depth=6), other)
    assert other.getvalue() != docs.text


@pytest.mark.parametrize("n", [1_000, 4_321, 50_000, 250_000])
def test_tuple_count_is_exact(n: int) -> None:
    buf = io.BytesIO()
    report = generate(OrgSpec(tuples=n, seed=3, shape="docs"), buf)
    assert buf.getvalue().count(b"\n") == report.tuples == n


def test_every_line_parses_and_none_repeats(docs: Docs) -> None:
    assert len(docs.tuples) == docs.report.tuples
    assert len(set(docs.tuples)) == len(docs.tuples)
    assert docs.text.endswith(b"\n")
    assert set(docs.by_relation) == {
        ("group", "member"),
        ("folder", "parent"),
        ("folder", "owner"),
        ("folder", "viewer"),
        ("folder", "editor"),
        ("doc", "parent"),
        ("doc", "viewer"),
        ("doc", "editor"),
        ("doc", "banned"),
    }


def test_every_tuple_is_allowed_by_the_schema(oracle: SchemaOracle) -> None:
    assert oracle.ignored == []


def test_report_matches_the_text(docs: Docs) -> None:
    r = docs.report
    users = {f"{t.subject_type}:{t.subject_id}" for t in docs.tuples if t.subject_type == "user"}
    assert r.users == len(users - {"user:*"})
    groups = {
        f"{t.resource_type}:{t.resource_id}" for t in docs.tuples if t.resource_type == "group"
    }
    groups |= {f"{t.subject_type}:{t.subject_id}" for t in docs.tuples if t.subject_type == "group"}
    assert r.groups == len(groups)
    assert r.nested_edges == sum(len(c) for c in docs.nested.values())
    assert r.member_edges == docs.by_relation[("group", "member")] - r.nested_edges
    assert r.folders == len({t.resource_id for t in docs.tuples if t.resource_type == "folder"})
    assert r.docs == len(docs.doc_parent)
    assert r.wildcards == sum(t.is_wildcard for t in docs.tuples) > 0
    assert r.banned_tuples == docs.by_relation[("doc", "banned")] > 0
    grants = sum(
        n for (_, rel), n in docs.by_relation.items() if rel in ("owner", "viewer", "editor")
    )
    assert r.grant_tuples == grants - r.wildcards
    assert r.bytes == len(docs.text)
    assert json.loads(json.dumps(r.to_dict()))["spec"]["shape"] == "docs"


def test_namespace_prefix_and_gzip(tmp_path: Path) -> None:
    spec = OrgSpec(tuples=3_000, seed=5, shape="docs", namespace_prefix="acme/")
    plain, packed = tmp_path / "docs.txt", tmp_path / "docs.txt.gz"
    generate(spec, plain)
    generate(spec, str(packed))
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    tuples = [parse_tuple(line) for line in plain.read_text().splitlines()]
    assert {t.resource_type for t in tuples} == {"acme/group", "acme/folder", "acme/doc"}
    assert SchemaOracle(parse_spicedb(docs_schema("acme/")), tuples).ignored == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tuples": 1_000, "shape": "tree"},
        {"tuples": 1_000, "shape": "docs", "rewrites": False},
        {"tuples": 1_000, "shape": "docs", "max_depth": 0},
        {"tuples": 999, "shape": "docs"},
    ],
)
def test_bad_specs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        OrgSpec(**kwargs)  # type: ignore[arg-type]


def test_the_deepest_folders_fit_in_the_fewest_tuples() -> None:
    deep = make_docs(OrgSpec(tuples=1_000, shape="docs", max_depth=64))
    assert deep.report.tuples == 1_000
    assert deep.depth(deep.doc_parent[deep.report.deep_doc or ""]) == 64


# -- the schema -----------------------------------------------------------------------


def test_both_schemas_describe_the_same_permissions(tmp_path: Path) -> None:
    zed, fga = tmp_path / "docs.zed", tmp_path / "docs.fga"
    zed.write_text(docs_schema())
    fga.write_text(docs_model())
    spicedb, openfga = load_schema(zed), load_schema(fga)
    assert spicedb.dialect == "spicedb" and openfga.dialect == "openfga"
    assert spicedb.types == openfga.types
    assert list(spicedb.types) == ["user", "group", "folder", "doc"]
    kinds = {
        (t.name, r.name): type(r.rewrite).__name__
        for t in spicedb.types.values()
        for r in t.relations.values()
        if r.kind == "permission"
    }
    assert kinds == {
        ("folder", "edit"): "Union",
        ("folder", "view"): "Union",
        ("doc", "edit"): "Union",
        ("doc", "view"): "Union",
        ("doc", "view_unbanned"): "Exclusion",  # the one Leopard must refuse
    }
    unbanned = spicedb.relation("doc", "view_unbanned")
    assert unbanned is not None and isinstance(unbanned.rewrite, Exclusion)
    view = openfga.relation("doc", "view")
    assert view is not None and isinstance(view.rewrite, Union)
    prefixed = parse_openfga_dsl(docs_model("acme/"))
    assert list(prefixed.types) == ["acme/user", "acme/group", "acme/folder", "acme/doc"]


# -- shape ----------------------------------------------------------------------------


def test_folders_are_a_forest_of_the_asked_depth(docs: Docs) -> None:
    depths = Counter(docs.depth(f) for f in docs.folder_parent)
    assert max(depths) == SPEC.max_depth
    assert all(d >= 2 for d in depths)  # folders with a parent sit at level 2 or deeper
    assert docs.depth(docs.doc_parent[docs.report.deep_doc]) == SPEC.max_depth
    assert docs.report.deep_levels == SPEC.max_depth


def test_groups_nest_at_most_the_group_depth_and_cycles_can_be_turned_off() -> None:
    dag = make_docs(OrgSpec(tuples=20_000, seed=11, shape="docs", cycles=False))
    assert dag.report.cycles == 0
    memo: dict[str, int] = {}

    def longest(g: str) -> int:
        if g not in memo:
            memo[g] = max((longest(c) + 1 for c in dag.nested.get(g, ())), default=0)
        return memo[g]

    assert max(longest(g) for g in list(dag.nested)) == DOCS_GROUP_DEPTH


def test_cycles_are_there_by_default(docs: Docs) -> None:
    assert docs.report.cycles > 0
    assert any(g in cs for g, cs in docs.nested.items())  # the self-loop


def test_fan_outs_are_heavy_tailed(docs: Docs) -> None:
    per_folder = sorted(Counter(docs.doc_parent.values()).values())
    assert per_folder[-1] >= 10 * per_folder[len(per_folder) // 2]
    children = sorted(Counter(docs.folder_parent.values()).values())
    assert children[-1] >= 5 * children[len(children) // 2]
    grants: Counter[str] = Counter(
        f"{t.resource_type}:{t.resource_id}"
        for t in docs.tuples
        if t.relation in ("viewer", "editor") and t.resource_type == "doc"
    )
    counts = sorted(grants.values())
    assert counts[-1] >= 10 * counts[len(counts) // 2]
    granted = Counter(
        t.subject_id for t in docs.tuples if t.resource_type != "group" and t.subject_relation
    )
    top = granted.most_common()
    assert top[0][1] >= 5 * top[len(top) // 2][1]  # a few popular groups


def test_wildcards_can_be_turned_off() -> None:
    tame = make_docs(OrgSpec(tuples=5_000, seed=2, shape="docs", wildcards=False))
    assert not any(t.is_wildcard for t in tame.tuples)
    assert tame.report.wildcards == 0


def test_the_group_config_reads_the_groups() -> None:
    config = Config.model_validate(tomllib.loads(config_toml(SPEC)))
    assert config.feeds("group", "member") == ("member",)
    assert config.feeds("group", "manager") == ()


# -- the sample names, by the oracle ------------------------------------------------


def test_deep_user_views_the_deep_doc_through_every_folder(
    docs: Docs, oracle: SchemaOracle
) -> None:
    r = docs.report
    assert r.deep_user and r.deep_doc
    assert oracle.check(r.deep_user, r.deep_doc, "view")
    top = docs.doc_parent[r.deep_doc]
    while top in docs.folder_parent:
        top = docs.folder_parent[top]
    assert parse_tuple(f"{top}#owner@{r.deep_user}") in set(docs.tuples)


def test_non_member_cannot_view_its_doc(docs: Docs, oracle: SchemaOracle) -> None:
    assert docs.report.non_member is not None
    user, doc = docs.report.non_member
    assert doc in docs.doc_parent and docs.depth(docs.doc_parent[doc]) >= 2
    assert any(t.subject_type == "user" and f"user:{t.subject_id}" == user for t in docs.tuples)
    for permission in ("view", "edit", "view_unbanned"):
        assert not oracle.check(user, doc, permission)
    assert oracle.objects("group", "member", user)  # a member of some groups all the same


def test_viewer_user_views_very_many_docs(docs: Docs, oracle: SchemaOracle) -> None:
    r = docs.report
    assert r.viewer_user is not None
    seen = oracle.objects("doc", "view", r.viewer_user)
    assert len(seen) >= r.viewer_docs >= r.docs // 20
    assert oracle.check(r.viewer_user, r.deep_doc or "", "view") in (True, False)


def test_largest_group_holds_every_user(docs: Docs, oracle: SchemaOracle) -> None:
    members = oracle.subjects(docs.report.largest_group, "member", "user")
    users = {f"user:{t.subject_id}" for t in docs.tuples if t.subject_type == "user"}
    assert members == users - {"user:*"}


# -- the org shape is unchanged ---------------------------------------------------------


def test_org_shape_is_unchanged_byte_for_byte() -> None:
    buf = io.BytesIO()
    report = generate(OrgSpec(tuples=30_000, seed=11, shape="org"), buf)
    assert hashlib.sha256(buf.getvalue()).hexdigest() == (
        "06959aa931d4648ff9e202997f7715442402831d522ae5fbdfcc2ce0d1247a8d"
    )
    default = io.BytesIO()
    generate(OrgSpec(tuples=30_000, seed=11), default)
    assert default.getvalue() == buf.getvalue()
    assert report.folders == report.docs == 0 and report.deep_doc is None


# -- the command ------------------------------------------------------------------------


def test_cli_writes_tuples_and_both_schemas(tmp_path: Path) -> None:
    out, zed, fga = tmp_path / "docs.txt", tmp_path / "docs.zed", tmp_path / "docs.fga"
    result = CliRunner().invoke(
        main,
        ["gen", "--shape", "docs", "-n", "3000", "--seed", "4", "--no-cycles", "--out",
         str(out), "--schema-out", str(zed), "--fga-out", str(fga), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tuples"] == 3000 == len(out.read_text().splitlines())
    assert report["spec"]["max_depth"] == 8 and report["cycles"] == 0
    assert report["deep_doc"] and report["viewer_user"] and report["non_member"]
    assert load_schema(zed).types == load_schema(fga).types
    text = CliRunner().invoke(main, ["gen", "--shape", "docs", "-n", "3000", "--out", str(out)])
    assert "deep doc" in text.stdout and "non-viewer" in text.stdout


def test_cli_refuses_schemas_for_the_org_and_org_options_for_docs(tmp_path: Path) -> None:
    out = tmp_path / "x.txt"
    result = CliRunner().invoke(
        main, ["gen", "-n", "1000", "--out", str(out), "--schema-out", str(tmp_path / "s.zed")]
    )
    assert result.exit_code == 1 and "--shape docs" in result.stderr
    result = CliRunner().invoke(
        main, ["gen", "--shape", "docs", "-n", "1000", "--out", str(out), "--no-rewrites"]
    )
    assert result.exit_code == 1 and "rewrites=False" in result.stderr
