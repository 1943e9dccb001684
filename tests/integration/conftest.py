"""Real processes for the integration tests in the production shape: PostgreSQL (a
scratch database) + Redis (a scratch db number) + `kanserve api` + `kanserve worker`,
or, for tests that restart the services, a private PostgreSQL cluster and Redis server.
Nothing is mocked; every piece is a separate process."""
from __future__ import annotations

import contextlib
import dataclasses
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: kanserve_harness
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/integration/: private_services

from kanserve_harness import (FAST_WORKER_SETTINGS, free_port, kanserve, kanserve_output, process_env,
                              scratch_postgres, scratch_redis_db, stop, wait_for_log, wait_until_ready)
from private_services import PrivatePostgres, PrivateRedis


@dataclasses.dataclass
class Stack:
    name: str
    base_url: str
    key: str
    env: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen] = dataclasses.field(default_factory=dict)
    worker_starts: int = 0

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30,
                            headers={"Authorization": f"Bearer {key or self.key}"})

    def start_worker(self, concurrency: int = 1) -> subprocess.Popen:
        """concurrency 1: the solo pool (the job runs in the worker process); more: prefork."""
        self.worker_starts += 1
        log = self.logs / f"worker-{self.worker_starts}.log"
        worker = kanserve("worker", "--queues", "train", "--hostname", f"w{self.worker_starts}@%h",
                          "--concurrency", str(concurrency), env=self.env, log=log)
        wait_for_log(log, r"ready\.", worker, timeout=90)
        self.processes["worker"] = worker
        return worker

    def kill_worker(self) -> None:
        stop(self.processes.pop("worker"), signal.SIGKILL)

    def close(self) -> None:
        for process in self.processes.values():
            stop(process)


@contextlib.contextmanager
def running_stack(name: str, database_url: str, broker_url: str, logs: Path):
    """Migrates the database, then runs a gateway and one worker on these services."""
    key = f"ks_{secrets.token_urlsafe(24)}"
    env = process_env({"KANSERVE_DATABASE_URL": database_url, "KANSERVE_BROKER_URL": broker_url,
                       "KANSERVE_API_KEYS": key, "KANSERVE_DATA_DIR": str(logs), **FAST_WORKER_SETTINGS})
    kanserve_output("db", "upgrade", env=env)
    port = free_port()
    stack = Stack(name, f"http://127.0.0.1:{port}", key, env, logs)
    try:
        api_log = logs / "api.log"
        stack.processes["api"] = kanserve("api", "--port", str(port), env=env, log=api_log)
        wait_until_ready(stack.base_url, stack.processes["api"], api_log)
        stack.start_worker()
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="module")
def production_stack(tmp_path_factory):
    """PostgreSQL (scratch database) + Redis (scratch db number) + gateway + one worker."""
    logs = tmp_path_factory.mktemp("production")
    with scratch_postgres() as database_url, scratch_redis_db() as broker_url, \
            running_stack("production", database_url, broker_url, logs) as stack:
        yield stack


@dataclasses.dataclass
class PrivateStack:
    stack: Stack
    redis: PrivateRedis
    postgres: PrivatePostgres


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory):
    """A gateway and one worker on a private PostgreSQL cluster and a private Redis, which
    the tests may stop and restart."""
    logs = tmp_path_factory.mktemp("private")
    redis_server, postgres = PrivateRedis(), None
    try:
        redis_server.start()
        postgres = PrivatePostgres()
        postgres.start()
        with running_stack("private", postgres.url, redis_server.url, logs) as stack:
            yield PrivateStack(stack, redis_server, postgres)
    finally:
        redis_server.close()
        if postgres is not None:
            postgres.close()
