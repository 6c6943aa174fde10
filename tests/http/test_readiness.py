"""Damage is reported, not served as answers: a failing store answers 503 and turns
``/readyz`` not ready; so do a broker out of reach and a gap in the change stream.

The store's failures come from subclasses of ``Index`` whose methods raise (the
server under test is the real app on a real uvicorn server); the consumer is a small
stand-in whose stats the tests set, as a ``ChangeConsumer``'s would be.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from support.http import TUPLES, build_small_index, call, parse_metrics, running_server, wait_until

import leopard
from leopard.core.index import Index
from leopard.errors import IndexNotFound, LeopardError, StorageError
from leopard.http.app import LeopardService
from leopard.model.tokens import encode_token

CHECK = "/v1/check?subject=user:alice&group=group:eng"


class _FailingIndex(Index):
    """An index whose ``check`` and ``refresh`` raise the errors they are given."""

    error: LeopardError | None = None
    refresh_error: LeopardError | None = None

    def check(self, subject: str, group: str) -> bool:
        if self.error is not None:
            raise self.error
        return super().check(subject, group)

    def refresh(self) -> bool:
        if self.refresh_error is not None:
            raise self.refresh_error
        return super().refresh()


def ready(base: str) -> tuple[int, list[str]]:
    a = call(base, "GET", "/readyz")
    assert a.json["ready"] is (a.status == 200)
    return a.status, a.json["reasons"]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (StorageError("reading MEMBER2GROUP of user:alice: IO error: No such device"),
         "storage_error"),
        (IndexNotFound("no Leopard index at /srv/idx (CURRENT is missing)"), "index_not_found"),
    ],
)  # fmt: skip
def test_a_failing_store_answers_503_and_readyz_names_it(
    tmp_path: Path, error: LeopardError, code: str
) -> None:
    """The store fails a check: 503 with the error, not a 500, and /readyz turns not
    ready naming it, and stays so after queries succeed again, until another
    generation of the index is served."""
    path = build_small_index(tmp_path / "idx")
    with _FailingIndex(path) as ix, running_server(LeopardService(ix, refresh_interval=0)) as base:
        assert ready(base) == (200, [])
        ix.error = error
        a = call(base, "GET", CHECK)
        assert a.status == 503, a.body
        assert a.json == {"error": code, "detail": str(error)}
        status, reasons = ready(base)
        assert status == 503
        (reason,) = reasons
        assert f"{type(error).__name__}: {error}" in reason and "once" in reason
        call(base, "GET", CHECK)
        assert "2 times" in ready(base)[1][0]
        # the store answering again does not heal it: some reads fail, others not
        ix.error = None
        assert call(base, "GET", CHECK).status == 200
        assert ready(base)[0] == 503
        # a new generation (rebuilt here) has new files: once served, ready again
        leopard.build_index([TUPLES], path)
        assert ix.refresh()
        assert ready(base) == (200, [])


def test_a_failing_refresh_makes_readyz_not_ready_while_it_fails(tmp_path: Path) -> None:
    path = build_small_index(tmp_path / "idx")
    with _FailingIndex(path) as ix:
        with running_server(LeopardService(ix, refresh_interval=0.05)) as base:
            assert ready(base) == (200, [])
            ix.refresh_error = StorageError("opening the generation g7: Corruption: bad block")
            assert wait_until(lambda: ready(base)[0] == 503, timeout=10)
            (reason,) = ready(base)[1]
            assert "re-reading the index fails" in reason and "bad block" in reason
            assert call(base, "GET", CHECK).status == 200  # it still answers meanwhile
            ix.refresh_error = None
            assert wait_until(lambda: ready(base) == (200, []), timeout=10)


@pytest.fixture(scope="module")
def index_dir_for_consumer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_small_index(tmp_path_factory.mktemp("readiness") / "idx")


class _Consumer:
    """Stands in for ``leopard.http.server.ConsumerThread``: stats set by the test."""

    def __init__(self, **stats: Any) -> None:
        self.stats = SimpleNamespace(
            lag={"changes:0": 0, "changes:3": 0},
            dead_letters=0,
            messages=10,
            changes=10,
            batches=2,
            compactions=0,
            last_batch_seconds=0.01,
            **stats,
        )
        self.running = False
        self.error: str | None = None

    def start(self, on_change: Any) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False


def consumer_metrics(base: str) -> dict[str, float]:
    samples = parse_metrics(call(base, "GET", "/metrics").body.decode())
    return {
        name: values[0][1]
        for name, values in samples.items()
        if name.startswith("leopard_consumer_") and len(values) == 1 and not values[0][0]
    }


def test_readyz_reports_a_broker_out_of_reach_and_a_gap(index_dir_for_consumer: Path) -> None:
    consumer = _Consumer(broker_up=True, gaps={}, gap_events=0)
    with leopard.open_index(index_dir_for_consumer) as ix:
        with running_server(LeopardService(ix, consumer=consumer)) as base:
            assert ready(base) == (200, [])
            m = consumer_metrics(base)
            assert m["leopard_consumer_broker_up"] == 1
            assert m["leopard_consumer_gaps"] == 0 and m["leopard_consumer_gap_events_total"] == 0
            # the broker is gone
            consumer.stats.broker_up = False
            status, reasons = ready(base)
            said = "change source (broker or upstream) is unreachable"
            assert status == 503 and any(said in r for r in reasons)
            assert consumer_metrics(base)["leopard_consumer_broker_up"] == 0
            # back, but the stream has a gap the consumer will not skip
            consumer.stats.broker_up = True
            consumer.stats.gaps = {
                "changes:3": "gap in changes:3: the log now starts at offset 120: messages "
                "were deleted (the index applied up to offset 100)"
            }
            consumer.stats.gap_events = 1
            status, reasons = ready(base)
            assert status == 503
            (reason,) = reasons
            assert "topic 'changes' partition 3" in reason
            assert "offset 120" in reason and "offset 100" in reason
            m = consumer_metrics(base)
            assert m["leopard_consumer_gaps"] == 1 and m["leopard_consumer_gap_events_total"] == 1
            consumer.stats.broker_up = False  # both at once: both said
            assert len(ready(base)[1]) == 2
            consumer.stats.broker_up = True
            consumer.stats.gaps = {}
            assert ready(base) == (200, [])


def test_a_token_not_reached_because_the_consumer_stopped_says_so(
    index_dir_for_consumer: Path,
) -> None:
    """The 503 of ``at_least`` names the consumer's failure (a full disk, say), not only
    the partition the index has applied nothing of, which reads as a wrong token."""
    consumer = _Consumer(broker_up=True)
    token = encode_token({"changes:0": 5})
    with leopard.open_index(index_dir_for_consumer) as ix:
        with running_server(LeopardService(ix, consumer=consumer)) as base:
            asked = f"{CHECK}&at_least={token}&max_wait=0.1"
            running = call(base, "GET", asked)
            assert running.status == 503 and "consumer has stopped" not in running.body.decode()
            consumer.running, consumer.error = False, "StorageError: no space left on device"
            stopped = call(base, "GET", asked)
            assert stopped.status == 503, stopped.body
            said = stopped.body.decode()
            assert "the change consumer has stopped (StorageError: no space left" in said
            assert f"has not reached version {token}" in said


def test_a_consumer_without_gap_stats_still_reports(index_dir_for_consumer: Path) -> None:
    """Stats without ``gaps`` or ``gap_events`` (an older consumer): no gap, no counter."""
    consumer = _Consumer(broker_up=True)
    with leopard.open_index(index_dir_for_consumer) as ix:
        with running_server(LeopardService(ix, consumer=consumer)) as base:
            assert ready(base) == (200, [])
            m = consumer_metrics(base)
            assert m["leopard_consumer_gaps"] == 0 and "leopard_consumer_gap_events_total" not in m


def test_every_failing_answer_is_counted(tmp_path: Path) -> None:
    """Concurrent failing answers are each counted in the one reason /readyz gives."""
    path = build_small_index(tmp_path / "idx")
    with _FailingIndex(path) as ix, running_server(LeopardService(ix, refresh_interval=0)) as base:
        ix.error = StorageError("IO error: read failed")
        threads = [threading.Thread(target=call, args=(base, "GET", CHECK)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert "8 times" in ready(base)[1][0]
