"""What ``Index.warm()`` loads into ``CachedSets``: the base's sets in bulk.

Each family is read in one pass in key order and its values kept as stored where
deserializing them all would cost warm() more than their first reads cost the checks
that ask for them (see the thresholds below); ``CachedSets`` deserializes such a value
when first asked, and reports a damaged one then, as a read of it would.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from itertools import compress
from operator import itemgetter
from typing import cast

import numpy as np
from pyroaring import BitMap

from leopard.core.layers import SetReader
from leopard.model.setcodec import TAG, load
from leopard.store.layout import gid_of, m2g_groups

__all__ = ["Loaded", "load_all"]

#: what ``load_all`` reads for ``CachedSets.install``: closures, subjects (None when
#: not asked), parent sets
Loaded = tuple[
    dict[int, BitMap | bytes], dict[bytes, BitMap | bytes] | None, dict[int, BitMap | bytes]
]


#: the parents of a group with none stored (never changed)
_NO_PARENTS = BitMap()


def load_all(
    r: SetReader, subjects: bool, *, have: Iterable[int] | dict[int, BitMap | bytes] = ()
) -> Loaded:
    """Every closure (but those in ``have``), without a schema every parent set, and
    (``subjects``) the direct groups of every subject unchanged since the base, read
    from ``r``, for ``CachedSets.install``."""
    # Millions of sets go into dictionaries that grow all the while: each full
    # collection the allocations trigger walks them again (a fifth of warm() at 40M
    # tuples), and nothing loaded here forms reference cycles.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load_all(r, subjects, have=have)
    finally:
        if was_enabled:
            gc.enable()


def _load_all(
    r: SetReader, subjects: bool, *, have: Iterable[int] | dict[int, BitMap | bytes]
) -> Loaded:
    # The subjects' sets are held as stored and deserialized when first asked
    # (``subject_groups``): at 40M tuples deserializing 3.8M of them here took two
    # thirds of warm(), and a check pays it once per subject (about 1.5 us). The
    # dictionaries are made by passes in C (``dict``, ``map``, ``zip``), not a Python
    # loop per set. A subject's value that a glance shows damaged (too short, no
    # header of a stored set) is reported here as before.
    g2g = _closures(r, have)
    parents = _held_parents(r)
    if not subjects:
        return g2g, None, parents
    # values become BitMaps in place as checks first ask (``subject_groups``)
    raw = cast(dict[bytes, BitMap | bytes], r.base.family("m2g").as_dict())
    for key in r.overlay.sets.get("m2g") or ():  # read through the overlay instead
        raw.pop(key, None)
    if not set(map(_HEAD, raw.values())) <= _STORED_HEADS:
        for key, value in raw.items():
            if isinstance(value, bytes) and value[4:6] not in _STORED_HEADS:
                try:
                    m2g_groups(value)  # raises BadValue, unless it deserializes after all
                except ValueError as exc:
                    raise r.damage("m2g", key, exc, in_base=True) from None
    return g2g, raw, parents


def _held_parents(r: SetReader) -> dict[int, BitMap | bytes]:
    """Without a schema, the parent sets of every group of the base (as stored, to be
    deserialized when ``above`` first walks them; none stored: no parents), so that
    ``groups_of`` after ``warm()`` reads no RocksDB. Groups the overlay changed or
    added are read through the layers. With a schema a set's parents are its parent
    and derived parent edges joined: read and held as walks first reach them
    (millions of resource sets)."""
    if r.config.plan is not None:
        return {}
    ids, values = _stored(r, "parent")
    held: dict[int, BitMap | bytes] = dict.fromkeys(range(len(r.base_groups)), _NO_PARENTS)
    for key in r.overlay.sets.get("parent") or ():
        if len(key) == 4:  # as _stored: another is damage, told when read
            held.pop(gid_of(key), None)
    held.update(zip(ids.tolist(), values, strict=True))
    return held


def _stored(r: SetReader, family: str) -> tuple[np.ndarray, list[bytes]]:
    """The group ids and values of the base's ``family`` in one pass, but those the
    overlay holds (to be read through the layers) and keys not of four bytes (damage,
    told when read)."""
    keys, values = r.base.family(family).columns()
    joined = b"".join(keys)
    if len(joined) != 4 * len(keys):
        sound = [len(key) == 4 for key in keys]
        keys, values = list(compress(keys, sound)), list(compress(values, sound))
        joined = b"".join(keys)
    ids = np.frombuffer(joined, dtype=">u4").astype(np.int64)
    changed = [gid_of(key) for key in r.overlay.sets.get(family) or () if len(key) == 4]
    if changed:
        keep = ~np.isin(ids, changed)
        ids, values = ids[keep], list(compress(values, keep.tolist()))
    return ids, values


#: the first two bytes of a stored set, which follow the subject id in a MEMBER2GROUP
#: value: a serialized roaring bitmap's (its format's cookies, 12346 and 12347,
#: little-endian), or the compact form's tag and first byte (``setcodec``; the tag
#: alone for no ids)
_STORED_HEADS = {b"\x3a\x30", b"\x3b\x30", bytes((TAG,))} | {bytes((TAG, b)) for b in range(256)}
_HEAD = itemgetter(slice(4, 6))


def _closures(
    r: SetReader, have: Iterable[int] | dict[int, BitMap | bytes]
) -> dict[int, BitMap | bytes]:
    """Every group's closure but those in ``have``: the base's read in one pass in key
    order (twice as fast at 776k groups as a point read each), then what the overlay
    holds and anything the pass did not yield read as ``r.bitmap`` reads it, damage
    reported the same way. Closures of up to ``_HELD_AS_STORED`` bytes serialized
    (``_HELD_AS_STORED_RESOURCE`` in a schema's resource tier) are held as stored, the
    rest deserialized by a pass in C."""
    count = r.group_count()
    ids, values = _stored(r, "g2g")
    # kept: ids of the base's groups, with a value (an empty one is damage, read below)
    sizes = np.fromiter(map(len, values), np.int64, len(values))
    keep = (ids < len(r.base_groups)) & (sizes > 0)
    first = r.first_resource_id  # the base's group tier is the ids below
    small = keep & (sizes <= np.where(ids < first, _HELD_AS_STORED, _HELD_AS_STORED_RESOURCE))
    big = keep & ~small
    same_ids: list[int] | range = list(r.base_group_ids.values())
    if len(same_ids) != len(r.base_groups):  # names held twice: damage, read as before
        same_ids = range(len(r.base_groups))
    # keyed by the very id objects of the reader's names (``base_group_ids``): a
    # check's probe by the id it looked up then matches by identity, one memory read
    # fewer in a dictionary of millions, and the ids are not held twice
    out: dict[int, BitMap | bytes] = dict(
        zip(
            map(same_ids.__getitem__, ids[small].tolist()),
            compress(values, small.tolist()),
            strict=True,
        )
    )
    big_ids = ids[big].tolist()
    big_values = list(compress(values, big.tolist()))
    try:
        out.update(zip(big_ids, map(load, big_values), strict=True))
    except Exception:  # ValueError; one at a time, the damaged read below
        for gid, value in zip(big_ids, big_values, strict=True):
            try:
                out[gid] = load(value)
            except Exception:
                continue
    del values, big_values
    for gid in have:
        out.pop(gid, None)  # already held
    found = np.zeros(count, dtype=bool)
    found[np.fromiter(out, np.int64, len(out))] = True
    for gid in np.flatnonzero(~found).tolist():
        if gid not in have:  # the overlay's, and any the pass did not yield
            out[gid] = r.bitmap("g2g", gid)
    return out


#: closures of at most this many bytes serialized are held as stored by ``warm()`` and
#: deserialized at their first read (a few us). 64 bytes at first; at 4 KiB, warm() at
#: 40M tuples of groups took 4.18-4.45 s instead of 4.63-5.31 (four runs each,
#: alternated), first checks on new pairs p50 8.3 against 7.8 us, p99 the same (15 us).
_HELD_AS_STORED = 4096
#: the same for a schema's resource tier: at 4 KiB, warm() at 10M tuples of documents
#: took 20.6 s instead of 24.1, but a first check of a document 9.7 us p50 instead of 6.8
#: (their closures are longer: a folder's chain); 64 bytes still holds 70% of them.
#: (Since the compiled check reads a small value in place, 256 bytes made warm() 0.8 s
#: shorter there and the checks no faster: left at 64.)
_HELD_AS_STORED_RESOURCE = 64
