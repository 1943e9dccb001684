"""Prometheus metrics of the gateway: HTTP traffic, inference batches, the session
cache and jobs by status, exposed at /metrics.

Each app gets its own CollectorRegistry (tests build several apps in one process).
With several uvicorn workers each process counts its own traffic and a scrape sees
the worker that answered it (aggregating them is left to Prometheus-side sums per
instance, or to running one worker per container).
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               generate_latest)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Sub-millisecond buckets: single-row predictions take well under 1 ms.
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class _CallbackGauges(Collector):
    """Gauges whose values are read when /metrics is scraped (cache size, jobs by status)."""

    def __init__(self):
        self.cache_stats: Callable[[], Mapping[str, float]] | None = None
        self.jobs_by_status: Callable[[], Mapping[str, int]] | None = None

    def collect(self):
        if self.cache_stats is not None:
            stats = self.cache_stats()
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


class ServiceMetrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "kanserve_http_requests", "HTTP requests by route template, model and status.",
            ["method", "route", "model", "status"], registry=self.registry)
        self.latency = Histogram(
            "kanserve_http_request_duration_seconds", "HTTP request latency in seconds.",
            ["method", "route", "model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram(
            "kanserve_inference_batch_rows", "Rows per onnxruntime call.",
            buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram(
            "kanserve_inference_batch_requests", "Requests merged into one onnxruntime call.",
            buckets=BATCH_BUCKETS, registry=self.registry)
        self.calls = Counter(
            "kanserve_inference_calls", "onnxruntime calls by where they ran: 'loop' (the event "
            "loop: a single request whose graph is measured to be quick) or 'pool' (the "
            "inference threads: merged batches, slow or not yet measured graphs).",
            ["where"], registry=self.registry)
        self.cache_hits = Counter(
            "kanserve_session_cache_hits", "ONNX session cache hits.", registry=self.registry)
        self.cache_misses = Counter(
            "kanserve_session_cache_misses", "ONNX session cache misses (loads).",
            registry=self.registry)
        self.gauges = _CallbackGauges()
        self.registry.register(self.gauges)

    def observe_batch(self, n_requests: int, n_rows: int, where: str) -> None:
        self.batch_requests.observe(n_requests)
        self.batch_rows.observe(n_rows)
        self.calls.labels(where).inc()

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


@router.get("/metrics", include_in_schema=True, summary="Prometheus metrics")
async def metrics_endpoint(request: Request) -> Response:
    metrics: ServiceMetrics = request.app.state.metrics
    # Off the event loop: collecting jobs by status queries the database.
    return Response(await run_in_threadpool(metrics.exposition), media_type=CONTENT_TYPE_LATEST)
