"""Python clients of the HTTP query service, shaped like ``Index``.

``Client(base_url)`` talks to one server: ``leopard serve`` of an index, or of one
shard, or ``leopard serve --route`` in front of the shards of a sharded index.
``ShardedClient({0: url0, 1: url1, ...})`` talks to the shard servers of a sharded
index itself and routes each query as the router does (``leopard.client.sharded``).
Both have the methods of ``leopard.Index`` and raise the same exceptions (see
``leopard.client.base``), and load nothing but the standard library and the light
modules of the model.
"""

from __future__ import annotations

from leopard.client.base import Client, MembersPage
from leopard.client.sharded import ShardedClient
from leopard.errors import ServiceError, ShardUnavailable, Unauthorized

__all__ = [
    "Client",
    "MembersPage",
    "ServiceError",
    "ShardUnavailable",
    "ShardedClient",
    "Unauthorized",
]
