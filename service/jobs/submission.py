"""Creating jobs: idempotency, validation against the data, enqueueing."""
from __future__ import annotations

import hashlib
import json
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.config import Settings
from service.db.models import Dataset, Job
from service.db.types import utcnow
from service.jobs.checks import Problem, check_limits, check_memory, check_shape, resolve_shape
from service.jobs.queue import TRAIN_TASK
from service.schemas.jobspec import DatasetSource, JobSpec


class JobQueue(Protocol):
    def send(self, job_id: str, queue: str) -> None: ...


class IdempotencyConflict(Exception):
    def __init__(self, key: str, job_id: str):
        super().__init__(f"Idempotency-Key '{key}' was already used for job {job_id} with a different body")


class EnqueueFailed(Exception):
    pass


def spec_digest(spec: JobSpec) -> str:
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_replay(db: Session, owner_key_id: str, key: str, digest: str) -> Job | None:
    """The job made earlier with this key and body; IdempotencyConflict for another body."""
    job = db.scalar(sa.select(Job).where(Job.owner_key_id == owner_key_id, Job.idempotency_key == key))
    if job is not None and job.spec_sha256 != digest:
        raise IdempotencyConflict(key, job.id)
    return job


def find_problems(db: Session, owner_key_id: str, spec: JobSpec, settings: Settings) -> list[Problem]:
    problems = check_limits(spec, settings)
    if problems:
        return problems
    dataset = None
    if isinstance(spec.data, DatasetSource):
        dataset = db.scalar(sa.select(Dataset).where(Dataset.id == spec.data.dataset_id,
                                                     Dataset.owner_key_id == owner_key_id))
    shape, problems = resolve_shape(spec, dataset)
    return problems if shape is None else check_shape(spec, shape) + check_memory(spec, shape.n_rows, settings)


def create_job(db: Session, owner_key_id: str, spec: JobSpec, digest: str, idempotency_key: str | None,
               queue: JobQueue) -> tuple[Job, bool]:
    """Stores and enqueues the job; returns (job, created). Races on the same key return the winner."""
    job = Job(owner_key_id=owner_key_id, name=spec.name, spec=spec.model_dump(mode="json"), spec_sha256=digest,
              idempotency_key=idempotency_key, queue=spec.queue, progress={"phase": "queued"})
    db.add(job)
    try:
        db.commit()
    except sa.exc.IntegrityError:
        db.rollback()
        if idempotency_key is None:
            raise
        winner = find_replay(db, owner_key_id, idempotency_key, digest)
        if winner is None:
            raise
        return winner, False
    try:
        queue.send(job.id, job.queue)
    except Exception as exc:  # the broker is down: say so rather than leave a job nobody will run
        job.status, job.finished_at = "failed", utcnow()
        job.error = f"could not enqueue the job: the message broker is unavailable ({type(exc).__name__})"
        db.commit()
        raise EnqueueFailed(job.error) from exc
    return job, True


class CeleryJobQueue:
    """Sends the train task by name: the gateway never imports the worker code."""

    def __init__(self, celery_app):
        self.celery_app = celery_app

    def send(self, job_id: str, queue: str) -> None:
        self.celery_app.send_task(TRAIN_TASK, args=[job_id], queue=queue)
