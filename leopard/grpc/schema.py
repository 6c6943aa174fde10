"""SpiceDB's SchemaService: ``ReadSchema`` answers the schema the index was built with.

The text is the schema as written (``Index.config.schema_source.text``: comments,
order and spacing kept, where SpiceDB prints its own canonical form), with the
index's version as ``read_at``. An index built from a TOML set configuration has no
schema: the request goes to the SpiceDB behind Leopard, or is NOT_FOUND in SpiceDB's
words (``no schema has been defined``). An index built from an OpenFGA model answers
the model printed in SpiceDB's language when that language can state it; otherwise
(a relation with both direct types and a rewrite, say) the request goes upstream, or
is FAILED_PRECONDITION saying why: an OpenFGA model's text is no answer a SpiceDB
client can read. ``WriteSchema`` and the reflection calls are
SpiceDB's alone (forwarded: see ``leopard.grpc.forward``).
"""

from __future__ import annotations

from typing import Any

import grpc
from authzed.api.v1 import core_pb2, schema_service_pb2
from authzed.api.v1.schema_service_pb2_grpc import SchemaServiceServicer

from leopard.errors import InvalidSchema
from leopard.grpc.answering import Answering
from leopard.grpc.status import Refusal
from leopard.model.config import Config
from leopard.model.schema import format_spicedb

__all__ = ["Schema", "spicedb_text"]

NO_SCHEMA = "no schema has been defined; please call WriteSchema to start"


def spicedb_text(config: Config) -> tuple[str | None, str]:
    """The index's schema in SpiceDB's language, or None and why there is none."""
    source = config.schema_source
    if source is not None and source.dialect == "spicedb":
        return source.text, ""
    if source is None or config.plan is None:
        return None, NO_SCHEMA
    try:  # an OpenFGA model, in SpiceDB's language where that can state it
        return format_spicedb(config.plan.schema), ""
    except InvalidSchema as exc:
        return None, f"the index was built from an OpenFGA model that SpiceDB cannot state: {exc}"


class Schema(Answering, SchemaServiceServicer):
    """ReadSchema from the index."""

    SERVICE = "authzed.api.v1.SchemaService"
    ANSWERS = ("ReadSchema",)

    def ReadSchema(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        config = self.index.config
        source = config.schema_source
        text, why = spicedb_text(config)
        if text is not None:
            version = core_pb2.ZedToken(token=self.index.version)
            return schema_service_pb2.ReadSchemaResponse(schema_text=text, read_at=version)
        if self.upstream is not None:
            return self.upstream.unary(
                "/authzed.api.v1.SchemaService/ReadSchema", request.SerializeToString(), context
            )
        code = grpc.StatusCode.NOT_FOUND if source is None else grpc.StatusCode.FAILED_PRECONDITION
        raise Refusal(code, why)
