"""A rejected record keeps the bytes it was read from (``Reject.raw``), in every format.

``Reject.entry`` is what a rejects file holds for it: a ``#`` line with the reason,
then those bytes, so the file is the input without its accepted lines.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from ingest.snapshots import Reject, read_snapshots
from ingest.snapshots import text as snapshot_text


def rejects_of(path: Path, **kwargs: object) -> list[Reject]:
    out: list[Reject] = []
    for _ in read_snapshots([path], skip_invalid=True, on_reject=out.append, **kwargs):
        pass
    return out


TEXT_BAD = [
    b"group:a#member@user:b c\r\n",
    b"group:a#member@user:b   \n",
    b"group:a#member@user:\xff\xfe\r\n",
    b"group:a#mem\rber@user:e\n",
]


@pytest.mark.parametrize("compress", [False, True])
def test_text_rejects_keep_their_bytes(tmp_path: Path, compress: bool) -> None:
    data = b"group:a#member@user:ok\n" + b"".join(TEXT_BAD) + b"group:a#member@user:end x"
    path = tmp_path / "snap.txt"
    path.write_bytes(gzip.compress(data) if compress else data)
    rejects = rejects_of(path)
    assert [r.raw for r in rejects] == [*TEXT_BAD, b"group:a#member@user:end x"]
    # what a person reads is unchanged: the line without its end, decoded
    assert rejects[0].text == "group:a#member@user:b c"
    assert rejects[2].text == "group:a#member@user:\\xff\\xfe"


def test_the_fast_and_the_slow_path_keep_the_same_bytes() -> None:
    block = b"group:a#member@user:ok\r\n" + b"".join(TEXT_BAD) + b"bad tail"
    fast = snapshot_text._parse_block_fast(block)
    slow = snapshot_text._parse_block_slow(block)
    assert [b.raw for _, b in fast.bad] == [b.raw for _, b in slow.bad]
    assert [b.raw for _, b in fast.bad] == [*TEXT_BAD, b"bad tail"]


def test_csv_rejects_keep_their_bytes(tmp_path: Path) -> None:
    header = b"user_type,user_id,user_relation,relation,object_type,object_id\r\n"
    bad = [
        b"user,b c,,member,group,eng\r\n",
        b'user,"multi\r\nline",,member,group,eng\r\n',
        b"user,\xff,,member,group,eng\n",
        b"user,x,,member,group\r\n",
    ]
    path = tmp_path / "snap.csv"
    path.write_bytes(header + b"user,ok,,member,group,eng\r\n" + b"".join(bad))
    rejects = rejects_of(path)
    assert [r.raw for r in rejects] == bad
    assert [r.line for r in rejects] == [3, 4, 6, 7]


def test_jsonl_rejects_keep_their_bytes(tmp_path: Path) -> None:
    bad = [
        b'{"user": "user:b c", "relation": "member", "object": "group:eng"}  \r\n',
        b"not json\n",
        b'{"user": "user:\xff"}\r\n',
    ]
    path = tmp_path / "snap.jsonl"
    good = b'{"user": "user:ok", "relation": "member", "object": "group:eng"}\r\n'
    path.write_bytes(good + b"".join(bad))
    rejects = rejects_of(path)
    assert [r.raw for r in rejects] == bad
    # the text shown in messages has no line end, as before
    assert not rejects[1].text.endswith(("\n", "\r"))


def test_an_entry_is_the_reason_then_the_bytes() -> None:
    reject = Reject("snap.txt", 3, "x y", "'x y' is bad", b"x y \r\n")
    assert reject.entry() == b"# snap.txt:3: 'x y' is bad\nx y \r\n"
    # a reason over several lines stays one comment line; bytes not kept: the text
    multi = Reject("<memory>", 1, "caf\u00e9", "one\ntwo")
    assert multi.entry() == "# <memory>:1: one two\ncaf\u00e9\n".encode()
    # the raw bytes do not change what compares equal
    assert reject == Reject("snap.txt", 3, "x y", "'x y' is bad")
