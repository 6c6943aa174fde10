"""Tests of the set configuration (leopard.model.config).

The default (every namespace's ``member``, fed by ``member``), explicit sets with
union rewrites, a stored relation feeding two sets, and ``load_config`` on TOML files:
every way a file can be wrong must give an ``InvalidConfig`` whose one-line message
names the file and the key (``sets[0].relatoin``) and says what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from leopard.errors import InvalidConfig, LeopardError
from leopard.model.config import DEFAULT_RELATION, Config, SetConfig, load_config


def write(tmp_path: Path, text: str | bytes, name: str = "sets.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def config_error(tmp_path: Path, text: str | bytes) -> str:
    path = write(tmp_path, text)
    with pytest.raises(InvalidConfig) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg
    assert "\n" not in msg
    return msg


REWRITE = """
[[sets]]
namespace = "acme/group"
relation = "member"                  # the name queries use
from = ["direct_member", "manager"]  # stored relations that feed it

[[sets]]
namespace = "acme/group"
relation = "admin"
from = ["manager"]

[[sets]]
namespace = "team"
relation = "member"
"""


# -- semantics ------------------------------------------------------------------------------


def test_default_config() -> None:
    cfg = Config()
    assert cfg.is_default
    assert DEFAULT_RELATION == "member"
    assert load_config(None) == cfg
    # every namespace's member relation is a set fed by member
    for ns in ("group", "acme/group", "anything"):
        assert cfg.feeds(ns, "member") == ("member",)
        assert cfg.feeds(ns, "owner") == ()
        assert cfg.feeds(ns, "direct_member") == ()
        assert cfg.is_set(ns, "member")
        assert not cfg.is_set(ns, "owner")
        assert cfg.sets_of(ns) == ("member",)
    assert list(cfg.feed_pairs()) == []


def test_explicit_sets_with_union_rewrites(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, REWRITE))
    assert not cfg.is_default
    assert cfg.feeds("acme/group", "direct_member") == ("member",)
    # one stored relation feeding two sets
    assert sorted(cfg.feeds("acme/group", "manager")) == ["admin", "member"]
    # a set's own name is not a source unless listed in 'from'
    assert cfg.feeds("acme/group", "member") == ()
    assert cfg.feeds("acme/group", "admin") == ()
    # no 'from': fed by its own relation
    assert cfg.feeds("team", "member") == ("member",)
    # namespaces are matched whole: no tenant-prefix guessing, no default left over
    assert cfg.feeds("group", "member") == ()
    assert cfg.feeds("acme/team", "member") == ()
    assert cfg.is_set("acme/group", "member") and cfg.is_set("acme/group", "admin")
    assert not cfg.is_set("acme/group", "manager")
    assert not cfg.is_set("group", "member")
    assert cfg.sets_of("acme/group") == ("member", "admin")
    assert cfg.sets_of("team") == ("member",)
    assert cfg.sets_of("user") == ()
    assert sorted(cfg.feed_pairs()) == [
        ("acme/group", "direct_member", "member"),
        ("acme/group", "manager", "admin"),
        ("acme/group", "manager", "member"),
        ("team", "member", "member"),
    ]


def test_set_sources() -> None:
    assert SetConfig(namespace="group", relation="member").sources == ["member"]
    rewritten = SetConfig.model_validate(
        {"namespace": "group", "relation": "member", "from": ["a", "b"]}
    )
    assert rewritten.sources == ["a", "b"]
    # populate_by_name: the Python name works too
    assert SetConfig(namespace="group", relation="member", feeds_from=["x"]).sources == ["x"]


def test_config_is_frozen() -> None:
    cfg = Config(sets=[SetConfig(namespace="group", relation="member")])
    with pytest.raises(ValueError):
        cfg.sets = None  # type: ignore[misc]


def test_json_round_trip(tmp_path: Path) -> None:
    for cfg in (Config(), load_config(write(tmp_path, REWRITE))):
        again = Config.from_json(cfg.to_json())
        assert again == cfg
        assert again.to_json() == cfg.to_json()
        # the lookups are rebuilt, not only the fields
        for ns in ("acme/group", "team", "group"):
            for rel in ("member", "manager", "direct_member", "admin"):
                assert again.feeds(ns, rel) == cfg.feeds(ns, rel)
                assert again.is_set(ns, rel) == cfg.is_set(ns, rel)
            assert again.sets_of(ns) == cfg.sets_of(ns)
    assert Config().to_json() == "{}"
    assert '"from": ["direct_member", "manager"]' in load_config(write(tmp_path, REWRITE)).to_json()


def test_from_json_validates() -> None:
    with pytest.raises(ValueError):
        Config.from_json('{"sets": [{"namespace": "gr@up", "relation": "member"}]}')


# -- load_config: valid files ----------------------------------------------------------------


def test_load_the_readme_example(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[sets]]\nnamespace = "acme/group"\nrelation = "member"\n'
        'from = ["direct_member", "manager"]\n',
    )
    cfg = load_config(str(path))  # str and Path both work
    assert cfg == load_config(path)
    assert cfg.sets == [
        SetConfig(
            namespace="acme/group", relation="member", feeds_from=["direct_member", "manager"]
        )
    ]


def test_empty_file_is_the_default(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).is_default
    assert load_config(write(tmp_path, "# only a comment\n")).is_default


# -- load_config: errors ----------------------------------------------------------------------


def test_unreadable_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(InvalidConfig) as info:
        load_config(missing)
    assert str(info.value) == f"cannot read config {str(missing)!r}: No such file or directory"
    with pytest.raises(InvalidConfig, match="Is a directory"):
        load_config(tmp_path)


def test_invalid_toml(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "[[sets]\nnamespace =")
    assert "not valid TOML" in msg and "line 1" in msg


def test_not_utf8(tmp_path: Path) -> None:
    assert "not valid TOML" in config_error(tmp_path, b"\xff\xfe garbage")


def test_a_byte_order_mark_is_read_past(tmp_path: Path) -> None:
    """As in snapshots: an editor that writes one does not make the file unreadable."""
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'[[sets]]\nnamespace = "team"\nrelation = "member"\n')
    config = load_config(path)
    assert config.is_set("team", "member") and not config.is_set("group", "member")


def test_unknown_key_names_its_location(tmp_path: Path) -> None:
    msg = config_error(tmp_path, '[[sets]]\nnamespace = "group"\nrelatoin = "member"\n')
    assert "sets[0].relatoin: is not a known key" in msg
    assert "namespace, relation, from" in msg
    # the required key it replaced is reported too
    assert "sets[0].relation: Field required" in msg


def test_unknown_key_in_a_later_set(tmp_path: Path) -> None:
    text = (
        '[[sets]]\nnamespace = "group"\nrelation = "member"\n'
        '[[sets]]\nnamespace = "team"\nrelation = "member"\nform = ["x"]\n'
    )
    msg = config_error(tmp_path, text)
    assert "sets[1].form: is not a known key" in msg
    assert "sets[0]" not in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert "set: is not a known key" in config_error(tmp_path, 'set = "x"\n')


def test_missing_key(tmp_path: Path) -> None:
    msg = config_error(tmp_path, '[[sets]]\nrelation = "member"\n')
    assert "sets[0].namespace: Field required" in msg


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            'namespace = "gr@up"\nrelation = "member"',
            "sets[0].namespace: namespace 'gr@up' has the character '@'; namespaces hold no",
        ),
        (
            'namespace = "acme/gro up"\nrelation = "member"',
            "sets[0].namespace: namespace 'acme/gro up' has whitespace",
        ),
        (
            f'namespace = "{"g" * 255}"\nrelation = "member"',
            "sets[0].namespace: namespace of 255 characters is over the limit of 254 (OpenFGA's)",
        ),
        ('namespace = ""\nrelation = "member"', "sets[0].namespace: namespace is empty"),
        ('namespace = 3\nrelation = "member"', "sets[0].namespace: Input should be a valid string"),
        ('namespace = "group"\nrelation = "mem ber"', "sets[0].relation: relation 'mem ber' has"),
        (
            'namespace = "group"\nrelation = "mem#ber"',
            "sets[0].relation: relation 'mem#ber' has the character '#'",
        ),
        (
            'namespace = "group"\nrelation = "..."',
            "sets[0].relation: relation '...' is reserved: '#...' means no relation",
        ),
        (
            'namespace = "group"\nrelation = "member"\nfrom = ["ok", "Not:ok"]',
            "sets[0].from: relation 'Not:ok' has the character ':'",
        ),
        (
            f'namespace = "group"\nrelation = "member"\nfrom = ["{"R" * 51}"]',
            "sets[0].from: relation of 51 characters is over the limit of 50 (OpenFGA's)",
        ),
        (
            'namespace = "group"\nrelation = "member"\nfrom = "manager"',
            "sets[0].from: Input should be a valid list",
        ),
    ],
)
def test_bad_values_name_the_key_and_value(tmp_path: Path, body: str, fragment: str) -> None:
    assert fragment in config_error(tmp_path, f"[[sets]]\n{body}\n")


def test_names_as_wide_as_the_peers_allow(tmp_path: Path) -> None:
    # OpenFGA's upper case, '-' and '.', and SpiceDB's 64-character relations
    long_relation = "r" * 64
    path = write(
        tmp_path,
        '[[sets]]\nnamespace = "Acme-Corp/Document.v2"\nrelation = "Can-View"\n'
        f'from = ["Direct.Member", "{long_relation}", "\u00e9diteur"]\n',
    )
    cfg = load_config(path)
    assert cfg.is_set("Acme-Corp/Document.v2", "Can-View")
    assert cfg.feeds("Acme-Corp/Document.v2", "Direct.Member") == ("Can-View",)
    assert cfg.feeds("Acme-Corp/Document.v2", long_relation) == ("Can-View",)
    assert cfg.feeds("Acme-Corp/Document.v2", "\u00e9diteur") == ("Can-View",)


def test_empty_from(tmp_path: Path) -> None:
    msg = config_error(tmp_path, '[[sets]]\nnamespace = "group"\nrelation = "member"\nfrom = []\n')
    assert "sets[0].from: must name at least one stored relation" in msg


def test_duplicate_set(tmp_path: Path) -> None:
    text = (
        '[[sets]]\nnamespace = "group"\nrelation = "member"\n'
        '[[sets]]\nnamespace = "group"\nrelation = "member"\nfrom = ["manager"]\n'
    )
    assert "sets: the set group#member is listed twice" in config_error(tmp_path, text)


def test_same_relation_in_two_namespaces_is_not_a_duplicate(tmp_path: Path) -> None:
    text = (
        '[[sets]]\nnamespace = "group"\nrelation = "member"\n'
        '[[sets]]\nnamespace = "team"\nrelation = "member"\n'
    )
    assert load_config(write(tmp_path, text)).sets_of("team") == ("member",)


def test_duplicate_source_relation(tmp_path: Path) -> None:
    # A relation listed twice in 'from' would feed the same set twice.
    text = '[[sets]]\nnamespace = "group"\nrelation = "member"\nfrom = ["manager", "manager"]\n'
    assert "sets[0].from: 'manager' is listed twice" in config_error(tmp_path, text)


def test_empty_sets_list(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "sets = []\n")
    assert "sets: must list at least one set" in msg


def test_sets_not_a_list(tmp_path: Path) -> None:
    assert "sets: Input should be a valid list" in config_error(tmp_path, 'sets = "group"\n')


def test_every_error_is_a_leopard_error(tmp_path: Path) -> None:
    with pytest.raises(LeopardError):
        load_config(write(tmp_path, "sets = []\n"))
    with pytest.raises(ValueError):
        load_config(write(tmp_path, "sets = []\n"))
