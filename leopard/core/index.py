"""The query API: ``Index`` answers membership questions from the stored sets.

``s`` is in ``g`` exactly when ``MEMBER2GROUP(s) ∩ GROUP2GROUP(g) ≠ ∅`` (or, for a
subject of namespace ``ns``, when ``MEMBER2GROUP(ns:*)`` meets it: a wildcard makes
every subject of its namespace a member). Reads go through ``SetReader`` (see
``leopard.core.layers``), which overlays the incremental layer on the base, so every
query path here sees both layers the same way.

Names: a group is ``ns:id#relation``, or ``ns:id`` when its namespace has exactly one
indexed set. A subject is ``ns:id`` (``#...`` is the same), a wildcard ``ns:*``, or a
userset ``ns:id#relation``: when that is an indexed set, ``check`` answers whether
the set is nested in the group (a set is nested in itself); otherwise it is an
opaque leaf subject, like a user.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from pyroaring import BitMap

from leopard.core import usersets as us
from leopard.core.caches import CachedSets
from leopard.core.explain import Step, describe, own_chain, shortest_chain
from leopard.core.freshness import POLL, wait_steps
from leopard.core.layers import SetReader
from leopard.core.loading import load_all
from leopard.core.naming import SHORT, full_group_name, subject_parts, subject_type_problem
from leopard.core.successor import Successor, live_generation
from leopard.errors import InvalidInput
from leopard.model.config import Config
from leopard.model.names import (
    PLAIN_SUBJECT_RE,
)
from leopard.model.routing import Placement
from leopard.model.setcodec import held_meets
from leopard.store.layout import gkey

__all__ = ["Index", "SWAP_GRACE"]

# How long refresh() keeps serving a generation while a newer one, swapped in behind
# it, catches up (see Index.refresh).
SWAP_GRACE = 30.0
#: the direct sets of a subject the index does not hold (never changed)
_NONE = BitMap()


class Index:
    """An open index. Cheap to query from one thread; open one per process."""

    #: the topics a consumer of this index is set to follow (``leopard serve --topic``):
    #: a token of one is waited for even before the index has applied any of it
    topics: frozenset[str] = frozenset()
    #: whether a consumer in another process (``serve --workers``' worker 0) applies to
    #: this index: a rebuilt generation is then served only once it has caught up, as
    #: that consumer switches to it, never after ``SWAP_GRACE`` (which would serve it
    #: behind what the consumer's process serves)
    follows_consumer: bool = False
    #: whether a newer generation may be served in place of the one served (``served``,
    #: ``newer``): for a shard of a sharded index served alone, the manifest's rule
    #: (``leopard.core.sharded.ServedShard``); None: any generation caught up may
    switch_gate: Callable[[SetReader, SetReader], bool] | None = None
    #: for a shard served alone (``ServedShard``), what it refuses: a plain subject of
    #: another shard; None (any other index, a ``ShardedIndex``'s shards): nothing
    placement: Placement | None = None

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # One lock for whichever reader is served: a query that has taken it reads the
        # same reader to the end, even if a compaction swap comes meanwhile.
        self._lock = threading.RLock()
        self._applied = threading.Condition()
        self._next: Successor | None = None  # a newer generation, catching up
        self._warm: bool | None = None  # warm(subjects=...) was called with this
        self._local_writer = False
        self._attach(SetReader.open(self.path, lock=self._lock))

    def _attach(self, reader: SetReader) -> None:
        self._r = reader
        self._c = CachedSets(reader)
        reader.listeners.append(self._notify)
        self._notify({})

    def _notify(self, updates: Any) -> None:
        """Wake waiters for a version: a batch was installed."""
        with self._applied:
            self._applied.notify_all()

    # -- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        if self._next is not None:
            self._next.close()
            self._next = None
        self._r.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def reader(self) -> SetReader:
        """The layered set reader under this index (for the consumer and compaction)."""
        return self._r

    @property
    def lock(self) -> threading.RLock:
        """The lock queries hold; a reader to be served by this index must share it."""
        return self._lock

    @property
    def config(self) -> Config:
        return self._r.config

    @property
    def position(self) -> dict[str, int]:
        """Per ``topic:partition``, the next offset to apply; a partition stopped at a
        gap in its log is left out (see ``gaps``): no version of it is vouched for."""
        return dict(self._r.served_position())

    @property
    def gaps(self) -> dict[str, str]:
        """Partitions whose log lost changes the index has not applied: partition ->
        what the gap is. Until resolved, a version naming one is never reached."""
        return dict(self._r.gaps)

    @property
    def version(self) -> str:
        """An opaque token for the stream position this index reflects."""
        return self._r.token()

    def expect_local_writer(self) -> None:
        """Batches are applied to this index by a writer in this process (a consumer):
        waits for a version wake on them instead of re-reading the disk."""
        self._local_writer = True

    def switch_to(self, reader: SetReader) -> None:
        """Serve another generation from now on, and close the one served until now.
        ``reader`` must have been opened with this index's ``lock``. A warmed index loads
        it into memory first, while queries still read the old one: full speed at once."""
        if reader.lock is not self._lock:
            raise InvalidInput("a reader to be served must be opened with the index's lock")
        loaded = load_all(reader, self._warm) if self._warm is not None else None
        old, old_cache = self._r, self._c
        with self._lock:
            self._attach(reader)
            if loaded is not None:
                self._c.install(loaded)
        old_cache.detach()
        old.listeners.clear()
        old.close()

    def may_serve(self, newer: SetReader) -> bool:
        """Whether ``newer`` may be served in place of the served generation, by the
        ``switch_gate`` (any generation without one)."""
        gate = self.switch_gate
        return gate is None or gate(self._r, newer)

    def refresh(self, accept: Callable[[SetReader, SetReader], bool] | None = None) -> bool:
        """Pick up what another process applied or compacted; whether anything changed.

        A newer generation is served once it has caught up with this one, or after
        ``SWAP_GRACE`` seconds all the same (a rebuild that no consumer follows; not when
        ``follows_consumer``): see ``leopard.core.successor``; and once
        ``accept(served, newer)`` says so, if given (else the ``switch_gate``, if any).
        """
        accept = accept if accept is not None else self.switch_gate
        live = live_generation(self.path)
        nxt = self._next
        if live == self._r.generation:
            if nxt is not None:  # the newer one was replaced in turn
                nxt.close()
                self._next = None
            return self._r.refresh()
        if nxt is None or nxt.generation != live:
            if nxt is not None:
                nxt.close()
            nxt = self._next = Successor.open(self.path, target=self._r.position, lock=self._lock)
        else:
            nxt.reader.refresh()
        grace = None if self.follows_consumer else SWAP_GRACE
        if not nxt.caught_up(grace=grace) or (accept and not accept(self._r, nxt.reader)):
            return self._r.refresh()  # the served generation still answers meanwhile
        self._next = None
        self.switch_to(nxt.reader)
        return True

    def wait_for(self, token: str, timeout: float = 1.0, *, poll: float = POLL) -> str:
        """Return once the index has applied at least ``token``; StaleIndex on time-out.

        With a writer in this process (``expect_local_writer``) this wakes on every
        applied batch; elsewhere it re-reads the incremental layer every ``poll`` s.
        """
        steps = wait_steps(
            lambda: self._r.served_position(),
            lambda: self.version,
            token,
            timeout,
            poll=poll,
            gaps=lambda: self._r.gaps,
            topics=self.topics,
        )
        try:
            while True:
                pause = next(steps)
                if self._local_writer:
                    with self._applied:
                        self._applied.wait(pause)
                else:
                    threading.Event().wait(pause)
                    self.refresh()
        except StopIteration as done:
            return str(done.value)

    # -- name resolution ----------------------------------------------------------------

    def _group_id(self, name: str) -> int | None:
        """The id of a group name; None for a well-formed name the index does not know."""
        gid = self._c.group_ids.get(name)
        if gid is not None:
            return gid if gid >= 0 else None
        if not isinstance(name, str):
            raise InvalidInput(f"group must be a string, not {type(name).__name__}")
        gid = self._r.base_group_ids.get(name)
        if gid is not None:  # a name as the base stores it: valid, nothing to parse
            return gid
        full = full_group_name(self._r.config, name)
        found = self._r.group_id(full)
        self._c.remember_group(name, found)
        return found

    def _parse_subject(self, name: str) -> tuple[str, int | None, str]:
        """``("leaf", None, key)`` or ``("set", gid, key)`` for a subject name."""
        ns, oid, rel = subject_parts(self._r.config, name)
        if rel is None or rel == "...":
            return "leaf", None, f"{ns}:{oid}" if rel else name
        if self._r.config.is_set(ns, rel):
            return "set", self._live_group(name), name
        return "leaf", None, name

    def _plain(self, subject: str) -> bool:
        """Whether an unknown subject is plainly named, of a type the schema has."""
        if PLAIN_SUBJECT_RE.fullmatch(subject) is None:
            return False
        return subject_type_problem(self.config, subject[: subject.index(":")], None) is None

    def _live_group(self, name: str) -> int | None:
        """The id of a group that has any edge; None for one unknown or emptied.

        A group whose every tuple was deleted keeps its id in the incremental layer
        until compaction drops it; answering as if it were unknown keeps answers the
        same before and after compaction (and as after a rebuild)."""
        r = self._r
        gid = r.group_id(name)
        if gid is None:
            return None
        key = gkey(gid)
        families = ("child", "parent", "g2m", "dchild", "dparent")
        if gid < len(r.base_groups) and not any(key in r.overlay.sets.get(f, ()) for f in families):
            return gid  # unchanged since a build, which only names groups with edges
        return gid if any(r.bitmap(f, gid) for f in families) else None

    # -- queries ------------------------------------------------------------------------

    def check(self, subject: str, group: str) -> bool:
        """Whether ``subject`` is in ``group``, directly or through nested groups."""
        # After warm(), held sets answer without the lock (``held_meets``, in C); an
        # answer read across a batch's install (the reader's epoch moved) is dropped.
        if self.placement is not None:
            self.placement.own(subject)
        c = self._c
        if c.subjects is not None and held_meets is not None:
            r = c.reader
            epoch = r.epoch
            if not epoch & 1:
                found = held_meets(c, epoch, subject, group)
                if found is None:  # not all held (held_answer would say the same)
                    with self._lock:
                        return self._check(subject, group)
                if r.epoch == epoch:
                    return found
        with self._lock:
            if type(subject) is str and type(group) is str:
                found = self._c.held_answer(subject, group)
                if found is not None:
                    return found
            return self._check(subject, group)

    def _check(self, subject: str, group: str, prefetched: dict[str, Any] | None = None) -> bool:
        c = self._c
        gid = c.group_ids.get(group)
        gid = self._group_id(group) if gid is None else gid if gid >= 0 else None
        # The common case, a plain subject: read its direct groups first (after warm(),
        # one probe of the in-memory copy, keyed as stored) and check the name's form
        # only when the index does not know it, so a hit costs no parsing.
        mem = c.subjects
        direct: BitMap | None = None
        if mem is not None and type(subject) is str:
            got = mem.get(skey := subject.encode("utf-8", "surrogatepass"))
            direct = c.subject_groups(skey, got) if isinstance(got, bytes) else got
        found = direct is not None
        if not found and type(subject) is str and len(subject) <= SHORT and "#" not in subject:
            if prefetched is not None and subject in prefetched:
                direct = prefetched[subject]
            else:
                direct = self._r.m2g_groups(subject)
            found = direct is not None or self._plain(subject)
        if found:
            key = subject
        else:
            kind, sgid, key = self._parse_subject(subject)
            if kind == "set":  # as the peers count usersets (leopard.core.usersets)
                if gid is not None:
                    starts = us.userset_starts(self.config, c, self._live_group, key, sgid)
                    if c.meets_set(starts, gid):
                        return True
                return us.holds_own(self.config, key, group)
            direct = self._r.m2g_groups(key)
        if gid is None:
            return False
        g2g = c.closures.get(gid)
        if not isinstance(g2g, BitMap):  # not held, or held as stored
            g2g = c.closure(gid)
        rset = self._r.resource_ids
        tier = bool(rset) and gid in rset
        groups = None
        held = mem is not None and type(group) is str
        if held:
            c.remember_reach(group, gid, tier)  # for held_answer
            if tier:
                groups = c.tier_groups.get(group)
        if tier:
            # A resource-tier set's closure stops at the group-tier sets it names: the
            # subject (or its namespace's wildcard) is in it directly or below those.
            if groups is None:
                groups = g2g - rset
            name = group if held else None
            held_by_wild = us.wildcard_holds(self.config, key)
            return c.tier_meets(
                key, direct if direct is not None else _NONE, g2g, groups, name, held_by_wild
            )
        if direct is not None and direct.intersect(g2g):
            return True
        if key.endswith(":*") or not us.wildcard_holds(self.config, key):
            return False
        wild = c.wildcard_groups(key[: key.index(":")])
        return wild is not None and wild.intersect(g2g)

    def check_many(self, pairs: Any) -> list[bool]:
        """``check`` for each ``(subject, group)`` pair, in order, from one version.

        The subjects' direct groups are read with one multi-get, which costs much
        less per pair than a read each.
        """
        pairs = list(pairs)
        if self.placement is not None:
            self.placement.own_pairs(pairs)
        with self._lock:
            if self._c.subjects is not None:
                try:
                    return self._check_many_warm(pairs)
                except (TypeError, AttributeError):
                    pass  # a subject that is no string, an unhashable group: named below
            keys = {s for s, _ in pairs if type(s) is str and "#" not in s}
            prefetched = self._r.m2g_groups_many(sorted(keys)) if len(keys) > 1 else None
            return [self._check(s, g, prefetched) for s, g in pairs]

    def _check_many_warm(self, pairs: list[Any]) -> list[bool]:
        """``check_many`` after ``warm()``, under the lock: ``held_meets`` (or where it
        is not compiled ``CachedSets.held_answer``) for each pair, ``_check`` for what
        it leaves (which resolves the group and remembers its closure)."""
        c, check = self._c, self._check
        # the reader's epoch is still while the lock is held
        held = c.held_answer if held_meets is None else partial(held_meets, c, c.reader.epoch)
        out: list[bool] = []
        append = out.append
        for s, g in pairs:
            found = held(s, g)
            append(check(s, g) if found is None else found)
        return out

    def groups_of(
        self, subject: str, *, type: str | None = None, permission: str | None = None
    ) -> list[str]:
        """Every set the subject is in, transitively, sorted by name; with ``type`` and
        ``permission``, only those of that type and relation or permission (SpiceDB's
        LookupResources: ``groups_of("user:anne", type="doc", permission="view")``; no
        indexed set of that name, or a type the schema or configuration does not know:
        refused, as ``check`` refuses a name it does not know; ``permission`` alone, one
        that a type defining it does not index, too)."""
        if (type, permission) != (None, None) and (
            problem := self.config.lookup_problem(type, permission)
        ):
            raise InvalidInput(problem)
        if self.placement is not None:
            self.placement.own(subject)
        with self._lock:
            names = self._groups_of(subject)
        if type is not None:
            names = [n for n in names if n.startswith(type + ":")]
        if permission is not None:
            names = [n for n in names if n.endswith("#" + permission)]
        return names

    def _groups_of(self, subject: str) -> list[str]:
        kind, sgid, key = self._parse_subject(subject)
        if kind == "set":  # as the peers count usersets (leopard.core.usersets)
            seeds = us.userset_starts(self.config, self._c, self._live_group, key, sgid, False)
            own = us.own_sets(self.config, key)
        else:
            seeds, own = self._c.direct_groups(key, us.wildcard_lists(self.config, key)), []
        if not seeds:
            return sorted(own)
        return sorted({*self._r.group_names(self._c.above(seeds)), *own})

    def members_of(
        self, group: str, limit: int | None = None, after: str | None = None
    ) -> list[str]:
        """Every leaf subject in the group, transitively, sorted by name.

        Paginate with ``after``: the next page starts after that subject name. A
        wildcard member appears as ``ns:*``. A shard opened alone refuses (each shard
        holds a part of them); a shard server answers its part, for the router.
        """
        placement = self.placement
        if placement is not None and not placement.partial_members:
            raise InvalidInput(placement.alone(f"listing the members of {group}"))
        with self._lock:
            return self._members_of(group, limit, after)

    def _members_of(self, group: str, limit: int | None, after: str | None) -> list[str]:
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise InvalidInput(f"limit must be a non-negative integer, not {limit!r}")
        if after is not None:
            if not isinstance(after, str) or not after:
                raise InvalidInput(f"after must be a subject name, not {after!r}")
        gid = self._group_id(group)
        if gid is None or limit == 0:
            return []
        members = self._c.members(gid)
        return self._r.subject_page(members, limit=limit, after=after)

    def explain(
        self, subject: str, group: str, *, steps: bool = False
    ) -> list[str] | list[Step] | None:
        """A shortest chain of sets from ``group`` down to one the subject is directly in;
        None when the subject is not a member.

        With ``steps``, each set of the chain comes with what its edge came from (a
        stored tuple, or a schema's rewrite), and the subject ends the chain.
        """
        if self.placement is not None:
            self.placement.own(subject)
        with self._lock:
            gid = self._group_id(group)
            kind, sgid, key = self._parse_subject(subject)
            if kind == "set":
                targets = us.userset_starts(self.config, self._c, self._live_group, key, sgid)
            else:
                targets = self._c.direct_groups(key, us.wildcard_holds(self.config, key))
            chain = None if gid is None else shortest_chain(self._r, self._c, gid, targets)
            if chain is None:  # a userset's own object's set may hold it by the schema
                return own_chain(self.config, key, group, steps) if kind == "set" else None
            if steps:
                return describe(self._r, chain, key if kind == "leaf" else subject)
            return self._r.group_names(chain)

    def warm(self, *, subjects: bool = True) -> int:
        """Hold the index in memory: every group's closure, (``subjects``) every
        subject's direct groups, and without a schema every group's parent sets (these
        and small closures as stored until a query first reads them), so that a check
        reads no RocksDB. Returns the number of sets held. A
        service pays this once at start: 4-6 s at 40M tuples of groups, 20-35 s at 10M
        of documents in folders (on this project's 2-core machine). Changes applied
        later still go through the incremental layer (a changed subject is dropped from
        memory and read through the overlay), and a new generation swapped in after
        compaction is loaded before it serves.
        """
        with self._lock:
            self._warm = subjects
            return self._c.load(subjects=subjects)

    @property
    def warmed(self) -> bool:
        """Whether ``warm()`` holds every subject's direct groups in memory."""
        return self._c.subjects is not None

    def stats(self) -> dict[str, Any]:
        """Counts and sizes of the index and its layers."""
        with self._lock:
            return self._r.stats()
