"""A thread beside the training loop: renews the lease, watches for cancel and the time limit."""
from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Job
from service.db.types import utcnow
from workers.claim import Claim, LeaseLost, guarded_update

log = logging.getLogger(__name__)


class JobMonitor:
    """``stop_reason`` becomes "cancelled", "timeout", "lease_lost" or "shutdown" (the worker
    process is stopping: ``shutdown`` was set); training polls it every step."""

    def __init__(self, session_factory: sessionmaker[Session], claim: Claim, lease_seconds: float,
                 poll_seconds: float, max_seconds: float, shutdown: threading.Event | None = None):
        self.session_factory, self.claim = session_factory, claim
        self.lease_seconds, self.poll_seconds, self.max_seconds = lease_seconds, poll_seconds, max_seconds
        self.stop_reason: str | None = None
        self.shutdown = shutdown or threading.Event()
        self._started = time.monotonic()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"job-monitor-{claim.job_id}", daemon=True)

    def __enter__(self) -> "JobMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._halt.set()
        self._thread.join(timeout=10)

    @property
    def should_stop(self) -> bool:
        if self.stop_reason is None and self.shutdown.is_set():
            self.stop_reason = "shutdown"
        return self.stop_reason is not None

    def _run(self) -> None:
        last_renewal = time.monotonic()
        while not self._halt.wait(self.poll_seconds):
            try:
                self._tick(renew=time.monotonic() - last_renewal >= self.lease_seconds / 3)
            except LeaseLost:
                self.stop_reason = "lease_lost"
                return
            except Exception:  # a database hiccup: the next tick retries; the lease has slack
                log.exception("job monitor tick failed for %s", self.claim.job_id)
                continue
            if time.monotonic() - last_renewal >= self.lease_seconds / 3:
                last_renewal = time.monotonic()

    def _tick(self, renew: bool) -> None:
        with self.session_factory() as db:
            row = db.execute(sa.select(Job.cancel_requested, Job.claim_token).where(Job.id == self.claim.job_id)).first()
            if row is None or row.claim_token != self.claim.token:
                raise LeaseLost(self.claim.job_id)
            if row.cancel_requested and self.stop_reason is None:
                self.stop_reason = "cancelled"
            if time.monotonic() - self._started > self.max_seconds and self.stop_reason is None:
                self.stop_reason = "timeout"
            if renew:
                guarded_update(db, self.claim, lease_expires_at=utcnow() + timedelta(seconds=self.lease_seconds))
                db.commit()
