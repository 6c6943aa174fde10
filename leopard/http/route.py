"""One operation of the HTTP service: what answers it and the models it reads and writes.

Kept apart from ``leopard.http.openapi`` (which lists the routes and describes them) so
that the route lists of the peer faces (``leopard.http.peer_routes``) and the table
that gathers them do not import each other.

``face`` says who answers a route and in which dialect its errors come:

* ``leopard``  the raw dispatch of ``leopard.http.app``: a method of ``Handlers``,
               errors as ``{"error", "detail"}``;
* ``openfga``  OpenFGA's HTTP API (``leopard.http.openfga``): errors as OpenFGA's
               ``{"code", "message"}``;
* ``authzen``  the AuthZEN Authorization API 1.0 (``leopard.http.authzen``): errors as
               a message string (``text/plain``), as its HTTPS binding says.

The routes of the peer faces are mounted behind the raw dispatch
(``leopard.http.peers``), which looks them up only for a path it does not know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel

__all__ = ["FACES", "Route"]

FACES = ("leopard", "openfga", "authzen")
_PARAM = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Route:
    """One operation: the handler, the models it reads and writes, and how to describe it."""

    method: str
    path: str  # with ``{name}`` path parameters for the peer faces
    handler: str  # the name of the method of the face's handler object that answers it
    summary: str
    params: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    result: type[BaseModel] | None = None
    content_type: str = "application/json"
    errors: tuple[int, ...] = ()
    public: bool = False  # answered without the bearer token
    face: str = "leopard"
    description: str | None = None

    @property
    def path_params(self) -> tuple[str, ...]:
        """The names of the ``{name}`` parameters of the path, in order."""
        return tuple(_PARAM.findall(self.path))
