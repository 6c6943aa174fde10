"""Streamed answers cannot take every thread of the gRPC server.

A client that stops reading a LookupResources stream blocks the thread sending it. The
router answers at most ``streams`` streams at once; one more is RESOURCE_EXHAUSTED at
once, and unary calls (checks, the health probe) keep their threads. Here on a real
gRPC server with the real router, the streams held open by a servicer that waits
(a stand-in for a client that does not read, whose timing a test cannot control).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from authzed.api import v1

from leopard.grpc.service import Router


class Waiting:
    """Answers LookupResources with one result once ``go`` is set, and checks at once."""

    SERVICE = "authzed.api.v1.PermissionsService"
    ANSWERS = ("LookupResources", "CheckPermission")

    def __init__(self) -> None:
        self.go = threading.Event()
        self.started = threading.Semaphore(0)

    def LookupResources(self, request: Any, context: Any) -> Iterator[Any]:  # noqa: N802
        self.started.release()
        self.go.wait(30)
        yield v1.LookupResourcesResponse(resource_object_id="d1")

    def CheckPermission(self, request: Any, context: Any) -> Any:  # noqa: N802
        return v1.CheckPermissionResponse(
            permissionship=v1.CheckPermissionResponse.PERMISSIONSHIP_HAS_PERMISSION
        )


@pytest.fixture
def served() -> Iterator[tuple[Waiting, Any]]:
    servicer = Waiting()
    server = grpc.server(ThreadPoolExecutor(6))
    server.add_generic_rpc_handlers((Router([servicer], None, streams=2),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, v1.InsecureClient(f"127.0.0.1:{port}", "unused")
    finally:
        servicer.go.set()
        server.stop(grace=1)


def _lookup() -> Any:
    subject = v1.SubjectReference(object=v1.ObjectReference(object_type="user", object_id="u1"))
    return v1.LookupResourcesRequest(resource_object_type="doc", permission="view", subject=subject)


def test_streams_past_the_limit_are_refused_and_checks_still_answer(
    served: tuple[Waiting, Any],
) -> None:
    servicer, client = served
    held = [client.LookupResources(_lookup(), timeout=20) for _ in range(2)]
    readers = [threading.Thread(target=lambda s=s: list(s)) for s in held]
    for t in readers:
        t.start()
    for _ in held:  # both streams are being answered, each holding its thread
        assert servicer.started.acquire(timeout=10)
    with pytest.raises(grpc.RpcError) as refused:
        list(client.LookupResources(_lookup(), timeout=10))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert "2 streamed answers are being sent already" in refused.value.details()  # type: ignore[attr-defined]
    check = v1.CheckPermissionRequest(
        resource=v1.ObjectReference(object_type="doc", object_id="d1"),
        permission="view",
        subject=_lookup().subject,
    )
    answer = client.CheckPermission(check, timeout=5)
    assert answer.permissionship == v1.CheckPermissionResponse.PERMISSIONSHIP_HAS_PERMISSION
    servicer.go.set()
    for t in readers:
        t.join(10)
    # the slots come back when the streams end
    again = list(client.LookupResources(_lookup(), timeout=10))
    assert [r.resource_object_id for r in again] == ["d1"]
