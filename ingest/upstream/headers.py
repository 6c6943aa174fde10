"""The upstream's revision carried through Kafka: headers written by ``leopard bridge``
and read by the consumer.

``leopard bridge`` publishes each SpiceDB change as a native change record keyed by its
tuple, with ``REVISION`` (the SpiceDB revision, as a decimal number) and ``TOKEN`` (its
ZedToken) in headers. After the changes of a poll it writes a *marker* to every
partition of the topic: no value, ``REVISION`` and ``MARKER`` (the topic's partition
count). A partition's records come in revision order, so once every partition has
passed revision R, every change up to R has been consumed. A partition has passed R
with its marker of R, or with a change of a later revision; a change of R takes it
only past R - 1, since one revision's changes may be read in two batches.
``BridgedRevisions`` keeps, per partition, the revision passed and the last one seen
(persisted in the source state under ``STATE``), and moves the index's position under
``SPICEDB_KEY`` to the least revision passed, in the write batch of the changes. The
index's tokens then carry SpiceDB's revision, and a ZedToken is waited for as with
``leopard follow``. A record at or below the
revision the index already has (the snapshot of ``build --from``), or older than one its
partition already carried (a change the bridge sent again, after a send it could not
confirm or a restart), is not applied again.

Every record of one run of the bridge also carries ``FROM``: the revision the run
started after (its checkpoint's, ``--start-token``'s, or SpiceDB's current one). A
partition's records must go on from where that partition's last ones stopped (each
run writes markers to every partition before it checkpoints), and the first records
of a topic from where the index is (the revision of ``build --from``): a run starting
after that skipped changes nobody published, and the consumer stops at it
(``StreamGap``) rather than apply what follows and answer without them. An index built
from files has no revision to hold a run to: its first bridged records are taken only
on a partition it was given a position on (``build --position``: who built it says
where its snapshot is in the stream), and stop the consumer otherwise.
"""

from __future__ import annotations

from typing import Any

from leopard.errors import StreamGap
from leopard.model.zedtoken import SPICEDB_KEY

__all__ = ["FROM", "MARKER", "REVISION", "STATE", "TOKEN", "BridgedRevisions"]

REVISION = "leopard.upstream.revision"
TOKEN = "leopard.upstream.token"
MARKER = "leopard.upstream.marker"
FROM = "leopard.upstream.from"
#: the source-state section: {"revisions": {"topic:partition": last revision seen},
#: "passed": {"topic:partition": revision passed}, "partitions": {topic: n}}
STATE = "bridged"


class BridgedRevisions:
    """The revisions the records of one batch carry, against what the index stored."""

    def __init__(self, reader: Any) -> None:
        stored = reader.source_state.get(STATE) or {}
        self.applied: int = reader.position.get(SPICEDB_KEY, -1)
        # partitions the index has a position on (``build --position``, or read before)
        self.placed = {key for key in reader.position if key != SPICEDB_KEY}
        self.revisions: dict[str, int] = dict(stored.get("revisions") or {})
        # (an index of an earlier release kept the last revision seen only)
        self.passed: dict[str, int] = dict(stored.get("passed") or self.revisions)
        self.partitions: dict[str, int] = dict(stored.get("partitions") or {})
        self.seen = False

    def take(self, message: Any) -> bool:
        """Note the record's revision; whether it is a change to decode and apply."""
        headers = getattr(message, "headers", None)
        if not headers:
            return True
        found = dict(headers)
        raw = found.get(REVISION)
        if raw is None:
            return True
        try:
            revision = int(raw)
        except ValueError:
            return True  # not ours: decoded (and dead-lettered, if need be) as any record
        self.seen = True
        key = f"{message.topic}:{message.partition}"
        self._check_start(key, found.get(FROM), message)
        prior = self.revisions.get(key, -1)
        self.revisions[key] = max(prior, revision)
        # a marker of R: the partition has every change up to R; a change of R: up to
        # R - 1 (more changes of R may come in the next batch: were R taken as passed,
        # the index's position would reach R, and they would be skipped as applied)
        passed = revision if MARKER in found else revision - 1
        self.passed[key] = max(self.passed.get(key, -1), passed)
        if MARKER in found:
            try:
                self.partitions[message.topic] = int(found[MARKER])
            except (TypeError, ValueError):  # no value, or not a count: not ours
                pass
            return False
        # A record older than one this partition already carried was sent again (the
        # bridge publishing from its checkpoint after a send it could not confirm, or
        # restarted from an older one): it was applied in its turn, and applied again
        # after the later changes of its tuple it would undo them. (Records of the
        # partition's latest revision are taken: a revision has several changes.)
        return revision > self.applied and revision >= prior

    def _check_start(self, key: str, start: bytes | None, message: Any) -> None:
        """Refuse a record of a bridge run that started after both where this
        partition's records stopped (before any: nowhere) and the index's revision: the
        changes between are in no record and in no snapshot."""
        if start is None:
            return  # a bridge that does not say where it started
        try:
            after = int(start)
        except ValueError:
            return
        if key in self.revisions:
            before = self.revisions[key]
        elif self.revisions:
            return  # a partition added since: it held nothing before
        else:
            before = -1  # nothing bridged read yet: only the index's own revision counts
        covered = max(before, self.applied)
        if covered < 0:
            if key in self.placed:
                return  # the snapshot was placed in this stream by who built it
            raise StreamGap(
                f"{key} offset {message.offset}: the bridge's records start after revision "
                f"{after}, but the index holds no SpiceDB revision (it was built from "
                "files) and no position on this partition: whether its snapshot holds "
                f"every change up to {after} cannot be known. Rebuild it from SpiceDB "
                "(leopard build --from), or, if its snapshot does hold them, build it with "
                f"the position it reflects in this topic (leopard build --position "
                f"{key}=OFFSET)"
            )
        if after <= covered:
            return  # the index's snapshot or this partition's records reach the start
        had = f"this partition's records stopped at {before}, " if before >= 0 else ""
        index = f"revision {self.applied}" if self.applied >= 0 else "no SpiceDB revision"
        raise StreamGap(
            f"{key} offset {message.offset}: the bridge's records start after revision "
            f"{after}, but {had}the index is at {index}: any change after {covered} and up "
            f"to {after} was never published. Rebuild the index from SpiceDB (leopard build "
            f"--from; one at revision {after} or later goes on from here), and start a "
            "bridge from the revision of the indexes that consume it (--start-token)"
        )

    def through(self) -> int | None:
        """The revision every partition has passed (None until each has a revision)."""
        revisions = []
        for topic, count in self.partitions.items():
            for partition in range(count):
                revision = self.passed.get(f"{topic}:{partition}")
                if revision is None:
                    return None
                revisions.append(revision)
        return min(revisions) if revisions else None

    def persist(
        self, position: dict[str, int], state: dict[str, Any]
    ) -> tuple[dict[str, int], dict[str, Any]]:
        """The batch's position and source state with the revisions added."""
        state = {
            **state,
            STATE: {
                "revisions": self.revisions,
                "passed": self.passed,
                "partitions": self.partitions,
            },
        }
        through = self.through()
        if through is not None and through > self.applied:
            position = {**position, SPICEDB_KEY: through}
        return position, state
