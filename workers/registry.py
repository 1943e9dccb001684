"""Registering a trained job as a new model version, exactly once.

The model row, its artifacts and formulas, and the job's move to ``succeeded`` are
one transaction; ``models.job_id`` is unique, so a resumed or redelivered job finds
its version instead of making a second one.
"""
from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Artifact, FormulaRow, ModelVersion
from service.db.types import utcnow
from service.schemas.resources import FormulaOut
from workers.claim import Claim, guarded_update
from workers.outputs import ArtifactBlob

MAX_ATTEMPTS = 5


def next_version(session_factory: sessionmaker[Session], owner_key_id: str, name: str) -> int:
    with session_factory() as db:
        latest = db.scalar(sa.select(sa.func.max(ModelVersion.version))
                           .where(ModelVersion.owner_key_id == owner_key_id, ModelVersion.name == name))
    return (latest or 0) + 1


def register_model(session_factory: sessionmaker[Session], claim: Claim, owner_key_id: str, name: str,
                   describe: dict, formulas: list[FormulaOut],
                   artifacts_for: Callable[[int], list[ArtifactBlob]], progress: dict) -> int:
    """Returns the version registered for this job. ``describe`` holds the ModelVersion
    columns task/width/input_names/output_names/metrics; ``artifacts_for(version)``
    builds the files (called again only if another job took the version meanwhile)."""
    version = next_version(session_factory, owner_key_id, name)
    for _ in range(MAX_ATTEMPTS):
        artifacts = artifacts_for(version)
        with session_factory() as db:
            existing = db.scalar(sa.select(ModelVersion.version).where(ModelVersion.job_id == claim.job_id))
            if existing is not None:
                _mark_succeeded(db, claim, progress)
                db.commit()
                return existing
            model = ModelVersion(owner_key_id=owner_key_id, name=name, version=version, job_id=claim.job_id,
                                 **describe)
            model.artifacts = [Artifact(kind=a.kind, media_type=a.media_type, filename=a.filename, data=a.data,
                                        sha256=a.sha256, size_bytes=len(a.data)) for a in artifacts]
            model.formulas = [FormulaRow(output_index=f.output_index, output_name=f.output_name,
                                         expression=f.expression, latex=f.latex, r2=f.r2, rmse=f.rmse,
                                         exact=f.exact)
                              for f in formulas]
            db.add(model)
            try:
                db.flush()  # a version or job_id clash surfaces here
                _mark_succeeded(db, claim, progress)
                db.commit()
                return version
            except sa.exc.IntegrityError:
                db.rollback()
        version = next_version(session_factory, owner_key_id, name)
    raise RuntimeError(f"could not register a version of model '{name}' after {MAX_ATTEMPTS} attempts")


def _mark_succeeded(db: Session, claim: Claim, progress: dict) -> None:
    guarded_update(db, claim, status="succeeded", error=None, finished_at=utcnow(), claim_token=None,
                   lease_expires_at=None, progress=progress)
