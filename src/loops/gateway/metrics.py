"""Prometheus metrics of the gateway (``GET /metrics``).

- ``loops_tasks{status}``: tasks by status, read from the store at scrape time;
- ``loops_active_leases``: tasks held under a lease (leased or running);
- ``loops_events_written_total``: events written to the store (the newest event id);
- ``loops_lease_latency_seconds``: how long a leased task had been ready (since its
  ``run_after``) when it was leased;
- ``loops_leases_granted_total``: leases granted through this gateway;
- ``loops_lease_waiters``: lease requests long polling now;
- ``loops_http_requests_total{method,route,code}`` and
  ``loops_http_request_duration_seconds{method,route}``: requests by route template.

Each app has its own registry, so several apps (tests) never share counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from loops.queue.tasks import LeasedTask, TaskStatus
from loops.services.queue import QueueService

#: buckets of the lease latency histogram, in seconds (1 ms .. 5 min)
LEASE_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
)  # fmt: skip
#: route label of requests that matched no route (keeps the label set small)
UNMATCHED_ROUTE = "<unmatched>"


class QueueCollector(Collector):
    """Reads task counts and the newest event id from the store at scrape time."""

    def __init__(self, service: QueueService) -> None:
        self.service = service

    def collect(self) -> Iterable[Metric]:
        """Yield the store-backed metrics (called by the registry on each scrape)."""
        counts = self.service.status()
        tasks = GaugeMetricFamily("loops_tasks", "Tasks by status.", labels=["status"])
        for status in TaskStatus:
            tasks.add_metric([status.value], counts.counts.get(status, 0))
        yield tasks
        held = sum(counts.counts.get(s, 0) for s in (TaskStatus.LEASED, TaskStatus.RUNNING))
        yield GaugeMetricFamily(
            "loops_active_leases", "Tasks held under a lease (leased or running).", value=held
        )
        latest = self.service.list_events(limit=1)
        yield CounterMetricFamily(
            "loops_events_written",
            "Events written to the store (the newest event id).",
            value=latest[-1].id if latest else 0,
        )


class GatewayMetrics:
    """The gateway's registry and the metrics it updates while serving."""

    def __init__(self, service: QueueService, *, waiters: Callable[[], int]) -> None:
        """Create the registry for ``service``.

        Args:
            service: the queue (read at scrape time).
            waiters: how many lease requests are long polling now.
        """
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(QueueCollector(service))
        self.lease_latency = Histogram(
            "loops_lease_latency_seconds",
            "How long a task had been ready (since run_after) when it was leased.",
            buckets=LEASE_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.leases_granted = Counter(
            "loops_leases_granted", "Leases granted through this gateway.", registry=self.registry
        )
        waiting = Gauge(
            "loops_lease_waiters", "Lease requests long polling now.", registry=self.registry
        )
        waiting.set_function(lambda: float(waiters()))
        self.http_requests = Counter(
            "loops_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "code"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "loops_http_request_duration_seconds",
            "HTTP request duration by method and route template.",
            ["method", "route"],
            registry=self.registry,
        )
        #: the two series of each (method, route, code) seen, in the order of the labels
        self._request_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe_leases(self, leased: Sequence[LeasedTask], *, now: datetime) -> None:
        """Record leases just granted at ``now``."""
        self.leases_granted.inc(len(leased))
        for item in leased:
            waited_s = (now - item.task.run_after).total_seconds()
            self.lease_latency.observe(max(waited_s, 0.0))

    def observe_request(self, method: str, route: str, code: int, duration_s: float) -> None:
        """Record one answered HTTP request (by :class:`~loops.gateway.front.FrontDoor`)."""
        key = (method, route, code)
        series = self._request_series.get(key)
        if series is None:  # ``labels()`` looks the series up under a lock each time
            series = self._request_series[key] = (
                self.http_requests.labels(method, route, str(code)),
                self.http_duration.labels(method, route),
            )
        series[0].inc()
        series[1].observe(duration_s)
