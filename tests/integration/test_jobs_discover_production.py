"""A job with only a name and data, end to end in the production shape (PostgreSQL +
Redis + gateway + Celery worker): the architecture search and the formula discovery
show in the event stream, and the registered model serves the discovered formula."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kanmodel
from kanserve_harness import follow_events, log_text
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
