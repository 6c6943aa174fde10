"""Scratch directories of followers: removed at close, and swept once their owner died.

A reader following another process's writes (``Index.refresh`` on an index whose
incremental layer another process writes) opens a RocksDB secondary instance with a
scratch directory. A worker killed with SIGKILL never closes it; the next follower
started on the machine removes it, and never one whose owner still runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import leopard
from leopard.core.incremental import DeltaWriter
from leopard.core.layers import SetReader
from leopard.model.names import parse_tuple
from leopard.store.scratch import Scratch, sweep

PREFIX = "leopard-follow-"

FOLLOW = """
import sys, time
import leopard
with leopard.open_index(sys.argv[1]) as ix:
    ix.refresh()
    print("following", flush=True)
    time.sleep(600)
"""


def _ours() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob(PREFIX + "*"))


def test_a_killed_followers_scratch_is_swept_and_a_live_ones_is_not(tmp_path: Path) -> None:
    index = tmp_path / "ix"
    leopard.build_index([["group:eng#member@user:a"]], index)
    writer = DeltaWriter(SetReader.open(index))
    try:
        writer.apply([("touch", parse_tuple("group:eng#member@user:b"))], {"t:0": 1})
    finally:
        writer.reader.close()
        writer.close()
    before = _ours()
    children = [
        subprocess.Popen([sys.executable, "-c", FOLLOW, str(index)], stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == b"following\n"
        made = _ours() - before
        assert len(made) == 2  # one scratch directory each
        killed, alive = children
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(10)
        time.sleep(0.1)
        assert _ours() - before == made  # left behind by the killed one
        with leopard.open_index(index) as ix:
            ix.refresh()  # a new follower: it sweeps first
            assert ix.check("user:b", "group:eng")
            left = _ours() - before
            assert len(left) == 2  # the live child's, and this one's
            assert made & left and not made <= left
        assert _ours() - before == made & left  # closed: this one's removed too
    finally:
        for child in children:
            child.kill()
            child.wait(10)
            assert child.stdout is not None
            child.stdout.close()
    sweep(PREFIX)
    assert not (_ours() - before)


def test_a_scratch_directory_is_locked_until_removed() -> None:
    held = Scratch("leopard-test-scratch-")
    try:
        assert sweep("leopard-test-scratch-") == 0 and Path(held.path).is_dir()
    finally:
        held.remove()
    assert not Path(held.path).exists()
