"""Micro-batching through the real HTTP stack: many concurrent clients, each with its
own rows, are merged into shared onnxruntime calls and each gets its own answers."""

import asyncio

import httpx
import numpy as np
import pytest

from live_server import live_server
from onnx_graphs import affine_model
from serving_setup import serving_env

WEIGHT = np.array([[1.0, -1.0, 0.5], [2.0, 0.25, -3.0]], np.float32)
BIAS = np.array([0.5, -0.5, 0.0], np.float32)


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_clients_get_their_own_rows(tmp_path, monkeypatch, batching):
    monkeypatch.setenv("KANSERVE_BATCHING", str(batching).lower())
    monkeypatch.setenv("KANSERVE_BATCH_MAX_DELAY_US", "2000")
    env = serving_env(tmp_path)
    env.register("aff", 1, affine_model(WEIGHT, BIAS, "input", "output"), output_names=("a", "b", "c"))
    rng = np.random.default_rng(0)
    requests = [rng.normal(size=(int(rng.integers(1, 5)), 2)).round(3) for _ in range(120)]

    async def drive(url):
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30,
                                     headers={"Authorization": f"Bearer {env.key}"}) as client:
            async def one(x):
                r = await client.post("/v1/models/aff/predict", json={"inputs": x.tolist()})
                assert r.status_code == 200, r.text
                return np.array(r.json()["outputs"])
            return await asyncio.gather(*(one(x) for x in requests))

    with live_server(env.app) as url:
        answers = asyncio.run(drive(url))
        metrics = httpx.get(url + "/metrics").text

    for x, y in zip(requests, answers):
        np.testing.assert_allclose(y, x @ WEIGHT + BIAS, rtol=1e-5, atol=1e-5)
    merged = [line for line in metrics.splitlines()
              if line.startswith("kanserve_inference_batch_requests_bucket") and 'le="1.0"' in line]
    runs_of_one = float(merged[0].split()[-1])
    total_runs = float(next(line.split()[-1] for line in metrics.splitlines()
                            if line.startswith("kanserve_inference_batch_requests_count")))
    if batching:
        assert total_runs < len(requests), "no requests were merged"
    else:
        assert runs_of_one == total_runs == len(requests)


def test_requests_that_miss_the_lookup_together_share_one_database_lookup(tmp_path, monkeypatch):
    monkeypatch.setenv("KANSERVE_WARM_MODELS", "0")
    env = serving_env(tmp_path)
    env.register("aff", 1, affine_model(WEIGHT, BIAS, "input", "output"), output_names=("a", "b", "c"))
    runtime = env.app.state.inference
    resolved = []
    real_resolve = runtime.resolve

    def counting_resolve(*args):
        resolved.append(args[1:])
        return real_resolve(*args)
    monkeypatch.setattr(runtime, "resolve", counting_resolve)
    xs = [np.full((1, 2), i, np.float32) for i in range(12)]

    async def main():
        def to_matrix(x):
            return lambda served, predictor: x
        return await asyncio.gather(*(runtime.infer(env.key, "aff", None, "spline", to_matrix(x), 1) for x in xs))

    results = asyncio.run(main())
    assert resolved == [("aff", None, "spline")]
    for x, result in zip(xs, results):
        np.testing.assert_allclose(result.outputs["output"], x @ WEIGHT + BIAS, rtol=1e-6)
    # A different name is its own lookup (and its own error).
    with pytest.raises(LookupError):
        asyncio.run(runtime.infer(env.key, "nope", None, "spline", lambda s, p: xs[0], 1))
    runtime.close()
