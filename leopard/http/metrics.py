"""Prometheus metrics of the HTTP service: requests and latency by endpoint, the index
and its consumer, and the process, rendered by ``prometheus_client``.

Recording a request stays two dictionary updates and a bisection (``Metrics.observe``)
rather than a labelled ``prometheus_client.Histogram``, whose child lookup and locks
would cost more than the check the request asks for. The exposition is where the
library earns its place: ``Collector`` turns those counters, ``Index.stats`` and the
consumer's stats into metric families when ``/metrics`` is scraped, and the same
registry holds the library's process, garbage-collector and platform collectors
(``process_*``, ``python_gc_*``, ``python_info``), so they come without code of ours.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from leopard.core.index import Index
from leopard.http.types import RunningConsumer

try:
    from prometheus_client import (
        GCCollector,
        PlatformCollector,
        ProcessCollector,
        generate_latest,
    )
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector as _Collector
    from prometheus_client.registry import CollectorRegistry
    from prometheus_client.utils import floatToGoString
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise ModuleNotFoundError(
        "the HTTP service needs prometheus_client: pip install 'leopard-index[serve]'",
        name=exc.name,
    ) from exc

__all__ = ["BUCKETS", "Collector", "CollectorRegistry", "Metrics", "registry", "render"]

#: upper bounds (seconds) of the latency histogram: a check is tens of microseconds, a
#: request waiting for ``at_least`` up to ``MAX_WAIT_CAP``
BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_LE = [floatToGoString(b) for b in BUCKETS] + ["+Inf"]


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # per bucket, not cumulative; last is +Inf
        self.total = 0.0


class Metrics:
    """Request counts by (endpoint, method, status) and latency by (endpoint, method)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], _Histogram] = {}

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get((endpoint, method))
        if hist is None:
            hist = self.latency[(endpoint, method)] = _Histogram()
        hist.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        hist.total += seconds


_INDEX_GAUGES = (
    ("groups", "Groups in the index (both layers)."),
    ("subjects", "Leaf subjects in the index (both layers)."),
    ("base_groups", "Groups in the base layer."),
    ("base_subjects", "Leaf subjects in the base layer."),
    ("overlay_sets", "Sets held by the incremental layer (compaction folds them away)."),
    ("bytes_on_disk", "Bytes of the current generation on disk."),
)
_CONSUMER_COUNTERS = (
    ("dead_letters_total", "dead_letters", "Messages sent to the DLQ."),
    ("changes_refused_total", "refused", "Changes the schema refuses (not applied)."),
    ("changes_skipped_total", "skipped", "Changes of relations that feed no indexed set."),
    ("messages_total", "messages", "Messages consumed."),
    ("changes_total", "changes", "Tuple changes applied."),
    ("batches_total", "batches", "Batches applied."),
    ("compactions_total", "compactions", "Compactions completed."),
)


class Collector(_Collector):
    """The service's own metric families, made from its state at each scrape."""

    def __init__(
        self, metrics: Metrics, index: Index, consumer: RunningConsumer | None = None
    ) -> None:
        self.metrics = metrics
        self.index = index
        self.consumer = consumer

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._index()
        if self.consumer is not None:
            yield from self._consumer(self.consumer)

    def _requests(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "leopard_http_requests_total",
            "HTTP requests answered, by endpoint and status.",
            labels=["endpoint", "method", "status"],
        )
        for (endpoint, method, status), n in sorted(self.metrics.requests.items()):
            requests.add_metric([endpoint, method, str(status)], n)
        yield requests
        latency = HistogramMetricFamily(
            "leopard_http_request_duration_seconds",
            "Time to answer a request (including any wait for at_least).",
            labels=["endpoint", "method"],
        )
        for (endpoint, method), hist in sorted(self.metrics.latency.items()):
            running = 0
            buckets = []
            for le, n in zip(_LE, hist.counts, strict=True):
                running += n
                buckets.append((le, running))
            latency.add_metric([endpoint, method], buckets, hist.total)
        yield latency

    def _index(self) -> Iterator[Metric]:
        stats = self.index.stats()
        yield _per_partition(
            "leopard_index_applied_offset",
            "Next change-stream offset to apply, per partition (everything before it is applied).",
            stats["position"],
        )
        for key, help_text in _INDEX_GAUGES:
            yield GaugeMetricFamily(f"leopard_index_{key}", help_text, value=stats[key])
        info = GaugeMetricFamily(
            "leopard_index_info", "The generation being served.", labels=["generation"]
        )
        info.add_metric([stats["generation"]], 1)
        yield info

    def _consumer(self, consumer: RunningConsumer) -> Iterator[Metric]:
        cs = consumer.stats
        yield _per_partition(
            "leopard_consumer_lag", "Messages behind the high watermark, per partition.", cs.lag
        )
        yield GaugeMetricFamily(
            "leopard_consumer_running", "1 while the consumer runs.", value=int(consumer.running)
        )
        yield GaugeMetricFamily(
            "leopard_consumer_broker_up",
            "0 while the broker is unreachable.",
            value=int(getattr(cs, "broker_up", True)),
        )
        yield GaugeMetricFamily(
            "leopard_consumer_gaps",
            "Partitions the consumer is stopped at, at a gap in the stream it will not skip.",
            value=len(getattr(cs, "gaps", None) or {}),
        )
        gap_events = getattr(cs, "gap_events", None)
        if gap_events is not None:
            yield CounterMetricFamily(
                "leopard_consumer_gap_events_total",
                "Gaps found in the stream (stopped at, or gone on from).",
                value=gap_events,
            )
        for name, attr, help_text in _CONSUMER_COUNTERS:
            value = getattr(cs, attr, None)
            if value is not None:  # a follower's stats count no refused or skipped
                yield CounterMetricFamily(f"leopard_consumer_{name}", help_text, value=value)
        yield GaugeMetricFamily(
            "leopard_consumer_last_batch_seconds",
            "Time to apply the last batch.",
            value=float(cs.last_batch_seconds),
        )


def _per_partition(name: str, help_text: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=["topic", "partition"])
    for key, value in sorted(dict(values).items()):
        topic, _, partition = key.rpartition(":")
        family.add_metric([topic, partition], value)
    return family


def registry(collector: Collector) -> CollectorRegistry:
    """A registry of ``collector`` beside the process, GC and platform collectors."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    ProcessCollector(registry=reg)
    GCCollector(registry=reg)
    PlatformCollector(registry=reg)
    return reg


def render(reg: CollectorRegistry) -> bytes:
    """The text exposition (format 0.0.4) of everything in ``reg``."""
    return generate_latest(reg)
