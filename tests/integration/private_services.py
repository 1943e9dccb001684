"""Private Redis and PostgreSQL servers for tests that stop and restart them: each on its
own free port with its own files in a temporary directory, never the shared servers.

PostgreSQL refuses to run as root; as root the cluster belongs to the ``postgres`` user
and its commands run through ``runuser``.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from kanserve_harness import free_port


class PrivateRedis:
    """A redis-server without persistence: a restart loses every message it held, the
    worst case for the jobs it carried."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="kanserve-redis-"))
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start:\n{self.log_tail()}") from None
                time.sleep(0.05)

    def message_count(self, queue: str) -> int:
        """Messages waiting in a Celery queue (kombu keeps each queue as a Redis list)."""
        return redis.Redis(port=self.port).llen(queue)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self) -> str:
        log = self.dir / "redis.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


class PrivatePostgres:
    """A PostgreSQL cluster made with initdb (trust auth, fsync off) in a temporary directory."""

    def __init__(self):
        [self.bin] = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1:]
        self.dir = Path(tempfile.mkdtemp(prefix="kanserve-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.run_as:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([*self.run_as, f"{self.bin}/{program}", *args], check=True, capture_output=True,
                       timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "postgres.log"), "-w",
                  "-t", "60", "start")
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", connect_timeout=10) as conn:
            conn.execute("SELECT 1")

    def stop(self) -> None:
        # fast: clients are disconnected at once, as in a crash or a failover.
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:  # not running
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self) -> str:
        log = self.dir / "postgres.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
