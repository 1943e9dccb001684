"""kanmodel and a `device: "cuda"` job on a CUDA device (skipped where torch sees none).

CUDA runs kanmodel's torch path (the compiled kernels are CPU-only): its forward and
backward against the CPU's, grid updates there, the hellokan recipe, checkpoints and
ONNX export of a model trained there, and a job through the gateway and a Celery worker
of the `gpu` queue. scripts/gpu_check.sh runs this file on a machine with a GPU; the
measured differences go into its JUnit XML as properties.

Parity is measured as max |cuda - cpu| / max |cpu| per tensor (relative to the
tensor's scale: a gradient summed over thousands of rows has elements near zero whose
own relative error means nothing).
"""
from __future__ import annotations

import copy
import math
import re
import secrets
import time

import numpy as np
import pytest
import torch

import kanmodel
from kanmodel.export import to_onnx
from kanmodel.grid import data_knots
from kanmodel.layer import KANLayer

pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda")
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}
# (in, out, grid, batch): a small layer (all basis planes in one op) and a wide one
# (one op per plane, the (out, K) @ (K, batch) orientation for few outputs).
LAYER_SHAPES = [(3, 2, 5, 500), (64, 8, 10, 4096)]


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.detach().cpu().to(torch.float64), expected.detach().cpu().to(torch.float64)
    return float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-300))


def make_layer(n_in: int, n_out: int, grid: int, dtype: torch.dtype, uniform: bool) -> KANLayer:
    generator = torch.Generator().manual_seed(0)
    layer = KANLayer(n_in, n_out, grid_size=grid, k=3, generator=generator, dtype=dtype)
    with torch.no_grad():
        layer.coef.normal_(generator=generator)
        layer.spline_weight.uniform_(0.5, 1.5, generator=generator)
    if not uniform:
        samples = torch.randn(400, n_in, generator=generator, dtype=torch.float64) ** 3
        layer.set_knots(data_knots(samples, grid, 3, grid_eps=0.02).to(dtype), uniform=False)
    return layer


def layer_inputs(layer: KANLayer, batch: int) -> torch.Tensor:
    """(batch, in) inside and up to 30% outside each input's domain, never within 1% of
    its edges (where the clamp has a kink and the two devices may pick different sides)."""
    generator = torch.Generator().manual_seed(1)
    low, high = layer.knots[:, layer.k].double(), layer.knots[:, layer.grid_size + layer.k].double()
    levels = torch.rand(batch, layer.in_features, generator=generator, dtype=torch.float64) * 1.6 - 0.3
    for edge in (0.0, 1.0):
        levels = torch.where((levels - edge).abs() < 0.01, levels + 0.02, levels)
    return (low + (high - low) * levels).to(layer.coef.dtype)


@pytest.mark.parametrize("shape", LAYER_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}-g{s[2]}-b{s[3]}")
@pytest.mark.parametrize("uniform", [True, False], ids=["uniform", "adaptive"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_layer_forward_and_backward_match_cpu(dtype, uniform, shape, record_property):
    n_in, n_out, grid, batch = shape
    cpu_layer = make_layer(n_in, n_out, grid, dtype, uniform)
    cuda_layer = copy.deepcopy(cpu_layer).to(CUDA)
    x = layer_inputs(cpu_layer, batch)
    grad_out = torch.randn(batch, n_out, generator=torch.Generator().manual_seed(2), dtype=dtype)
    results = {}
    for name, device, layer in (("cpu", torch.device("cpu"), cpu_layer), ("cuda", CUDA, cuda_layer)):
        inputs = x.to(device).requires_grad_()
        out = layer(inputs)
        out.backward(grad_out.to(device))
        results[name] = {"forward": out, "grad_x": inputs.grad,
                           **{f"grad_{name}": getattr(layer, name).grad
                              for name in ("coef", "spline_weight", "base_weight", "bias")}}
    assert results["cuda"]["forward"].device.type == "cuda"
    errors = {name: relative_error(results["cuda"][name], results["cpu"][name]) for name in results["cpu"]}
    for name, error in errors.items():
        record_property(name, f"{error:.3e}")
    assert max(errors.values()) <= TOLERANCE[dtype], errors


def hellokan(n: int, seed: int, device=None):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=generator) * 2 - 1
    y = torch.exp(torch.sin(math.pi * x[:, 0]) + x[:, 1] ** 2)
    return x.to(device), y.to(device)


def test_update_grid_and_refine_on_cuda_match_cpu(record_property):
    x, _ = hellokan(1000, 0)
    cpu_model = kanmodel.KAN([2, 5, 1], grid=5, seed=0).double()
    cuda_model = copy.deepcopy(cpu_model).to(CUDA)
    for model, device in ((cpu_model, torch.device("cpu")), (cuda_model, CUDA)):
        samples = x.double().to(device)
        model.update_grid(samples)
        model.refine(10, samples)
    assert cuda_model.grid_size == cpu_model.grid_size == 10
    assert all(layer.knots.device.type == "cuda" and layer.coef.device.type == "cuda"
               for layer in cuda_model.layers)
    errors = {}
    for index, (cpu_layer, cuda_layer) in enumerate(zip(cpu_model.layers, cuda_model.layers)):
        assert cuda_layer.uniform == cpu_layer.uniform
        errors[f"layer{index}_knots"] = relative_error(cuda_layer.knots, cpu_layer.knots)
        errors[f"layer{index}_coef"] = relative_error(cuda_layer.coef, cpu_layer.coef)
    with torch.no_grad():
        errors["output"] = relative_error(cuda_model(x.double().to(CUDA)), cpu_model(x.double()))
    for name, error in errors.items():
        record_property(name, f"{error:.3e}")
    # Least-squares fits (a Cholesky solve) on each device: agreement to float64 rounding
    # amplified by the fit's conditioning, far below anything a model would notice.
    assert max(errors.values()) <= 1e-8, errors


def test_hellokan_recipe_on_cuda_reaches_1e_3(record_property):
    # The documented recipe (docs/benchmarks.md, hellokan; tests/test_training.py on CPU).
    x_train, y_train = hellokan(3000, 0, CUDA)
    x_test, y_test = hellokan(1000, 1000, CUDA)
    model = kanmodel.KAN([2, 5, 1], grid=3, k=3, grid_eps=1.0, seed=0).to(CUDA)
    started = time.perf_counter()
    result = kanmodel.fit(model, x_train, y_train, optimizer="lbfgs", grid_schedule=[3, 5, 10, 20],
                          steps_per_grid=400, val_fraction=0.0, seed=0)
    torch.cuda.synchronize()
    record_property("fit_seconds", f"{time.perf_counter() - started:.2f}")
    assert result.stages_completed == 4 and model.grid_size == 20
    assert next(model.parameters()).device.type == "cuda"
    with torch.no_grad():
        test_rmse = float(((model(x_test)[:, 0] - y_test) ** 2).mean().sqrt())
    record_property("test_rmse", f"{test_rmse:.3e}")
    assert test_rmse <= 1e-3


def test_adam_mini_batches_with_validation_and_sparsity_on_cuda():
    # What the hellokan recipe leaves out: Adam's mini-batches, the validation split and
    # the sparsity penalty (edge activations), each with tensors made on the CUDA device.
    x, y = hellokan(2000, 6, CUDA)
    model = kanmodel.KAN([2, 5, 1], grid=3, seed=6).to(CUDA)
    result = kanmodel.fit(model, x, y, optimizer="adam", grid_schedule=[3, 5], steps_per_grid=150, batch_size=256,
                          lamb=1e-3, val_fraction=0.2, seed=6)
    assert result.stages_completed == 2 and next(model.parameters()).device.type == "cuda"
    with torch.no_grad():
        rmse = float(((model(x)[:, 0] - y) ** 2).mean().sqrt())
    assert rmse < 0.25 * float(y.std())


@pytest.fixture(scope="module")
def cuda_trained():
    """A hellokan model trained briefly on CUDA (two grid stages, adaptive knots)."""
    x, y = hellokan(1000, 3, CUDA)
    model = kanmodel.KAN([2, 5, 1], grid=3, seed=3).to(CUDA)
    kanmodel.fit(model, x, y, optimizer="lbfgs", grid_schedule=[3, 6], steps_per_grid=40, val_fraction=0.0)
    return model


def test_checkpoint_saved_on_cuda_loads_on_cpu_bit_exact(cuda_trained, tmp_path):
    path = tmp_path / "model.safetensors"
    kanmodel.save(cuda_trained, path)
    assert next(cuda_trained.parameters()).device.type == "cuda"  # saving does not move the model
    loaded = kanmodel.load(path)
    assert next(loaded.parameters()).device.type == "cpu"
    assert loaded.config() == cuda_trained.config()
    assert [layer.uniform for layer in loaded.layers] == [layer.uniform for layer in cuda_trained.layers]
    saved, restored = cuda_trained.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys()
    for name, tensor in saved.items():
        assert tensor.dtype == restored[name].dtype and torch.equal(tensor.cpu(), restored[name]), name
    x, _ = hellokan(200, 4)
    with torch.no_grad():
        assert relative_error(loaded(x), cuda_trained(x.to(CUDA))) <= TOLERANCE[torch.float32]


def test_onnx_export_of_a_cuda_trained_model_matches_on_cpu(cuda_trained, record_property):
    import onnxruntime

    session = onnxruntime.InferenceSession(to_onnx(cuda_trained), providers=["CPUExecutionProvider"])
    x, _ = hellokan(500, 5)
    [got] = session.run(["output"], {"input": x.numpy().astype(np.float32)})
    with torch.no_grad():
        on_cuda = cuda_trained(x.to(CUDA)).cpu().numpy()
        on_cpu = copy.deepcopy(cuda_trained).cpu()(x).numpy()
    record_property("onnx_vs_cuda_max_abs", f"{np.abs(got - on_cuda).max():.3e}")
    np.testing.assert_allclose(got, on_cpu, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got, on_cuda, rtol=0, atol=1e-5)


# The job: hellokan as the integration tests submit it, on the GPU. Formula search runs
# on the worker's CPU after training (discover mode, the regression default); its budget
# keeps the whole test inside the time scripts/gpu_check.sh gives it.
GPU_JOB_SPEC = {
    "name": "hellokan-cuda",
    "device": "cuda",
    "data": {"formula": "exp(sin(pi*x0) + x1**2)", "ranges": {"x0": [-1, 1], "x1": [-1, 1]},
             "n_samples": 600, "seed": 0},
    "model": {"width": [2, 5, 1], "seed": 0},
    "train": {"optimizer": "lbfgs", "grid_schedule": [3, 5], "steps_per_grid": 100},
    "symbolic": {"enabled": True, "library": ["x", "x^2", "sin", "exp"], "time_budget_seconds": 45},
    "export": {"onnx": True, "plots": True},
}


def test_gpu_queue_job_trains_on_cuda_and_serves(tmp_path, record_property):
    from kanserve_harness import (free_port, kanserve, kanserve_output, process_env, stop, wait_for_job,
                                  wait_for_log, wait_until_ready)

    key = f"ks_{secrets.token_urlsafe(24)}"
    # The embedded default's storage: SQLite and the SQLAlchemy (SQLite) Celery transport
    # in one data directory that the gateway and the worker share.
    env = process_env({"KANSERVE_DATA_DIR": str(tmp_path), "KANSERVE_API_KEYS": key,
                       "KANSERVE_PROGRESS_INTERVAL_SECONDS": "0.2"})
    kanserve_output("db", "upgrade", env=env)
    port, api_log, worker_log = free_port(), tmp_path / "api.log", tmp_path / "worker.log"
    api = kanserve("api", "--port", str(port), env=env, log=api_log)
    worker = kanserve("worker", "--queues", "gpu", "--concurrency", "1", "--hostname", "gpu@%h", env=env,
                      log=worker_log)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_ready(base_url, api, api_log)
        wait_for_log(worker_log, r"ready\.", worker, timeout=60)
        import httpx

        with httpx.Client(base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
            submitted = client.post("/v1/jobs", json=GPU_JOB_SPEC)
            assert submitted.status_code == 202, submitted.text
            assert submitted.json()["queue"] == "gpu"
            job_id = submitted.json()["id"]
            training = wait_for_job(client, job_id, ("running", "succeeded", "failed"), timeout=60,
                                    predicate=lambda job: job["status"] != "running"
                                    or job["progress"].get("device") is not None)
            assert training["progress"]["device"] == "cuda", (training, worker_log.read_text()[-3000:])
            job = wait_for_job(client, job_id, ("succeeded", "failed", "cancelled"), timeout=110)
            assert job["status"] == "succeeded", (job, worker_log.read_text()[-3000:])
            progress = job["progress"]
            assert progress["device"] == "cuda"
            assert progress["checkpoints"] == len(GPU_JOB_SPEC["train"]["grid_schedule"])
            assert progress["step"] == progress["total_steps"] == 200
            record_property("job_seconds", f"{_seconds(job['finished_at']) - _seconds(job['started_at']):.1f}")

            version = client.get(job["model"]["url"]).json()
            [formula] = version["formulas"]
            assert {"x0", "x1"} <= set(re.findall(r"x\d", formula["expression"])), formula
            record_property("formula", formula["expression"])
            artifacts = {artifact["kind"] for artifact in version["artifacts"]}
            assert {"checkpoint", "onnx", "formula_onnx"} <= artifacts, artifacts

            rows = [[0.1, 0.2], [-0.5, 0.7], [0.8, -0.3]]
            truth = [math.exp(math.sin(math.pi * x0) + x1 ** 2) for x0, x1 in rows]
            for engine in ("spline", "formula"):
                predicted = client.post(f"/v1/models/{GPU_JOB_SPEC['name']}/predict",
                                        json={"inputs": rows, "engine": engine})
                assert predicted.status_code == 200, predicted.text
                values = [row[0] for row in predicted.json()["outputs"]]
                assert values == pytest.approx(truth, abs=0.5), engine
    finally:
        stop(worker)
        stop(api)


def _seconds(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp).timestamp()
