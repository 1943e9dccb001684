"""SIGTERM to `kanserve up` (what systemd, docker and Kubernetes send, to that process
alone) stops its whole process tree: the gateway shuts down, the worker child hands its
running job back to the queue and exits, and nothing is left running. The next start
resumes the job from its checkpoint and registers one version."""
from __future__ import annotations

import copy
import os
import signal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from kanserve_harness import (FAST_WORKER_SETTINGS, HELLOKAN_SPEC, free_port, kanserve, process_env, stop,
                              wait_for_job, wait_for_log, wait_until_ready)
from service.config import Settings
from service.db.models import Job

pytestmark = pytest.mark.integration

SPEC = copy.deepcopy(HELLOKAN_SPEC)
SPEC.update(name="embedded-sigterm", symbolic={"enabled": False}, export={"onnx": False, "plots": False})
# Seconds per stage (Adam steps take a few ms here), so the SIGTERM lands mid-job.
SPEC["train"] = {"optimizer": "adam", "grid_schedule": [3, 5, 8], "steps_per_grid": 750}


def descendants(pid: int) -> set[int]:
    found, pending = set(), [pid]
    while pending:
        parent = pending.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except FileNotFoundError:  # exited meanwhile
            continue
        found.update(int(child) for child in children)
        pending.extend(int(child) for child in children)
    return found


def processes_with_data_dir(data_dir: Path) -> dict[int, int]:
    """{pid: parent pid} of every live process whose environment names this instance's data dir
    (`up` passes it to every child, so an orphan of any depth carries it)."""
    marker = f"KANSERVE_DATA_DIR={data_dir}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                stat = (entry / "stat").read_text()
                found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


def start_up(data_dir: Path, port: int, log: Path):
    up = kanserve("up", "--port", str(port), env=process_env({"KANSERVE_DATA_DIR": str(data_dir),
                                                              **FAST_WORKER_SETTINGS}), log=log)
    wait_until_ready(f"http://127.0.0.1:{port}", up, log)
    return up


def test_sigterm_to_up_stops_the_tree_and_hands_the_running_job_back(tmp_path):
    port, first_log = free_port(), tmp_path / "up-1.log"
    up = start_up(tmp_path, port, first_log)
    try:
        key = wait_for_log(first_log, r"Created an API key.*\n\s*\n\s*(ks_\S+)", up).group(1)
        wait_for_log(first_log, r"ready\.", up, timeout=90)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"},
                          timeout=30) as client:
            job_id = client.post("/v1/jobs", json=SPEC).json()["id"]
            running = wait_for_job(client, job_id, ("running",), timeout=120,
                                   predicate=lambda job: job["progress"].get("checkpoints", 0) >= 1)
        tree = descendants(up.pid)
        assert tree, "the worker child is running"

        os.kill(up.pid, signal.SIGTERM)  # to the process alone, not its group
        assert up.wait(timeout=90) == -signal.SIGTERM, first_log.read_text()[-3000:]
    finally:
        stop(up)

    for pid in tree:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert processes_with_data_dir(tmp_path) == {}  # no orphan (PPID 1) or other survivor of the tree
    log_text = first_log.read_text()
    assert "Finished server process" in log_text and "kanserve: stopped on SIGTERM" in log_text

    # Handed back, not lost: queued again, unclaimed, with its checkpoints and a note saying why.
    engine = sa.create_engine(Settings(data_dir=tmp_path).resolved_database_url)
    with engine.connect() as connection:
        job = connection.execute(sa.select(Job.status, Job.claimed_by, Job.progress)
                                 .where(Job.id == job_id)).one()
    engine.dispose()
    assert job.status == "queued" and job.claimed_by is None, job
    assert any("shut down" in note for note in job.progress["notes"]), job.progress
    assert job.progress["checkpoints"] >= running["progress"]["checkpoints"]

    second_log = tmp_path / "up-2.log"
    up = start_up(tmp_path, port, second_log)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"},
                          timeout=30) as client:
            done = wait_for_job(client, job_id, ("succeeded", "failed", "cancelled"), timeout=180)
            assert done["status"] == "succeeded", (done, second_log.read_text()[-3000:])
            assert done["deliveries"] == 2 and done["progress"]["resumed_from_stage"] >= 1
            assert [v["version"] for v in client.get("/v1/models/embedded-sigterm").json()["versions"]] == [1]
    finally:
        stop(up)
