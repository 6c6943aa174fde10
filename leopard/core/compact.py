"""Compaction: fold the incremental layer into a new base.

The current state (base overlaid with the incremental layer) is exported back into
the stored tuples it stands for, and those go through the ordinary build into a new
generation beside the live one, which is then swapped in. Reusing the build means a
compacted index is byte-for-byte the kind of index a fresh build makes: group ids
in depth-first order again, subject ids in name order again, support masks again.

Only readers are opened on the live generation, so a consumer and queries in other
processes keep going. The new base reflects the position the incremental layer had
when compaction read it; a running consumer notices the new generation, resumes
from that position and re-applies the few changes after it (changes are
idempotent per tuple, so that is harmless), and only then do its queries switch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
from pyroaring import BitMap

from leopard.core.build import BuildReport, build_from_batches
from leopard.core.layers import SetReader
from leopard.core.lifetime import die_with_parent
from leopard.core.tuples import tuple_batches
from leopard.errors import LeopardError
from leopard.store.generations import IndexDir
from leopard.store.layout import decode_name, gkey, mask_of

__all__ = ["compact", "export_batches", "start_compaction"]


def _subject_names(reader: SetReader) -> list[str]:
    names: list[str] = []
    for key, value in reader.base.family("sname").items():
        if key != gkey(len(names)):  # ids follow one another from 0
            reason = f"the subject names skip id {len(names)}"
            raise reader.damage("sname", key, reason, in_base=True)
        names.append(reader.decode("sname", key, value, decode_name, in_base=True))
    for sid in range(len(names), reader.next_subject()):
        names.append(reader.subject_name(sid))
    return names


def _support(reader: SetReader) -> dict[bytes, int]:
    masks = {
        k: reader.decode("support", k, v, mask_of, in_base=True)
        for k, v in reader.base.family("support").items()
    }
    for key, value in reader.overlay.sets.get("support", {}).items():
        mask = reader.mask(key, value)
        if mask is not None:
            masks[key] = mask
        else:
            masks.pop(key, None)
    return masks


def export_batches(reader: SetReader) -> Iterator[pa.Table]:
    """The stored tuples the current state stands for, as build batches."""
    n_groups = reader.group_count()
    masks = _support(reader)
    subjects = _subject_names(reader)

    def sets_of(family: str) -> Iterator[tuple[int, BitMap]]:
        return ((g, reader.bitmap(family, g)) for g in range(n_groups))

    group_names = reader.base_groups + reader.overlay.group_names
    yield from tuple_batches(reader.config, group_names, subjects, sets_of, masks)


def compact(
    path: str | Path,
    *,
    wait: bool | float = False,
    memory: int | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> BuildReport:
    """Fold the incremental layer of the index at ``path`` into a new base, swapped in.

    The directory's lock is taken before the live generation is read, so that a
    build cannot swap in a newer index meanwhile (which this one would then replace
    with an older state). ``wait`` is as for ``build_from_batches``: by default a
    build or compaction at work makes this one fail at once. ``memory`` is the
    build's budget in bytes (default: half the machine's); ``on_phase`` is called
    with the name of each of its phases as it ends.
    """
    index_dir = IndexDir(path)
    index_dir.current()  # IndexNotFound before anything is created
    index_dir.acquire(wait)
    try:
        reader = SetReader.open(path)
        try:
            position = dict(reader.position)
            batches = export_batches(reader)
            return build_from_batches(
                batches,
                index_dir,
                reader.config,
                position=position,
                source_state=reader.source_state,
                shard=reader.meta.get("shard"),
                memory=memory,
                on_phase=on_phase,
            )
        finally:
            reader.close()
    finally:
        index_dir.release()  # if the build did not get as far as letting it go


def start_compaction(path: str | Path) -> subprocess.Popen[bytes]:
    """Run ``compact(path)`` in a child process, which reports failures on stderr.

    Compaction is CPU-bound and pyroaring holds the GIL, so a thread would stall
    the caller (a consumer, queries); a process runs beside it. The child dies with
    its caller (``die_with_parent``): left running, it would swap in a base older than what
    the caller applied meanwhile, and readers with no consumer to catch it up would
    serve that older state once their grace period ends.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "leopard.core.compact", str(path), str(os.getpid())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )


if __name__ == "__main__":  # pragma: no cover - the child of start_compaction
    if len(sys.argv) > 2 and not die_with_parent(int(sys.argv[2])):
        sys.exit(f"compaction of {sys.argv[1]} not started: its caller ({sys.argv[2]}) is gone")
    try:
        compact(sys.argv[1])
    except LeopardError as exc:
        print(f"compaction of {sys.argv[1]} failed: {exc}", file=sys.stderr)
        sys.exit(1)
