"""Classifying tuple batches by a schema: direct edges, and the edges feeds derive.

With a schema (``leopard.model.plan``) a stored tuple ``T:X#r@S`` feeds the set
``T:X#r`` directly when ``T#r`` is an indexed relation that allows the subject's type
(others are skipped and counted by reason). Two kinds of edges between sets are
*derived* from the tuples:

* an arrow ``P = ... + r->R`` of type ``T``: for every such tuple whose subject is an
  object ``S:Y`` with an indexed ``S#R``, the edge ``T:X#P -> S:Y#R``;
* a computed feed ``P = ... + R``: for every object ``T:X`` with a tuple fed into one
  of its sets, the edge ``T:X#P -> T:X#R``.

A derived edge is recorded once per feed that derives it (the feed's index in its
set's plan), so the build can count how many feeds hold it up. Work is columnar, as in
``leopard.core.collect``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from leopard.model.edges import relation_refusal
from leopard.model.plan import Plan

__all__ = ["SchemaRows", "subject_kinds"]


def subject_kinds(t: pa.Table) -> pa.Array:
    """Per row, the kind of its subject as a schema allows it: ``user``, ``user:*``,
    ``group#member``."""
    plain = pc.if_else(
        pc.equal(t["sid"], "*"), pc.binary_join_element_wise(t["sns"], ":*", ""), t["sns"]
    )
    userset = pc.binary_join_element_wise(t["sns"], t["srel"], "#")
    return pc.if_else(pc.is_null(t["srel"]), plain, userset)


class SchemaRows:
    """Splits batches by a schema's plan for a ``Collector``.

    ``direct(table, relation)`` is called for each group of rows fed directly into
    ``relation`` (rows of one type); ``derived(parents, children, bits)`` with the
    names of derived edges; ``finish`` adds the computed feeds' edges of every object
    seen.
    """

    def __init__(
        self,
        plan: Plan,
        direct: Callable[[pa.Table, str], None],
        derived: Callable[[pa.Array, pa.Array, np.ndarray], None],
        skipped: Counter[str],
    ) -> None:
        self.plan = plan
        self.direct = direct
        self.derived = derived
        self.skipped = skipped
        self.objects: dict[str, list[pa.Array]] = {}  # type -> object names with tuples
        self.types = sorted({t for t, _ in plan.sets})

    def add(self, table: pa.Table) -> int:
        """Classify one batch; the number of tuples it indexes."""
        plan = self.plan
        rns = table["rns"]
        fed = pc.is_in(rns, value_set=pa.array(self.types, pa.string()))
        indexed = 0
        for type_name in self.types:
            of_type = pc.equal(rns, type_name)
            if not pc.any(of_type).as_py():
                continue
            rows = table.filter(of_type)
            for relation in plan.direct_relations(type_name):
                hit = pc.equal(rows["rel"], relation)
                if not pc.any(hit).as_py():
                    continue
                indexed += self._direct(type_name, relation, rows.filter(hit))
            known = pa.array(plan.direct_relations(type_name), pa.string())
            unknown = pc.invert(pc.is_in(rows["rel"], value_set=known))
            self._skip(rows.filter(unknown), "is not an indexed relation")
        not_typed = pc.invert(fed)
        if pc.any(not_typed).as_py():
            self._skip(table.filter(not_typed), "is not an indexed relation")
        return indexed

    def _skip(self, rows: pa.Table, why: str) -> None:
        if not rows.num_rows:
            return
        keys = pc.binary_join_element_wise(rows["rns"], rows["rel"], "#")
        for item in pc.value_counts(keys).to_pylist():
            reason = f"{item['values']} {why}"
            namespace, relation = item["values"].split("#", 1)
            stored = self.plan.schema.relation(namespace, relation)
            if stored is not None and not stored.types and why == "is not an indexed relation":
                reason = str(relation_refusal(self.plan.schema, namespace, relation))  # computed
            else:
                why_not = self.plan.why_not(namespace, relation)
                if why_not and why == "is not an indexed relation":
                    reason += f" ({why_not})"
            self.skipped[reason] += item["counts"]

    def _direct(self, type_name: str, relation: str, rows: pa.Table) -> int:
        sp = self.plan.sets[(type_name, relation)]
        kinds = subject_kinds(rows)
        ok = pc.is_in(kinds, value_set=pa.array(sorted(sp.allowed), pa.string()))
        if not pc.all(ok).as_py():
            bad = pc.filter(kinds, pc.invert(ok))
            for item in pc.value_counts(bad).to_pylist():
                self.skipped[
                    f"{type_name}#{relation} does not allow subjects of type {item['values']}"
                ] += item["counts"]
            rows = rows.filter(ok)
        if not rows.num_rows:
            return 0
        self.direct(rows, relation)
        objects = pc.binary_join_element_wise(rows["rns"], rows["rid"], ":")
        if self.plan.has_computed(type_name):
            self.objects.setdefault(type_name, []).append(pc.unique(objects))
        for set_rel, target, bit in self.plan.arrows(type_name, relation):
            targets = [s for s in self.plan.schema.types if self.plan.is_set(s, target)]
            hit = pc.and_(
                pc.and_(pc.is_null(rows["srel"]), pc.not_equal(rows["sid"], "*")),
                pc.is_in(rows["sns"], value_set=pa.array(targets, pa.string())),
            )
            if not pc.any(hit).as_py():
                continue
            sub = rows.filter(hit)
            parents = pc.binary_join_element_wise(
                pc.filter(objects, hit), pa.scalar(set_rel, pa.string()), "#"
            )
            children = pc.binary_join_element_wise(
                pc.binary_join_element_wise(sub["sns"], sub["sid"], ":"),
                pa.scalar(target, pa.string()),
                "#",
            )
            self.derived(parents, children, np.full(len(parents), bit, dtype=np.int64))
        return rows.num_rows

    def finish(self) -> None:
        """The computed feeds' edges of every object that has a tuple."""
        for type_name, parts in self.objects.items():
            objects = pc.unique(pa.concat_arrays(parts))
            for set_rel, target, bit in self.plan.computed(type_name):
                parents = pc.binary_join_element_wise(objects, pa.scalar(set_rel), "#")
                children = pc.binary_join_element_wise(objects, pa.scalar(target), "#")
                self.derived(parents, children, np.full(len(objects), bit, dtype=np.int64))
        self.objects = {}
