"""DirectRouteDispatch answers the inference routes without the router: it must pick
exactly the endpoint the router would, and errors must come out as from any route."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from onnx_graphs import affine_model
from serving_setup import serving_env
from service.api.direct_route import DirectRoute, DirectRouteDispatch
from service.serving import INFERENCE_ROUTERS

DIRECT_ROUTES = [r for router in INFERENCE_ROUTERS for r in router.routes if isinstance(r, DirectRoute)]


@pytest.fixture
def env(tmp_path):
    env = serving_env(tmp_path)
    weight = np.array([[1.0], [2.0]], np.float32)
    env.register("lin", 1, affine_model(weight, np.zeros(1, np.float32)))
    # Latest and version 1 answer differently, so a mix-up of the two shows.
    env.register("lin", 2, affine_model(-weight, np.zeros(1, np.float32)))
    return env


def test_the_inference_routers_have_direct_routes():
    paths = {route.path for route in DIRECT_ROUTES}
    assert {"/v1/models/{name}/predict", "/v1/models/{name}/versions/{version}/predict",
            "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"} <= paths


REQUESTS = {  # one valid request per direct route
    "/v1/models/{name}/predict": {"inputs": [[1.0, 2.0]]},
    "/v1/models/{name}/versions/{version}/predict": {"inputs": [[1.0, 2.0]]},
    "/v2/models/{name}/infer": {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
                                            "data": [1.0, 2.0]}]},
    "/v2/models/{name}/versions/{version}/infer": {"inputs": [{"name": "x", "shape": [1, 2],
                                                               "datatype": "FP32", "data": [1.0, 2.0]}]},
}


@pytest.mark.parametrize("route", DIRECT_ROUTES, ids=lambda r: r.path)
def test_the_router_alone_gives_the_same_answer(env, route):
    """The dispatch sees requests before the router: if another route matched first
    in the router, or the route were included under another prefix, the router's
    answer would differ from the app's."""
    assert route.path in env.app.openapi()["paths"]
    app = env.app

    async def router_only(scope, receive, send):
        scope["app"] = app
        await app.router(scope, receive, send)

    path = route.path.format(name="lin", version="1")
    headers = {"Authorization": f"Bearer {env.key}"}
    with TestClient(app) as through_app:  # runs the app's lifespan for both
        expected = through_app.post(path, json=REQUESTS[route.path], headers=headers)
        answer = TestClient(router_only).post(path, json=REQUESTS[route.path], headers=headers)
    assert expected.status_code == 200, expected.text
    assert (answer.status_code, answer.json()) == (200, expected.json())


def test_errors_keep_the_app_handlers_and_an_unhandled_one_is_a_500(env):
    with TestClient(env.app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {env.key}"
        url = "/v1/models/lin/versions/1/predict"
        bad = client.post(url, json={"inputs": [[1.0, "x"]]})  # RequestValidationError handler
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"][:2] == ["body", "inputs"]
        missing = client.post("/v1/models/nope/predict", json={"inputs": [[1.0, 2.0]]})  # HTTPException
        assert missing.status_code == 404 and "nope" in missing.json()["detail"]
        assert client.post("/v1/models/lin/versions/x/predict", json={"inputs": [[1.0, 2.0]]}).status_code == 422

        def broken(*args, **kwargs):
            raise RuntimeError("a bug")
        runtime = env.app.state.inference
        runtime.infer, working = broken, runtime.infer
        crashed = client.post(url, json={"inputs": [[1.0, 2.0]]})
        assert crashed.status_code == 500 and crashed.json() == {"detail": "internal server error"}
        runtime.infer = working
        ok = client.post(url, json={"inputs": [[1.0, 2.0]]})
        assert ok.status_code == 200 and ok.json()["outputs"] == [[5.0]]
        # The metrics middleware still sees the route's template and the model.
        text = client.get("/metrics").text
        assert 'route="/v1/models/{name}/versions/{version}/predict",status="500"' in text
        assert 'model="lin",route="/v1/models/{name}/versions/{version}/predict",status="200"' in text


def dispatch_only(env, reached: list, root_path: str = ""):
    """The app's DirectRouteDispatch in front of a stand-in for the rest of the app
    (418, and the path recorded in `reached`); with root_path, as uvicorn --root-path
    passes requests on: the prefix in both root_path and path."""
    async def behind(scope, receive, send):
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def app(scope, receive, send):
        scope.update(app=env.app, root_path=root_path, path=root_path + scope["path"])
        await DirectRouteDispatch(behind, owner=env.app, routers=INFERENCE_ROUTERS)(scope, receive, send)
    return app


def test_direct_routes_never_reach_the_app_behind_the_dispatch(env):
    reached = []
    with TestClient(env.app):  # the app's lifespan: the inference runtime is up
        client = TestClient(dispatch_only(env, reached), headers={"Authorization": f"Bearer {env.key}"})
        answer = client.post("/v1/models/lin/versions/1/predict", json={"inputs": [[1.0, 2.0]]})
        assert answer.status_code == 200 and answer.json()["outputs"] == [[5.0]]
        assert client.get("/v1/models/lin/predict").status_code == 418  # GET is not a direct route
        assert client.get("/healthz").status_code == 418
    assert reached == ["/v1/models/lin/predict", "/healthz"]


def test_behind_a_root_path_the_dispatch_still_answers(env):
    reached = []
    with TestClient(env.app):
        client = TestClient(dispatch_only(env, reached, root_path="/api"),
                            headers={"Authorization": f"Bearer {env.key}"})
        answer = client.post("/v1/models/lin/versions/1/predict", json={"inputs": [[1.0, 2.0]]})
        assert answer.status_code == 200 and answer.json()["outputs"] == [[5.0]]
    assert reached == []


def _request(headers=(), messages=()):
    from starlette.requests import Request
    pending = list(messages)

    async def receive():
        return pending.pop(0)
    scope = {"type": "http", "method": "POST", "path": "/", "headers": list(headers), "query_string": b""}
    return Request(scope, receive)


@pytest.mark.parametrize("value, token", [
    (b"Bearer ks_abc", "ks_abc"), (b"bearer ks_abc ", "ks_abc"), (b"Basic ks_abc", None),
    (b"Bearer ", None), (b"Bearer", None), (None, None)])
def test_bearer_token_reads_the_raw_authorization_header(value, token):
    from service.api.direct_route import bearer_token
    headers = [(b"content-type", b"application/json")] + ([(b"authorization", value)] if value is not None else [])
    assert bearer_token(_request(headers)) == token


def test_read_body_joins_chunks_keeps_them_for_later_readers_and_refuses_a_disconnect():
    import asyncio

    from starlette.requests import ClientDisconnect

    from service.api.direct_route import read_body

    async def scenario():
        request = _request(messages=[{"type": "http.request", "body": b'{"in', "more_body": True},
                                     {"type": "http.request", "body": b'puts": 1}', "more_body": False}])
        assert await read_body(request) == b'{"inputs": 1}'
        assert await request.body() == b'{"inputs": 1}'  # from the request's cache: receive is drained
        assert await read_body(request) == b'{"inputs": 1}'  # likewise
        gone = _request(messages=[{"type": "http.request", "body": b"{", "more_body": True},
                                  {"type": "http.disconnect"}])
        with pytest.raises(ClientDisconnect):
            await read_body(gone)
    asyncio.run(scenario())
