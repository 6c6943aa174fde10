"""``leopard verify`` derives a schema's derived edges again from the stored tuples.

The derived edges (arrows ``parent->view``, computed ``view = viewer + edit``) and
their support counts are what the incremental layer keeps as tuples change; the other
checks hold the closures to them, so a derived edge left behind by its tuple (a
document keeping its former folder's viewers) was called sound. Each damage here is
made as a fault of the incremental layer would leave it, closures consistent, and
must be named; an index changed through the incremental layer, and compacted, stays
sound.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyroaring import BitMap
from support.damage import (
    arrow_tuples,
    base_dir,
    build_docs,
    copy_index,
    drop_member,
    group_id,
    make_delta,
    move_derived_edge,
    put,
    set_value,
    writable,
)

import leopard
from leopard.core.compact import compact
from leopard.core.incremental import DeltaWriter
from leopard.core.index import Index
from leopard.core.verify import LIMIT, verify_index
from leopard.model.names import parse_tuple
from leopard.store.layout import count_value, gkey, pair_key

TWO_ARROWS = """
definition user {}
definition folder {
  relation viewer: user
  permission view = viewer
}
definition doc {
  relation parent: folder
  relation shared: folder
  relation viewer: user
  permission view = viewer + parent->view + shared->view
}
"""


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    return build_docs(tmp_path_factory.mktemp("docs") / "idx")


@pytest.fixture
def index(docs: tuple[Path, list[str]], tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of the docs index, to damage."""
    path, lines = docs
    return copy_index(path, tmp_path / "idx"), lines


def test_a_sound_docs_index_verifies(docs: tuple[Path, list[str]]) -> None:
    report = verify_index(docs[0])
    assert report.ok, report.problems


def test_an_arrow_tuple_gone_with_its_derived_edges_left_is_named(
    index: tuple[Path, list[str]],
) -> None:
    """The reviewer's damage: ``doc:X#parent@folder:F`` out of g2m and m2g in the
    delta, the derived edges it fed kept: the document keeps the folder's viewers."""
    path, lines = index
    doc, folder = next(iter(arrow_tuples(lines).items()))
    assert verify_index(path).ok
    drop_member(path, f"{doc}#parent", folder)
    with Index(path) as ix:
        assert not ix.check(folder, f"{doc}#parent")
        viewers = set(ix.members_of(f"{folder}#view"))
        assert viewers and viewers <= set(ix.members_of(f"{doc}#view"))  # wrong answers
    lines_found = verify_index(path).problems
    expected = sorted(
        f"index at {path} is damaged: dchild key 0x{group_id(path, f'{doc}#{p}'):08x} in "
        f"{base_dir(path)}: {doc}#{p} -> {folder}#{p} (id {group_id(path, f'{folder}#{p}')}) "
        f"is stored, but nothing derives it: parent->{p} derives it only from a tuple "
        f"{doc}#parent@{folder}, which is not stored"
        for p in ("edit", "view")
    )
    assert sorted(lines_found) == expected


def test_a_derived_edge_nothing_derives_is_named(index: tuple[Path, list[str]]) -> None:
    path, lines = index
    parents = arrow_tuples(lines)
    doc, folder = next(iter(parents.items()))
    other = next(f for f in sorted(set(parents.values())) if f != folder)
    delta = move_derived_edge(path, f"{doc}#view", f"{other}#view", add=True)
    with Index(path) as ix:
        assert set(ix.members_of(f"{other}#view")) <= set(ix.members_of(f"{doc}#view"))
    p, c = group_id(path, f"{doc}#view"), group_id(path, f"{other}#view")
    assert verify_index(path).problems == [
        f"index at {path} is damaged: dchild key 0x{p:08x} in {delta}: {doc}#view -> "
        f"{other}#view (id {c}) is stored, but nothing derives it: parent->view derives "
        f"it only from a tuple {doc}#parent@{other}, which is not stored"
    ]


def test_a_derived_edge_missing_is_named(index: tuple[Path, list[str]]) -> None:
    """The derived edge taken away with its mirror and the closure made again: the
    document loses its folder's viewers, and only the derivation tells."""
    path, lines = index
    doc, folder = next(iter(arrow_tuples(lines).items()))
    delta = move_derived_edge(path, f"{doc}#view", f"{folder}#view", add=False)
    with Index(path) as ix:
        assert ix.check(folder, f"{doc}#parent")
        assert not set(ix.members_of(f"{folder}#view")) <= set(ix.members_of(f"{doc}#view"))
    p, c = group_id(path, f"{doc}#view"), group_id(path, f"{folder}#view")
    assert verify_index(path).problems == [
        f"index at {path} is damaged: dchild key 0x{p:08x} in {delta}: {doc}#view -> "
        f"{folder}#view (id {c}) is not stored, but the stored tuples derive it: "
        f"parent->view from the tuple {doc}#parent@{folder}"
    ]


def test_a_computed_feed_without_its_object_is_named(index: tuple[Path, list[str]]) -> None:
    """Every tuple of a document gone from the member families, its computed feeds'
    edges (``view -> viewer``, ``view -> edit``) left: each one is named."""
    path, lines = index
    own = {
        doc: [line for line in lines if line.startswith(f"{doc}#")] for doc in arrow_tuples(lines)
    }
    doc = next(d for d, its in own.items() if all("#" not in t.partition("@")[2] for t in its))
    for line in own[doc]:
        drop_member(path, f"{doc}#{parse_tuple(line).relation}", line.partition("@")[2])
    found = verify_index(path).problems
    assert any(
        f": {doc}#view -> {doc}#viewer (id " in line
        and line.endswith(f"viewer derives it only while {doc} has a tuple, and it has none")
        for line in found
    ), found
    assert all("nothing derives it" in line for line in found), found


@pytest.fixture
def two_arrows(tmp_path: Path) -> Path:
    schema = tmp_path / "two.zed"
    schema.write_text(TWO_ARROWS)
    path = tmp_path / "idx"
    lines = ["folder:f#viewer@user:ann", "doc:d#parent@folder:f", "doc:d#shared@folder:f"]
    leopard.build_index([lines], path, schema=schema)
    return path


@pytest.mark.parametrize(
    ("value", "stored"),
    [(count_value(3), "a count of 3"), (b"", "no count (1)")],
    ids=["count 3", "no entry"],
)
def test_a_wrong_support_count_is_named(two_arrows: Path, value: bytes, stored: str) -> None:
    """Two arrows derive ``doc:d#view -> folder:f#view``: its count is 2, and a count
    of 3, or none (1: the edge would go with the first of its tuples), is named."""
    path = two_arrows
    assert verify_index(path).ok
    p, c = group_id(path, "doc:d#view"), group_id(path, "folder:f#view")
    key = pair_key(p, c)
    delta = make_delta(path)
    put(delta, "dsupport", key, value)
    assert verify_index(path).problems == [
        f"index at {path} is damaged: dsupport key 0x{key.hex()} in {delta}: doc:d#view -> "
        f"folder:f#view has {stored}, yet 2 feeds derive it: parent->view from the tuple "
        "doc:d#parent@folder:f, shared->view from the tuple doc:d#shared@folder:f"
    ]


def test_many_findings_are_listed_to_the_limit_and_counted(index: tuple[Path, list[str]]) -> None:
    path, lines = index
    parents = arrow_tuples(lines)
    assert len(parents) > LIMIT
    with Index(path) as ix:
        r = ix.reader
        dchild = {g: r.bitmap("dchild", g) for g in range(r.group_count())}
    empty = set_value(BitMap())
    with writable(make_delta(path)) as db:  # every derived edge gone (closures left:
        batch = db.batch()  # they are told too)
        for gid, kids in dchild.items():
            if kids:
                batch.put("dchild", gkey(gid), empty)
        db.write(batch)
    found = verify_index(path).problems
    listed = [line for line in found if "is not stored, but the stored tuples derive it" in line]
    assert len(listed) == LIMIT
    assert any(line.endswith("more findings in dchild like the ones above") for line in found)


# -- sound through the incremental layer ------------------------------------------------


def _apply(path: Path, *batches: list[tuple[str, str]]) -> None:
    """Each batch applied, and the index verified sound after each."""
    with Index(path) as ix:
        writer = DeltaWriter(ix.reader)
        try:
            for batch in batches:
                writer.apply([(op, parse_tuple(t)) for op, t in batch])
                report = verify_index(path)
                assert report.ok, (batch, report.problems)
        finally:
            writer.close()


def test_a_docs_index_changed_through_the_incremental_layer_is_sound(
    index: tuple[Path, list[str]],
) -> None:
    path, lines = index
    parents = arrow_tuples(lines)
    docs = list(parents)
    folders = sorted(set(parents.values()))
    nested = [line for line in lines if line.startswith("folder:") and "#parent@" in line]
    moved, _, old = nested[0].partition("#parent@")
    new = next(f for f in folders if f not in (moved, old))
    lonely = docs[1]  # every tuple of it deleted, then one added again
    own = [line for line in lines if line.startswith(f"{lonely}#")]
    _apply(
        path,
        # arrow tuples added: a second folder for a document, a new document
        [("touch", f"{docs[0]}#parent@{new}"), ("touch", f"doc:new1#parent@{folders[0]}")],
        # an arrow tuple removed, the document keeping its other tuples
        [("delete", f"{docs[0]}#parent@{parents[docs[0]]}")],
        # a folder moved under another one
        [("delete", nested[0]), ("touch", f"{moved}#parent@{new}")],
        # a computed feed's object losing its last tuple, then one again
        [("delete", t) for t in own],
        [("touch", own[0])],
        # added and removed in one batch, and a tuple already there
        [("touch", "doc:new2#editor@user:u000001"), ("delete", "doc:new2#editor@user:u000001")],
        [("touch", f"{docs[2]}#parent@{parents[docs[2]]}")],
    )
    compact(path)
    report = verify_index(path)
    assert report.ok, report.problems
    _apply(
        path,
        [("delete", f"doc:new1#parent@{folders[0]}"), ("touch", f"{docs[3]}#viewer@user:u000002")],
    )


def test_support_counts_kept_by_the_incremental_layer_are_sound(two_arrows: Path) -> None:
    path = two_arrows
    _apply(
        path,
        [("delete", "doc:d#shared@folder:f")],  # a count of 2 down to 1 (no entry)
        [("touch", "doc:d#shared@folder:f")],  # 2 again
        [("delete", "doc:d#shared@folder:f"), ("delete", "doc:d#parent@folder:f")],
        [("touch", "doc:d#shared@folder:f"), ("touch", "doc:d#parent@folder:f")],
    )
    compact(path)
    report = verify_index(path)
    assert report.ok, report.problems
    with Index(path) as ix:
        assert ix.check("user:ann", "doc:d#view")
