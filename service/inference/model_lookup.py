"""Find the model version a request names, among the caller's own models, and read
its ONNX bytes.

Every request looks the version up (one indexed query joining the caller's key, the
model and its artifact, no blobs), so a version registered or deleted by another
process is seen at once; only sessions are cached, keyed by the artifact's sha256.
The query runs on a bare connection (SQLAlchemy Core): an ORM session costs more
than the query itself on this path.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import sqlalchemy as sa

from service.auth import hash_key
from service.db.models import ApiKey, Artifact, ModelVersion
from service.inference.session_cache import CacheKey

ENGINE_ARTIFACT = {"spline": "onnx", "formula": "formula_onnx"}


MISSING_KEY = "missing API key: send 'Authorization: Bearer <key>'"
BAD_KEY = "invalid or revoked API key"


class Unauthorized(PermissionError):
    """Missing, unknown or revoked API key."""


class ModelNotFound(LookupError):
    """The caller has no such model, version or graph; the message says which."""


@dataclass(frozen=True)
class ServedModel:
    model_id: str
    name: str
    version: int
    task: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    engine: str
    artifact_kind: str
    sha256: str

    @cached_property
    def cache_key(self) -> CacheKey:
        return CacheKey(self.model_id, self.sha256, self.engine)


_COLUMNS = (ModelVersion.id, ModelVersion.name, ModelVersion.version, ModelVersion.task,
            ModelVersion.input_names, ModelVersion.output_names)


def find_served_model(conn: sa.Connection, api_key: str | None, name: str, version: int | None,
                      engine: str = "spline") -> ServedModel:
    """The version `version` of `name` (latest when None) owned by the caller's key.
    Another key's model is reported as not found, like a missing one."""
    if not api_key:
        raise Unauthorized(MISSING_KEY)
    kind = ENGINE_ARTIFACT[engine]
    key_hash = hash_key(api_key)
    query = (
        sa.select(*_COLUMNS, Artifact.sha256)
        .join(ApiKey, ApiKey.id == ModelVersion.owner_key_id)
        .outerjoin(Artifact, sa.and_(Artifact.model_id == ModelVersion.id, Artifact.kind == kind))
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None), ModelVersion.name == name)
    )
    if version is not None:
        query = query.where(ModelVersion.version == version)
    row = conn.execute(query.order_by(ModelVersion.version.desc()).limit(1)).first()
    if row is None:
        # Only the failure path pays for telling a bad key from a missing model.
        if not key_is_active(conn, key_hash):
            raise Unauthorized(BAD_KEY)
        if version is None:
            raise ModelNotFound(f"model {name!r} not found")
        raise ModelNotFound(f"model {name!r} has no version {version}")
    if row.sha256 is None:
        raise ModelNotFound(f"model {name!r} version {row.version} has no {engine} graph"
                            + (" (no formula was extracted for it)" if engine == "formula" else ""))
    return _served(row, engine, kind, row.sha256)


def key_is_active(conn: sa.Connection, key_hash: str) -> bool:
    return conn.execute(sa.select(ApiKey.id).where(
        ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))).first() is not None


def list_versions(conn: sa.Connection, api_key: str, name: str) -> list[int]:
    """The caller's versions of `name`, ascending (empty when none)."""
    return list(conn.execute(
        sa.select(ModelVersion.version)
        .join(ApiKey, ApiKey.id == ModelVersion.owner_key_id)
        .where(ApiKey.key_hash == hash_key(api_key), ModelVersion.name == name)
        .order_by(ModelVersion.version)).scalars())


def read_artifact(conn: sa.Connection, model_id: str, kind: str) -> bytes:
    data = conn.execute(sa.select(Artifact.data).where(
        Artifact.model_id == model_id, Artifact.kind == kind)).scalar_one_or_none()
    if data is None:
        raise ModelNotFound(f"the {kind} graph of model version {model_id} is gone")
    return data


def recent_served_models(conn: sa.Connection, limit: int) -> list[ServedModel]:
    """The `limit` most recently registered versions with a spline graph (for warm-up)."""
    rows = conn.execute(
        sa.select(*_COLUMNS, Artifact.sha256)
        .join(Artifact, sa.and_(Artifact.model_id == ModelVersion.id, Artifact.kind == "onnx"))
        .order_by(ModelVersion.created_at.desc()).limit(limit)).all()
    return [_served(r, "spline", "onnx", r.sha256) for r in rows]


def _served(row, engine: str, kind: str, sha256: str) -> ServedModel:
    return ServedModel(row.id, row.name, row.version, row.task, tuple(row.input_names),
                       tuple(row.output_names), engine, kind, sha256)
