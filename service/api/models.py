"""/v1/models: registered model versions, their metrics, formulas and downloadable artifacts."""
from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from sqlalchemy.orm import Session, selectinload

from service.api.deps import current_key, get_db
from service.api.errors import error_responses
from service.api.versions import Version
from service.db.models import ApiKey, Artifact, ModelVersion
from service.schemas.resources import (ArtifactOut, FormulaOut, ModelList, ModelOut, ModelSummary,
                                       ModelVersionOut)

router = APIRouter(prefix="/v1/models", tags=["models"], responses=error_responses(401, 503))


def version_url(model: ModelVersion) -> str:
    return f"/v1/models/{model.name}/versions/{model.version}"


def version_out(model: ModelVersion) -> ModelVersionOut:
    return ModelVersionOut(
        name=model.name, version=model.version, job_id=model.job_id, task=model.task, width=model.width,
        input_names=model.input_names, output_names=model.output_names, metrics=model.metrics,
        created_at=model.created_at,
        formulas=[FormulaOut.model_validate(f, from_attributes=True) for f in model.formulas],
        artifacts=[ArtifactOut(kind=a.kind, filename=a.filename, media_type=a.media_type, size_bytes=a.size_bytes,
                               sha256=a.sha256, url=f"{version_url(model)}/artifacts/{a.kind}")
                   for a in model.artifacts],
    )


def _versions_query(key: ApiKey, name: str):
    return (sa.select(ModelVersion).where(ModelVersion.owner_key_id == key.id, ModelVersion.name == name)
            .options(selectinload(ModelVersion.formulas), selectinload(ModelVersion.artifacts)))


def owned_version(db: Session, key: ApiKey, name: str, version: int | None) -> ModelVersion:
    """``version`` None is the latest; another key's model is a 404 like a missing one."""
    query = _versions_query(key, name)
    if version is None:
        model = db.scalar(query.order_by(ModelVersion.version.desc()).limit(1))
    else:
        model = db.scalar(query.where(ModelVersion.version == version))
    if model is None:
        raise HTTPException(404, f"model '{name}' version '{'latest' if version is None else version}' not found")
    return model


@router.get("", response_model=ModelList)
def list_models(db: Session = Depends(get_db), key: ApiKey = Depends(current_key)) -> ModelList:
    rows = db.execute(
        sa.select(ModelVersion.name, sa.func.max(ModelVersion.version), sa.func.count(),
                  sa.func.max(ModelVersion.created_at))
        .where(ModelVersion.owner_key_id == key.id).group_by(ModelVersion.name).order_by(ModelVersion.name)
    ).all()
    return ModelList(items=[ModelSummary(name=name, latest_version=latest, n_versions=count,
                                         updated_at=updated, url=f"/v1/models/{name}")
                            for name, latest, count, updated in rows])


@router.get("/{name}", response_model=ModelOut, responses=error_responses(404, 422))
def get_model(name: str, db: Session = Depends(get_db), key: ApiKey = Depends(current_key)) -> ModelOut:
    versions = db.scalars(_versions_query(key, name).order_by(ModelVersion.version.desc())).all()
    if not versions:
        raise HTTPException(404, f"model '{name}' not found")
    return ModelOut(name=name, latest_version=versions[0].version, versions=[version_out(v) for v in versions])


@router.get("/{name}/versions/{version}", response_model=ModelVersionOut, responses=error_responses(404, 422))
def get_model_version(name: str, version: Version, db: Session = Depends(get_db),
                      key: ApiKey = Depends(current_key)) -> ModelVersionOut:
    return version_out(owned_version(db, key, name, version))


@router.get("/{name}/versions/{version}/artifacts/{kind}", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}, "image/png": {}}},
                       304: {"description": "the artifact matches If-None-Match"}, **error_responses(404, 422)},
            summary="Download an artifact: onnx, formula_onnx, checkpoint, plot_network, plot_loss")
def download_artifact(name: str, version: Version, kind: str, request: Request, db: Session = Depends(get_db),
                      key: ApiKey = Depends(current_key)) -> Response:
    model = owned_version(db, key, name, version)
    artifact = db.scalar(sa.select(Artifact).where(Artifact.model_id == model.id, Artifact.kind == kind)
                         .options(sa.orm.undefer(Artifact.data)))
    if artifact is None:
        kinds = [a.kind for a in model.artifacts]
        raise HTTPException(404, f"model '{name}' version {model.version} has no '{kind}' artifact; it has {kinds}")
    etag = f'"{artifact.sha256}"'
    headers = {"ETag": etag, "Content-Disposition": f'attachment; filename="{artifact.filename}"',
               "X-Content-SHA256": artifact.sha256}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(artifact.data, media_type=artifact.media_type, headers=headers)


@router.delete("/{name}/versions/{version}", status_code=204, response_class=Response,
               summary="Delete a model version: its graphs stop being served", responses=error_responses(404, 422))
def delete_model_version(name: str, version: Version, request: Request, db: Session = Depends(get_db),
                         key: ApiKey = Depends(current_key)) -> Response:
    model = owned_version(db, key, name, version)
    model_id = model.id
    db.delete(model)
    db.commit()
    # This process drops the version's sessions at once; other gateway processes stop
    # serving it within KANSERVE_MODEL_LOOKUP_TTL_S (their lookups are re-checked).
    request.app.state.inference.invalidate_model(model_id)
    return Response(status_code=204)
