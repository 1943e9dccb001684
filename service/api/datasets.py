"""/v1/datasets: upload a numeric table (multipart CSV, raw CSV or JSON rows) and read it back."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.api.deps import current_key, get_db, get_settings
from service.api.errors import error_responses, invalid
from service.config import Settings
from service.datasets.tables import Table, TableError, parse_csv, parse_rows, to_npy
from service.db.models import ApiKey, Dataset
from service.schemas.resources import DatasetOut, DatasetRows

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=error_responses(401, 503))

UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "additionalProperties": False, "properties": {
                    "file": {"type": "string", "format": "binary", "description": "CSV with a header row"},
                    "name": {"type": "string"}}},
                "encoding": {"file": {"contentType": "text/csv"}}},
            "text/csv": {"schema": {"type": "string"}},
            "application/json": {"schema": DatasetRows.model_json_schema()},
        },
    }
}


def dataset_out(dataset: Dataset) -> DatasetOut:
    return DatasetOut(id=dataset.id, name=dataset.name, columns=dataset.columns, n_rows=dataset.n_rows,
                      sha256=dataset.sha256, size_bytes=dataset.size_bytes, created_at=dataset.created_at)


def _too_large(settings: Settings) -> HTTPException:
    return HTTPException(413, f"the upload is larger than the limit of {settings.max_upload_bytes} bytes")


def _parse_json_rows(raw: bytes, settings: Settings) -> tuple[str, Table]:
    # pydantic's JSON parser refuses invalid UTF-8, nesting past its depth limit and
    # integer literals of thousands of digits as invalid JSON (json.loads raised
    # UnicodeDecodeError and RecursionError there).
    try:
        body = DatasetRows.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]) from None
    return body.name, parse_rows(body.columns, body.rows, settings.max_rows, settings.max_columns)


def _parse_csv_named(name: str, raw: bytes, settings: Settings) -> tuple[str, Table]:
    return name, parse_csv(raw, settings.max_rows, settings.max_columns)


async def _read_upload(request: Request, settings: Settings) -> tuple[bytes, Callable[[], tuple[str, Table]]]:
    """-> (raw bytes, a parser returning (name, table) to run off the event loop)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise invalid(("body", "file"), "multipart upload needs a 'file' field with the CSV", "missing")
        raw = await upload.read(settings.max_upload_bytes + 1)
        if len(raw) > settings.max_upload_bytes:
            raise _too_large(settings)
        name = str(form.get("name") or upload.filename or "dataset")[:200]
        return raw, partial(_parse_csv_named, name, raw, settings)
    if content_type not in ("text/csv", "text/plain", "application/json"):
        raise HTTPException(415, "send the table as multipart/form-data (field 'file'), text/csv or application/json")
    raw = await request.body()
    if len(raw) > settings.max_upload_bytes:
        raise _too_large(settings)
    if content_type == "application/json":
        return raw, partial(_parse_json_rows, raw, settings)
    return raw, partial(_parse_csv_named, request.query_params.get("name", "dataset")[:200], raw, settings)


@router.post("", status_code=201, response_model=DatasetOut, openapi_extra=UPLOAD_DOC,
             responses=error_responses(400, 413, 415, 422),
             summary="Upload a table of numbers (CSV with a header row, or JSON columns + rows)")
async def upload_dataset(request: Request, settings: Settings = Depends(get_settings),
                         key: ApiKey = Depends(current_key)) -> DatasetOut:
    raw, parse = await _read_upload(request, settings)
    try:
        name, table = await run_in_threadpool(parse)
    except TableError as exc:
        raise invalid(("body",), str(exc), "table") from None
    dataset = Dataset(owner_key_id=key.id, name=name, columns=table.columns, n_rows=len(table.values),
                      sha256=hashlib.sha256(raw).hexdigest(), size_bytes=len(raw), values_npy=to_npy(table.values))

    def store() -> None:
        with request.app.state.session_factory() as db:
            db.add(dataset)
            db.commit()

    await run_in_threadpool(store)
    return dataset_out(dataset)


@router.get("", response_model=list[DatasetOut])
def list_datasets(db: Session = Depends(get_db), key: ApiKey = Depends(current_key)) -> list[DatasetOut]:
    rows = db.scalars(sa.select(Dataset).where(Dataset.owner_key_id == key.id).order_by(Dataset.created_at.desc()))
    return [dataset_out(row) for row in rows]


@router.get("/{dataset_id}", response_model=DatasetOut, responses=error_responses(404, 422))
def get_dataset(dataset_id: str, db: Session = Depends(get_db), key: ApiKey = Depends(current_key)) -> DatasetOut:
    dataset = db.scalar(sa.select(Dataset).where(Dataset.id == dataset_id, Dataset.owner_key_id == key.id))
    if dataset is None:
        raise HTTPException(404, f"dataset '{dataset_id}' not found")
    return dataset_out(dataset)
