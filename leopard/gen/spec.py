"""What to generate and what was generated: ``OrgSpec``, ``GenReport`` and their texts.

An ``OrgSpec`` is the whole input of the generator: the same spec always gives the same
bytes. Its ``shape`` is ``"org"`` (users and nested groups, ``leopard.gen.write``) or
``"docs"`` (the same groups, and folders and documents shared with them,
``leopard.gen.docs``). ``config_toml`` is the set configuration that reads the group
relations a spec emits, and ``format_report`` the few lines a terminal shows after a run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from leopard.errors import InvalidInput
from leopard.model.names import TENANT_PREFIX_RE

__all__ = [
    "DOCS_MAX_DEPTH",
    "MAX_DEPTH_LIMIT",
    "MAX_TUPLES",
    "MIN_TUPLES",
    "GenReport",
    "OrgSpec",
    "SHAPES",
    "config_toml",
    "format_report",
]

MIN_TUPLES = 1_000
MAX_TUPLES = 100_000_000
MAX_DEPTH_LIMIT = 64
SHAPES = ("org", "docs")
#: the folder depth the CLI asks of the docs shape unless told (the org's is 15)
DOCS_MAX_DEPTH = 8


@dataclass(frozen=True)
class OrgSpec:
    """What to generate. The same spec always gives byte-identical output.

    With ``shape="docs"``: ``max_depth`` is the folder depth (groups nest at most
    ``min(max_depth, 5)`` deep), ``cycles`` puts rings among the groups, ``wildcards``
    makes a few documents public (``@user:*``), and ``rewrites`` must stay True (the
    schema's permissions are the rewrites).
    """

    tuples: int
    seed: int = 0
    cycles: bool = True
    wildcards: bool = True
    rewrites: bool = True
    max_depth: int = 15
    namespace_prefix: str = ""
    shape: str = "org"

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise InvalidInput(f"shape={self.shape!r}: expected one of {', '.join(SHAPES)}")
        if self.shape == "docs" and not self.rewrites:
            raise InvalidInput("rewrites=False is for the org shape (docs use a schema)")
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

    Org shape: ``deep_user`` is a member of ``deep_group`` only through
    ``deep_levels`` (≥ 3) levels of nesting: its one direct group lies that many hops
    below. It is None when ``max_depth`` < 3. ``non_member`` is a (user, group) pair
    that is not a membership.

    Docs shape: ``deep_doc`` lies ``deep_levels`` folders down and ``deep_user`` owns the
    top one, so it can view the document through the whole chain of folders;
    ``viewer_user`` owns the top folder holding the most documents and can view at
    least ``viewer_docs`` of them; ``non_member`` is a (user, doc) pair where the user
    cannot view the doc, chosen as deep as possible; ``wildcards`` counts the public
    docs, ``nested_edges`` the group nesting tuples, ``member_edges`` the user
    memberships of groups.
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
    folders: int = 0
    docs: int = 0
    grant_tuples: int = 0  # viewer, editor and owner tuples of folders and docs
    banned_tuples: int = 0
    deep_doc: str | None = None
    viewer_user: str | None = None
    viewer_docs: int = 0

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
    if spec.shape == "docs":
        return (
            "# Leopard set configuration for the groups of gen docs output.\n"
            "[[sets]]\n"
            f'namespace = "{spec.namespace_prefix}group"\n'
            'relation = "member"\n'
            'from = ["member"]\n'
        )
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
    if report.spec.get("shape") == "docs":
        return _format_docs_report(report)
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


def _format_docs_report(report: GenReport) -> str:
    rows = [
        ("tuples", f"{report.tuples:,}"),
        ("users", f"{report.users:,}"),
        ("groups", f"{report.groups:,} ({report.nested_edges:,} nested, "
         f"{report.member_edges:,} memberships, {report.cycles} cycles)"),
        ("folders", f"{report.folders:,} ({report.max_depth} deep)"),
        ("docs", f"{report.docs:,} ({report.wildcards:,} public)"),
        ("grants", f"{report.grant_tuples:,} ({report.banned_tuples:,} banned)"),
    ]  # fmt: skip
    if report.deep_doc:
        rows.append(
            ("deep doc", f"{report.deep_doc} ({report.deep_levels} folders down, "
             f"viewed by {report.deep_user})")
        )  # fmt: skip
    if report.viewer_user:
        rows.append(("big viewer", f"{report.viewer_user} (views {report.viewer_docs:,}+ docs)"))
    if report.non_member:
        rows.append(("non-viewer", f"{report.non_member[0]} cannot view {report.non_member[1]}"))
    rows.append(
        ("time", f"{report.seconds:.2f} s, {report.lines_per_second:,.0f} lines/s, "
         f"{report.bytes / 1e6:,.1f} MB")
    )  # fmt: skip
    return "\n".join(f"{k:<14} {v}" for k, v in rows)
