"""What to generate and what was generated: ``OrgSpec``, ``GenReport`` and their texts.

An ``OrgSpec`` is the whole input of the generator: the same spec always gives the same
bytes. ``config_toml`` is the set configuration that reads the relations a spec emits,
and ``format_report`` the few lines a terminal shows after a run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from leopard.errors import InvalidInput
from leopard.model.names import TENANT_PREFIX_RE

__all__ = [
    "MAX_DEPTH_LIMIT",
    "MAX_TUPLES",
    "MIN_TUPLES",
    "GenReport",
    "OrgSpec",
    "config_toml",
    "format_report",
]

MIN_TUPLES = 1_000
MAX_TUPLES = 100_000_000
MAX_DEPTH_LIMIT = 64


@dataclass(frozen=True)
class OrgSpec:
    """What to generate. The same spec always gives byte-identical output."""

    tuples: int
    seed: int = 0
    cycles: bool = True
    wildcards: bool = True
    rewrites: bool = True
    max_depth: int = 15
    namespace_prefix: str = ""

    def __post_init__(self) -> None:
        if not MIN_TUPLES <= self.tuples <= MAX_TUPLES:
            raise InvalidInput(f"tuples={self.tuples!r}: expected {MIN_TUPLES:,} to {MAX_TUPLES:,}")
        if not 1 <= self.max_depth <= MAX_DEPTH_LIMIT:
            raise InvalidInput(f"max_depth={self.max_depth!r}: expected 1 to {MAX_DEPTH_LIMIT}")
        if self.seed < 0:
            raise InvalidInput(f"seed={self.seed!r}: expected a non-negative integer")
        if not TENANT_PREFIX_RE.fullmatch(self.namespace_prefix):
            raise InvalidInput(
                f"namespace_prefix={self.namespace_prefix!r}: expected '' or tenant "
                "segments ending in '/', such as 'acme/'"
            )


@dataclass
class GenReport:
    """What was written, with a few names worth querying.

    ``deep_user`` is a member of ``deep_group`` only through ``deep_levels`` (≥ 3)
    levels of nesting: its one direct group lies that many hops below. It is None when
    ``max_depth`` < 3. ``non_member`` is a (user, group) pair that is not a membership.
    """

    tuples: int
    users: int
    groups: int
    member_edges: int
    nested_edges: int
    wildcards: int
    cycles: int
    max_depth: int
    seconds: float
    manager_tuples: int = 0
    bytes: int = 0
    deep_user: str | None = None
    deep_group: str | None = None
    deep_levels: int | None = None
    largest_group: str = ""
    non_member: tuple[str, str] | None = None
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def lines_per_second(self) -> float:
        return self.tuples / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lines_per_second"] = round(self.lines_per_second)
        d["non_member"] = list(self.non_member) if self.non_member else None
        return d


def config_toml(spec: OrgSpec) -> str:
    """The TOML set configuration that makes Leopard read the relations generated."""
    sources = '["member", "manager"]' if spec.rewrites else '["member"]'
    return (
        f"# Leopard set configuration for gen-org output (rewrites={spec.rewrites}).\n"
        "[[sets]]\n"
        f'namespace = "{spec.namespace_prefix}group"\n'
        'relation = "member"\n'
        f"from = {sources}\n"
    )


def format_report(report: GenReport) -> str:
    """A few aligned lines for a terminal."""
    rows = [
        ("tuples", f"{report.tuples:,}"),
        ("users", f"{report.users:,}"),
        ("groups", f"{report.groups:,}"),
        ("member edges", f"{report.member_edges:,} ({report.manager_tuples:,} manager)"),
        ("nested edges", f"{report.nested_edges:,}"),
        ("wildcards", f"{report.wildcards:,}"),
        ("cycles", f"{report.cycles:,}"),
        ("max depth", str(report.max_depth)),
        ("largest group", report.largest_group),
    ]
    if report.deep_user:
        rows.append(
            ("deep member", f"{report.deep_user} in {report.deep_group} "
             f"({report.deep_levels} levels down)")
        )  # fmt: skip
    if report.non_member:
        rows.append(("non-member", f"{report.non_member[0]} not in {report.non_member[1]}"))
    rows.append(
        ("time", f"{report.seconds:.2f} s, {report.lines_per_second:,.0f} lines/s, "
         f"{report.bytes / 1e6:,.1f} MB")
    )  # fmt: skip
    return "\n".join(f"{k:<14} {v}" for k, v in rows)
