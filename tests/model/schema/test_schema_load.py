"""Tests of load_schema: the dialect by extension, and files that cannot be read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from leopard.errors import InvalidSchema
from leopard.model.schema import load_schema

DATA = Path(__file__).parent / "data"


def load_error(path: Path) -> str:
    with pytest.raises(InvalidSchema) as info:
        load_schema(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("name", "dialect"),
    [("document.zed", "spicedb"), ("github.fga", "openfga"), ("github.json", "openfga")],
)
def test_the_extension_picks_the_dialect(name: str, dialect: str, tmp_path: Path) -> None:
    schema = load_schema(DATA / name)
    assert schema.dialect == dialect and schema.filename == str(DATA / name)
    upper = tmp_path / name.replace(".", "_copy.").upper()
    upper.write_bytes((DATA / name).read_bytes())
    assert load_schema(str(upper)) == schema  # a str path, an upper-case extension


def test_an_unknown_extension_names_the_accepted_ones(tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text("definition user {}\n")
    assert load_error(path) == (
        f"{path}: unknown schema extension '.yaml'; expected one of .zed, .fga, .json"
    )
    assert "unknown schema extension '(none)'" in load_error(tmp_path / "schema")


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.zed"
    assert load_error(missing) == f"cannot read schema {str(missing)!r}: No such file or directory"
    folder = tmp_path / "folder.fga"
    folder.mkdir()
    assert load_error(folder) == f"cannot read schema {str(folder)!r}: Is a directory"
    binary = tmp_path / "binary.json"
    binary.write_bytes(b'{"schema_version": "\xff"}')
    assert load_error(binary) == f"{binary}: not UTF-8 text (byte 20)"


def test_a_parse_error_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.zed"
    path.write_text("definition user {}\ndefinition doc {\n  relation owner: usr\n}\n")
    assert load_error(path) == (
        f"{path}:3:19: relation 'owner' of 'doc': subject type 'usr' is not defined"
    )


def _nested_json(depth: int) -> str:
    userset = '{"this": {}}'
    for _ in range(depth):
        userset = '{"union": {"child": [' + userset + ', {"this": {}}]}}'
    return (
        '{"schema_version": "1.1", "type_definitions": [{"type": "user"}, {"type": "doc", '
        '"relations": {"viewer": ' + userset + '}, "metadata": {"relations": {"viewer": '
        '{"directly_related_user_types": [{"type": "user"}]}}}}]}'
    )


def _nested_zed(depth: int) -> str:
    return (
        "definition user {}\ndefinition doc {\n  relation viewer: user\n"
        f"  permission view = {'(' * depth}viewer{')' * depth}\n}}\n"
    )


def _nested_fga(depth: int) -> str:
    return (
        "model\n  schema 1.1\ntype user\ntype doc\n  relations\n    define viewer: [user]\n"
        f"    define view: {'(' * depth}viewer{')' * depth}\n"
    )


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("deep.zed", _nested_zed, ":4:121: parentheses nested more than 100 deep"),
        ("deep.fga", _nested_fga, ":7:118: parentheses nested more than 100 deep"),
        ("deep.json", _nested_json, ": type_definitions[1].relations.viewer.union.child[0]"),
    ],
)
def test_rewrites_nested_past_the_limit_are_refused_with_their_place(
    name: str, text: Callable[[int], str], where: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_text(text(100))
    load_schema(path)  # as deep as allowed: read
    path.write_text(text(101))
    assert load_error(path).startswith(f"{path}{where}")
    assert load_error(path).endswith("nested more than 100 deep")
    path.write_text(text(5000))  # beyond Python's recursion limit: refused all the same
    deepest = load_error(path)
    assert deepest.startswith(f"{path}{where}") or deepest == (
        f"{path}: JSON arrays or objects nested too deeply"  # too deep for the JSON reader
    )
