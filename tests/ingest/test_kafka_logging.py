"""kafka-python's log: its traceback of a read racing its own close is dropped, and
nothing else is."""

from __future__ import annotations

import logging

import pytest

import ingest.kafka.client  # noqa: F401 - installs the filter


@pytest.mark.parametrize(
    ("error", "shown"),
    [(AttributeError("'NoneType' object has no attribute 'recv'"), False),
     (AttributeError("something else"), True),
     (OSError("connection reset"), True)],
)  # fmt: skip
def test_only_the_closed_socket_race_is_dropped(
    error: BaseException, shown: bool, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("kafka.net.transport")
    with caplog.at_level(logging.ERROR, logger="kafka.net.transport"):
        try:
            raise error
        except BaseException:
            log.exception("<transport>: Error receiving network data closing socket")
    assert bool(caplog.records) is shown
