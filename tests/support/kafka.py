"""Fixtures for tests that need a Kafka-protocol broker: one real Tansu process for
the session, a fresh topic per test.

The broker is real: a memory-only Tansu process started once per session, since it
starts in well under a second and topics isolate tests from each other. Importing
``ingest.kafka`` here, before any test module, also loads kafka-python with its
import-time DeprecationWarning silenced, which pytest would otherwise turn into an
error (see ``ingest/kafka/client.py``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import pytest

from ingest.kafka.local_broker import LocalBroker, create_topic


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """A Tansu broker on a free port of 127.0.0.1, stopped after the session."""
    with LocalBroker() as running:
        yield running


@pytest.fixture
def new_topic(broker: LocalBroker, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Create a fresh topic named after the test: ``new_topic(partitions=3)``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:80]

    def make(partitions: int = 1) -> str:
        name = f"test-{slug}-{uuid.uuid4().hex[:8]}"
        create_topic(broker.bootstrap, name, partitions=partitions)
        return name

    return make


@pytest.fixture
def topic(new_topic: Callable[..., str]) -> str:
    """A fresh one-partition topic for this test, already created on the broker."""
    return new_topic()
