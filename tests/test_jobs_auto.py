"""Jobs with no model (automatic architecture) on the embedded default's storage (SQLite),
through the real pipeline function: a CSV upload and a job with only name, task and data
succeeds for regression and classification (a separable table too); the chosen config
and every candidate's validation score are in the model's metrics; the served spline
graph answers like the torch model."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import kanmodel
from kanserve_harness import api_harness, run_job_to_success
from workers.pipeline import run_job


@pytest.fixture
def api(tmp_path):
    with api_harness(tmp_path) as harness:
        yield harness


def upload_csv(api, columns: list[str], table: np.ndarray) -> str:
    text = io.StringIO()
    np.savetxt(text, table, delimiter=",", header=",".join(columns), comments="", fmt="%.10g")
    response = api.client.post("/v1/datasets", files={"file": ("table.csv", text.getvalue(), "text/csv")})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def run_minimal_job(api, body: dict) -> dict:
    return run_job_to_success(api, body)[1]


def assert_served_like_torch(api, name: str, rows: np.ndarray) -> dict:
    """The spline graph's answers match the registered torch model within 1e-5: the
    outputs for regression, the probabilities for classification (logits of an
    overconfident model reach hundreds, where float32 keeps only ~7 digits)."""
    blob = api.client.get(f"/v1/models/{name}/versions/latest/artifacts/checkpoint").content
    model = kanmodel.from_bytes(blob)
    with torch.no_grad():
        expected = model(torch.as_tensor(rows, dtype=torch.float32)).double()
    served = api.client.post(f"/v1/models/{name}/predict", json={"inputs": rows.tolist(), "engine": "spline"})
    assert served.status_code == 200, served.text
    body = served.json()
    if model.task == "classification":
        got, expected = np.asarray(body["probabilities"]), torch.softmax(expected, dim=1).numpy()
    else:
        got, expected = np.asarray(body["outputs"]), expected.numpy()
    assert np.max(np.abs(got - expected)) <= 1e-5
    return body


def assert_architecture_recorded(version: dict) -> dict:
    architecture = version["metrics"]["architecture"]
    chosen = architecture["chosen"]
    # auto_fit may serve an average of the chosen width merged into one wider network
    assert chosen.get("served_width", chosen["width"]) == version["width"] and chosen["grid_schedule"]
    scores = [candidate["val_score"] for candidate in architecture["candidates"]]
    assert len(scores) >= 2 and all(score is not None for score in scores)
    return architecture


def test_csv_regression_job_with_only_name_task_and_data(api):
    rng = np.random.default_rng(0)
    a, b = rng.uniform(1, 3, 240), rng.uniform(1, 3, 240)
    dataset_id = upload_csv(api, ["a", "b", "force"], np.column_stack([a, b, a * b]))
    job = run_minimal_job(api, {"name": "force", "task": "regression",
                                "data": {"dataset_id": dataset_id, "target": ["force"]}})
    assert job["progress"]["architecture"]["candidates_scored"] >= 2
    assert job["progress"]["discovery"]["attempt"] >= 1

    version = api.client.get("/v1/models/force/versions/latest").json()
    architecture = assert_architecture_recorded(version)
    assert architecture["validation"]["val_r2"] > 0.99
    assert version["metrics"]["symbolic_mode"] == "discover"
    [formula] = version["formulas"]
    assert formula["exact"] is True and formula["r2"] > 0.999999
    rows = np.column_stack([rng.uniform(1, 3, 16), rng.uniform(1, 3, 16)])
    served = assert_served_like_torch(api, "force", rows)
    assert np.allclose(np.asarray(served["outputs"])[:, 0], rows[:, 0] * rows[:, 1], atol=0.05)


@pytest.mark.parametrize("table", ["iris", "separable"])
def test_csv_classification_job_with_only_name_task_and_data(api, table):
    if table == "iris":
        from sklearn.datasets import load_iris

        X, labels = load_iris(return_X_y=True)
        columns = ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
    else:  # two classes a line apart: cross-entropy can go to 0 on the training rows
        rng = np.random.default_rng(1)
        X = rng.uniform(-1, 1, (200, 2))
        labels = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(float)
        columns = ["u", "v", "side"]
    dataset_id = upload_csv(api, columns, np.column_stack([X, labels]))
    name = f"{table}-classes"
    run_minimal_job(api, {"name": name, "task": "classification",
                          "data": {"dataset_id": dataset_id, "target": [columns[-1]]}})

    version = api.client.get(f"/v1/models/{name}/versions/latest").json()
    n_classes = int(labels.max()) + 1
    assert version["task"] == "classification" and version["output_names"] == [str(k) for k in range(n_classes)]
    assert version["width"][0] == X.shape[1] and version["width"][-1] == n_classes
    architecture = assert_architecture_recorded(version)
    assert architecture["validation"]["val_accuracy"] >= 0.9
    assert version["metrics"]["symbolic_mode"] == "network"
    served = assert_served_like_torch(api, name, X[::7])
    accuracy = np.mean(np.asarray(served["labels"]) == labels[::7].astype(int).astype(str))
    assert accuracy >= 0.9


class WorkerKilled(BaseException):
    """Escapes the pipeline's error handling the way SIGKILL does: nothing gets written."""


def test_a_job_killed_after_the_search_resumes_with_the_chosen_model(api, monkeypatch):
    from datetime import timedelta

    import sqlalchemy as sa

    from service.db.models import Job
    from service.db.types import utcnow
    from workers import architecture

    X = np.random.default_rng(0).uniform(1, 3, (240, 2))
    body = {"name": "resumed", "data": {"inline": {"X": X.tolist(), "y": (X[:, :1] * X[:, 1:]).tolist()}},
            # A short search (it ends after the coarse grids): this test is about the resume.
            "train": {"time_budget_seconds": 5}, "symbolic": {"enabled": False}}
    job_id = api.client.post("/v1/jobs", json=body).json()["id"]
    searches, real_save, real_auto_fit = [], architecture.save_checkpoint, architecture.kanmodel.auto_fit

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise WorkerKilled

    def counted_auto_fit(*args, **kwargs):
        searches.append(kwargs["time_budget"])
        return real_auto_fit(*args, **kwargs)

    monkeypatch.setattr(architecture, "save_checkpoint", save_then_die)
    monkeypatch.setattr(architecture.kanmodel, "auto_fit", counted_auto_fit)
    with pytest.raises(WorkerKilled):
        run_job(job_id, api.session_factory, api.settings, "w1")
    monkeypatch.setattr(architecture, "save_checkpoint", real_save)
    with api.session_factory() as db:
        db.execute(sa.update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        db.commit()

    assert run_job(job_id, api.session_factory, api.settings, "w2") == "succeeded"
    assert searches == [5]  # the second delivery did not search again
    job = api.client.get(f"/v1/jobs/{job_id}").json()
    assert job["deliveries"] == 2 and job["progress"]["resumed_from_stage"] == 1
    version = api.client.get("/v1/models/resumed/versions/1").json()
    assert_architecture_recorded(version)
    assert_served_like_torch(api, "resumed", X[:10])


def test_a_diverged_search_fails_the_job_with_what_the_user_can_change(api, monkeypatch):
    from workers import architecture

    def diverging(*args, **kwargs):
        raise kanmodel.TrainingDiverged("training diverged at stage 1 (grid 5), step 9: the loss became nan.")

    monkeypatch.setattr(architecture.kanmodel, "auto_fit", diverging)
    X = np.random.default_rng(3).uniform(1, 3, (50, 2))
    body = {"name": "diverged", "data": {"inline": {"X": X.tolist(), "y": X[:, :1].tolist()}}}
    job_id = api.client.post("/v1/jobs", json=body).json()["id"]
    assert run_job(job_id, api.session_factory, api.settings, "w1") == "failed"
    job = api.client.get(f"/v1/jobs/{job_id}").json()
    assert "automatic architecture search failed" in job["error"] and "model.width" in job["error"]
    assert api.client.get("/v1/models/diverged").status_code == 404
