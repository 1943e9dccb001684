"""Discover-mode jobs (the regression default) on the embedded default's storage (SQLite),
through the real pipeline function: the formula is the one kanmodel.discover finds for
the same data and seed, with R2, RMSE, exact and LaTeX; its ONNX graph and the spline
graph are served; progress shows the discovery attempts; a cancel ends the child."""
from __future__ import annotations

import logging
import os
import re
import threading
import time

import numpy as np
import pytest
import torch

import kanmodel
from kanserve_harness import api_harness, run_job_to_success
from service.datasets.formula_data import generate
from service.schemas.jobspec import FormulaSource
from workers import symbolic_runner
from workers.pipeline import run_job

# A network for the served spline model that trains in a moment; discovery searches its
# own shapes (the given width first).
QUICK_TRAIN = {"optimizer": "lbfgs", "grid_schedule": [3], "steps_per_grid": 5}


@pytest.fixture
def api(tmp_path):
    with api_harness(tmp_path, progress_interval_seconds=0.02, cancel_poll_seconds=0.02) as harness:
        yield harness


def discover_spec(name: str, formula: str, ranges: dict, width: list[int], budget: float = 60) -> dict:
    return {"name": name, "data": {"formula": formula, "ranges": ranges, "n_samples": 400, "seed": 3},
            "model": {"width": width}, "train": QUICK_TRAIN,
            "symbolic": {"time_budget_seconds": budget}, "export": {"onnx": True, "plots": False}}


def library_formula(spec: dict) -> kanmodel.Formula:
    X, y = generate(FormulaSource.model_validate(spec["data"]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the job's child process
    try:
        found = kanmodel.discover(X, y, variables=list(spec["data"]["ranges"]), seed=0,
                                  time_budget=spec["symbolic"]["time_budget_seconds"])
    finally:
        torch.set_num_threads(threads)
    [formula] = found.formulas
    return formula


def spline_parity(api, name: str, rows: list[list[float]]) -> float:
    """Largest |served spline graph - torch model| over rows."""
    version = api.client.get(f"/v1/models/{name}/versions/latest").json()
    blob = api.client.get(f"/v1/models/{name}/versions/latest/artifacts/checkpoint").content
    model = kanmodel.from_bytes(blob)
    with torch.no_grad():
        expected = model(torch.as_tensor(rows, dtype=torch.float32)).double().numpy()
    served = api.client.post(f"/v1/models/{name}/predict", json={"inputs": rows, "engine": "spline"})
    assert served.status_code == 200, served.text
    assert version["width"] == list(model.width)
    return float(np.max(np.abs(np.asarray(served.json()["outputs"]) - expected)))


def test_discover_job_registers_the_librarys_formula_exact_with_its_graphs(api):
    spec = discover_spec("friction", "mu*N", {"mu": [1, 5], "N": [1, 5]}, width=[2, 1])
    job_id, job = run_job_to_success(api, spec)

    discovery = job["progress"]["discovery"]
    assert discovery["attempt"] >= 1 and discovery["space"] in ("log", "raw") and discovery["width"]
    assert discovery["best_error"] <= 1e-7

    version = api.client.get("/v1/models/friction/versions/1").json()
    [formula] = version["formulas"]
    assert formula["expression"] == library_formula(spec).text
    assert formula["exact"] is True and formula["r2"] > 1 - 1e-12 and formula["rmse"] < 1e-6
    assert "mu" in formula["latex"]
    assert version["metrics"]["symbolic_mode"] == "discover"
    # Discovery found the law in log space (log y = log mu + log N); the served spline
    # model is the job's own network, which maps raw inputs to raw outputs.
    assert version["metrics"]["discovery"]["stopped"] == "exact" and version["metrics"]["discovery"]["space"] == "log"
    assert {"onnx", "formula_onnx", "checkpoint"} <= {a["kind"] for a in version["artifacts"]}

    rows = [[1.5, 2.0], [4.0, 3.5], [2.2, 1.1]]
    by_formula = api.client.post("/v1/models/friction/predict", json={"inputs": rows, "engine": "formula"})
    assert by_formula.status_code == 200, by_formula.text
    assert np.allclose(np.asarray(by_formula.json()["outputs"])[:, 0], [a * b for a, b in rows], rtol=1e-5)
    assert spline_parity(api, "friction", rows) <= 1e-5


def test_variables_named_like_internal_parameters_work_through_the_job(api):
    spec = discover_spec("inverse-square", "r1/r2**2", {"r1": [1, 5], "r2": [1, 5]}, width=[2, 1])
    run_job_to_success(api, spec)
    version = api.client.get("/v1/models/inverse-square/versions/1").json()
    assert version["input_names"] == ["r1", "r2"]
    [formula] = version["formulas"]
    assert formula["exact"] is True and {"r1", "r2"} <= set(re.findall(r"[A-Za-z_]\w*", formula["expression"]))
    rows = [[1.0, 2.0], [4.5, 1.5], [3.0, 3.0]]
    served = api.client.post("/v1/models/inverse-square/predict", json={"inputs": rows, "engine": "formula"})
    assert served.status_code == 200, served.text
    assert np.allclose(np.asarray(served.json()["outputs"])[:, 0], [a / b ** 2 for a, b in rows], rtol=1e-5)


def formula_children(caplog) -> dict[int, int | None]:
    """{pid: exit code} of each formula-search child, from the runner's log."""
    children: dict[int, int | None] = {}
    for record in caplog.records:
        if record.name == symbolic_runner.log.name and record.msg.endswith("child process %d started"):
            children[record.args[0]] = None
        elif record.name == symbolic_runner.log.name and record.msg.endswith("ended with exit code %d"):
            children[record.args[0]] = record.args[1]
    return children


def assert_child_killed_and_reaped(caplog) -> None:
    [(pid, exit_code)] = formula_children(caplog).items()
    assert exit_code is not None and exit_code != 0  # killed, and reaped
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # signal 0 only checks existence; a zombie would still answer


# Not a product of powers (no exact log-space fit): discovery keeps searching until stopped.
def endless_spec(name: str) -> dict:
    # Noise keeps every formula inexact, so discovery never ends early before the test stops it.
    spec = discover_spec(name, "exp(sin(pi*x0) + x1**2)", {"x0": [-1, 1], "x1": [-1, 1]}, width=[2, 3, 1],
                         budget=600)
    spec["data"]["noise"] = 0.05
    return spec


def test_cancel_during_discovery_ends_the_child_process(api, caplog):
    caplog.set_level(logging.INFO, logger=symbolic_runner.log.name)
    job_id = api.client.post("/v1/jobs", json=endless_spec("wavy")).json()["id"]
    seen = {}

    def cancel_once_discovering():
        deadline = time.monotonic() + 300  # hang guard only
        while time.monotonic() < deadline:
            progress = api.client.get(f"/v1/jobs/{job_id}").json()["progress"]
            # a network attempt (the direct search on the data, which comes first, has no shape)
            if progress.get("phase") == "discovery" and (progress.get("discovery") or {}).get("width"):
                seen.update(discovery=progress["discovery"], eta_seconds=progress["eta_seconds"])
                assert api.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_once_discovering)
    canceller.start()
    status = run_job(job_id, api.session_factory, api.settings, "w1")
    canceller.join()
    assert status == "cancelled"
    assert seen["discovery"]["attempt"] >= 1 and seen["discovery"]["width"] and seen["discovery"]["space"] == "raw"
    assert 0 <= seen["eta_seconds"] <= 600  # what is left of the discovery budget
    assert_child_killed_and_reaped(caplog)
    job = api.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["model"] is None
    assert api.client.get("/v1/models/wavy").status_code == 404


def test_the_job_time_limit_ends_discovery_and_its_child(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=symbolic_runner.log.name)
    with api_harness(tmp_path, max_job_seconds=4, cancel_poll_seconds=0.05) as api:
        job_id = api.client.post("/v1/jobs", json=endless_spec("slow")).json()["id"]
        assert run_job(job_id, api.session_factory, api.settings, "w1") == "failed"
        job = api.client.get(f"/v1/jobs/{job_id}").json()
        assert "longer than the limit of 4 s" in job["error"] and job["model"] is None
    assert_child_killed_and_reaped(caplog)


def test_columns_whose_names_cannot_be_variables_get_stand_ins_in_the_formula(api):
    rng = np.random.default_rng(4)
    mass, speed = rng.uniform(1, 4, 300), rng.uniform(1, 4, 300)
    rows = "\n".join(f"{m:.17g},{v:.17g},{m * v:.17g}" for m, v in zip(mass, speed))
    upload = api.client.post("/v1/datasets", content="mass (kg),lambda,momentum\n" + rows,
                             headers={"content-type": "text/csv"})
    assert upload.status_code == 201, upload.text
    spec = {"name": "momentum", "data": {"dataset_id": upload.json()["id"], "target": ["momentum"]},
            "model": {"width": [2, 1]}, "train": QUICK_TRAIN, "symbolic": {"time_budget_seconds": 60},
            "export": {"onnx": True, "plots": False}}
    run_job_to_success(api, spec)
    version = api.client.get("/v1/models/momentum/versions/1").json()
    assert version["input_names"] == ["mass (kg)", "lambda"]
    [formula] = version["formulas"]
    assert formula["exact"] is True
    assert set(re.findall(r"[A-Za-z_]\w*", formula["expression"])) == {"mass_kg", "lambda_"}
    assert any("mass_kg = column 'mass (kg)'" in note for note in version["metrics"]["notes"])
    served = api.client.post("/v1/models/momentum/predict",
                             json={"inputs": {"mass (kg)": [2.0, 3.5], "lambda": [1.5, 2.0]}, "engine": "formula"})
    assert served.status_code == 200, served.text
    assert np.allclose(np.asarray(served.json()["outputs"])[:, 0], [3.0, 7.0], rtol=1e-5)
