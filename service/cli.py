"""``kanserve``: up | api | worker | db upgrade|downgrade | keys create|revoke|list.

``up`` is the embedded default: it migrates the database, makes an API key on first
start, and runs the gateway plus one worker (a child process) on the same settings.
With no configuration that is a SQLite database and a SQLite-backed Celery
transport under ./.kanserve/; the same commands run against PostgreSQL and Redis
when KANSERVE_DATABASE_URL and KANSERVE_BROKER_URL say so.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading

import sqlalchemy as sa

from service.config import Settings, get_settings


def _session(settings: Settings):
    from service.db.session import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.resolved_database_url))()


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from service.db import migrate

    settings.ensure_data_dir()
    if args.action == "upgrade":
        migrate.upgrade(settings.resolved_database_url, args.revision or "head")
    else:
        migrate.downgrade(settings.resolved_database_url, args.revision or "base")
    print(f"database {args.action}d to {args.revision or ('head' if args.action == 'upgrade' else 'base')}",
          file=sys.stderr)
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    from service.auth import create_key, revoke_key
    from service.db.models import ApiKey

    with _session(settings) as db:
        if args.action == "create":
            row, key = create_key(db, args.name)
            print(f"created API key {row.id} ({row.prefix}...) named '{row.name}'; it is shown only once:",
                  file=sys.stderr)
            print(key)  # alone on stdout, so scripts can capture it
            return 0
        if args.action == "revoke":
            rows = revoke_key(db, args.id)
            if not rows:
                print(f"no key with id or prefix '{args.id}'", file=sys.stderr)
                return 1
            for row in rows:
                print(f"revoked {row.id} ({row.prefix}...) '{row.name}'", file=sys.stderr)
            return 0
        for row in db.scalars(sa.select(ApiKey).order_by(ApiKey.created_at)):
            state = "revoked" if row.revoked_at else "active"
            print(f"{row.id}  {row.prefix}...  {state:8s}  {row.name}")
    return 0


def _serve_api(settings: Settings) -> None:
    import uvicorn

    from service.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    if args.migrate:
        cmd_db(argparse.Namespace(action="upgrade", revision="head"), settings)
    _serve_api(settings)
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before the worker imports torch
    from service.jobs.queue import app

    settings.ensure_data_dir()
    concurrency = args.concurrency or settings.worker_concurrency
    os.environ["KANSERVE_WORKER_CONCURRENCY"] = str(concurrency)  # torch threads = cores / concurrency
    get_settings.cache_clear()
    argv = ["worker", "--queues", args.queues, "--loglevel", args.loglevel, "--concurrency", str(concurrency),
            # solo: one job per process, run in the process itself, so killing the worker kills the job
            "--pool", "solo" if concurrency == 1 else "prefork", "--without-gossip", "--without-mingle"]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    app.worker_main(argv)
    return 0


def _ensure_first_key(settings: Settings) -> None:
    from service.auth import create_key, has_any_key

    with _session(settings) as db:
        if settings.bootstrap_keys or has_any_key(db):
            print("API keys exist; make another with: kanserve keys create --name NAME", file=sys.stderr)
            return
        _, key = create_key(db, "first")
    print(f"\nCreated an API key (shown only once; store it):\n\n    {key}\n", file=sys.stderr)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    cmd_db(argparse.Namespace(action="upgrade", revision="head"), settings)
    _ensure_first_key(settings)
    env = {**os.environ, "KANSERVE_DATA_DIR": str(settings.data_dir), "OMP_WAIT_POLICY": "PASSIVE"}
    if settings.database_url is None:
        env["KANSERVE_DATABASE_URL"] = settings.resolved_database_url
    if settings.broker_url is None:
        env["KANSERVE_BROKER_URL"] = settings.resolved_broker_url
    base = f"http://{settings.host}:{settings.port}"
    print(f"kanserve: database {_redact(settings.resolved_database_url)}, broker "
          f"{_redact(settings.resolved_broker_url)}\nkanserve: API docs at {base}/docs", file=sys.stderr)
    # uvicorn shuts down on SIGTERM, then raises the signal again with this handler back in
    # place: without one the process would die there and leave its worker running.
    signal.signal(signal.SIGTERM, _raise_terminated)
    worker, terminated = None, False
    try:
        worker = WorkerSupervisor([sys.executable, "-m", "service.cli", "worker"], env)
        _serve_api(settings)
    except Terminated:
        terminated = True
    finally:
        if worker is not None:
            worker.stop()
    if terminated:
        print("kanserve: stopped on SIGTERM", file=sys.stderr)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)  # exit as the signal asks (status 143), now that the tree is down
    return 0


class Terminated(Exception):
    """SIGTERM reached `kanserve up`."""


def _raise_terminated(_signum, _frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the worker's stop short
    raise Terminated


class WorkerSupervisor:
    """Runs the embedded worker as a child process and restarts it if it dies (its
    interrupted job then resumes from its checkpoint)."""

    def __init__(self, command: list[str], env: dict[str, str], stop_timeout: float = 30.0):
        self.command, self.env, self.stop_timeout = command, env, stop_timeout
        self.stopping = threading.Event()
        self.lock = threading.Lock()  # no restart can start after stop() began
        self.process = subprocess.Popen(command, env=env)
        threading.Thread(target=self._watch, name="worker-supervisor", daemon=True).start()

    def _watch(self) -> None:
        while not self.stopping.wait(1.0):
            with self.lock:
                if self.process.poll() is not None and not self.stopping.is_set():
                    print(f"kanserve: the worker exited with {self.process.returncode}; restarting it",
                          file=sys.stderr)
                    self.process = subprocess.Popen(self.command, env=self.env)

    def stop(self) -> None:
        """SIGTERM to the worker, which hands a running job back to the queue at its next
        step; SIGKILL if it has not exited after ``stop_timeout`` seconds."""
        with self.lock:
            self.stopping.set()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _redact(url: str) -> str:
    return sa.engine.make_url(url.removeprefix("sqla+")).render_as_string(hide_password=True) \
        if "://" in url else url


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kanserve", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    for name, help_text in (("up", "embedded default: migrate, then gateway + one worker"),
                            ("api", "the HTTP gateway only")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--host")
        sub.add_argument("--port", type=int)
        if name == "api":
            sub.add_argument("--migrate", action="store_true", help="run `db upgrade` first")

    worker = commands.add_parser("worker", help="a Celery worker that runs training jobs")
    worker.add_argument("--queues", default="train", help="comma-separated: train, gpu (default: train)")
    worker.add_argument("--concurrency", type=int, help="jobs at once (default KANSERVE_WORKER_CONCURRENCY)")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument("--hostname", help="Celery node name, e.g. worker1@%%h")

    db = commands.add_parser("db", help="database migrations")
    db.add_argument("action", choices=["upgrade", "downgrade"])
    db.add_argument("--revision", help="default: head for upgrade, base for downgrade")

    keys = commands.add_parser("keys", help="API keys")
    keys_actions = keys.add_subparsers(dest="action", required=True)
    create = keys_actions.add_parser("create", help="make a key and print it (once) on stdout")
    create.add_argument("--name", default="cli")
    revoke = keys_actions.add_parser("revoke", help="revoke a key by id or shown prefix")
    revoke.add_argument("id")
    keys_actions.add_parser("list", help="list keys (ids and prefixes, never the keys)")
    return parser


COMMANDS = {"up": cmd_up, "api": cmd_api, "worker": cmd_worker, "db": cmd_db, "keys": cmd_keys}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {key: value for key in ("host", "port") if (value := getattr(args, key, None)) is not None}
    settings = Settings(**overrides) if overrides else get_settings()
    return COMMANDS[args.command](args, settings)


if __name__ == "__main__":
    sys.exit(main())
