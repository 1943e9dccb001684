"""The embedded default survives a killed worker too: `kanserve up` restarts its worker
child, and since the serverless transport never redelivers, the stale-lease sweep puts
the job back in the queue; it resumes from its checkpoint and registers one version."""
from __future__ import annotations

import copy
import os
import signal
from pathlib import Path

import pytest

from kanserve_harness import (FAST_WORKER_SETTINGS, HELLOKAN_SPEC, free_port, kanserve, process_env, stop, wait_for_job, wait_for_log,
                              wait_until_ready)

pytestmark = pytest.mark.integration

SPEC = copy.deepcopy(HELLOKAN_SPEC)
SPEC.update(name="embedded-crash", symbolic={"enabled": False}, export={"onnx": False, "plots": False})
# Seconds per stage (Adam steps take ~2.3 ms here), so the kill lands mid-job.
SPEC["train"] = {"optimizer": "adam", "grid_schedule": [3, 5, 8], "steps_per_grid": 750}


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_killed_embedded_worker_is_restarted_and_its_job_resumes(tmp_path):
    import httpx

    port = free_port()
    log = tmp_path / "up.log"
    up = kanserve("up", "--port", str(port), env=process_env({"KANSERVE_DATA_DIR": str(tmp_path),
                                                              **FAST_WORKER_SETTINGS}), log=log)
    try:
        key = wait_for_log(log, r"Created an API key.*\n\s*\n\s*(ks_\S+)", up).group(1)
        base_url = f"http://127.0.0.1:{port}"
        wait_until_ready(base_url, up, log)
        wait_for_log(log, r"ready\.", up, timeout=90)
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            job_id = client.post("/v1/jobs", json=SPEC).json()["id"]
            wait_for_job(client, job_id, ("running",), timeout=120,
                         predicate=lambda job: job["progress"].get("checkpoints", 0) >= 1)
            [worker] = children(up.pid)
            os.kill(worker, signal.SIGKILL)
            job = wait_for_job(client, job_id, ("succeeded", "failed", "cancelled"), timeout=180)
            assert job["status"] == "succeeded", (job, log.read_text()[-3000:])
            assert job["deliveries"] >= 2 and job["progress"]["resumed_from_stage"] >= 1
            assert [v["version"] for v in client.get("/v1/models/embedded-crash").json()["versions"]] == [1]
        assert "the worker exited with -9; restarting it" in log.read_text()
        assert worker not in children(up.pid)
    finally:
        stop(up)
