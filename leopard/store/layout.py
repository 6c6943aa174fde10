"""The on-disk format of an index: families, keys and value encodings, in one place.

An index directory holds generations and a symlink naming the live one (see
``leopard.store.generations``); each generation holds two RocksDB databases, the
``base`` written once by a build or a compaction and the ``delta`` of the incremental
layer. Both have the same column families (keys are raw bytes; group and subject ids
are 4-byte big-endian so that iteration follows id order; every set value is a set
of ids stored in one of two forms, the portable roaring bitmap or, where smaller, the
compact form of ``leopard.model.setcodec``: a 0x01 byte, then the ids as ascending
varint gaps (format 4; format 3 stored roaring alone))::

    default   base:  b"format" -> version, b"meta" -> JSON, b"groups" -> names,
                     b"checksum" -> JSON: the crc32 of each of those three values,
                     b"resource" -> bitmap of the ids of a schema's resource-tier
                     sets (absent without a schema: every set is a group)
              delta: b"position" -> JSON, b"next_subject" and b"seq" -> decimal,
                     b"group:" + id -> name of a group first seen in the stream,
                     b"source_state" -> JSON: the change source's resume state
                     (sections such as "anchors" and "gaps"; the base keeps it
                     in its metadata)
    m2g       subject name -> 4-byte subject id + MEMBER2GROUP bitmap (direct groups)
    sname     subject id -> subject name
    g2g       group id -> GROUP2GROUP (descendants, itself included)
    g2m       group id -> GROUP2MEMBER (direct leaf members: subject ids)
    child     group id -> direct child groups
    parent    group id -> direct parent groups
    support   group id + b"g" + child group id, or group id + b"s" + subject id ->
              8-byte little-endian mask of the stored relations feeding that edge
              (only for sets fed by several relations: deleting one tuple must not
              drop an edge another relation still feeds; an edge with no entry is
              fed by the set's first relation alone; an empty value in the delta
              means "no entry")
    dchild    group id -> child groups by a schema's computed or arrow feeds (derived
              from the stored tuples, kept apart from the edges tuples make directly)
    dparent   group id -> parent groups by those feeds
    dsupport  group id + child group id -> 4-byte big-endian count of the feeds that
              derive that edge, only where it is 2 or more (no entry: one, when the
              edge is in dchild); an empty value in the delta means "no entry"

Nothing else spells a key or packs a value (sets through ``setcodec``): this is the format.
``FORMAT_VERSION`` changes whenever any of it does in a way an older reader could not
follow. The checksum entry came later without a change of version: a base whose meta
names no checksum (``"checksum": "crc32"``) is read as before.

Damage is an error, never an answer: every decoder here refuses a value that does not
decode with ``BadValue`` (a ``ValueError`` saying why), which readers turn into a
``StorageError`` naming the family, the key and the database with ``damaged``. A value
absent (None) and a value empty (``b""``) differ: only the delta's support family
stores an empty value on purpose.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Sequence
from typing import Any

from pyroaring import BitMap

from leopard.errors import IndexNotFound, StorageError
from leopard.model.config import Config
from leopard.model.setcodec import load, pack

__all__ = [
    "FORMAT_VERSION",
    "SET_FAMILIES",
    "FAMILIES",
    "FORMAT_KEY",
    "META_KEY",
    "GROUPS_KEY",
    "RESOURCE_KEY",
    "CHECKSUM_KEY",
    "BASE_KEYS",
    "POSITION_KEY",
    "NEXT_SUBJECT_KEY",
    "SEQ_KEY",
    "SOURCE_STATE_KEY",
    "decode_source_state",
    "encode_source_state",
    "merge_source_state",
    "NEW_GROUP_PREFIX",
    "BadValue",
    "damaged",
    "key_text",
    "bitmap_reason",
    "decode_bitmap",
    "decode_name",
    "gkey",
    "gid_of",
    "support_key",
    "split_support_key",
    "pair_key",
    "split_pair_key",
    "count_value",
    "count_of",
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
    "base_header",
    "check_header",
    "encode_int",
    "decode_int",
    "encode_position",
    "decode_position",
    "new_group_key",
]

FORMAT_VERSION = 4
SET_FAMILIES = (
    "m2g",
    "sname",
    "g2g",
    "g2m",
    "child",
    "parent",
    "support",
    "dchild",
    "dparent",
    "dsupport",
)
FAMILIES = ("default", *SET_FAMILIES)

# keys of the default family
FORMAT_KEY = b"format"
META_KEY = b"meta"
GROUPS_KEY = b"groups"
RESOURCE_KEY = b"resource"  # base: ids of a schema's resource-tier sets (a bitmap)
CHECKSUM_KEY = b"checksum"
BASE_KEYS = (FORMAT_KEY, META_KEY, GROUPS_KEY, CHECKSUM_KEY)
POSITION_KEY = b"position"
NEXT_SUBJECT_KEY = b"next_subject"
SEQ_KEY = b"seq"
SOURCE_STATE_KEY = b"source_state"
NEW_GROUP_PREFIX = b"group:"

_U32 = struct.Struct(">I")
gkey = _U32.pack
"""The key of a group or subject id: 4 bytes, big-endian."""

_NAMED_KEYS = ("default", "m2g")  # families keyed by text; the others by packed ids


class BadValue(ValueError):
    """A stored value that does not decode; the message says why (``damaged`` says where).

    ``key`` is set when the decoder knows which key of the default family it read.
    """

    def __init__(self, reason: str, key: bytes | None = None) -> None:
        super().__init__(reason)
        self.key = key


def key_text(family: str, key: bytes) -> str:
    """A key as a person reads it: ``meta``, ``m2g key 'user:x'``, ``g2g key 0x0000002a``."""
    if family == "default":
        if key in BASE_KEYS or key in (POSITION_KEY, NEXT_SUBJECT_KEY, SEQ_KEY):
            return key.decode()
        if key.startswith(NEW_GROUP_PREFIX) and len(key) == len(NEW_GROUP_PREFIX) + 4:
            return f"name of group {_U32.unpack_from(key, len(NEW_GROUP_PREFIX))[0]}"
    if family in _NAMED_KEYS:
        try:
            return f"{family} key {key.decode()!r}"
        except UnicodeDecodeError:
            pass
    return f"{family} key 0x{key.hex()}"


def damaged(
    index: object, where: object, family: str, key: bytes | None, reason: object
) -> StorageError:
    """The ``StorageError`` of a damaged value: ``index at I is damaged: g2g key 0x0000002a
    in I/gen-000001/base: value is not a stored set (...)``."""
    what = f"{key_text(family, key)} in {where}" if key is not None else str(where)
    return StorageError(f"index at {index} is damaged: {what}: {reason}")


def bitmap_reason(raw: bytes, exc: BaseException | None = None) -> str:
    """Why ``raw`` is no set value (for a value that failed to deserialize)."""
    if not raw:
        return "value is empty (a set is never stored as no bytes)"
    return f"value is not a stored set ({exc or 'does not decode'}, {len(raw)} bytes)"


def decode_bitmap(raw: bytes) -> BitMap:
    """A set value (either form: ``setcodec``); BadValue when it is empty or does not
    decode."""
    try:
        return load(raw)
    except Exception as exc:  # pyroaring raises ValueError, IndexError (empty input)
        raise BadValue(bitmap_reason(raw, exc)) from None


def decode_name(raw: bytes) -> str:
    """A subject or group name value; BadValue when empty or not UTF-8."""
    if raw:
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise BadValue(f"name is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    raise BadValue("name is empty")


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
    """The MEMBER2GROUP value of a subject: its id, then its direct groups (either
    form of a set, ``setcodec``)."""
    return _U32.pack(sid) + pack(groups.serialize())


def _m2g_reason(raw: bytes, exc: BaseException) -> str:
    if len(raw) < 4:
        return f"value is {len(raw)} bytes, too short for a subject id (4 bytes)"
    return "groups " + bitmap_reason(raw[4:], exc)


def split_m2g(raw: bytes) -> tuple[int, BitMap]:
    """The id and direct groups stored in a MEMBER2GROUP value; BadValue if damaged."""
    try:
        return _U32.unpack_from(raw)[0], load(raw, 4)
    except Exception as exc:
        raise BadValue(_m2g_reason(raw, exc)) from None


def m2g_id(raw: bytes) -> int:
    """Just the subject id of a MEMBER2GROUP value; BadValue if too short."""
    if len(raw) < 4:
        raise BadValue(_m2g_reason(raw, ValueError()))
    return int(_U32.unpack_from(raw)[0])


def m2g_groups(raw: bytes) -> BitMap:
    """Just the direct groups of a MEMBER2GROUP value; BadValue if damaged.

    (A value shorter than its 4-byte id leaves no bytes to deserialize, which fails.)
    """
    try:
        return load(raw, 4)
    except Exception as exc:
        raise BadValue(_m2g_reason(raw, exc)) from None


def mask_value(mask: int) -> bytes:
    return mask.to_bytes(8, "little")


def pair_key(parent: int, child: int) -> bytes:
    """Key of a derived edge's support count."""
    return _U32.pack(parent) + _U32.pack(child)


def split_pair_key(key: bytes) -> tuple[int, int]:
    return _U32.unpack_from(key)[0], _U32.unpack_from(key, 4)[0]


def count_value(count: int) -> bytes:
    return _U32.pack(count)


def count_of(raw: bytes) -> int:
    """A derived edge's support count; BadValue unless 4 bytes holding 2 or more."""
    if len(raw) != 4 or _U32.unpack(raw)[0] < 2:
        reason = f"{len(raw)} bytes, not 4" if len(raw) != 4 else "a count under 2"
        raise BadValue(f"derived support is {reason}")
    return int(_U32.unpack(raw)[0])


def mask_of(raw: bytes) -> int:
    """A support mask; BadValue unless 8 bytes with a bit set."""
    if len(raw) != 8 or raw == bytes(8):
        reason = "no relation bit set" if len(raw) == 8 else f"{len(raw)} bytes, not 8"
        raise BadValue(f"support mask has {reason}")
    return int.from_bytes(raw, "little")


def encode_names(names: list[str]) -> bytes:
    """Group names in id order (names hold no newline: the grammar forbids whitespace)."""
    return "\n".join(names).encode()


def decode_names(raw: bytes | None, count: int) -> list[str]:
    """The ``count`` group names of a base; BadValue unless there are exactly that many."""
    if not count:
        if raw:
            raise BadValue(
                f"group-name list holds {len(raw)} bytes; meta records 0 groups", GROUPS_KEY
            )
        return []
    if raw is None:
        raise BadValue(f"group-name list is missing; meta records {count} groups", GROUPS_KEY)
    try:
        names = raw.decode().split("\n")
    except UnicodeDecodeError as exc:
        raise BadValue(f"group-name list is not UTF-8 (at byte {exc.start})", GROUPS_KEY) from None
    if len(names) != count:
        raise BadValue(
            f"group-name list holds {len(names)} names ({len(raw)} bytes); "
            f"meta records {count} groups",
            GROUPS_KEY,
        )
    if "" in names:
        raise BadValue(f"group-name list has an empty name (id {names.index('')})", GROUPS_KEY)
    return names


def new_group_key(gid: int) -> bytes:
    return NEW_GROUP_PREFIX + _U32.pack(gid)


def encode_int(value: int) -> bytes:
    return str(int(value)).encode()


def decode_int(raw: bytes | None, default: int = 0) -> int:
    """A non-negative decimal (``default`` when absent); BadValue when it is no number."""
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 20:
        raise BadValue(f"value {raw[:40]!r} is not a non-negative number")
    return int(raw)


def encode_position(position: dict[str, int]) -> bytes:
    return json.dumps(position, sort_keys=True).encode()


def _json(raw: bytes, what: str, key: bytes | None = None) -> Any:
    try:
        return json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadValue(f"{what} is not JSON ({exc})", key) from None


def _position(value: Any, what: str, key: bytes | None = POSITION_KEY) -> dict[str, int]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and type(v) is int and v >= 0 for k, v in value.items()
    ):
        raise BadValue(f"{what} is not a map of topic:partition to offset: {value!r:.80}", key)
    return value


def decode_position(raw: bytes | None) -> dict[str, int]:
    """A stream position ({} when absent); BadValue when it is not one."""
    if raw is None:
        return {}
    return _position(_json(raw, "position", POSITION_KEY), "position")


def encode_source_state(state: dict[str, dict[str, Any]]) -> bytes:
    return json.dumps(state, sort_keys=True).encode()


def decode_source_state(raw: bytes | None) -> dict[str, dict[str, Any]]:
    """The change source's resume state ({} when absent): sections of JSON objects."""
    if raw is None:
        return {}
    value = _json(raw, "source state", SOURCE_STATE_KEY)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in value.items()
    ):
        raise BadValue("source state is not an object of objects", SOURCE_STATE_KEY)
    return value


def merge_source_state(
    state: dict[str, dict[str, Any]], changes: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``state`` with ``changes`` laid over it, entry by entry (None removes one)."""
    out = {section: dict(entries) for section, entries in state.items()}
    for section, entries in changes.items():
        target = out.setdefault(section, {})
        for key, value in entries.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
        if not target:
            del out[section]
    return out


def encode_meta(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True).encode()


def check_format(raw: bytes | None, where: str) -> None:
    """Refuse a base without this Leopard's format version (BadValue: no number)."""
    if raw is None:
        raise IndexNotFound(f"{where} is not a Leopard index (no format version)")
    if not raw.isdigit() or len(raw) > 9:
        raise BadValue(f"format version {raw[:40]!r} is not a number", FORMAT_KEY)
    version = int(raw)
    if version != FORMAT_VERSION:
        raise StorageError(
            f"{where} has index format {version}; this Leopard reads format {FORMAT_VERSION} "
            "(rebuild the index with 'leopard build')"
        )


def decode_meta(raw: bytes | None) -> dict[str, Any]:
    """The metadata of a base; BadValue when absent or not what a build writes."""
    if raw is None:
        raise BadValue("metadata is missing", META_KEY)
    meta = _json(raw, "metadata", META_KEY)
    if not isinstance(meta, dict):
        raise BadValue(f"metadata is not a JSON object: {meta!r:.80}", META_KEY)
    for name in ("groups", "subjects"):
        value = meta.get(name)
        if type(value) is not int or value < 0:
            raise BadValue(f"metadata has no count of {name} ({name}: {value!r:.40})", META_KEY)
    if not isinstance(meta.get("config", {}), dict):
        raise BadValue("metadata has no set configuration", META_KEY)
    _position(meta.get("position", {}), "metadata position", META_KEY)
    return meta


def _crc(raw: bytes) -> int:
    return zlib.crc32(raw)


def base_header(names: Sequence[str], meta: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The default family of a new base: names, metadata, format and their checksum."""
    values = {
        GROUPS_KEY: encode_names(list(names)),
        META_KEY: encode_meta({**meta, "checksum": "crc32"}),
        FORMAT_KEY: encode_int(FORMAT_VERSION),
    }
    sums = {key.decode(): _crc(value) for key, value in values.items()}
    return [*values.items(), (CHECKSUM_KEY, json.dumps(sums, sort_keys=True).encode())]


_Header = tuple[dict[str, Any], list[str]]


def check_header(values: dict[bytes, bytes | None], index: object, where: object) -> _Header:
    """The metadata and group names of the base at ``where`` from its default family's
    ``values`` (``BASE_KEYS`` -> value or None), every checksum it records verified.

    IndexNotFound when there is no format version (not an index); StorageError for
    another version, and (``damaged``) for anything damaged.
    """
    try:
        return _check_header(values, str(index))
    except BadValue as exc:
        raise damaged(index, where, "default", exc.key, exc) from None


def _check_header(values: dict[bytes, bytes | None], index: str) -> _Header:
    check_format(values.get(FORMAT_KEY), index)
    stored = values.get(CHECKSUM_KEY)
    meta_raw = values.get(META_KEY)
    if stored is not None:
        sums = _json(stored, "checksum", CHECKSUM_KEY)
        if not isinstance(sums, dict) or set(sums) != {"format", "meta", "groups"}:
            raise BadValue(f"not a checksum of format, meta, groups: {sums!r:.80}", CHECKSUM_KEY)
        for key in (FORMAT_KEY, META_KEY, GROUPS_KEY):
            raw = values.get(key)
            if raw is None:
                raise BadValue("value is missing; the base records its checksum", key)
            if _crc(raw) != sums[key.decode()]:
                reason = f"value ({len(raw)} bytes) does not match the checksum recorded"
                raise BadValue(f"{reason} in the base", key)
    meta = decode_meta(meta_raw)
    algorithm = meta.get("checksum")
    if algorithm is not None and (algorithm != "crc32" or stored is None):
        if stored is None:
            raise BadValue("value is missing; the metadata records a checksum", CHECKSUM_KEY)
        raise BadValue(f"metadata names an unknown checksum {algorithm!r:.40}", META_KEY)
    if meta.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise BadValue(f"metadata records format {meta.get('format_version')!r}", META_KEY)
    try:
        Config.model_validate(meta.get("config", {}))
    except ValueError as exc:  # pydantic's ValidationError, InvalidConfig
        reason = " ".join(str(exc).split())[:300]
        raise BadValue(f"metadata holds no valid set configuration ({reason})", META_KEY) from None
    return meta, decode_names(values.get(GROUPS_KEY), meta["groups"])
