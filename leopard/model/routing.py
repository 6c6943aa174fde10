"""Answering across shards: which shard a subject is asked on, and how answers join.

Pure and light (the standard library and ``leopard.model.tokens``, no pyarrow or
numpy), because three places route queries the same way and one of them must stay
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
* ``shortest``: of the chains several shards explain, the one one index would tell.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterable, Sequence
from typing import TypeVar

from leopard.model.tokens import decode_token, encode_token

__all__ = [
    "asks_every_shard",
    "least_position",
    "least_token",
    "merge_pages",
    "shard_of",
    "shortest",
    "split_by_shard",
]

T = TypeVar("T")


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
