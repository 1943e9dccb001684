"""Discovery jobs end to end in the production shape (PostgreSQL + Redis + gateway +
Celery worker): a job with only a name and data shows the architecture search and the
formula discovery in its event stream and serves the library's formula; a cancel during
discovery kills the worker's child process."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

import kanmodel
from kanserve_harness import follow_events, log_text, wait_for_job
from service.datasets.formula_data import generate
from service.schemas.jobspec import FormulaSource

pytestmark = pytest.mark.integration

DATA = {"formula": "q*v/(2*pi*r)", "ranges": {"q": [1, 5], "v": [1, 5], "r": [1, 5]}, "n_samples": 300, "seed": 0}


def test_a_job_with_only_data_discovers_its_formula(production_stack):
    with production_stack.client() as client:
        submitted = client.post("/v1/jobs", json={"name": "field", "data": DATA})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        events = follow_events(client, job_id, timeout=600)
        final = events[-1][1]
        assert final["status"] == "succeeded", (final, log_text(production_stack))

        progress = [data["progress"] for name, data in events if name == "progress"]
        phases = [p["phase"] for p in progress]
        assert phases.index("architecture") < phases.index("discovery") < phases.index("done")
        assert any((p.get("architecture") or {}).get("candidates_scored", 0) >= 1 for p in progress)
        attempts = [p["discovery"] for p in progress if p["phase"] == "discovery" and p.get("discovery")]
        assert attempts and all(a["attempt"] >= 1 and a["space"] in ("raw", "log") for a in attempts)

        version = client.get(client.get(f"/v1/jobs/{job_id}").json()["model"]["url"]).json()
        assert version["input_names"] == ["q", "v", "r"]
        chosen = version["metrics"]["architecture"]["chosen"]
        assert chosen.get("served_width", chosen["width"]) == version["width"]
        [formula] = version["formulas"]
        assert formula["exact"] is True and formula["latex"]

        rows = [[1.5, 2.0, 3.0], [4.0, 1.2, 2.5]]
        truth = [q * v / (2 * np.pi * r) for q, v, r in rows]
        answer = client.post("/v1/models/field/predict", json={"inputs": rows, "engine": "formula"})
        assert answer.status_code == 200, answer.text
        assert np.allclose(np.asarray(answer.json()["outputs"])[:, 0], truth, rtol=1e-5)

    # The job's formula is the library's for the same data and seed.
    X, y = generate(FormulaSource.model_validate(DATA))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        found = kanmodel.discover(X, y, variables=["q", "v", "r"], seed=0, time_budget=180)
    finally:
        torch.set_num_threads(threads)
    assert formula["expression"] == found.formulas[0].text


def test_cancel_during_discovery_ends_the_workers_child_process(production_stack):
    spec = {"name": "endless", "model": {"width": [2, 3, 1]},
            "data": {"formula": "exp(sin(pi*x0) + x1**2)", "ranges": {"x0": [-1, 1], "x1": [-1, 1]},
                     "n_samples": 400, "noise": 0.05},  # never exact: discovery runs until stopped
            "train": {"grid_schedule": [3], "steps_per_grid": 5}, "symbolic": {"time_budget_seconds": 600}}
    with production_stack.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        running = wait_for_job(client, job_id, ("running",), timeout=300,
                               predicate=lambda job: (job["progress"].get("discovery") or {}).get("width"))
        assert running["progress"]["phase"] == "discovery"
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        job = wait_for_job(client, job_id, ("cancelled", "succeeded", "failed"), timeout=120)  # hang guard
        assert job["status"] == "cancelled" and job["model"] is None, (job, log_text(production_stack))
    log = (production_stack.logs / f"worker-{production_stack.worker_starts}.log").read_text()
    [pid] = re.findall(r"symbolic extraction: child process (\d+) started", log)[-1:]
    assert re.search(rf"child process {pid} ended with exit code -9", log), log[-3000:]
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)  # signal 0 only checks existence; a zombie would still answer
