"""One error format: ``{"detail": ...}``; validation errors list ``loc``/``msg``/``type``.

FastAPI's default 422 echoes the offending input back, which for a rejected
upload of millions of numbers means echoing millions of numbers: it is dropped.
"""
from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service.schemas.errors import Error, V2Error
from service.schemas.jobspec import DATA_SOURCE_TAGS

log = logging.getLogger(__name__)


class SpecProblems(Exception):
    """Checks beyond the schema (limits, data shapes): reported like validation errors."""

    def __init__(self, errors: list[dict]):
        super().__init__(errors)
        self.errors = errors


# What each error status means on this API; routes list the ones they can answer.
ERROR_MEANINGS = {
    400: "malformed request",
    401: "missing, invalid or revoked API key (`Authorization: Bearer <key>`)",
    404: "no such resource among the caller's own",
    409: "conflicts with the resource's state",
    413: "request body, upload or row count above the configured limit",
    415: "unsupported Content-Type",
    422: "the request is well-formed but its values are invalid; `detail` lists the issues",
    503: "the database (or the broker) is unavailable; try again after Retry-After seconds",
}


def error_responses(*statuses: int, v2: bool = False) -> dict:
    """`responses=` for a route: each status with its meaning and the one error schema
    (V2Error on the Open Inference Protocol routes)."""
    model = V2Error if v2 else Error
    return {status: {"model": model, "description": ERROR_MEANINGS[status]} for status in statuses}


def invalid(loc: tuple | list, msg: str, kind: str) -> RequestValidationError:
    """A 422 for one field, in the same shape as the schema's validation errors."""
    return RequestValidationError([{"loc": tuple(loc), "msg": msg, "type": kind}])


def _without_union_tag(loc: tuple) -> list:
    # pydantic puts the tag of the chosen `data` variant into the path
    # (body.data.inline.inline.X); clients sent body.data.inline.X.
    loc = list(loc)
    for index in range(len(loc) - 1):
        if loc[index] == "data" and loc[index + 1] in DATA_SOURCE_TAGS:
            return loc[:index + 1] + loc[index + 2:]
    return loc


def validation_error_body(errors: list[dict]) -> dict:
    cleaned = [{"loc": list(error.get("loc", ())), "msg": str(error.get("msg", "")),
                "type": str(error.get("type", "value_error"))} for error in errors]
    summary = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in cleaned[:5])
    return {"detail": cleaned, "message": summary}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{**error, "loc": _without_union_tag(error.get("loc", ()))} for error in exc.errors()]
        return JSONResponse(validation_error_body(errors), status_code=422)

    @app.exception_handler(SpecProblems)
    async def _spec_problems(_request: Request, exc: SpecProblems) -> JSONResponse:
        return JSONResponse(validation_error_body(exc.errors), status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        if exc.status_code == 405:
            # Starlette names only the methods of the first route on the path; a path
            # served by several routes (GET and POST /v1/jobs) allows all of theirs.
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(_allowed_methods(app, request.scope["path"]))}
        return await http_exception_handler(request, exc)

    async def _database_unavailable(request: Request, exc: sa.exc.DBAPIError) -> JSONResponse:
        # The database is down or restarting: the pool reconnects once it is back.
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(exc.orig).__name__)
        return JSONResponse({"detail": "the database is unavailable; try again shortly"}, status_code=503,
                            headers={"Retry-After": "5"})

    for lost_connection in (sa.exc.OperationalError, sa.exc.InterfaceError):
        app.add_exception_handler(lost_connection, _database_unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: log it, and do not leak internals to the client.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        if getattr(route, "methods", None) and route.path_regex.match(path):
            methods |= route.methods
    return sorted(methods)
