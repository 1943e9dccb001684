"""Wires the serving side into the gateway app: the inference runtime, the predict and
V2 routers, /metrics with its middleware, and the offline /docs and /redoc pages.

create_app calls `install_serving(app)` once, and enters `serving_lifespan(app)`
inside its lifespan (warm-up at start, thread pool shut down at the end).
"""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import FastAPI

from service.api import predict, v2
from service.api.docs import install_docs
from service.db.models import Job
from service.inference.runtime import InferenceRuntime
from service.inference.settings import ServingSettings
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.metrics import router as metrics_router

log = logging.getLogger(__name__)

# Their DirectRoutes are answered by the app's DirectRouteDispatch middleware.
INFERENCE_ROUTERS = (predict.router, v2.router)


def install_serving(app: FastAPI, engine: sa.Engine, settings: ServingSettings | None = None) -> None:
    settings = settings or ServingSettings()
    metrics = ServiceMetrics()
    runtime = InferenceRuntime(settings, engine, on_batch=metrics.observe_batch)
    cache = runtime.cache
    metrics.scraped.cache_stats = lambda: {"hits": cache.stats.hits, "misses": cache.stats.misses,
                                           "entries": len(cache), "bytes": cache.total_bytes}
    metrics.scraped.jobs_by_status = lambda: _jobs_by_status(engine)
    app.state.metrics = metrics
    app.state.inference = runtime
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    before = len(app.router.routes)
    for router in (*INFERENCE_ROUTERS, metrics_router):
        app.include_router(router)
    # Routes are matched in order: the inference routes go first, which saves the V2
    # metadata and readiness routes the walk past every other route (predict and infer
    # skip the router altogether: DirectRouteDispatch). None of their paths is shadowed
    # by or shadows another route.
    serving_routes = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[:0] = serving_routes
    install_docs(app, title=app.title)


@asynccontextmanager
async def serving_lifespan(app: FastAPI):
    runtime: InferenceRuntime = app.state.inference
    if runtime.settings.gc_freeze:
        freeze_startup_objects()
    # Warm in the background: the server listens at once; early requests for a model
    # still loading wait on the cache's per-key load instead of loading it twice.
    warming = runtime.executor.submit(_warm, runtime)
    try:
        yield
    finally:
        warming.cancel()
        runtime.close()


_frozen = False


def freeze_startup_objects() -> bool:
    """gc.freeze() once per process; True when it froze now.

    The gateway's imports (FastAPI, pydantic, SQLAlchemy, numpy, onnxruntime) leave
    hundreds of thousands of long-lived objects, and every full collection walked them
    all while requests waited: tens of milliseconds, the p99 of predictions under load.
    Frozen, they are never collected (they live as long as the process anyway).
    Once per process: an app started again in the same process (tests) would otherwise
    pin whatever garbage the earlier ones left."""
    global _frozen
    if _frozen:
        return False
    gc.collect()  # what is garbage now is collected, not frozen
    gc.freeze()
    _frozen = True
    return True


def _warm(runtime: InferenceRuntime) -> None:
    try:
        loaded = runtime.warm()
    except Exception:  # a cold cache only costs the first requests their load
        log.exception("warming the ONNX session cache failed")
        return
    log.info("warmed %d ONNX sessions", loaded)


def _jobs_by_status(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(Job.status, sa.func.count()).group_by(Job.status)).all()
    return {status: count for status, count in rows}
