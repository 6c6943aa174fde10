"""``leopard verify``'s check of a schema's derived edges: derived again, and compared.

With a schema, computed and arrow feeds derive edges between sets from the stored
tuples (``leopard.core.derive``); the build stores them in ``dchild`` (mirrored by
``dparent``) with a support count in ``dsupport`` where two or more feeds derive one,
and the incremental layer keeps them as tuples come and go (``leopard.core.derived``).
The other checks hold the closures to these edges, so a derived edge that stays after
its tuple went (a document keeping its former folder's viewers) answers wrong unseen.

Here the stored tuples the direct edges stand for, both layers as a reader sees them
(``leopard.core.tuples``, as compaction exports them), go through the build's own
derivation (``SchemaRows``, ``feed_counts``) and its edges are compared with the stored
ones: a derived edge stored that nothing derives, one derived that is not stored, and
a support count that is not the number of feeds deriving its edge are each a finding
naming the two sets and the feeds (and tuples) that derive the edge, or would.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from leopard.core.derive import SchemaRows
from leopard.core.edgekeys import feed_counts
from leopard.core.tuples import SetsOf, edge_arrays, tuple_batches
from leopard.model.config import Config
from leopard.model.plan import Plan
from leopard.store.layout import gkey, pair_key

__all__ = ["DerivedChecks", "Derived", "derive"]

_FAMILIES = {"g2m", "child", "support", "sname", "dchild", "dsupport"}
_HIGH = np.uint64(32)


class Derived:
    """The derived edges the stored tuples imply (``derive``): ``edges``
    (``parent<<32|child``, sorted, distinct) and ``counts`` (how many feeds derive
    each); ``unknown``, those naming a set that has no id (names and feed)."""

    def __init__(self, raw_edges: np.ndarray, raw_bits: np.ndarray) -> None:
        self.raw_edges, self.raw_bits = raw_edges, raw_bits  # one a derivation
        self.edges, self.counts = feed_counts(raw_edges, raw_bits)
        self.unknown: list[tuple[str, str, int]] = []

    def feeds(self, edge: int) -> list[int]:
        """The feeds (indexes in the parent set's plan) that derive ``edge``."""
        return sorted(set(self.raw_bits[self.raw_edges == np.uint64(edge)].tolist()))


def derive(
    plan: Plan,
    config: Config,
    groups: list[str],
    subjects: list[str],
    sets_of: SetsOf,
    masks: dict[bytes, int],
) -> Derived:
    """The derived edges of the tuples that the direct edges ``sets_of`` stand for, by
    the build's derivation; ``groups`` and ``subjects`` name the ids."""
    parts: list[tuple[pa.Array, pa.Array, np.ndarray]] = []

    def derived(parents: Any, children: Any, bits: np.ndarray) -> None:
        parts.append((_array(parents), _array(children), bits))

    rows = SchemaRows(plan, lambda table, relation: None, derived, Counter())
    for batch in tuple_batches(config, groups, subjects, sets_of, masks):
        rows.add(batch)
    rows.finish()
    empty = pa.array([], pa.string())
    parents = pa.concat_arrays([p for p, _, _ in parts]) if parts else empty
    children = pa.concat_arrays([c for _, c, _ in parts]) if parts else empty
    bits = np.concatenate([b for _, _, b in parts]) if parts else np.zeros(0, np.int64)
    parts.clear()
    names = pa.array(groups, pa.string())
    p = pc.fill_null(pc.index_in(parents, value_set=names), -1).to_numpy()
    c = pc.fill_null(pc.index_in(children, value_set=names), -1).to_numpy()
    keep = (p >= 0) & (c >= 0)
    edges = (p[keep].astype(np.uint64) << _HIGH) | c[keep].astype(np.uint64)
    out = Derived(edges, bits[keep])
    if not keep.all():
        lost = np.flatnonzero(~keep)
        out.unknown = list(
            zip(
                parents.take(lost).to_pylist(),
                children.take(lost).to_pylist(),
                bits[lost].tolist(),
                strict=True,
            )
        )
    return out


def _array(values: Any) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _split(group: str) -> tuple[str, str, str]:
    """``type``, ``type:id`` and relation of a set name."""
    obj, _, relation = group.rpartition("#")
    return obj.partition(":")[0], obj, relation


def derived_by(plan: Plan, parent: str, child: str, bits: Iterable[int]) -> str:
    """The feeds ``bits`` of ``parent``'s set, deriving the edge to ``child``, in words."""
    ptype, pobj, prel = _split(parent)
    feeds = plan.sets[(ptype, prel)].feeds if (ptype, prel) in plan.sets else ()
    out = []
    for bit in bits:
        if bit >= len(feeds):
            out.append(f"feed {bit} of {ptype}#{prel}, which has {len(feeds)}")
            continue
        f = feeds[bit]
        if f.kind == "arrow":
            out.append(f"{f} from the tuple {pobj}#{f.tupleset}@{_split(child)[1]}")
        else:
            out.append(f"{f.relation}, as {pobj} has a tuple")
    return ", ".join(out)


def would_derive(plan: Plan, parent: str, child: str) -> str:
    """What would derive the edge from ``parent`` to ``child``: its feeds, and the
    tuples they need."""
    ptype, pobj, prel = _split(parent)
    ctype, cobj, crel = _split(child)
    sp = plan.sets.get((ptype, prel))
    out = []
    for f in sp.feeds if sp is not None else ():
        if f.kind == "arrow" and f.relation == crel and plan.is_set(ctype, crel):
            tuple_ = f"{pobj}#{f.tupleset}@{cobj}"
            out.append(f"{f} derives it only from a tuple {tuple_}, which is not stored")
        elif f.kind == "computed" and f.relation == crel and cobj == pobj:
            out.append(f"{f.relation} derives it only while {pobj} has a tuple, and it has none")
    return "; ".join(out) or f"no feed of {ptype}#{prel} derives an edge to {ctype}#{crel}"


class DerivedChecks:
    """The check of derived edges, mixed into the verifier (which holds what was read)."""

    sets: dict[str, dict[int, BitMap]]
    whole: set[str]
    names: dict[int, str]
    support: dict[bytes, int]
    dsupport: dict[bytes, int]
    kinds: Counter[str]
    index: Any
    limit: int  # findings of one kind listed

    def bad(self, family: str, key: bytes, reason: str) -> None:
        raise NotImplementedError

    def add(self, kind: str, line: str) -> None:
        raise NotImplementedError

    def _listed(self, kind: str, items: Iterable[Any], line: Callable[[Any], None]) -> None:
        """Each item a finding of ``kind``: told by ``line`` while fewer than ``limit``
        are, counted after (the names of millions are not looked up)."""
        for item in items:
            if self.kinds[kind] < self.limit:
                line(item)
            else:
                self.kinds[kind] += 1

    def derived_edges(self, plan: Plan, config: Config, groups: list[str], subjects: int) -> None:
        """The stored derived edges and support counts against those derived again."""
        if not _FAMILIES <= self.whole:
            return  # a family read in part: its damage is told, and nothing to derive from
        names = [self.names.get(sid) for sid in range(subjects)]
        if None in names:
            return  # told by the check of subject names
        n = len(groups)
        sets = self.sets

        def sets_of(family: str) -> Iterable[tuple[int, BitMap]]:
            limit = n if family == "child" else subjects
            for gid, bm in sets[family].items():
                if gid < n and bm:  # ids past the last are told by ``edges``
                    yield gid, bm if bm.max() < limit else bm & BitMap(range(limit))

        want = derive(plan, config, groups, cast(list[str], names), sets_of, self.support)
        for parent, child, bit in want.unknown:
            feed = derived_by(plan, parent, child, [bit])
            self.add(
                "dchild",
                f"index at {self.index} is damaged: the derived edge {parent} -> {child} "
                f"({feed}) names a set that has no id",
            )
        stored = _stored_edges(sets["dchild"], n)

        def edge_text(edge: int) -> tuple[int, str, str]:
            p, c = edge >> 32, edge & 0xFFFFFFFF
            return p, groups[p], f"{groups[c]} (id {c})"

        def extra(edge: int) -> None:
            p, parent, child = edge_text(edge)
            why = would_derive(plan, parent, groups[edge & 0xFFFFFFFF])
            what = f"{parent} -> {child} is stored, but nothing derives it: {why}"
            self.bad("dchild", gkey(p), what)

        def missing(edge: int) -> None:
            p, parent, child = edge_text(edge)
            feeds = derived_by(plan, parent, groups[edge & 0xFFFFFFFF], want.feeds(edge))
            what = f"{parent} -> {child} is not stored, but the stored tuples derive it: {feeds}"
            self.bad("dchild", gkey(p), what)

        both = np.isin(want.edges, stored, assume_unique=True)
        self._listed("dchild", np.setdiff1d(stored, want.edges, assume_unique=True).tolist(), extra)
        self._listed("dchild", want.edges[~both].tolist(), missing)

        # support counts: stored where two or more feeds derive an edge, else none (1)
        edges, counts = want.edges[both], want.counts[both]
        have = np.ones(len(edges), np.int64)
        if self.dsupport and len(edges):
            keys = np.array([int.from_bytes(k, "big") for k in self.dsupport], np.uint64)
            values = np.array(list(self.dsupport.values()), np.int64)
            order = np.argsort(keys)
            keys, values = keys[order], values[order]
            at = np.minimum(np.searchsorted(keys, edges), len(keys) - 1)
            hit = keys[at] == edges
            have[hit] = values[at[hit]]
        wrong = np.flatnonzero(have != counts)

        def count(i: int) -> None:
            edge = int(edges[i])
            p, c = edge >> 32, edge & 0xFFFFFFFF
            feeds = want.feeds(edge)
            stored_count = "no count (1)" if have[i] == 1 else f"a count of {have[i]}"
            self.bad(
                "dsupport",
                pair_key(p, c),
                f"{groups[p]} -> {groups[c]} has {stored_count}, yet "
                f"{'1 feed derives' if len(feeds) == 1 else f'{len(feeds)} feeds derive'} it: "
                f"{derived_by(plan, groups[p], groups[c], feeds)}",
            )

        self._listed("dsupport", wrong.tolist(), count)


def _stored_edges(dchild: dict[int, BitMap], groups: int) -> np.ndarray:
    """The stored derived edges as ``parent<<32|child``, sorted (ids in range only)."""
    parents, children = edge_arrays((g, bm) for g, bm in dchild.items() if g < groups)
    edges = (parents.astype(np.uint64) << _HIGH) | children.astype(np.uint64)
    return np.sort(edges[children < groups])
