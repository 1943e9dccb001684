"""DirectRoute: an APIRoute whose endpoint is called as `endpoint(request, **path_params)`,
and DirectRouteDispatch, the middleware that calls it without the router.

For the inference routes only, where a single-row prediction's whole cost is a few
hundred microseconds and the web stack's per-request machinery is a visible share of
it. These endpoints read their own body, take their path parameters as the strings
they arrive as, and return a ready Response. The OpenAPI schema is still generated
from the declaration, and the user middlewares (metrics, body limit) apply as to any
route.

Two savings, each measured in-process (bench/predict_path.py shows the total):
- DirectRoute skips FastAPI's solving of the endpoint's parameters as dependencies
  and its response-model serialisation;
- DirectRouteDispatch, the innermost user middleware, matches a request against the
  DirectRoutes itself and calls the endpoint, skipping Starlette's exception
  middleware, FastAPI's exit-stack middleware and the walk of the router (about 30 us
  of CPU of a single-row prediction's 200 here). Exceptions the endpoint raises go to
  the app's own exception handlers, as the exception middleware would send them; one
  without a handler propagates to the server-error middleware (a 500), as for any route.

The endpoints read their body and API key with read_body and bearer_token below,
straight from the ASGI messages and headers.
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine, Sequence

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send


class DirectRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            return await endpoint(request, **request.path_params)

        return handler


class DirectRouteDispatch:
    """ASGI middleware: requests for the DirectRoutes of `routers` are answered here;
    every other request goes on to the app's exception middleware and router.

    The routers must be included in the app at its root (no extra prefix), and a
    DirectRoute's path must not match another route's requests: this middleware sees
    a request before the router could try the routes ahead of it. Tests check both
    for the gateway's routes."""

    def __init__(self, app: ASGIApp, owner: FastAPI, routers: Sequence[APIRouter]):
        self.app = app
        self.owner = owner
        self.routes = [route for router in routers for route in router.routes if isinstance(route, DirectRoute)]
        self._handlers: dict[type, Callable] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = _route_path(scope), scope["method"]
            for route in self.routes:
                match = route.path_regex.match(path)
                if match is not None and method in route.methods:
                    await self._call(route, match.groupdict(), scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def _handler(self, exc: Exception) -> Callable | None:
        if self._handlers is None:  # read on first use: handlers are installed after the middleware
            # `Exception` is the server-error middleware's handler (a 500), not the
            # exception middleware's; status-code keys are for HTTPException responses.
            self._handlers = {key: handler for key, handler in self.owner.exception_handlers.items()
                              if isinstance(key, type) and key is not Exception}
        return next((self._handlers[cls] for cls in type(exc).__mro__ if cls in self._handlers), None)

    async def _call(self, route: DirectRoute, params: dict[str, str], scope: Scope,
                    receive: Receive, send: Send) -> None:
        scope["route"] = route             # as the router sets it: metrics label by template
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request, **params)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


# Bodies longer than this are parsed on a worker thread by the routes that read them:
# pydantic took 2-5 ms for 16-64 KiB here, and seconds for tens of megabytes, time the
# event loop would stall; below it a thread hand-off would cost more than the parse.
OFF_LOOP_PARSE_BYTES = 16 * 1024


async def read_body(request: Request) -> bytes:
    """The request's whole body, read from its receive channel and kept on the request
    as Request.body() keeps it (later readers get the same bytes).

    Request.body() drains an async generator even for the usual one-message body;
    reading the messages here costs a DirectRoute a few microseconds less per request."""
    cached = getattr(request, "_body", None)
    if cached is not None:
        return cached
    chunks = []
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._body = body  # Request.body()'s own cache: the receive channel is drained
    return body


def bearer_token(request: Request) -> str | None:
    """The API key of `Authorization: Bearer <key>`, or None; read from the raw ASGI
    headers (names are lower-case there), without building a Headers object."""
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def _route_path(scope: Scope) -> str:
    """The path the router matches: scope["path"] without the root_path a proxy or a
    mount put in front of it (as Starlette's router does)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root):len(root) + 1] in ("/", ""):
        return path[len(root):]
    return path
