"""SpiceDB's SchemaService: ``ReadSchema`` answers the schema the index was built with.

The text is the schema as written (``Index.config.schema_source.text``: comments,
order and spacing kept, where SpiceDB prints its own canonical form), with the
index's version as ``read_at``. An index built from a TOML set configuration has no
schema: the request goes to the SpiceDB behind Leopard, or is NOT_FOUND in SpiceDB's
words (``no schema has been defined``). ``WriteSchema`` and the reflection calls are
SpiceDB's alone (forwarded: see ``leopard.grpc.forward``).
"""

from __future__ import annotations

from typing import Any

import grpc
from authzed.api.v1 import core_pb2, schema_service_pb2
from authzed.api.v1.schema_service_pb2_grpc import SchemaServiceServicer

from leopard.grpc.answering import Answering
from leopard.grpc.status import Refusal

__all__ = ["Schema"]

NO_SCHEMA = "no schema has been defined; please call WriteSchema to start"


class Schema(Answering, SchemaServiceServicer):
    """ReadSchema from the index."""

    SERVICE = "authzed.api.v1.SchemaService"
    ANSWERS = ("ReadSchema",)

    def ReadSchema(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        source = self.index.config.schema_source
        if source is None:
            if self.upstream is not None:
                return self.upstream.unary(
                    "/authzed.api.v1.SchemaService/ReadSchema", request.SerializeToString(), context
                )
            raise Refusal(grpc.StatusCode.NOT_FOUND, NO_SCHEMA)
        return schema_service_pb2.ReadSchemaResponse(
            schema_text=source.text, read_at=core_pb2.ZedToken(token=self.index.version)
        )
