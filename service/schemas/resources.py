"""Response bodies of the jobs, datasets and models endpoints."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class DatasetRows(BaseModel):
    """JSON upload of a table (the alternative to a multipart CSV file)."""

    name: str = Field("dataset", max_length=200)
    columns: list[str] = Field(min_length=1, json_schema_extra={
        "uniqueItems": True, "items": {"type": "string", "pattern": r"\S"}})
    # Cells are checked by parse_rows, whose messages name the row and column; the
    # schema states what it accepts.
    rows: list[list[Any]] = Field(min_length=1, description="(n_rows, n_columns) numbers, as many per row "
                                                            "as there are columns", json_schema_extra={
        "items": {"type": "array", "minItems": 1, "items": {"type": "number"}}})


class DatasetOut(BaseModel):
    id: str
    name: str
    columns: list[str]
    n_rows: int
    sha256: str
    size_bytes: int
    created_at: datetime


class Progress(BaseModel):
    phase: str | None = Field(
        None, description="queued, architecture, training, discovery, symbolic, export, plots, registering, done")
    stage: int | None = None
    n_stages: int | None = None
    grid: int | None = None
    step: int | None = None
    total_steps: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    eta_seconds: float | None = None
    checkpoints: int = 0
    resumed_from_stage: int | None = None
    device: str | None = Field(None, description="Where the job trains: cpu or cuda.")
    architecture: dict[str, Any] | None = Field(
        None, description="Automatic architecture search: candidates tried so far with their validation scores, "
                          "and the best so far.")
    discovery: dict[str, Any] | None = Field(
        None, description="Formula discovery: the attempt number, the shape (width) and space (raw or log) being "
                          "tried, and the held-out relative RMSE and text of the best formula so far; eta_seconds "
                          "is then what is left of its time budget.")
    notes: list[str] = []


class ModelRef(BaseModel):
    name: str
    version: int
    url: str


class JobOut(BaseModel):
    id: str
    name: str
    status: str
    queue: str
    progress: Progress
    error: str | None
    cancel_requested: bool
    deliveries: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    model: ModelRef | None
    links: dict[str, str]
    spec: dict[str, Any] | None = None


class JobList(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int
    next: str | None


class FormulaOut(BaseModel):
    output_index: int
    output_name: str
    expression: str
    latex: str
    r2: float | None
    rmse: float | None
    exact: bool | None = Field(
        None, description="The formula fits the held-out rows exactly: RMSE / std(target) <= 1e-7 "
                          "(None: not measured).")


class ArtifactOut(BaseModel):
    kind: str
    filename: str
    media_type: str
    size_bytes: int
    sha256: str
    url: str


class ModelVersionOut(BaseModel):
    name: str
    version: int
    job_id: str
    task: str
    width: list[int]
    input_names: list[str]
    output_names: list[str]
    metrics: dict[str, Any]
    created_at: datetime
    formulas: list[FormulaOut]
    artifacts: list[ArtifactOut]


class ModelOut(BaseModel):
    name: str
    latest_version: int
    versions: list[ModelVersionOut]


class ModelSummary(BaseModel):
    name: str
    latest_version: int
    n_versions: int
    updated_at: datetime
    url: str


class ModelList(BaseModel):
    items: list[ModelSummary]
