"""Training jobs end to end over HTTP against real processes in the production shape
(PostgreSQL + Redis + gateway + Celery worker): hellokan with its formula, SIGKILL of a
worker mid-job, cancel, Idempotency-Key and a diverging job. The same flow on the
embedded default (`kanserve up`) is tests/test_readme_walkthrough.py."""
from __future__ import annotations

import copy
import hashlib
import math
import re
import signal

import pytest

from kanserve_harness import HELLOKAN_SPEC, follow_events, log_text, stop, wait_for_job

pytestmark = pytest.mark.integration

# Adam steps are cheap and steady (~2.3 ms here with the compiled layer kernels, 750
# steps in 1.7 s): 750 per stage gives seconds per stage, long enough to kill or cancel
# mid-stage, short enough to keep the suite quick.
LONG_SPEC = copy.deepcopy(HELLOKAN_SPEC)
LONG_SPEC["train"] = {"optimizer": "adam", "grid_schedule": [3, 5, 8], "steps_per_grid": 750}
LONG_TOTAL_STEPS = LONG_SPEC["train"]["steps_per_grid"] * len(LONG_SPEC["train"]["grid_schedule"])
LONG_SPEC["symbolic"] = {"enabled": False}
LONG_SPEC["export"] = {"onnx": True, "plots": False}


def test_hellokan_job_events_model_formula_and_artifacts(production_stack):
    stack = production_stack
    spec = copy.deepcopy(HELLOKAN_SPEC)
    # Several of the event stream's 0.5 s polls of training (about 3 s here with the
    # compiled layer kernels; 100 steps per stage once took 2 s and now end between two
    # polls): progress events with an ETA.
    spec["train"]["steps_per_grid"] = 400
    total_steps = spec["train"]["steps_per_grid"] * len(spec["train"]["grid_schedule"])
    with stack.client() as client:
        submitted = client.post("/v1/jobs", json=spec)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]

        events = follow_events(client, job_id, timeout=300)
        names = [name for name, _ in events]
        assert names[-1] == "end" and names.count("end") == 1, log_text(stack)
        final = events[-1][1]
        assert final["status"] == "succeeded", (final, log_text(stack))
        steps = [data["progress"]["step"] for name, data in events if data["progress"].get("step")]
        assert steps == sorted(steps) and steps[-1] == total_steps
        training = [data["progress"] for _, data in events if data["progress"]["phase"] == "training"
                    and data["progress"].get("step")]
        assert training, events
        assert all(p["train_loss"] > 0 and p["total_steps"] == total_steps and p["eta_seconds"] is not None for p in training)
        phases = [data["progress"]["phase"] for _, data in events]
        assert phases.index("training") < phases.index("symbolic") < phases.index("done")

        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["model"]["url"] == job["links"]["model"]
        version = client.get(job["model"]["url"]).json()
        assert version["input_names"] == ["x0", "x1"] and version["output_names"] == ["y"]
        assert 0 < version["metrics"]["val_loss"] < 1.0  # RMSE on targets in [e^-1, e^2]
        assert version["metrics"]["notes"] == []
        [formula] = version["formulas"]
        assert formula["output_name"] == "y" and {"x0", "x1"} <= set(re.findall(r"x\d", formula["expression"]))
        assert formula["latex"] and formula["r2"] > 0.9 and formula["rmse"] > 0
        artifacts = {artifact["kind"]: artifact for artifact in version["artifacts"]}
        assert set(artifacts) == {"checkpoint", "onnx", "formula_onnx", "plot_network", "plot_loss"}
        assert client.get(artifacts["plot_loss"]["url"]).content[:8] == b"\x89PNG\r\n\x1a\n"
        for artifact in artifacts.values():
            body = client.get(artifact["url"])
            assert body.status_code == 200 and hashlib.sha256(body.content).hexdigest() == artifact["sha256"]
        assert client.get("/v1/models").json()["items"][0]["name"] == "hellokan"

        # What the worker registered is what the gateway serves: both graphs answer like the target.
        rows = [[0.1, 0.2], [-0.5, 0.7], [0.8, -0.3]]
        truth = [math.exp(math.sin(math.pi * x0) + x1 ** 2) for x0, x1 in rows]
        for engine in ("spline", "formula"):
            predicted = client.post("/v1/models/hellokan/predict", json={"inputs": rows, "engine": engine})
            assert predicted.status_code == 200, predicted.text
            values = [row[0] for row in predicted.json()["outputs"]]
            assert values == pytest.approx(truth, abs=0.5), engine
    # The worker sized torch's thread pool from its settings (1 core, concurrency 1), without spinning.
    assert "torch threads: 1 (OMP_WAIT_POLICY=PASSIVE)" in (stack.logs / "worker-1.log").read_text()


def test_worker_killed_mid_job_resumes_from_checkpoint_without_a_second_version(production_stack):
    stack = production_stack
    spec = {**LONG_SPEC, "name": "crashy"}
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        running = wait_for_job(client, job_id, ("running",), timeout=120,
                               predicate=lambda job: job["progress"].get("checkpoints", 0) >= 1)
        stack.kill_worker()  # SIGKILL: no cleanup, the job row still says running
        killed_at_stage = running["progress"]["stage"]
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] in ("running", "queued")

        stack.start_worker()
        job = wait_for_job(client, job_id, ("succeeded", "failed", "cancelled"), timeout=180)
        assert job["status"] == "succeeded", (job, log_text(stack))
        # 2: the killed attempt and the resumed one (one more if a starved machine let the
        # short test lease lapse: the take-over then resumes from a checkpoint too).
        assert job["deliveries"] >= 2
        assert 1 <= job["progress"]["resumed_from_stage"] <= killed_at_stage + 1
        model = client.get("/v1/models/crashy").json()
        assert [v["version"] for v in model["versions"]] == [1] and model["versions"][0]["job_id"] == job_id


def test_cancel_a_running_job_stops_its_training(production_stack):
    with production_stack.client() as client:
        job_id = client.post("/v1/jobs", json={**LONG_SPEC, "name": "cancelme"}).json()["id"]
        running = wait_for_job(client, job_id, ("running",),
                               predicate=lambda job: (job["progress"].get("step") or 0) > 5)
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        job = wait_for_job(client, job_id, ("cancelled", "succeeded", "failed"), timeout=120)  # hang guard
        assert job["status"] == "cancelled" and job["cancel_requested"], (job, log_text(production_stack))
        # Training stopped part-way: a cancel honoured only after training would still end
        # "cancelled", but at the last step with all 3 stages checkpointed.
        progress = job["progress"]
        assert running["progress"]["step"] <= progress["step"] < progress["total_steps"] == LONG_TOTAL_STEPS
        assert progress["checkpoints"] < 3 and progress["phase"] == "done"
        assert job["finished_at"] is not None and job["model"] is None
        assert client.get("/v1/models/cancelme").status_code == 404


def test_idempotency_key_twice_over_http(production_stack):
    spec = copy.deepcopy(HELLOKAN_SPEC)
    spec["train"]["steps_per_grid"] = 3
    spec["symbolic"] = {"enabled": False}
    spec["export"] = {"onnx": False, "plots": False}
    headers = {"Idempotency-Key": "retry-me"}
    with production_stack.client() as client:
        first = client.post("/v1/jobs", json=spec, headers=headers)
        second = client.post("/v1/jobs", json=spec, headers=headers)
        assert first.status_code == second.status_code == 202
        assert first.json()["id"] == second.json()["id"]
        assert client.post("/v1/jobs", json={**spec, "name": "x"}, headers=headers).status_code == 409
        wait_for_job(client, first.json()["id"], ("succeeded",), timeout=120)
        assert len(client.get("/v1/models/hellokan").json()["versions"]) >= 1


def test_diverging_job_fails_with_a_useful_message(production_stack):
    spec = {**LONG_SPEC, "name": "boom",
            "train": {"optimizer": "adam", "lr": 1e12, "grid_schedule": [3], "steps_per_grid": 100}}
    with production_stack.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        job = wait_for_job(client, job_id, ("failed", "succeeded"), timeout=120)
        assert job["status"] == "failed" and "diverged" in job["error"] and "smaller lr" in job["error"]
        assert client.get("/v1/models/boom").status_code == 404


def test_a_prefork_worker_hands_its_running_job_back_on_sigterm(production_stack):
    # SIGTERM reaches only the worker's main process (as with `docker stop`); the job runs
    # in a pool child, which must still stop at its next step instead of finishing the job.
    stack = production_stack
    stop(stack.processes.pop("worker"))
    stack.start_worker(concurrency=2)
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json={**LONG_SPEC, "name": "handback"}).json()["id"]
        running = wait_for_job(client, job_id, ("running",),
                               predicate=lambda job: (job["progress"].get("step") or 0) > 5)
        worker = stack.processes.pop("worker")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(120) == 0, log_text(stack)  # hang guard: a warm shutdown that never ends
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "queued", (job, log_text(stack))
        assert running["progress"]["step"] <= job["progress"]["step"] < job["progress"]["total_steps"]
        assert any("shut down" in note for note in job["progress"]["notes"]), job

        stack.start_worker()  # its sweep re-sends the handed-back job, which resumes
        job = wait_for_job(client, job_id, ("succeeded", "failed", "cancelled"), timeout=180)
        assert job["status"] == "succeeded" and job["deliveries"] == 2, (job, log_text(stack))
