"""Answering across shards: which shard a subject is asked on, and how answers join.

Pure and light (the standard library, ``leopard.errors`` and ``leopard.model.tokens``,
no pyarrow or numpy), because three places route queries the same way and one of them must stay
light: ``leopard.core.sharded.ShardedIndex`` in one process, the router in front of
shard servers (``leopard.http.router``) and the Python client given the shards' URLs
(``leopard.client.sharded``), which may load nothing heavy.

* ``shard_of``: a plain subject's shard, ``crc32(ns:id) mod N`` of the name before any
  ``#`` (the rule of ``leopard.model.shards``, which places tuples by it);
* ``asks_every_shard``: a userset subject (``group:eng#member``) is a question about the
  graph of sets, asked of every shard;
* ``merge_pages``: the sorted pages of ``members_of`` merged without repeats (replicated
  members, such as wildcards, are on every shard);
* ``least_position`` / ``least_token``: a version every shard has reached;
* ``split_by_shard``: which shards a batch of checks goes to, pair by pair;
* ``shortest``: of the chains several shards explain, the one one index would tell;
* ``shard_label`` / ``shard_problems``: who a shard server says it is (``SHARD_HEADER``
  on every answer: shard k of n, of which build), and why answers said to come from
  given shards cannot be joined (another shard, or another build, than expected);
* ``Placement``: what a shard served alone refuses, as it cannot answer it alone (a
  plain subject placed on another shard; a question every shard answers in part).
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterable, Sequence
from typing import TypeVar

from leopard.errors import InvalidInput
from leopard.model.tokens import decode_token, encode_token

__all__ = [
    "MIXED_BUILDS",
    "SHARD_HEADER",
    "Placement",
    "asks_every_shard",
    "least_position",
    "least_token",
    "merge_pages",
    "shard_label",
    "shard_of",
    "shard_problems",
    "shortest",
    "split_by_shard",
]

T = TypeVar("T")

#: the header of every answer of a shard server: ``k/n/build`` (``shard_label``)
SHARD_HEADER = "Leopard-Shard"


def shard_of(subject: str, shards: int) -> int:
    """The shard that holds ``subject``'s direct sets (``ns:id``; a ``#...`` is ignored)."""
    key = subject.split("#", 1)[0]
    return zlib.crc32(key.encode("utf-8")) % shards


def asks_every_shard(subject: object) -> bool:
    """Whether a query about ``subject`` goes to every shard: a userset (or a name that
    is not a string, which every shard refuses alike)."""
    return not isinstance(subject, str) or "#" in subject


def least_position(positions: list[dict[str, int]]) -> dict[str, int]:
    """Per partition, the least offset of ``positions``; a partition one of them lacks
    is left out (not every shard vouches for it)."""
    if not positions:
        return {}
    common = set(positions[0]).intersection(*positions[1:])
    return {p: min(pos[p] for pos in positions) for p in sorted(common)}


def least_token(tokens: Iterable[str]) -> str:
    """The version token every one of ``tokens`` has reached (``least_position``);
    one token is returned as it is."""
    tokens = list(tokens)
    if len(tokens) == 1:
        return tokens[0]
    return encode_token(least_position([decode_token(t) for t in tokens]))


def merge_pages(pages: list[list[str]], limit: int | None) -> list[str]:
    """Sorted pages of names merged into one sorted page without repeats."""
    out: list[str] = []
    last = None
    for name in heapq.merge(*pages):
        if name != last:
            out.append(name)
            last = name
            if limit is not None and len(out) >= limit:
                break
    return out


def split_by_shard(subjects: Iterable[object], shards: int) -> dict[int, list[int]]:
    """Per shard, the positions of the ``subjects`` it is asked about: a plain subject's
    shard, or every shard for a userset (whose answers are then joined: any)."""
    per_shard: dict[int, list[int]] = {}
    every = range(shards)
    for i, subject in enumerate(subjects):
        owners = every if asks_every_shard(subject) else (shard_of(subject, shards),)  # type: ignore[arg-type]
        for k in owners:
            per_shard.setdefault(k, []).append(i)
    return per_shard


def shortest(chains: Iterable[tuple[Sequence[str], T]]) -> T | None:
    """Of ``(names of a chain, answer)`` from several shards, the answer whose chain is
    shortest, then first by names; None when there is none."""
    best: tuple[int, list[str], T] | None = None
    for names, answer in chains:
        key = (len(names), [str(n) for n in names])
        if best is None or key < (best[0], best[1]):
            best = (key[0], key[1], answer)
    return None if best is None else best[2]


def shard_label(k: int, n: int, build: str | None) -> str:
    """What a shard server says it is: shard ``k`` of ``n``, of ``build`` ('-': a build
    without an id)."""
    return f"{k}/{n}/{build or '-'}"


#: how ``shard_problems`` begins the problem of answers of two builds
MIXED_BUILDS = "the shards answer from different builds"


def shard_problems(found: Iterable[tuple[int, str | None]], urls: Sequence[str]) -> list[str]:
    """Why the answers of ``found`` (each: the shard asked, and the ``SHARD_HEADER`` its
    server sent, None without one) cannot be joined as shards of one index of
    ``len(urls)`` shards, shard K served at ``urls[K]``: a server that is not shard K of
    N (a wrong or mis-ordered list of URLs, an unsharded server), or shards of two
    builds (a sharded build swapping them in, or stopped while doing so). [] when they
    can."""
    n = len(urls)
    problems: list[str] = []
    builds: dict[str, list[int]] = {}
    for k, label in found:
        where = f"shard {k} at {urls[k]}"
        parts = (label or "").split("/", 2)
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            problems.append(
                f"{where} does not say which shard it serves (no {SHARD_HEADER} header): "
                f"it is not 'leopard serve --shard {k}' of a sharded index"
            )
        elif (int(parts[0]), int(parts[1])) != (k, n):
            problems.append(
                f"{where} serves shard {parts[0]} of {parts[1]}, not shard {k} of {n}: "
                "the shard URLs do not match the shard servers"
            )
        else:
            builds.setdefault(parts[2], []).append(k)
    if len(builds) > 1:
        told = "; ".join(
            f"{', '.join(f'shard {k} at {urls[k]}' for k in ks)} of build {b}"
            for b, ks in builds.items()
        )
        problems.append(
            f"{MIXED_BUILDS} ({told}): a sharded build is swapping "
            "them in, or was stopped while doing so (then build the index again)"
        )
    return problems


#: what a refusal of a shard served alone tells to do instead
_INSTEAD = "ask the router (leopard serve --route) or open the sharded index"


class Placement:
    """What an index that is shard ``k`` of ``n`` shards, served alone, cannot answer
    (``Index.placement``; ``leopard.core.sharded.ServedShard``): a question about a
    plain subject placed on another shard, whose direct sets it does not hold
    (``own``), and one that every shard answers in part (``alone`` says why). A userset or a
    wildcard subject is asked here (every shard holds the graph and the wildcards;
    the router asks every shard about a userset and joins the answers)."""

    #: whether ``members_of`` answers this shard's part (a shard server: the router
    #: merges the parts), or refuses (a shard opened alone, ``open_any``)
    partial_members: bool = True

    def where(self) -> tuple[int, int]:
        """(k, n): this index is shard k of n."""
        raise NotImplementedError

    def own(self, subject: object) -> None:
        """InvalidInput naming ``subject``, its shard and this one when it is a plain
        subject placed on another shard; a name that is no subject is left to the
        index, which refuses it as usual."""
        if type(subject) is not str or "#" in subject or ":" not in subject:
            return
        if subject.endswith(":*"):
            return  # wildcards are on every shard
        k, n = self.where()
        at = shard_of(subject, n)
        if at != k:
            raise InvalidInput(
                f"{subject} is placed on shard {at} of {n}, this index is shard {k}: " + _INSTEAD
            )

    def own_pairs(self, pairs: Iterable[object]) -> None:
        """``own`` for the subject of each ``(subject, group)`` pair."""
        for pair in pairs:
            if isinstance(pair, (tuple, list)) and len(pair) == 2:
                self.own(pair[0])

    def alone(self, what: str) -> str:
        """Why ``what`` (a question whose answer every shard holds in part, such as the
        members of a set) cannot be answered by this shard alone."""
        k, n = self.where()
        return (
            f"{what} needs every shard of this sharded index ({n} shards), and this index "
            f"is shard {k} served alone: open the sharded index (leopard.open_index) or ask "
            "the router's GET /v1/members (leopard serve --route)"
        )
