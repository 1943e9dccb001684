"""The gateway's app factory: ``create_app(settings)``.

Routers live in ``service/api/<resource>.py`` and are listed in ``ROUTERS``; add a
resource by adding its router there. Shared state on ``app.state``: ``settings``,
``engine``, ``session_factory``, ``celery_app``, ``job_queue``.
"""
from __future__ import annotations

from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import FastAPI

from service.api import datasets, health, jobs, models
from service.api.body_limit import BodySizeLimit
from service.api.direct_route import DirectRouteDispatch
from service.api.errors import install_error_handlers
from service.api.openapi import install_openapi
from service.auth import ensure_keys, has_any_key
from service.config import Settings, get_settings
from service.db.session import make_engine, make_session_factory
from service.jobs.queue import make_celery
from service.jobs.submission import CeleryJobQueue, JobQueue
from service.serving import INFERENCE_ROUTERS, install_serving, serving_lifespan

ROUTERS = [health.router, datasets.router, jobs.router, models.router]


def create_app(settings: Settings | None = None, job_queue: JobQueue | None = None) -> FastAPI:
    settings = settings or get_settings()
    engine = make_engine(settings.resolved_database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            with app.state.session_factory() as db:
                has_any_key(db)  # fails fast on a missing schema, with or without bootstrap keys
                ensure_keys(db, settings.bootstrap_keys)
        except sa.exc.DBAPIError as exc:
            raise RuntimeError(f"the database is unreachable or not migrated ({type(exc.orig).__name__}); run "
                               "`kanserve db upgrade` (or start with `kanserve api --migrate`)") from exc
        async with serving_lifespan(app):
            yield
        engine.dispose()

    # docs_url/redoc_url None: install_serving serves them from local assets (no CDN).
    app = FastAPI(title="kanserve", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Train Kolmogorov-Arnold Networks as jobs, extract formulas, serve them.")
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.celery_app = make_celery(settings)
    app.state.job_queue = job_queue or CeleryJobQueue(app.state.celery_app)
    # Innermost first: add_middleware wraps what was added before. The inference routes
    # are dispatched inside the body limit and the metrics (see direct_route.py).
    app.add_middleware(DirectRouteDispatch, owner=app, routers=INFERENCE_ROUTERS)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_serving(app, engine)
    install_openapi(app)
    return app
