"""One error format: ``{"detail": ...}``; validation errors list ``loc``/``msg``/``type``.

FastAPI's default 422 echoes the offending input back, which for a rejected
upload of millions of numbers means echoing millions of numbers: it is dropped.
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)


def validation_error_body(errors: list[dict]) -> dict:
    cleaned = [{"loc": list(error.get("loc", ())), "msg": str(error.get("msg", "")),
                "type": str(error.get("type", "value_error"))} for error in errors]
    summary = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in cleaned[:5])
    return {"detail": cleaned, "message": summary}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error_body(list(exc.errors())), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: log it, and do not leak internals to the client.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)
