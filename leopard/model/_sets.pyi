"""Types of the compiled codec of stored sets (_sets.c; see setcodec.py)."""

from collections.abc import Callable
from typing import Any

from pyroaring import BitMap

def pack(raw: bytes, /) -> bytes: ...
def unpack(raw: bytes, start: int = 0, /) -> bytes: ...
def load(raw: bytes, start: int = 0, /) -> BitMap: ...
def set_deserialize(fn: Callable[[bytes], BitMap], /) -> None: ...
def held_meets(
    subjects: dict[bytes, Any],
    reaches: dict[str, BitMap],
    wildcards: dict[str, BitMap | None],
    subject: object,
    group: object,
    /,
) -> bool | None: ...
