"""Prometheus metrics of the HTTP service: request counts and latency histograms by
endpoint, and the gauges the app adds from the index and its consumer.

Written in the text exposition format directly: recording a request is a few
dictionary and list updates.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["Metrics", "gauge", "split_partition"]


# Upper bounds (seconds) of the latency histogram: a check is tens of microseconds,
# a request waiting for `at_least` up to MAX_WAIT_CAP.
_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BUCKETS) + 1)  # per bucket, not cumulative; last is +Inf
        self.total = 0.0


def _label(value: object) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class Metrics:
    """Request counters and latency histograms, rendered in the Prometheus text format.

    Written by hand rather than with prometheus_client: two dict updates per
    request, and an exposition of a few dozen lines, do not justify a dependency.
    """

    def __init__(self) -> None:
        self.started = time.time()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], _Histogram] = {}

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get((endpoint, method))
        if hist is None:
            hist = self.latency[(endpoint, method)] = _Histogram()
        hist.counts[bisect.bisect_left(_BUCKETS, seconds)] += 1
        hist.total += seconds

    def render_requests(self, out: list[str]) -> None:
        out += [
            "# HELP leopard_http_requests_total HTTP requests answered, by endpoint and status.",
            "# TYPE leopard_http_requests_total counter",
        ]
        for (endpoint, method, status), n in sorted(self.requests.items()):
            out.append(
                "leopard_http_requests_total"
                f"{_labels(endpoint=endpoint, method=method, status=status)} {n}"
            )
        name = "leopard_http_request_duration_seconds"
        out += [
            f"# HELP {name} Time to answer a request (including any wait for at_least).",
            f"# TYPE {name} histogram",
        ]
        for (endpoint, method), hist in sorted(self.latency.items()):
            running = 0
            bounds = [_number(b) for b in _BUCKETS] + ["+Inf"]
            for le, n in zip(bounds, hist.counts, strict=True):
                running += n
                out.append(
                    f"{name}_bucket{_labels(endpoint=endpoint, method=method, le=le)} {running}"
                )
            out.append(f"{name}_sum{_labels(endpoint=endpoint, method=method)} {hist.total!r}")
            out.append(f"{name}_count{_labels(endpoint=endpoint, method=method)} {running}")


def gauge(out: list[str], name: str, kind: str, help_text: str, samples: Iterable[Any]) -> None:
    """Append one metric family; ``samples`` are ``(labels_dict, value)`` pairs."""
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        out.append(f"{name}{_labels(**labels) if labels else ''} {_number(value)}")


def split_partition(key: str) -> dict[str, str]:
    topic, _, partition = key.rpartition(":")
    return {"topic": topic, "partition": partition}
