"""/v1/jobs: submit, list, read, cancel, and follow a job's progress as server-sent events."""
from __future__ import annotations

import asyncio
import json
from typing import Annotated, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from service.api.deps import current_key, get_db, get_settings
from service.api.errors import SpecProblems, error_responses
from service.api.openapi import json_body
from service.config import Settings
from service.db.models import TERMINAL_STATUSES, ApiKey, Job, ModelVersion
from service.db.types import utcnow
from service.jobs.submission import (EnqueueFailed, IdempotencyConflict, create_job, find_problems, find_replay,
                                     spec_digest)
from service.schemas.jobspec import JobSpec
from service.schemas.resources import JobList, JobOut, ModelRef, Progress

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401, 503))

EVENTS_POLL_SECONDS = 0.5


def job_out(job: Job, model: ModelVersion | None, with_spec: bool = False) -> JobOut:
    links = {"self": f"/v1/jobs/{job.id}", "events": f"/v1/jobs/{job.id}/events",
             "cancel": f"/v1/jobs/{job.id}/cancel"}
    model_ref = None
    if model is not None:
        url = f"/v1/models/{model.name}/versions/{model.version}"
        model_ref = ModelRef(name=model.name, version=model.version, url=url)
        links["model"] = url
    return JobOut(id=job.id, name=job.name, status=job.status, queue=job.queue,
                  progress=Progress.model_validate(job.progress or {}), error=job.error,
                  cancel_requested=job.cancel_requested, deliveries=job.deliveries, created_at=job.created_at,
                  started_at=job.started_at, finished_at=job.finished_at, updated_at=job.updated_at,
                  model=model_ref, links=links, spec=spec_summary(job.spec) if with_spec else None)


def spec_summary(spec: dict) -> dict:
    """The stored spec, with inline arrays (possibly megabytes) replaced by their shapes."""
    inline = spec.get("data", {}).get("inline")
    if inline is None:
        return spec
    shapes = {"n_rows": len(inline["X"]), "n_inputs": len(inline["X"][0]), "n_outputs": len(inline["y"][0])}
    names = {key: inline[key] for key in ("feature_names", "target_names") if inline.get(key)}
    return {**spec, "data": {"inline": {**shapes, **names}}}


def _model_of(db: Session, job: Job) -> ModelVersion | None:
    return db.scalar(sa.select(ModelVersion).where(ModelVersion.job_id == job.id))


def owned_job(db: Session, job_id: str, key: ApiKey) -> Job:
    job = db.scalar(sa.select(Job).where(Job.id == job_id, Job.owner_key_id == key.id))
    if job is None:
        raise HTTPException(404, f"job '{job_id}' not found")
    return job


def _parse_spec(raw: bytes) -> JobSpec:
    try:
        return JobSpec.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]) from None


async def read_job_spec(request: Request, _key: ApiKey = Depends(current_key)) -> JobSpec:
    """The body as a JobSpec. Read only once the key is checked (the dependency above),
    so an unauthenticated request is answered 401 without its body being read, and
    validated on a worker thread: a spec with inline data can be megabytes."""
    return await run_in_threadpool(_parse_spec, await request.body())


@router.post("", status_code=202, response_model=JobOut, openapi_extra=json_body(JobSpec),
             responses=error_responses(409, 413, 422, 503),
             summary="Submit a training job (202; follow links.events or poll links.self)")
def submit_job(spec: Annotated[JobSpec, Depends(read_job_spec)], request: Request, response: Response,
               db: Session = Depends(get_db),
               key: ApiKey = Depends(current_key), settings: Settings = Depends(get_settings),
               idempotency_key: str | None = Header(None, max_length=200,
                                                    description="Same key + same body returns the same job")) -> JobOut:
    digest = spec_digest(spec)
    if idempotency_key is not None:
        try:
            replay = find_replay(db, key.id, idempotency_key, digest)
        except IdempotencyConflict as exc:
            raise HTTPException(409, str(exc)) from None
        if replay is not None:
            response.headers["Idempotent-Replayed"] = "true"
            return job_out(replay, _model_of(db, replay), with_spec=True)
    problems = find_problems(db, key.id, spec, settings)
    if problems:
        raise SpecProblems([problem.as_error() for problem in problems])
    try:
        job, created = create_job(db, key.id, spec, digest, idempotency_key, request.app.state.job_queue)
    except IdempotencyConflict as exc:
        raise HTTPException(409, str(exc)) from None
    except EnqueueFailed as exc:
        raise HTTPException(503, str(exc)) from None
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_out(job, _model_of(db, job), with_spec=True)


@router.get("", response_model=JobList, responses=error_responses(422))
def list_jobs(request: Request, status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
              limit: int = Query(50, ge=1, le=200), offset: int = Query(0, ge=0, le=2**31 - 1),
              db: Session = Depends(get_db), key: ApiKey = Depends(current_key)) -> JobList:
    where = [Job.owner_key_id == key.id] + ([Job.status == status] if status else [])
    total = db.scalar(sa.select(sa.func.count()).select_from(Job).where(*where))
    rows = db.execute(
        sa.select(Job, ModelVersion).outerjoin(ModelVersion, ModelVersion.job_id == Job.id).where(*where)
        .order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    ).all()
    next_url = None
    if offset + limit < total:
        next_url = str(request.url.include_query_params(offset=offset + limit, limit=limit))
    return JobList(items=[job_out(job, model) for job, model in rows], total=total, limit=limit, offset=offset,
                   next=next_url)


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404, 422))
def get_job(job_id: str, db: Session = Depends(get_db), key: ApiKey = Depends(current_key)) -> JobOut:
    job = owned_job(db, job_id, key)
    return job_out(job, _model_of(db, job), with_spec=True)


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut, responses=error_responses(404, 409, 422),
             summary="Cancel: a queued job ends at once, a running one at its next training step")
def cancel_job(job_id: str, db: Session = Depends(get_db), key: ApiKey = Depends(current_key)) -> JobOut:
    job = owned_job(db, job_id, key)
    if job.status in TERMINAL_STATUSES:
        raise HTTPException(409, f"job '{job_id}' already ended with status '{job.status}'")
    now = utcnow()
    # Conditional updates: a worker may claim or finish the job between our read and write.
    db.execute(sa.update(Job).where(Job.id == job.id, Job.status == "queued").values(
        status="cancelled", cancel_requested=True, finished_at=now, updated_at=now,
        error=None, progress={**(job.progress or {}), "phase": "done"}))
    db.execute(sa.update(Job).where(Job.id == job.id, Job.status == "running").values(
        cancel_requested=True, updated_at=now))
    db.commit()
    db.refresh(job)
    return job_out(job, _model_of(db, job))


@router.get("/{job_id}/events", summary="Server-sent events: 'progress' on every change, then one 'end'",
            response_class=EventSourceResponse, responses=error_responses(404, 422))
async def job_events(job_id: str, request: Request, key: ApiKey = Depends(current_key)):
    session_factory = request.app.state.session_factory

    def snapshot() -> JobOut:
        with session_factory() as db:
            job = owned_job(db, job_id, key)
            return job_out(job, _model_of(db, job))

    first = await run_in_threadpool(snapshot)  # 404 before the stream starts

    async def stream():
        current, last_sent = first, None
        while True:
            payload = current.model_dump(mode="json", exclude={"updated_at"})
            if payload != last_sent:
                last_sent = payload
                yield {"event": "progress", "data": json.dumps(payload)}
            if current.status in TERMINAL_STATUSES:
                yield {"event": "end", "data": json.dumps(payload)}
                return
            await asyncio.sleep(EVENTS_POLL_SECONDS)
            if await request.is_disconnected():
                return
            current = await run_in_threadpool(snapshot)

    return EventSourceResponse(stream(), ping=15)
