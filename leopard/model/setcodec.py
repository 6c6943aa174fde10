"""How a set of ids is stored: roaring, or the compact form when that is smaller.

Every set value of the index (a subject's direct groups, a closure, a set's members,
an edge family's row) is one of two forms, told apart by the first byte:

* the Roaring portable format, as ``BitMap.serialize`` writes it (first byte 0x3A or
  0x3B: the low byte of its cookie);
* the compact form: the byte 0x01, then the ids in ascending order as LEB128 varints,
  the first id itself and each later one as its distance from the one before less one.

Writers store a set compact when that is fewer bytes (``pack``): a subject's ten
groups spread over as many roaring containers, 8 bytes of header each, and the
depth-first ids of a closure leave gaps that an array container stores in 2 bytes and
a varint in 1 (``bench/sizes.py`` prints each family's bytes per tuple,
``bench/codec.py`` both forms' sizes and read times). Readers take either
(``load``). The work is done by the compiled ``leopard.model._sets`` (setup.py); where
it could not be built the same bytes are read and written here in Python, slower:
``COMPILED`` says which.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pyroaring import BitMap

__all__ = ["COMPILED", "SMALL_IDS", "TAG", "compact_form", "held_meets", "load", "pack", "unpack"]

TAG = 0x01  # first byte of the compact form

try:
    import leopard.model._sets as _c
except ImportError:  # the extension was not compiled (setup.py: optional)
    _c = None  # type: ignore[assignment]

COMPILED = _c is not None

#: ``held_meets(cache, epoch, subject, group)``: a check answered from the sets a
#: ``CachedSets`` holds in memory after ``warm()``, or None when it does not hold all
#: the answer needs (``Index.check``; _sets.c says exactly what it reads and keeps).
#: None where the module is not compiled: there every check takes the index's lock.
held_meets: Callable[..., bool | None] | None = _c.held_meets if _c is not None else None
#: ``held_meets`` reads a value held as stored in place, each time, when it holds at
#: most this many ids; a larger one it deserializes once and holds (0: not compiled)
SMALL_IDS: int = getattr(_c, "SMALL_IDS", 0)


def compact_form(ids: Iterable[int]) -> bytes:
    """The compact form of ascending ``ids``, whatever its size."""
    out = bytearray((TAG,))
    prev = -1
    for v in ids:
        x = v - prev - 1 if prev >= 0 else v
        prev = v
        while x >= 0x80:
            out.append((x & 0x7F) | 0x80)
            x >>= 7
        out.append(x)
    return bytes(out)


def _py_pack(raw: bytes) -> bytes:
    try:
        ids = BitMap.deserialize(raw)
    except (ValueError, IndexError):
        raise ValueError(f"not a roaring bitmap ({len(raw)} bytes)") from None
    out = compact_form(ids)
    return out if len(out) < len(raw) else raw


def _py_ids(raw: bytes, start: int) -> list[int]:
    ids: list[int] = []
    pos, end = start + 1, len(raw)
    prev = -1
    while pos < end:
        x = shift = 0
        while True:
            if pos >= end:
                raise ValueError(f"compact set ends inside an id ({end - start} bytes)")
            b = raw[pos]
            pos += 1
            x |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 28:
                raise ValueError(f"compact set has an id longer than 5 bytes ({end - start} bytes)")
        v = x if prev < 0 else prev + x + 1
        if v > 0xFFFFFFFF:
            raise ValueError(f"compact set has an id above 2**32 - 1 ({end - start} bytes)")
        ids.append(v)
        prev = v
    return ids


def _py_unpack(raw: bytes, start: int = 0) -> bytes:
    if start < 0 or start > len(raw):
        raise ValueError(f"no set at byte {start} of {len(raw)}")
    if start == len(raw) or raw[start] != TAG:
        return raw if start == 0 else raw[start:]
    return BitMap(_py_ids(raw, start)).serialize()


def _py_load(raw: bytes, start: int = 0) -> BitMap:
    if start < 0 or start > len(raw):
        raise ValueError(f"no set at byte {start} of {len(raw)}")
    if start < len(raw) and raw[start] == TAG:
        return BitMap(_py_ids(raw, start))
    return BitMap.deserialize(raw if start == 0 else raw[start:])


pack: Callable[[bytes], bytes]
unpack: Callable[..., bytes]
load: Callable[..., BitMap]
if _c is not None:
    _c.set_deserialize(BitMap.deserialize)
    pack, unpack, load = _c.pack, _c.unpack, _c.load
else:
    pack, unpack, load = _py_pack, _py_unpack, _py_load
