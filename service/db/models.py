"""SQLAlchemy 2 models: api_keys, datasets, jobs, checkpoints, models, artifacts, formulas.

Every user-facing row carries ``owner_key_id``: a key only ever sees its own rows.
Binary payloads (dataset arrays, checkpoints, ONNX files, PNGs) live in the database
so that a gateway and a worker on different machines need nothing else shared; they
are deferred, so listing rows never drags the bytes along.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from service.db.types import UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
ARTIFACT_KINDS = ("onnx", "formula_onnx", "checkpoint", "plot_network", "plot_loss")


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: sa.JSON(), list[Any]: sa.JSON()}


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(sa.String(100))
    prefix: Mapped[str] = mapped_column(sa.String(16), index=True)  # shown in listings; never the key
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)  # sha256 hex of the full key
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=new_id)
    owner_key_id: Mapped[str] = mapped_column(sa.ForeignKey("api_keys.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    columns: Mapped[list[Any]]
    n_rows: Mapped[int]
    sha256: Mapped[str] = mapped_column(sa.String(64))  # of the uploaded bytes
    size_bytes: Mapped[int]
    values_npy: Mapped[bytes] = mapped_column(sa.LargeBinary, deferred=True)  # float64 (n_rows, n_columns), .npy format
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        sa.UniqueConstraint("owner_key_id", "idempotency_key"),
        sa.CheckConstraint(f"status IN {JOB_STATUSES!r}", name="status_known"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=new_id)
    owner_key_id: Mapped[str] = mapped_column(sa.ForeignKey("api_keys.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    status: Mapped[str] = mapped_column(sa.String(16), default="queued", index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(deferred=True)  # may hold inline arrays
    spec_sha256: Mapped[str] = mapped_column(sa.String(64))
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    queue: Mapped[str] = mapped_column(sa.String(32))
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(sa.Text, default=None)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    # The claim: a worker owns a running job while its lease is fresh; the token tells
    # a worker that lost its lease that its writes no longer count.
    claim_token: Mapped[str | None] = mapped_column(sa.String(32), default=None)
    claimed_by: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    deliveries: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    model: Mapped["ModelVersion | None"] = relationship(back_populates="job", uselist=False)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (sa.UniqueConstraint("job_id", "stage"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    stage: Mapped[int]  # index of the grid stage this checkpoint completes
    grid: Mapped[int]
    blob: Mapped[bytes] = mapped_column(sa.LargeBinary, deferred=True)  # kanmodel.to_bytes
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size_bytes: Mapped[int]
    history: Mapped[list[Any]]  # loss history up to and including this stage
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    __tablename__ = "models"
    __table_args__ = (
        sa.UniqueConstraint("owner_key_id", "name", "version"),
        # A job registers at most one version, even when it was resumed after a crash.
        sa.UniqueConstraint("job_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=new_id)
    owner_key_id: Mapped[str] = mapped_column(sa.ForeignKey("api_keys.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    version: Mapped[int]
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id"))
    task: Mapped[str] = mapped_column(sa.String(16))
    width: Mapped[list[Any]]
    input_names: Mapped[list[Any]]
    output_names: Mapped[list[Any]]
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="model")
    artifacts: Mapped[list["Artifact"]] = relationship(
        back_populates="model", cascade="all, delete-orphan", order_by="Artifact.kind"
    )
    formulas: Mapped[list["FormulaRow"]] = relationship(
        back_populates="model", cascade="all, delete-orphan", order_by="FormulaRow.output_index"
    )


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (
        sa.UniqueConstraint("model_id", "kind"),
        sa.CheckConstraint(f"kind IN {ARTIFACT_KINDS!r}", name="kind_known"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(sa.ForeignKey("models.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    media_type: Mapped[str] = mapped_column(sa.String(100))
    filename: Mapped[str] = mapped_column(sa.String(200))
    data: Mapped[bytes] = mapped_column(sa.LargeBinary, deferred=True)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size_bytes: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    model: Mapped[ModelVersion] = relationship(back_populates="artifacts")


class FormulaRow(Base):
    __tablename__ = "formulas"
    __table_args__ = (sa.UniqueConstraint("model_id", "output_index"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(sa.ForeignKey("models.id", ondelete="CASCADE"), index=True)
    output_index: Mapped[int]
    output_name: Mapped[str] = mapped_column(sa.String(200))
    expression: Mapped[str] = mapped_column(sa.Text)
    latex: Mapped[str] = mapped_column(sa.Text)
    r2: Mapped[float | None] = mapped_column(sa.Float, default=None)
    rmse: Mapped[float | None] = mapped_column(sa.Float, default=None)
    # Held-out RMSE / std(target) <= 1e-7; None where it was not measured.
    exact: Mapped[bool | None] = mapped_column(sa.Boolean, default=None)

    model: Mapped[ModelVersion] = relationship(back_populates="formulas")
