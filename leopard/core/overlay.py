"""The incremental layer in memory: the sets changed since the base, and how it is read.

A reader holds the whole incremental layer (``Overlay``) in memory; it is small by
construction, since compaction folds it into a new base past a threshold. It is read
from the generation's ``delta`` RocksDB when a reader opens or follows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leopard.store.generations import delta_of
from leopard.store.layout import (
    NEW_GROUP_PREFIX,
    NEXT_SUBJECT_KEY,
    POSITION_KEY,
    SEQ_KEY,
    SET_FAMILIES,
    SOURCE_STATE_KEY,
    BadValue,
    damaged,
    decode_int,
    decode_name,
    decode_position,
    decode_source_state,
    new_group_key,
)
from leopard.store.rocks import RocksDB, open_shared

__all__ = ["Overlay", "Updates", "open_delta", "load_overlay"]

#: the sets a batch replaced, by family and key (None: absent now)
Updates = dict[str, dict[bytes, bytes | None]]


class Overlay:
    """Sets changed since the base, as raw serialized bytes, by family and key.

    ``None`` as a value means "absent in the new state" (a subject with no groups
    left); a missing key means "unchanged, read the base".
    """

    def __init__(self) -> None:
        self.sets: dict[str, dict[bytes, bytes | None]] = {}
        self.group_names: list[str] = []  # groups added after the base, in id order
        self.group_ids: dict[str, int] = {}
        self.next_subject: int | None = None
        self.position: dict[str, int] = {}
        # the change source's resume state: "anchors" (the record applied last, per
        # partition) and "gaps" (partitions stopped where their log lost changes)
        self.source_state: dict[str, dict[str, Any]] = {}
        self.seq = 0

    def get(self, family: str, key: bytes) -> tuple[bool, bytes | None]:
        fam = self.sets.get(family)
        if fam is None or key not in fam:
            return False, None
        return True, fam[key]

    def size(self) -> int:
        return sum(len(f) for f in self.sets.values())


def open_delta(
    generation: Path, *, read_only: bool, secondary: str | None = None, strict: bool = False
) -> RocksDB | None:
    """The incremental layer's RocksDB of a generation (None if read-only and absent)."""
    path = delta_of(generation)
    if not read_only:
        return RocksDB(path, read_only=False, cache_bytes=64 << 20)
    return open_shared(
        path, "the incremental layer", cache_bytes=64 << 20, secondary=secondary, strict=strict
    )


def load_overlay(db: RocksDB, overlay: Overlay, *, index: Path, first_group: int) -> None:
    """Read a whole incremental layer into memory (its sets are checked when read); the
    names of groups added must name ids ``first_group`` on, one after another."""
    for family in SET_FAMILIES:
        fam = overlay.sets.setdefault(family, {})
        for key, value in db.family(family).items():
            fam[key] = value
    key, names = POSITION_KEY, list[str]()
    try:
        if (raw := db.get(key)) is not None:
            overlay.position = decode_position(raw)
        key = NEXT_SUBJECT_KEY
        if (raw := db.get(key)) is None and overlay.sets.get("sname"):
            # every batch writes it: without it the next new subject would take an id
            # a subject of the layer holds
            raise BadValue("it is missing, though the layer has added subjects")
        overlay.next_subject = None if raw is None else decode_int(raw)
        key = SEQ_KEY
        overlay.seq = decode_int(db.get(key))
        key = SOURCE_STATE_KEY
        if (raw := db.get(key)) is not None:
            overlay.source_state = decode_source_state(raw)
        for key, value in db.scan(NEW_GROUP_PREFIX):
            if key != new_group_key(first_group + len(names)):
                raise BadValue(f"the names of groups added skip group {first_group + len(names)}")
            names.append(decode_name(value))
    except BadValue as exc:
        raise damaged(index, db.where, "default", key, exc) from None
    overlay.group_names = names
