"""A sharded index opened in one process: every query answered as one index answers it.

``ShardedIndex`` opens the shards a manifest names (``leopard.store.manifest``) and
routes each query as a router in front of shard servers does (``docs/scale.md``):

* ``check``, ``groups_of``, ``explain`` of a plain subject go to the subject's shard,
  which holds its direct sets and the whole graph of sets: one shard, one answer;
* a userset subject (``group:eng#member``) is a question about the graph, whose sets
  every shard holds in part (an object whose tuples all sit on one shard is known
  there alone): it is asked of every shard and the answers are joined (``check``:
  any; ``groups_of``: the union; ``explain``: the shortest chain, then by name);
* ``members_of`` asks every shard for its page and merges the pages by name
  (replicated members, such as wildcards, are told once);
* ``check_many`` splits the pairs by shard and puts the answers back in order.

Versions: every shard consumes every partition of the change stream, so offsets mean
the same on each. The index's ``version`` is what every shard has reached (per
partition, the least of the shards' offsets); ``wait_for`` waits for each shard.

Opening checks that every shard is of the build the manifest names (its id in each
shard's header): a build swaps its shards in one after another and writes the manifest
last, so shards of two builds mean one is swapping them in (waited for, up to
``SWAP_WAIT`` seconds) or was stopped while doing so (refused: answers would mix two
snapshots).

Kept open, the shards switch to a new build together: ``ShardGate`` lets a shard
serve a newer generation of another build only once the manifest names that build. A
shard served alone (``leopard serve --shard K``) follows the same gate
(``ServedShard``), says who it is (shard k of n, of which build: ``shard_label``),
why it is not to be joined with the others while its build is not the manifest's, and
refuses what it cannot answer alone (``Placement``: a plain subject placed on another
shard, whose direct sets it does not hold; the members of a set asked by a peer's API).

This is the reference the routed servers are compared with, and what
``leopard.open_index`` returns for a sharded directory.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from leopard.core.freshness import POLL
from leopard.core.index import Index
from leopard.core.layers import SetReader
from leopard.errors import IndexNotFound, InvalidInput, LeopardError, StorageError
from leopard.model.routing import (
    Placement,
    asks_every_shard,
    least_position,
    merge_pages,
    shard_label,
    shard_of,
    shortest,
    split_by_shard,
)
from leopard.model.tokens import encode_token
from leopard.store.manifest import ShardManifest, read_manifest

__all__ = [
    "ServedShard",
    "ShardGate",
    "ShardedIndex",
    "least_position",
    "merge_pages",
    "open_any",
    "read_manifest",
]

#: seconds an opening waits for a build swapping shards in to write its manifest
SWAP_WAIT = 5.0


class ShardGate:
    """The rule of the shards of the sharded index at ``root``: a shard goes from the
    generation it serves to a newer one of another build only once the manifest names
    that build, which a sharded build writes after swapping every shard in; a
    compaction (the same build) goes at once. ``manifest``: the last one read."""

    def __init__(self, root: Path, manifest: ShardManifest | None) -> None:
        self.root = root
        self.manifest = manifest

    def may_switch(self, served: SetReader, newer: SetReader) -> bool:
        """Whether a shard may go from ``served`` to ``newer``: a compaction (the same
        build), or a build whose shards are all swapped in (its manifest written)."""
        build = _build_of(newer)
        if build is None or build == _build_of(served):
            return True
        manifest = read_manifest(self.root)
        if manifest is None or manifest.build != build:
            return False
        self.manifest = manifest
        return True


class ServedShard(Placement):
    """A shard of a sharded index served alone, by an ``Index`` of its directory: its
    ``switch_gate`` is the manifest's (``ShardGate``), ``label`` says which shard it
    serves of which build, ``problem`` why its build is not to be joined with the
    other shards', or a newer build is held back longer than ``SWAP_WAIT``. It is the
    index's ``placement``: the index refuses a plain subject placed on another shard
    (``Placement.own``). ``of`` makes one for an index that is a shard, else None."""

    def __init__(self, index: Index, gate: ShardGate) -> None:
        self.index = index
        self.gate = gate
        self._labelled: tuple[SetReader | None, str] = (None, "")
        #: a newer generation held back by the gate: its build, and since when
        self._held: tuple[str | None, float] | None = None
        index.switch_gate = self._may_switch
        index.placement = self

    def _may_switch(self, served: SetReader, newer: SetReader) -> bool:
        """The gate's answer, remembering since when a build is held back."""
        if self.gate.may_switch(served, newer):
            self._held = None
            return True
        build = _build_of(newer)
        if self._held is None or self._held[0] != build:
            self._held = (build, time.monotonic())
        return False

    @classmethod
    def of(cls, index: Index) -> ServedShard | None:
        """The shard ``index`` is (its header names k of n), served with the gate of the
        sharded index above it; None for an index that is no shard."""
        if not index.reader.meta.get("shard"):
            return None
        root = index.path.resolve().parent
        return cls(index, ShardGate(root, read_manifest(root)))

    def where(self) -> tuple[int, int]:
        """(k, n) of the generation served: it is shard k of n."""
        k, n, _ = self.label().split("/", 2)
        return int(k), int(n)

    def label(self) -> str:
        """``k/n/build`` of the generation served (``leopard.model.routing.shard_label``)."""
        reader = self.index.reader
        seen, label = self._labelled
        if reader is not seen:
            k, n, *build = reader.meta.get("shard") or [0, 0]
            label = shard_label(int(k), int(n), build[0] if build else None)
            self._labelled = (reader, label)
        return label

    def problem(self) -> str | None:
        """Why this shard is not ready (for ``/readyz``): the manifest names another
        build (one swapping its shards in, or stopped while doing so) or there is none,
        or a newer build has been held back by the gate longer than ``SWAP_WAIT``; None
        when all is well."""
        k, n, build = self.label().split("/", 2)
        where = f"shard {k} of {n} serves build {build}"
        try:
            manifest = read_manifest(self.gate.root)
        except LeopardError as exc:
            return f"{where}, and the sharded index's manifest cannot be read: {exc}"
        if manifest is None:
            return (
                f"{where}, but {self.gate.root} holds no manifest (shards.json): a first "
                "sharded build was stopped while swapping its shards in; build it again"
            )
        if manifest.build is not None and manifest.build != build:
            return (
                f"{where}, but the manifest of {self.gate.root} names build "
                f"{manifest.build}: a sharded build is swapping its shards in, or was "
                "stopped while doing so (then build the index again)"
            )
        held = self._held
        if held is not None and time.monotonic() - held[1] > SWAP_WAIT:
            return (
                f"{where}, the manifest's, but build {held[0]} is swapped into "
                f"{self.index.path} and held back for {time.monotonic() - held[1]:.0f} s "
                "until the manifest names it: a sharded build was stopped while swapping "
                "its shards in (build the index again); changes followed meanwhile are "
                "not served"
            )
        return None


class ShardedIndex:
    """The shards of a sharded index, answering as one ``Index`` (see the module)."""

    def __init__(self, path: str | Path, manifest: ShardManifest | None = None) -> None:
        self.path = Path(path)
        self.shards: list[Index] = []
        deadline = time.monotonic() + SWAP_WAIT
        while True:
            found = manifest if manifest is not None else read_manifest(self.path)
            if found is None:
                raise IndexNotFound(f"no sharded index at {str(self.path)!r}: no shards.json")
            self.gate = ShardGate(self.path, found)
            self.n = found.shards
            self.shards = []
            try:
                for p in found.shard_paths(self.path):
                    self.shards.append(Index(p))
            except BaseException:
                self.close()
                raise
            others = self._other_builds()
            if not others:
                return
            self.close()
            if time.monotonic() >= deadline:
                raise StorageError(
                    f"the shards of {str(self.path)!r} are of two builds ({others}; the "
                    f"manifest names {found.build}): a sharded build is swapping them in "
                    f"and has not finished within {SWAP_WAIT:g} s, or was stopped while "
                    "doing so. Build the index again"
                )
            manifest = None  # read again: the build writes it last
            time.sleep(0.05)

    def _other_builds(self) -> str:
        """The shards of another build than the manifest's, told; '' when none."""
        want = self.manifest.build
        if want is None:
            return ""  # a manifest from before builds were named
        odd = []
        for k, ix in enumerate(self.shards):
            got = _build_of(ix.reader)
            if got != want:
                odd.append(f"shard {k} of {got or 'a build without an id'}")
        return ", ".join(odd)

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        for ix in self.shards:
            ix.close()

    def __enter__(self) -> ShardedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def config(self) -> Any:
        return self.shards[0].config

    def shard_for(self, subject: str) -> int:
        """The shard holding ``subject``'s direct sets."""
        if not isinstance(subject, str):
            raise InvalidInput(f"subject must be a string, not {subject!r}")
        return shard_of(subject, self.n)

    @property
    def position(self) -> dict[str, int]:
        return least_position([ix.position for ix in self.shards])

    @property
    def gaps(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for ix in self.shards:
            out.update(ix.gaps)
        return out

    @property
    def version(self) -> str:
        return encode_token(self.position)

    def refresh(self) -> bool:
        """Each shard's ``refresh``; a shard serves a newer generation of another build
        only once the manifest names that build, which a sharded build writes after
        swapping every shard in: meanwhile every shard answers from the build before,
        never some from one build and some from the other."""
        changed = False
        for ix in self.shards:
            changed = ix.refresh(accept=self.gate.may_switch) or changed
        return changed

    @property
    def manifest(self) -> ShardManifest:
        """The manifest of the build the shards serve."""
        manifest = self.gate.manifest
        assert manifest is not None
        return manifest

    def wait_for(self, token: str, timeout: float = 1.0, *, poll: float = POLL) -> str:
        """Return once every shard has applied ``token``; StaleIndex on time-out."""
        deadline = time.monotonic() + timeout
        for ix in self.shards:
            ix.wait_for(token, max(0.0, deadline - time.monotonic()), poll=poll)
        return self.version

    def warm(self, *, subjects: bool = True) -> int:
        return sum(ix.warm(subjects=subjects) for ix in self.shards)

    @property
    def warmed(self) -> bool:
        return all(ix.warmed for ix in self.shards)

    def stats(self) -> dict[str, Any]:
        return {"shards": [ix.stats() for ix in self.shards]}

    # -- queries ------------------------------------------------------------------------

    def _owners(self, subject: str) -> Iterator[Index]:
        """The shards to ask about ``subject``: its own, or every one for a userset."""
        if asks_every_shard(subject):
            yield from self.shards
        else:
            yield self.shards[self.shard_for(subject)]

    def check(self, subject: str, group: str) -> bool:
        return any(ix.check(subject, group) for ix in self._owners(subject))

    def check_many(self, pairs: Any) -> list[bool]:
        pairs = list(pairs)
        subjects = [p[0] if isinstance(p, (tuple, list)) and len(p) == 2 else None for p in pairs]
        out = [False] * len(pairs)
        for k, rows in split_by_shard(subjects, self.n).items():
            # a malformed pair is asked of every shard, which refuses it as Index does
            answers = self.shards[k].check_many([pairs[i] for i in rows])
            for i, a in zip(rows, answers, strict=True):
                out[i] = out[i] or a
        return out

    def groups_of(
        self, subject: str, *, type: str | None = None, permission: str | None = None
    ) -> list[str]:
        found: set[str] = set()
        for ix in self._owners(subject):
            found.update(ix.groups_of(subject, type=type, permission=permission))
        return sorted(found)

    def members_of(
        self, group: str, limit: int | None = None, after: str | None = None
    ) -> list[str]:
        pages = [ix.members_of(group, limit, after) for ix in self.shards]
        return merge_pages(pages, limit)

    def explain(
        self, subject: str, group: str, *, steps: bool = False
    ) -> list[str] | list[Any] | None:
        chains = (ix.explain(subject, group, steps=steps) for ix in self._owners(subject))
        return shortest(
            ([s if isinstance(s, str) else s.set for s in chain], chain)
            for chain in chains
            if chain is not None
        )


def open_any(path: str | Path) -> Index | ShardedIndex:
    """The index at ``path``: a ``ShardedIndex`` where a manifest says it is sharded; a
    shard of one opened alone refuses what it cannot answer alone (``ServedShard``)."""
    manifest = read_manifest(path)
    if manifest is not None:
        return ShardedIndex(path, manifest)
    index = Index(path)
    try:
        shard = ServedShard.of(index)
        if shard is not None:
            shard.partial_members = False  # no router merges its part here
    except BaseException:
        index.close()
        raise
    return index


def _build_of(reader: SetReader) -> str | None:
    """The id of the sharded build a shard's generation is of (None: not named)."""
    shard = reader.meta.get("shard") or []
    return shard[2] if len(shard) > 2 else None
