"""The lockless path of ``Index.check`` asked alone: ``held_meets`` on what the index
holds in memory after ``warm()`` (None where it leaves the pair to the whole path)."""

from __future__ import annotations

from leopard.core.index import Index
from leopard.model.setcodec import held_meets


def held(ix: Index, subject: object, group: object) -> bool | None:
    c = ix._c
    assert held_meets is not None, "the compiled set codec is not installed"
    assert c.subjects is not None, "warm() first"
    return held_meets(c, ix.reader.epoch, subject, group)
