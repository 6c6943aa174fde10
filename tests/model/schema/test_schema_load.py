"""Tests of load_schema: the dialect by extension, and files that cannot be read."""

from __future__ import annotations

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
