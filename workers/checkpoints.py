"""Checkpoints of a job, one per completed grid stage, in the checkpoints table."""
from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Checkpoint
from workers.claim import Claim, guarded_update


def save_checkpoint(session_factory: sessionmaker[Session], claim: Claim, stage: int, grid: int, blob: bytes,
                    history: list[dict], progress: dict) -> None:
    """Stores the checkpoint and the progress in one transaction, only while the claim holds."""
    with session_factory() as db:
        guarded_update(db, claim, progress=progress)
        db.execute(sa.delete(Checkpoint).where(Checkpoint.job_id == claim.job_id, Checkpoint.stage == stage))
        db.add(Checkpoint(job_id=claim.job_id, stage=stage, grid=grid, blob=blob,
                          sha256=hashlib.sha256(blob).hexdigest(), size_bytes=len(blob), history=history))
        db.commit()


def checkpoints_newest_first(session_factory: sessionmaker[Session], job_id: str) -> list[Checkpoint]:
    with session_factory() as db:
        return list(db.scalars(
            sa.select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.stage.desc())
            .options(sa.orm.undefer(Checkpoint.blob))
        ))
