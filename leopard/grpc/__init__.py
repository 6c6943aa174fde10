"""SpiceDB's API over gRPC, answered from the index (``leopard serve --grpc-port``).

An application using the ``authzed`` client points it at Leopard and keeps working:
what the index holds (union-only relations and permissions of the schema) is
answered from it, everything else is forwarded to the real SpiceDB. Built on the
messages, servicer classes and service descriptors of the ``authzed`` package, with
grpcio, its health service and server reflection (the ``[grpc]`` extra).

Modules, from the port inwards:

``server``        ``GrpcServer`` and ``GrpcOptions``: port, TLS, health, reflection
``service``       ``Router``: every method to its answer, its forwarding, or a refusal;
                  the preshared key
``permissions``   CheckPermission, CheckBulkPermissions (``lookups``: LookupResources,
                  LookupSubjects); ``schema``: ReadSchema
``answering``     what they share: the index, freshness, forwarding decisions
``consistency``   SpiceDB's consistency modes over Leopard's version tokens
``names``         SpiceDB's field rules and what the schema defines and indexes
``forward``       the upstream SpiceDB: raw calls of any shape
``status``        SpiceDB's codes and messages

It may use ``leopard.core``, ``leopard.model``, ``leopard.errors`` and ``ingest``;
only the command line (``leopard.cli.serve``) imports it.
"""
