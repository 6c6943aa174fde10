"""Which shard holds a tuple, and which shard answers for a subject.

A sharded index splits the membership by subject (see ``docs/scale.md``). A tuple is
either **placed** on one shard, the shard of its subject, or **replicated** on every
shard:

* placed: a *leaf membership*, a plain subject (no ``#relation``, not a wildcard)
  directly in a set, such as ``group:eng#member@user:alice``;
* replicated: everything else: nesting edges (``group:all#member@group:eng#member``),
  wildcards (``doc:1#viewer@user:*``, which every shard's subjects need), usersets
  that are not indexed sets, and, with a schema, the tuples that arrows read
  (``doc:1#parent@folder:x`` is an edge between sets, whatever its subject's form).

So every shard holds the whole graph of sets and the direct sets of its own subjects,
and answers every question about those subjects exactly as one index would. The
shard of a subject is ``crc32(ns:id) mod N`` of the name before any ``#``: CRC-32 as
zlib and Java's ``java.util.zip.CRC32`` compute it (Spark's ``crc32``), so any engine
places a tuple where a query will look for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leopard.errors import InvalidInput
from leopard.model.config import Config
from leopard.model.names import RelationTuple
from leopard.model.routing import shard_of

if TYPE_CHECKING:  # loaded where a table is split: a query needs no pyarrow
    import numpy as np
    import pyarrow as pa

__all__ = ["EVERY", "MAX_SHARDS", "ShardRule", "check_shards", "shard_of"]

#: the placement of a replicated tuple (it belongs to every shard)
EVERY = -1
MAX_SHARDS = 4096


def check_shards(shards: object, where: str = "shards") -> int:
    """``shards`` as a number of shards; InvalidInput naming it when it is not one."""
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise InvalidInput(f"{where} must be a whole number from 1 to {MAX_SHARDS}, not {shards!r}")
    return shards


class ShardRule:
    """Where the tuples of an index with ``shards`` shards and ``config`` go."""

    def __init__(self, config: Config, shards: int) -> None:
        self.config = config
        self.shards = check_shards(shards)
        plan = config.plan
        #: (type, relation) pairs an arrow reads: their tuples are edges between sets
        self.arrow_relations: frozenset[tuple[str, str]] = frozenset(
            plan.arrow_tuplesets() if plan is not None else ()
        )

    def place(self, t: RelationTuple) -> int:
        """The shard of ``t``, or ``EVERY`` when every shard holds it."""
        if (
            t.subject_relation is not None
            or t.subject_id == "*"
            or (t.resource_type, t.relation) in self.arrow_relations
        ):
            return EVERY
        return shard_of(f"{t.subject_type}:{t.subject_id}", self.shards)

    def holds(self, t: RelationTuple, shard: int) -> bool:
        """Whether shard ``shard`` holds ``t``."""
        p = self.place(t)
        return p == EVERY or p == shard

    def placed(self, table: pa.Table) -> np.ndarray:
        """Per row of a tuple table (columns ``rns rid rel sns sid srel``), its shard
        or ``EVERY``. CRC-32 is computed once per distinct subject."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        n = table.num_rows
        out = np.full(n, EVERY, dtype=np.int64)
        if n == 0:
            return out
        leaf = pc.and_(pc.is_null(table["srel"]), pc.not_equal(table["sid"], "*"))
        if self.arrow_relations:
            pairs = pc.binary_join_element_wise(table["rns"], table["rel"], "#")
            arrows = pa.array(sorted(f"{t}#{r}" for t, r in self.arrow_relations), pa.string())
            leaf = pc.and_(leaf, pc.invert(pc.is_in(pairs, value_set=arrows)))
        leaf_np = np.asarray(leaf.to_numpy(zero_copy_only=False), dtype=bool)
        if not leaf_np.any():
            return out
        rows = np.flatnonzero(leaf_np)
        subjects = pc.binary_join_element_wise(
            pc.take(table["sns"], pa.array(rows)), pc.take(table["sid"], pa.array(rows)), ":"
        )
        if isinstance(subjects, pa.ChunkedArray):
            subjects = subjects.combine_chunks()
        enc = pc.dictionary_encode(subjects)
        shards = self.shards
        per_name = np.fromiter(
            (shard_of(s, shards) for s in enc.dictionary.to_pylist()),
            dtype=np.int64,
            count=len(enc.dictionary),
        )
        out[rows] = per_name[enc.indices.to_numpy(zero_copy_only=False)]
        return out
