"""gRPC targets: whether one is local, the rule that picks TLS when none is asked for.

A SpiceDB reached on a Unix socket or a loopback address is spoken to in plain gRPC
by default, any other over TLS (``build --from``, ``follow``, ``serve --source`` and
``serve --upstream-spicedb`` alike): a preshared key never crosses a network in clear
text unless plain text is asked for.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_local_target", "uses_tls"]


def is_local_target(target: str) -> bool:
    """Whether a gRPC target is a Unix socket or a loopback address (or localhost)."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    host = target.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    if host.startswith("["):
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:
        host = host.rpartition(":")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def uses_tls(target: str, tls: bool | None) -> bool:
    """``tls`` as asked; None: TLS unless the target is local."""
    return tls if tls is not None else not is_local_target(target)
