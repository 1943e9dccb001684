"""DirectRoute: an APIRoute whose endpoint is called as `endpoint(request, **path_params)`.

For the inference routes only, where a single-row prediction's whole cost is a few
hundred microseconds and FastAPI's per-request machinery (solving the endpoint's
parameters as dependencies, serialising a response model) is a visible share of it.
These endpoints read their own body, take their path parameters as the strings they
arrive as, and return a ready Response. The OpenAPI schema is still generated from
the declaration, and exception handlers and middlewares apply as to any route.
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response


class DirectRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            return await endpoint(request, **request.path_params)

        return handler
