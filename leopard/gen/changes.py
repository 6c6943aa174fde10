"""Change streams against a generated snapshot: ``+tuple``/``-tuple`` lines.

For the demo and the benchmarks, which feed them to ``leopard publish`` or a topic.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = ["generate_changes"]


def generate_changes(
    snapshot: str | Path,
    count: int,
    *,
    seed: int = 0,
    nested_fraction: float = 0.0,
    delete_fraction: float = 0.5,
) -> list[str]:
    """``+tuple``/``-tuple`` change lines against an existing snapshot, for demos and benches.

    Deletes remove tuples that the snapshot holds; touches add new users to existing
    groups, or (``nested_fraction``) new nesting edges between existing groups, which
    may close cycles. Deterministic by seed.
    """
    table = pacsv.read_csv(
        str(snapshot),
        read_options=pacsv.ReadOptions(column_names=["line"]),
        parse_options=pacsv.ParseOptions(delimiter="\x1f", quote_char=False),
        convert_options=pacsv.ConvertOptions(column_types={"line": pa.string()}),
    )
    lines = table.column("line")
    is_nested = pc.match_substring(lines, "#member@group:")
    nested = pc.filter(lines, is_nested)
    member = pc.filter(lines, pc.and_(pc.invert(is_nested), pc.match_substring(lines, "#member@")))
    rng = random.Random(seed)
    groups = sorted(
        {t.split("#", 1)[0] for t in rng.sample(nested.to_pylist(), min(5000, len(nested)))}
    )
    if not groups:
        groups = sorted({t.split("#", 1)[0] for t in member[:1000].to_pylist()})
    out: list[str] = []
    n_nested = int(count * nested_fraction)
    n_member = count - n_nested
    for kind, n, pool in (("member", n_member, member), ("nested", n_nested, nested)):
        deletes = int(n * delete_fraction)
        if deletes and len(pool):
            picks = [int(i) for i in np.random.default_rng(seed).integers(0, len(pool), deletes)]
            out += ["-" + pool[i].as_py() for i in picks]
        for i in range(n - deletes):
            g = rng.choice(groups)
            if kind == "member":
                out.append(f"+{g}#member@user:stream-{seed}-{i}")
            else:
                out.append(f"+{g}#member@{rng.choice(groups)}#member")
    rng.shuffle(out)
    return out
