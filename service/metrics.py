"""Prometheus metrics of the gateway: HTTP traffic, inference batches, the session
cache and jobs by status, exposed at /metrics.

Each app gets its own CollectorRegistry (tests build several apps in one process).
With several uvicorn workers each process counts its own traffic and a scrape sees
the worker that answered it (aggregating them is left to Prometheus-side sums per
instance, or to running one worker per container).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from typing import Callable, Mapping

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# Sub-millisecond buckets: single-row predictions take well under 1 ms.
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class BatchSizes:
    """How many onnxruntime calls ran with each number of rows and of merged requests,
    and where (loop or pool), as plain counts that /metrics turns into histograms and
    a counter when scraped.

    Counting is on every prediction's path: a few dict updates under a lock, where
    prometheus_client's two Histogram.observe and a labelled Counter.inc measured
    9 us just after the process was idle (as between one client's requests)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._rows: dict[int, int] = {}
        self._requests: dict[int, int] = {}
        self._calls: dict[str, int] = {"loop": 0, "pool": 0}

    def observe(self, n_requests: int, n_rows: int, where: str) -> None:
        with self._lock:
            self._rows[n_rows] = self._rows.get(n_rows, 0) + 1
            self._requests[n_requests] = self._requests.get(n_requests, 0) + 1
            self._calls[where] = self._calls.get(where, 0) + 1

    def counts(self) -> tuple[dict[int, int], dict[int, int], dict[str, int]]:
        """-> ({rows: calls}, {merged requests: calls}, {where: calls})"""
        with self._lock:
            return dict(self._rows), dict(self._requests), dict(self._calls)


def _histogram(name: str, doc: str, values: Mapping[int, int]) -> HistogramMetricFamily:
    """values: {observed value: how many times} -> a histogram over BATCH_BUCKETS."""
    per_bucket = [0] * (len(BATCH_BUCKETS) + 1)  # the last one is +Inf
    for value, count in values.items():
        per_bucket[bisect_left(BATCH_BUCKETS, value)] += count
    cumulative, buckets = 0, []
    for bound, count in zip((*BATCH_BUCKETS, float("inf")), per_bucket):
        cumulative += count
        buckets.append((floatToGoString(bound), cumulative))
    return HistogramMetricFamily(name, doc, buckets=buckets,
                                 sum_value=sum(value * count for value, count in values.items()))


class _ScrapeTimeMetrics(Collector):
    """Metrics read when /metrics is scraped: inference batch sizes and calls, session
    cache counters and size, jobs by status. Each source is a callback, set by
    install_serving, so this module does not know the runtime."""

    def __init__(self):
        self.batch_sizes = BatchSizes()
        self.cache_stats: Callable[[], Mapping[str, float]] | None = None
        self.jobs_by_status: Callable[[], Mapping[str, int]] | None = None

    def collect(self):
        yield from self._batches()
        if self.cache_stats is not None:
            stats = self.cache_stats()
            for name, doc in (("hits", "ONNX session cache hits."),
                              ("misses", "ONNX session cache misses (loads).")):
                counter = CounterMetricFamily(f"kanserve_session_cache_{name}", doc)
                counter.add_metric([], stats[name])
                yield counter
            for name, doc in (("entries", "Sessions held by the ONNX session cache."),
                              ("bytes", "ONNX bytes held by the ONNX session cache.")):
                gauge = GaugeMetricFamily(f"kanserve_session_cache_{name}", doc)
                gauge.add_metric([], stats[name])
                yield gauge
        if self.jobs_by_status is not None:
            gauge = GaugeMetricFamily("kanserve_jobs", "Jobs in the database by status.",
                                      labels=["status"])
            for status, count in sorted(self.jobs_by_status().items()):
                gauge.add_metric([status], count)
            yield gauge

    def _batches(self):
        rows, requests, calls = self.batch_sizes.counts()
        yield _histogram("kanserve_inference_batch_rows", "Rows per onnxruntime call.", rows)
        yield _histogram("kanserve_inference_batch_requests", "Requests merged into one onnxruntime call.",
                         requests)
        counter = CounterMetricFamily(
            "kanserve_inference_calls", "onnxruntime calls by where they ran: 'loop' (the event "
            "loop: a single request whose graph is measured to be quick) or 'pool' (the "
            "inference threads: merged batches, slow or not yet measured graphs).", labels=["where"])
        for where, count in sorted(calls.items()):
            counter.add_metric([where], count)
        yield counter


class ServiceMetrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "kanserve_http_requests", "HTTP requests by route template, model and status.",
            ["method", "route", "model", "status"], registry=self.registry)
        self.latency = Histogram(
            "kanserve_http_request_duration_seconds", "HTTP request latency in seconds.",
            ["method", "route", "model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.scraped = _ScrapeTimeMetrics()
        self.registry.register(self.scraped)

    def observe_batch(self, n_requests: int, n_rows: int, where: str) -> None:
        self.scraped.batch_sizes.observe(n_requests, n_rows, where)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path) that
    counts and times every HTTP request by its route template, not its raw path, so
    the label set stays bounded."""

    def __init__(self, app, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            # Only names that resolved to a model become label values: anyone can send
            # requests for made-up names, and each value is a new time series.
            model = "" if route is None or status in (401, 403, 404) else scope.get("path_params", {}).get("name", "")
            method = scope["method"]
            self.metrics.latency.labels(method, template, model).observe(time.perf_counter() - start)
            self.metrics.requests.labels(method, template, model, str(status)).inc()


router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=True, summary="Prometheus metrics", response_class=Response,
            responses={200: {"description": "The Prometheus text format",
                             "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}})
async def metrics_endpoint(request: Request) -> Response:
    metrics: ServiceMetrics = request.app.state.metrics
    # Off the event loop: collecting jobs by status queries the database.
    return Response(await run_in_threadpool(metrics.exposition), media_type=CONTENT_TYPE_LATEST)
