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
