"""Following an upstream directly: SpiceDB's own API instead of a Kafka topic.

``spicedb`` connects to a SpiceDB (``spicedb:TARGET``, any gRPC target, with its
preshared key and TLS or not) and bootstraps an index from it: the schema with
``ReadSchema``, whose ``read_at`` is the bootstrap revision, and every relationship
at that revision with ``ExportBulkRelationships`` (``ReadRelationships`` per
definition where the export is not served). ``watch`` follows it: SpiceDB's
``Watch`` from the index's revision is a change source for the same loop as Kafka's
(``ingest.consumer``), so its updates are decoded by the same codec, applied the same
way, and persisted with the revision in the same write batch.
"""
