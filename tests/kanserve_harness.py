"""Helpers for the gateway/worker tests: scratch databases, migrated settings, API
clients with keys, and real `kanserve` processes (gateway, worker, embedded `up`)."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import redis

from service.config import Settings
from service.db import migrate

REPO_ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_HOST = "127.0.0.1"

FAST_WORKER_SETTINGS = {
    # Short leases and sweeps so a killed worker's job is picked up within seconds.
    "KANSERVE_JOB_LEASE_SECONDS": "6",
    "KANSERVE_REAPER_INTERVAL_SECONDS": "1",
    "KANSERVE_PROGRESS_INTERVAL_SECONDS": "0.2",
    "KANSERVE_CANCEL_POLL_SECONDS": "0.1",
    "KANSERVE_WORKER_CORES": "1",
}

HELLOKAN_SPEC = {
    "name": "hellokan",
    "data": {"formula": "exp(sin(pi*x0) + x1**2)", "ranges": {"x0": [-1, 1], "x1": [-1, 1]},
             "n_samples": 600, "seed": 0},
    "model": {"width": [2, 5, 1], "seed": 0},
    "train": {"optimizer": "lbfgs", "grid_schedule": [3, 5], "steps_per_grid": 15},
    # Formula extraction from the trained network is the slow part (tens of seconds here);
    # the budget is a hard limit.
    "symbolic": {"enabled": True, "mode": "network", "library": ["x", "x^2", "sin", "exp"],
                 "time_budget_seconds": 240},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def scratch_postgres():
    """Yields a SQLAlchemy URL of a fresh PostgreSQL database, dropped afterwards."""
    name = f"kanserve_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def scratch_redis_db():
    """Yields a broker URL on an empty Redis database number, flushed afterwards."""
    for number in secrets.SystemRandom().sample(range(4, 16), 12):
        client = redis.Redis(host=REDIS_HOST, db=number)
        # SETNX a marker so two concurrent test runs never share a database.
        if client.dbsize() == 0 and client.set("kanserve-test-lock", "1", nx=True, ex=3600):
            try:
                yield f"redis://{REDIS_HOST}:6379/{number}"
            finally:
                client.flushdb()
            return
    raise RuntimeError("no empty Redis database number between 4 and 15")


def migrated_sqlite_settings(tmp_path: Path, **overrides) -> Settings:
    settings = Settings(data_dir=tmp_path, broker_url="memory://", **overrides)
    migrate.upgrade(settings.resolved_database_url)
    return settings


def process_env(settings_env: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KANSERVE_")}
    env.update(settings_env, OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    return env


def kanserve(*args: str, env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "service.cli", *args], cwd=REPO_ROOT, env=env,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kanserve_output(*args: str, env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=REPO_ROOT, env=env, check=True,
                          capture_output=True, text=True, timeout=120).stdout.strip()


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


def wait_until_ready(base_url: str, process: subprocess.Popen, log: Path | None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"server at {base_url} not ready after {timeout} s:\n{_tail(log)}")


def wait_for_log(log: Path, pattern: str, process: subprocess.Popen, timeout: float = 60) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text(errors="replace") if log.exists() else "")
        if match:
            return match
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}:\n{_tail(log)}")
        time.sleep(0.1)
    raise RuntimeError(f"'{pattern}' not in log after {timeout} s:\n{_tail(log)}")


def _tail(log: Path | None) -> str:
    return log.read_text(errors="replace")[-4000:] if log and log.exists() else "(no log)"


def wait_for_job(client: httpx.Client, job_id: str, statuses: tuple[str, ...], timeout: float = 120,
                 predicate=None) -> dict:
    """Polls GET /v1/jobs/{id} until its status is in ``statuses`` (and ``predicate(job)`` holds)."""
    deadline = time.monotonic() + timeout
    job = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job.get("status") in statuses and (predicate is None or predicate(job)):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not reach {statuses} in {timeout} s: {job}")


def follow_events(client: httpx.Client, job_id: str, timeout: float = 120) -> list[tuple[str, dict]]:
    """Reads /v1/jobs/{id}/events until the 'end' event; returns [(event, data)]."""
    import json

    events, event = [], None
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event:
                events.append((event, json.loads(line.split(":", 1)[1])))
                if event == "end":
                    break
                event = None
    return events


class RecordingQueue:
    """The real Celery queue (in-memory transport in unit tests) that also remembers what it sent."""

    def __init__(self, inner):
        self.inner, self.sent = inner, []

    def send(self, job_id: str, queue: str) -> None:
        self.inner.send(job_id, queue)
        self.sent.append((job_id, queue))


@dataclasses.dataclass
class ApiHarness:
    app: object
    settings: Settings
    client: object  # TestClient authenticated with key A
    other: object  # TestClient authenticated with key B
    anonymous: object
    queue: RecordingQueue

    @property
    def session_factory(self):
        return self.app.state.session_factory


@contextlib.contextmanager
def api_harness(tmp_path: Path, **overrides):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.auth import create_key
    from service.jobs.submission import CeleryJobQueue
    from service.jobs.queue import make_celery

    settings = migrated_sqlite_settings(tmp_path, **overrides)
    queue = RecordingQueue(CeleryJobQueue(make_celery(settings)))
    app = create_app(settings, job_queue=queue)
    with app.state.session_factory() as db:
        _, key_a = create_key(db, "a")
        _, key_b = create_key(db, "b")
    with TestClient(app, headers={"Authorization": f"Bearer {key_a}"}) as client, \
            TestClient(app, headers={"Authorization": f"Bearer {key_b}"}) as other, TestClient(app) as anonymous:
        yield ApiHarness(app, settings, client, other, anonymous, queue)


def run_job_to_success(api: ApiHarness, body: dict) -> tuple[str, dict]:
    """Submits a job through the API, runs it in-process with the real pipeline function
    (worker "w1"), asserts it succeeded, and returns its id and its API view."""
    from workers.pipeline import run_job

    response = api.client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    status = run_job(job_id, api.session_factory, api.settings, "w1")
    job = api.client.get(f"/v1/jobs/{job_id}").json()
    assert status == job["status"] == "succeeded", job
    return job_id, job


def log_text(stack) -> str:
    """The tails of a stack's process logs, for assertion messages."""
    return "\n".join(f"== {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                     for path in sorted(stack.logs.glob("*.log")))
