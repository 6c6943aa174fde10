"""The stored tuples an index's direct edges stand for, as build batches.

Compaction feeds them to the build (``leopard.core.compact``); ``leopard verify``
derives a schema's derived edges from them again, as the build derives them
(``leopard.core.rederive``). A set's direct edges are ``g2m`` (a leaf subject) and
``child`` (a nested set); where several stored relations feed a set, its support
masks say which of them hold an edge (one tuple per relation), else the set's first
source stands for it. A relation feeding several sets stands for one tuple, however
many sets its edges are in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from leopard.core.batches import COLUMNS
from leopard.model.config import Config
from leopard.model.names import SPLIT_NAME_PATTERN
from leopard.store.layout import split_support_key

__all__ = ["tuple_batches", "edge_arrays", "split_names"]

#: a family's sets (``g2m`` or ``child``): ``(group id, set)`` pairs
SetsOf = Callable[[str], Iterable[tuple[int, BitMap]]]


def split_names(names: list[str]) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Namespace, id and relation (null when none) of each name."""
    arr = pa.array(names, pa.string())
    parts = pc.extract_regex(arr, SPLIT_NAME_PATTERN)
    rel = parts.field("rel")
    rel = pc.if_else(pc.equal(rel, ""), pa.scalar(None, pa.string()), rel)
    return parts.field("ns"), parts.field("id"), rel


def tuple_batches(
    config: Config,
    group_names: list[str],
    subjects: list[str],
    sets_of: SetsOf,
    masks: dict[bytes, int],
) -> Iterator[pa.Table]:
    """The stored tuples of the direct edges ``sets_of`` gives, one batch a family.

    ``group_names`` and ``subjects`` name the ids (every id of an edge must have a
    name), ``masks`` are the support masks by key.
    """
    g_ns, g_id, g_rel = split_names(group_names)
    # a set's first source, asked once for each kind of set (``type#relation``)
    kinds = pc.dictionary_encode(pc.binary_join_element_wise(g_ns, g_rel, "#"))
    firsts = [
        config.sources(*(kind or "").split("#", 1))[0] if kind and "#" in kind else ""
        for kind in kinds.dictionary.to_pylist()
    ]
    first_source = pc.take(pa.array(firsts, pa.string()), kinds.indices)
    # whether a stored relation feeds several sets: only then can a tuple be in two
    shared = False
    for kind in kinds.dictionary.to_pylist():
        if kind and "#" in kind:
            ns, set_rel = kind.split("#", 1)
            shared = shared or any(
                len(config.feeds(ns, r)) > 1 for r in config.sources(ns, set_rel)
            )
    s_ns, s_id, s_rel = split_names(subjects)

    for family, nested in (("g2m", False), ("child", True)):
        gids, oids = edge_arrays(sets_of(family))
        if not len(gids):
            continue
        rel = pc.take(first_source, pa.array(gids))
        explicit = [
            (g, o, m)
            for key, m in masks.items()
            for g, is_nested, o in [split_support_key(key)]
            if is_nested == nested
        ]
        if explicit:
            ekeys = np.array([(g << 32) | o for g, o, _ in explicit], dtype=np.uint64)
            keys = (gids.astype(np.uint64) << np.uint64(32)) | oids.astype(np.uint64)
            keep = ~np.isin(keys, ekeys)
            gids, oids = gids[keep], oids[keep]
            rel = pc.filter(rel, pa.array(keep))
            extra_g, extra_o, extra_rel = [], [], []
            for g, o, m in explicit:
                sources = config.sources(g_ns[g].as_py(), g_rel[g].as_py())
                for bit, src in enumerate(sources):
                    if m >> bit & 1:
                        extra_g.append(g)
                        extra_o.append(o)
                        extra_rel.append(src)
            gids = np.concatenate([gids, np.array(extra_g, dtype=np.uint32)])
            oids = np.concatenate([oids, np.array(extra_o, dtype=np.uint32)])
            rel = pa.concat_arrays([rel, pa.array(extra_rel, pa.string())])
        gi, oi = pa.array(gids), pa.array(oids)
        if nested:
            sub = (pc.take(g_ns, oi), pc.take(g_id, oi), pc.take(g_rel, oi))
        else:
            sub = (pc.take(s_ns, oi), pc.take(s_id, oi), pc.take(s_rel, oi))
        ns = pc.take(g_ns, gi)
        table = pa.Table.from_arrays([ns, pc.take(g_id, gi), rel, *sub], names=list(COLUMNS))
        yield _once(config, table, ns, pc.take(g_rel, gi), rel) if shared else table


def _once(
    config: Config, table: pa.Table, ns: pa.Array, set_rel: pa.Array, rel: pa.Array
) -> pa.Table:
    """The rows of ``table`` (one per set edge: namespace ``ns``, set ``set_rel``,
    stored relation ``rel``) of the first set their stored relation feeds: a relation
    feeding several sets (``manager`` in ``member`` and ``admins``) put an edge in each
    for one tuple, which is that tuple once."""
    kinds = pc.dictionary_encode(pc.binary_join_element_wise(ns, set_rel, rel, "#"))
    first = []
    for kind in kinds.dictionary.to_pylist():
        namespace, set_name, source = (kind or "##").split("#", 2)
        feeds = config.feeds(namespace, source) if source else ()
        first.append(not feeds or feeds[0] == set_name)
    if all(first):
        return table
    return table.filter(pc.take(pa.array(first), kinds.indices))


def edge_arrays(sets: Iterable[tuple[int, BitMap]]) -> tuple[np.ndarray, np.ndarray]:
    """The edges of ``(id, set)`` pairs as two arrays (uint32): each id, repeated for
    each member of its set, and the members."""
    heads: list[int] = []
    sizes: list[int] = []
    members = []
    for g, bm in sets:
        if bm:
            heads.append(g)
            sizes.append(len(bm))
            members.append(bm.to_array())
    if not heads:
        return np.zeros(0, np.uint32), np.zeros(0, np.uint32)
    others = np.frombuffer(b"".join(members), dtype=np.uint32)
    return np.repeat(np.array(heads, np.uint32), sizes), others
