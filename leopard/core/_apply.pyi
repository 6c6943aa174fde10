"""Types of the compiled loops of applying member changes (_apply.c; see batchwork.py)."""

from collections.abc import Callable
from typing import Any

from pyroaring import BitMap

def member_rows(
    work: list[Any],
    m2g: dict[str, tuple[int, BitMap]],
    base_ids: dict[str, int],
    overlay_ids: dict[str, int],
    new_ids: dict[str, int],
    ensure: Callable[[str], int],
    new_subjects: dict[int, str],
    next_subject: int,
    bitmap: type[BitMap],
    /,
) -> tuple[list[Any], list[bytes], int]: ...
def flip_rows(
    rows: list[Any],
    support: dict[bytes, int],
    mask_of: Callable[[bytes, bool], int],
    sets: dict[tuple[str, int], BitMap],
    take: Callable[[str, int], BitMap],
    dirty: set[tuple[str, int]],
    m2g_dirty: set[str],
    /,
) -> list[Any]: ...
