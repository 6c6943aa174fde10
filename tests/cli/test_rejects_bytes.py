"""``leopard build --skip-invalid --rejects FILE`` writes each rejected line's bytes.

The rejects file is the input without its accepted lines, each rejected line after a
``#`` line with the reason: CRLF line ends, trailing spaces and bytes that are not
UTF-8 come out exactly as they went in. Runs as a real process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from leopard import open_index

GOOD = [b"group:eng#member@user:alice\n", b"group:eng#member@user:bob\r\n"]
BAD = [
    b"group:eng#member@user:crlf space \r\n",  # whitespace inside, CRLF end
    b"group:eng#member@user:trailing   \n",  # trailing spaces
    b"group:eng#member@user:\xff\xfe latin \xe9\r\n",  # not UTF-8
    b"group:eng#member\r\n",  # no subject
    b"  group:eng#member@user:x\x00y\n",  # leading blanks, a NUL
    b"group:eng#member@user:la st",  # the last line, no line end at all
]


def reasons_and_lines(data: bytes) -> tuple[list[bytes], list[bytes]]:
    lines = data.splitlines(keepends=True)
    return [x for x in lines if x.startswith(b"# ")], [x for x in lines if not x.startswith(b"#")]


def test_the_rejects_file_is_the_input_without_its_accepted_lines(tmp_path: Path) -> None:
    snap = tmp_path / "dump.txt"
    body = [GOOD[0], BAD[0], BAD[1], GOOD[1], BAD[2], BAD[3], BAD[4], BAD[5]]
    snap.write_bytes(b"".join(body))
    rejects = tmp_path / "rejects.txt"
    env = {k: v for k, v in os.environ.items() if k != "LEOPARD_INDEX"}
    proc = subprocess.run(
        [sys.executable, "-m", "leopard", "build", str(snap), "--index", str(tmp_path / "idx")]
        + ["--skip-invalid", "--rejects", str(rejects)],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()

    reasons, lines = reasons_and_lines(rejects.read_bytes())
    # exactly the rejected lines' bytes; the last one gets the line end it lacked
    assert lines == BAD[:-1] + [BAD[-1] + b"\n"]
    assert [r.split(b":")[1] for r in reasons] == [b"2", b"3", b"5", b"6", b"7", b"8"]
    assert b"not valid UTF-8" in reasons[2]
    # the rejects and the accepted lines make the input again
    assert sorted(lines + GOOD) == sorted(body[:-1] + [BAD[-1] + b"\n"])
    with open_index(tmp_path / "idx") as ix:
        assert ix.members_of("group:eng") == ["user:alice", "user:bob"]
