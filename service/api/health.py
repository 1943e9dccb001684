"""/healthz (the process answers) and /readyz (the database and the broker answer)."""
from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "the database or the broker does not answer; "
                                                   "`checks` says which"}})
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state

    def check_database() -> str:
        with state.session_factory() as db:
            db.execute(sa.text("SELECT 1"))
        return "ok"

    def check_broker() -> str:
        with state.celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        return "ok"

    checks = {}
    for name, check in (("database", check_database), ("broker", check_broker)):
        try:
            checks[name] = await run_in_threadpool(check)
        except Exception as exc:  # readiness reports failures, it does not raise them
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)
