"""Routes that read a body check the API key from the headers first: a request without a
valid key is answered 401 with its body unread (a large unauthenticated body costs the
gateway nothing), and a missing key is a 401 even when the body is invalid too. Large
bodies are parsed off the event loop, and the size limit holds while a body streams."""
from __future__ import annotations

import asyncio
import json
import socket

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from kanserve_harness import HELLOKAN_SPEC, api_harness
from live_server import live_server
from onnx_graphs import affine_model
from serving_setup import register_model, serving_env
from service.api import predict, v2
from service.db.models import ApiKey

PREDICT = {"inputs": [[1.0, 2.0]]}
INFER = {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}
BODY_ROUTES = ["/v1/models/m/predict", "/v1/models/m/versions/1/predict", "/v2/models/m/infer",
               "/v2/models/m/versions/1/infer", "/v1/jobs", "/v1/datasets"]


class BodyBytesRead:
    """ASGI wrapper counting the request-body bytes the app takes from the server."""

    def __init__(self, app):
        self.app, self.count = app, 0

    async def __call__(self, scope, receive, send):
        async def counting_receive():
            message = await receive()
            self.count += len(message.get("body", b""))
            return message

        await self.app(scope, counting_receive if scope["type"] == "http" else receive, send)


@pytest.fixture
def env(tmp_path):
    env = serving_env(tmp_path)
    env.register("m", 1, affine_model(np.ones((2, 1), np.float32), np.zeros(1, np.float32), "input", "output"))
    return env


def _status_after_partial_body(base: str, path: str, headers: dict[str, str], declared: int, sent: int) -> int:
    """Sends the request line, headers and `sent` of `declared` body bytes, then reads the
    status line of the answer; the rest of the body is never sent."""
    host, port = base.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
             f"Content-Length: {declared}", *(f"{name}: {value}" for name, value in headers.items())]
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"[" * sent)
        answer = b""
        while b"\r\n" not in answer:
            chunk = connection.recv(4096)
            assert chunk, f"connection closed before an answer: {answer!r}"
            answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer ks_not-a-key"}, {"Authorization": "Basic abc"}],
                         ids=["no key", "unknown key", "not bearer"])
def test_an_unauthenticated_large_body_is_answered_401_unread(env, headers):
    counter = BodyBytesRead(env.app)
    declared = 16 * 1024 * 1024  # under the gateway's request limit: only the key can refuse it
    with live_server(counter) as base:
        for path in BODY_ROUTES:
            assert _status_after_partial_body(base, path, headers, declared, sent=64 * 1024) == 401, path
        assert counter.count == 0
        # The count is real: an authenticated request's body is read, all of it.
        body = json.dumps(PREDICT).encode()
        ok = httpx.post(f"{base}/v1/models/m/predict", content=body,
                        headers={"Authorization": f"Bearer {env.key}", "Content-Type": "application/json"})
        assert ok.status_code == 200 and counter.count == len(body)


@pytest.mark.parametrize("path, body", [
    ("/v1/models/m/predict", b'{"inputs": "rows"}'),
    ("/v1/models/m/versions/x/predict", b"{not json"),
    ("/v2/models/m/infer", b"{not json"),
    ("/v1/jobs", b"{not json"),
    ("/v1/jobs", b'{"name": "x"}'),
    ("/v1/datasets", b"{not json"),
])
def test_a_missing_key_is_401_before_the_body_is_judged(env, path, body):
    with TestClient(env.app) as client:
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 401, response.text


def _recording_loop_use(monkeypatch, module, name: str) -> list[bool]:
    """Wraps module.name to record, per call, whether it ran on the event loop's thread."""
    calls: list[bool] = []
    original = getattr(module, name)

    def recorded(*args):
        try:
            asyncio.get_running_loop()
            calls.append(True)
        except RuntimeError:
            calls.append(False)
        return original(*args)

    monkeypatch.setattr(module, name, recorded)
    return calls


def test_large_bodies_are_parsed_off_the_event_loop_and_small_ones_on_it(env, monkeypatch):
    on_loop_predict = _recording_loop_use(monkeypatch, predict, "_parse")
    on_loop_predict_large = _recording_loop_use(monkeypatch, predict, "_parse_large")
    on_loop_infer = _recording_loop_use(monkeypatch, v2, "parse_infer_request")
    rows = np.random.default_rng(0).uniform(-1, 1, (2000, 2))
    large_predict = {"inputs": rows.tolist()}
    large_infer = {"inputs": [{"name": "input", "shape": [2000, 2], "datatype": "FP32", "data": rows.ravel().tolist()}]}
    assert len(json.dumps(large_predict)) > predict.OFF_LOOP_PARSE_BYTES
    assert len(json.dumps(large_infer)) > v2.OFF_LOOP_PARSE_BYTES
    with TestClient(env.app, headers={"Authorization": f"Bearer {env.key}"}) as client:
        small = client.post("/v1/models/m/predict", json=PREDICT)
        large = client.post("/v1/models/m/predict", json=large_predict)
        assert small.status_code == 200 and large.status_code == 200, large.text
        np.testing.assert_allclose(np.array(large.json()["outputs"])[:, 0], rows.sum(axis=1), atol=1e-6)  # float32
        assert client.post("/v2/models/m/infer", json=INFER).status_code == 200
        assert client.post("/v2/models/m/infer", json=large_infer).status_code == 200
    assert on_loop_predict == [True] and on_loop_predict_large == [False]
    assert on_loop_infer == [True, False]


def test_the_size_limit_holds_while_an_authenticated_body_streams(tmp_path):
    with api_harness(tmp_path, max_request_bytes=50_000) as api:
        with api.session_factory() as db:
            owner = db.scalar(sa.select(ApiKey.id).where(ApiKey.name == "a"))
        register_model(api.app.state.engine, owner, "m", 1,
                       affine_model(np.ones((2, 1), np.float32), np.zeros(1, np.float32), "input", "output"))
        body = json.dumps({"inputs": [[0.5, 0.25]] * 10_000}).encode()

        def chunks():  # no Content-Length: the limit counts what arrives
            for start in range(0, len(body), 8192):
                yield body[start:start + 8192]

        for path in ("/v1/models/m/predict", "/v1/jobs"):
            streamed = api.client.post(path, content=chunks(), headers={"content-type": "application/json"})
            assert streamed.status_code == 413 and "50000 bytes" in streamed.json()["detail"], path
        assert api.client.post("/v1/models/m/predict", json=PREDICT).status_code == 200
        assert api.client.post("/v1/jobs", json=HELLOKAN_SPEC).status_code == 202


def test_a_body_over_the_limit_is_413_in_each_routes_error_format(tmp_path):
    with api_harness(tmp_path, max_request_bytes=50_000) as api:
        body = json.dumps({"inputs": [{"name": "input", "shape": [10_000, 2], "datatype": "FP32",
                                       "data": [0.5] * 20_000}]}).encode()

        def chunks():
            for start in range(0, len(body), 8192):
                yield body[start:start + 8192]

        declared = api.client.post("/v2/models/m/infer", content=body)
        streamed = api.client.post("/v2/models/m/infer", content=chunks())
        for response in (declared, streamed):
            assert response.status_code == 413 and "50000 bytes" in response.json()["error"], response.text
        v1 = api.client.post("/v1/models/m/predict", content=body)
        assert v1.status_code == 413 and "50000 bytes" in v1.json()["detail"]
