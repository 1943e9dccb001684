"""The database claim on a job: who runs it, until when, and whether they still do.

A worker owns a running job while its lease is fresh. Every write a worker makes
is conditioned on its claim token, so a worker that lost its lease (it stalled and
another worker took over) learns so at its next write and stops.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Job, new_id
from service.db.types import utcnow


class LeaseLost(Exception):
    """Another worker holds this job now; the current attempt must stop without writing."""


@dataclass(frozen=True)
class Claim:
    job_id: str
    token: str
    deliveries: int  # how many times the job has been claimed, this claim included


def claim_job(session_factory: sessionmaker[Session], job_id: str, worker_name: str,
              lease_seconds: float) -> Claim | None:
    """Atomically moves a queued job (or a running one whose lease expired) to running."""
    now, token = utcnow(), new_id()
    with session_factory() as db:
        result = db.execute(
            sa.update(Job)
            .where(Job.id == job_id,
                   sa.or_(Job.status == "queued",
                          sa.and_(Job.status == "running", Job.lease_expires_at < now)))
            .values(status="running", claim_token=token, claimed_by=worker_name[:200],
                    lease_expires_at=now + timedelta(seconds=lease_seconds), deliveries=Job.deliveries + 1,
                    started_at=sa.func.coalesce(Job.started_at, now), updated_at=now)
        )
        db.commit()
        if result.rowcount != 1:
            return None
        deliveries = db.scalar(sa.select(Job.deliveries).where(Job.id == job_id))
    return Claim(job_id=job_id, token=token, deliveries=deliveries)


def guarded_update(db: Session, claim: Claim, **values) -> None:
    """UPDATE the job only while this claim holds it (caller commits); LeaseLost otherwise."""
    result = db.execute(
        sa.update(Job).where(Job.id == claim.job_id, Job.claim_token == claim.token, Job.status == "running")
        .values(updated_at=utcnow(), **values)
    )
    if result.rowcount != 1:
        db.rollback()
        raise LeaseLost(claim.job_id)


def finish(session_factory: sessionmaker[Session], claim: Claim, status: str, error: str | None = None,
           progress: dict | None = None) -> None:
    """Ends the job with a terminal status and releases the claim."""
    values = dict(status=status, error=error, finished_at=utcnow(), claim_token=None, lease_expires_at=None)
    if progress is not None:
        values["progress"] = progress
    with session_factory() as db:
        guarded_update(db, claim, **values)
        db.commit()


def release(session_factory: sessionmaker[Session], claim: Claim, progress: dict) -> None:
    """Hands a running job back (its worker is stopping): queued, with a lease time that
    marks it for the next stale-job sweep to re-send."""
    with session_factory() as db:
        guarded_update(db, claim, status="queued", claim_token=None, claimed_by=None, lease_expires_at=utcnow(),
                       progress=progress)
        db.commit()


def requeue_stale(session_factory: sessionmaker[Session], limit: int = 100) -> list[tuple[str, str]]:
    """Makes jobs whose worker is gone runnable again; returns their (id, queue) to re-send.

    Two kinds: running jobs whose lease expired (a worker killed mid-job leaves its job
    running with a lease nobody renews; the broker would redeliver the message only after
    its visibility timeout, hours, so that long jobs are not delivered twice), and queued
    jobs a stopping worker handed back (queued with a lease time).
    """
    now = utcnow()
    lapsed = sa.and_(Job.lease_expires_at < now, Job.status.in_(("running", "queued")))
    requeued = []
    with session_factory() as db:
        stale = db.execute(sa.select(Job.id, Job.queue).where(lapsed).limit(limit)).all()
        for job_id, queue in stale:
            result = db.execute(
                sa.update(Job).where(Job.id == job_id, lapsed)
                .values(status="queued", claim_token=None, claimed_by=None, lease_expires_at=None, updated_at=now)
            )
            if result.rowcount == 1:
                requeued.append((job_id, queue))
        db.commit()
    return requeued


def take_unsent(session_factory: sessionmaker[Session], queue: str, messages_waiting: int,
                settled_before: datetime) -> list[str]:
    """Queued jobs of ``queue`` whose message the broker no longer holds (a broker restarted
    without persistence, or a re-send that failed while it was down); returns their ids, to
    send again.

    Jobs queued before ``settled_before`` have had their message sent; when they outnumber
    the ``messages_waiting`` in the broker (counted before calling), the difference was
    lost, and the oldest of them are the ones (the broker hands out in order). Each one
    taken is marked (updated_at) so that only one sweeping worker re-sends it; a message
    that survived after all only makes a second delivery, which the claim turns away.
    """
    waiting_since = sa.and_(Job.queue == queue, Job.status == "queued", Job.lease_expires_at.is_(None),
                            Job.updated_at < settled_before)
    taken = []
    with session_factory() as db:
        settled = db.scalar(sa.select(sa.func.count()).select_from(Job).where(waiting_since))
        if settled <= messages_waiting:
            return []
        oldest = db.scalars(sa.select(Job.id).where(waiting_since).order_by(Job.created_at)
                            .limit(settled - messages_waiting)).all()
        for job_id in oldest:
            result = db.execute(sa.update(Job).where(Job.id == job_id, waiting_since).values(updated_at=utcnow()))
            if result.rowcount == 1:
                taken.append(job_id)
        db.commit()
    return taken
