"""The on-disk format of an index: families, keys and value encodings, in one place.

An index directory holds generations and a symlink naming the live one (see
``leopard.store.generations``); each generation holds two RocksDB databases, the
``base`` written once by a build or a compaction and the ``delta`` of the incremental
layer. Both have the same column families (keys are raw bytes; group and subject ids
are 4-byte big-endian so that iteration follows id order; every set value is a
portable roaring bitmap)::

    default   base:  b"format" -> version, b"meta" -> JSON, b"groups" -> names
              delta: b"position" -> JSON, b"next_subject" and b"seq" -> decimal,
                     b"group:" + id -> name of a group first seen in the stream
    m2g       subject name -> 4-byte subject id + MEMBER2GROUP bitmap (direct groups)
    sname     subject id -> subject name
    g2g       group id -> GROUP2GROUP (descendants, itself included)
    g2a       group id -> GROUP2ANCESTOR (ancestors, itself included)
    g2m       group id -> GROUP2MEMBER (direct leaf members: subject ids)
    child     group id -> direct child groups
    parent    group id -> direct parent groups
    support   group id + b"g" + child group id, or group id + b"s" + subject id ->
              8-byte little-endian mask of the stored relations feeding that edge
              (only for sets fed by several relations: deleting one tuple must not
              drop an edge another relation still feeds; an edge with no entry is
              fed by the set's first relation alone; an empty value in the delta
              means "no entry")

Nothing else in the code spells a key or packs a value: this module is the format.
``FORMAT_VERSION`` changes whenever any of it does.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from pyroaring import BitMap

from leopard.errors import IndexNotFound, StorageError

__all__ = [
    "FORMAT_VERSION",
    "SET_FAMILIES",
    "FAMILIES",
    "FORMAT_KEY",
    "META_KEY",
    "GROUPS_KEY",
    "POSITION_KEY",
    "NEXT_SUBJECT_KEY",
    "SEQ_KEY",
    "NEW_GROUP_PREFIX",
    "gkey",
    "gid_of",
    "support_key",
    "split_support_key",
    "m2g_value",
    "split_m2g",
    "m2g_id",
    "m2g_groups",
    "mask_value",
    "mask_of",
    "encode_names",
    "decode_names",
    "encode_meta",
    "check_format",
    "decode_meta",
    "encode_int",
    "decode_int",
    "encode_position",
    "decode_position",
    "new_group_key",
]

FORMAT_VERSION = 1
SET_FAMILIES = ("m2g", "sname", "g2g", "g2a", "g2m", "child", "parent", "support")
FAMILIES = ("default", *SET_FAMILIES)

# keys of the default family
FORMAT_KEY = b"format"
META_KEY = b"meta"
GROUPS_KEY = b"groups"
POSITION_KEY = b"position"
NEXT_SUBJECT_KEY = b"next_subject"
SEQ_KEY = b"seq"
NEW_GROUP_PREFIX = b"group:"

_U32 = struct.Struct(">I")
gkey = _U32.pack
"""The key of a group or subject id: 4 bytes, big-endian."""


def gid_of(key: bytes) -> int:
    """The id of a group or subject key."""
    return int(_U32.unpack(key)[0])


def support_key(gid: int, nested: bool, other: int) -> bytes:
    """Key of the support mask of the edge from group ``gid`` to a group or subject."""
    return _U32.pack(gid) + (b"g" if nested else b"s") + _U32.pack(other)


def split_support_key(key: bytes) -> tuple[int, bool, int]:
    """``(group id, nested, other id)`` of a support key."""
    return _U32.unpack_from(key)[0], key[4:5] == b"g", _U32.unpack_from(key, 5)[0]


def m2g_value(sid: int, groups: BitMap) -> bytes:
    """The MEMBER2GROUP value of a subject: its id, then its direct groups."""
    return _U32.pack(sid) + groups.serialize()


def split_m2g(raw: bytes) -> tuple[int, BitMap]:
    """The id and direct groups stored in a MEMBER2GROUP value."""
    return _U32.unpack_from(raw)[0], BitMap.deserialize(raw[4:])


def m2g_id(raw: bytes) -> int:
    """Just the subject id of a MEMBER2GROUP value."""
    return int(_U32.unpack_from(raw)[0])


def m2g_groups(raw: bytes) -> BitMap:
    """Just the direct groups of a MEMBER2GROUP value."""
    return BitMap.deserialize(raw[4:])


def mask_value(mask: int) -> bytes:
    return mask.to_bytes(8, "little")


def mask_of(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


def encode_names(names: list[str]) -> bytes:
    """Group names in id order (names hold no newline: the grammar forbids whitespace)."""
    return "\n".join(names).encode()


def decode_names(raw: bytes | None) -> list[str]:
    return raw.decode().split("\n") if raw else []


def new_group_key(gid: int) -> bytes:
    return NEW_GROUP_PREFIX + _U32.pack(gid)


def encode_int(value: int) -> bytes:
    return str(int(value)).encode()


def decode_int(raw: bytes | None, default: int = 0) -> int:
    return int(raw.decode()) if raw else default


def encode_position(position: dict[str, int]) -> bytes:
    return json.dumps(position, sort_keys=True).encode()


def decode_position(raw: bytes | None) -> dict[str, int]:
    return json.loads(raw.decode()) if raw else {}


def encode_meta(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True).encode()


def check_format(raw: bytes | None, where: str) -> None:
    """Refuse a base without this Leopard's format version."""
    if raw is None:
        raise IndexNotFound(f"{where} is not a Leopard index (no format version)")
    version = int(raw.decode())
    if version != FORMAT_VERSION:
        raise StorageError(
            f"{where} has index format {version}; this Leopard reads format {FORMAT_VERSION} "
            "(rebuild the index with 'leopard build')"
        )


def decode_meta(raw: bytes | None) -> dict[str, Any]:
    return json.loads(raw.decode()) if raw else {}
