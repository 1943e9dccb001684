"""The broker and the database restarted under a running gateway and worker (private
servers: tests/integration/private_services.py).

Redis runs without persistence, so its restart drops every message: the running job's
unacknowledged one and the queued jobs'. The database claim and the workers' sweep must
still run every job exactly once. A PostgreSQL outage makes the gateway answer 503 on
/readyz and on the routes that need the database while predictions from loaded models go
on; both recover when the database is back, without a restart, and the job that was
training resumes or completes with one model version.
"""
from __future__ import annotations

import copy
import time

import httpx
import pytest

from kanserve_harness import HELLOKAN_SPEC, log_text, wait_for_job

pytestmark = pytest.mark.integration

SHORT_SPEC = copy.deepcopy(HELLOKAN_SPEC)
SHORT_SPEC.update(symbolic={"enabled": False}, export={"onnx": False, "plots": False})
SHORT_SPEC["model"] = {"width": [2, 3, 1], "seed": 0}
SHORT_SPEC["data"]["n_samples"] = 200
SHORT_SPEC["train"] = {"optimizer": "adam", "grid_schedule": [3], "steps_per_grid": 20}

# Several seconds of Adam steps over three stages, so a restart lands mid-training.
LONG_SPEC = copy.deepcopy(SHORT_SPEC)
LONG_SPEC["train"] = {"optimizer": "adam", "grid_schedule": [3, 5, 8], "steps_per_grid": 750}

DONE = ("succeeded", "failed", "cancelled")


def submit(client: httpx.Client, spec: dict, name: str) -> str:
    response = client.post("/v1/jobs", json={**spec, "name": name})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def assert_ran_once(client: httpx.Client, job: dict, stack) -> None:
    """Succeeded after one claim, with one model version."""
    assert job["status"] == "succeeded", (job, log_text(stack))
    assert job["deliveries"] == 1, job
    name = job["spec"]["name"]
    assert [v["version"] for v in client.get(f"/v1/models/{name}").json()["versions"]] == [1]


def test_redis_restart_drops_the_messages_but_every_job_runs_exactly_once(private_stack):
    stack = private_stack.stack
    with stack.client() as client:
        running = submit(client, LONG_SPEC, "redis-running")
        wait_for_job(client, running, ("running",), timeout=120,
                     predicate=lambda job: (job["progress"].get("step") or 0) > 0)
        # One worker, busy: these wait in the broker.
        queued = [submit(client, SHORT_SPEC, f"redis-queued-{index}") for index in range(3)]
        assert {client.get(f"/v1/jobs/{job_id}").json()["status"] for job_id in queued} == {"queued"}
        assert private_stack.redis.message_count("train") == 3

        private_stack.redis.restart()  # no persistence: the four messages are gone

        for job_id in [running, *queued]:
            assert_ran_once(client, wait_for_job(client, job_id, DONE, timeout=240), stack)
    # The queued jobs came back through the sweep that compares the broker with the database.
    worker_log = (stack.logs / f"worker-{stack.worker_starts}.log").read_text()
    assert all(f"job {job_id}: queued, but the broker no longer holds its message" in worker_log
               for job_id in queued), worker_log[-3000:]


def wait_for_status(client: httpx.Client, path: str, status: int, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = client.get(path)
            if response.status_code == status:
                return response
        except httpx.TransportError:
            response = None
        assert time.monotonic() < deadline, f"GET {path} did not answer {status} in {timeout} s: {response}"
        time.sleep(0.2)


def test_postgres_outage_gives_503s_keeps_predicting_and_the_job_completes_once(private_stack):
    stack, postgres = private_stack.stack, private_stack.postgres
    served = copy.deepcopy(SHORT_SPEC)
    served["export"] = {"onnx": True, "plots": False}
    rows = {"inputs": [[0.1, 0.2], [-0.5, 0.7]]}
    with stack.client() as client:
        served_job = wait_for_job(client, submit(client, served, "pg-served"), DONE, timeout=180)
        assert served_job["status"] == "succeeded", (served_job, log_text(stack))
        before = client.post("/v1/models/pg-served/predict", json=rows)
        assert before.status_code == 200, before.text

        running = submit(client, LONG_SPEC, "pg-running")
        wait_for_job(client, running, ("running",), timeout=120,
                     predicate=lambda job: job["progress"].get("checkpoints", 0) >= 1)

        postgres.stop()
        try:
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("error"), ready.text
            assert client.get("/healthz").status_code == 200
            for path in ("/v1/jobs", f"/v1/jobs/{running}", "/v1/models", "/v1/models/pg-served"):
                response = client.get(path)
                assert response.status_code == 503, (path, response.status_code, response.text)
                assert "database" in response.json()["detail"]
            time.sleep(1.5)  # past the lookup memo's TTL: the key and the version are not re-read
            during = client.post("/v1/models/pg-served/predict", json=rows)
            assert during.status_code == 200, during.text
            assert during.json()["outputs"] == before.json()["outputs"]
        finally:
            postgres.start()

        # Back without a restart of the gateway or the worker.
        assert wait_for_status(client, "/readyz", 200).json()["checks"]["database"] == "ok"
        assert client.get("/v1/jobs").status_code == 200
        job = wait_for_job(client, running, DONE, timeout=240)
        assert job["status"] == "succeeded", (job, log_text(stack))
        assert [v["version"] for v in client.get("/v1/models/pg-running").json()["versions"]] == [1]
        # Its progress write failed mid-training: handed back, not failed, and resumed from a checkpoint.
        assert job["deliveries"] == 2 and job["progress"]["resumed_from_stage"] >= 1, job
        worker_log = (stack.logs / f"worker-{stack.worker_starts}.log").read_text()
        assert f"job {running}: the database is unavailable" in worker_log, worker_log[-3000:]
        assert stack.processes["worker"].poll() is None and stack.processes["api"].poll() is None
