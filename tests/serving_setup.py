"""A gateway app on a temporary SQLite database, with model versions registered
directly in the database (as a finished job would), for the serving tests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from service.app import create_app
from service.auth import create_key
from service.config import Settings
from service.db.models import Artifact, Base, Job, ModelVersion
from service.db.session import make_engine, make_session_factory


class NoQueue:
    """Jobs are not run in these tests; models are registered directly."""

    def send(self, job_id: str, queue: str) -> None:
        raise AssertionError("the serving tests do not enqueue jobs")


@dataclass
class ServingEnv:
    app: object
    engine: sa.Engine
    key: str            # plaintext API key of the model owner
    key_id: str
    other_key: str      # another user's key
    other_key_id: str

    def register(self, name: str, version: int, spline_onnx: bytes, *, owner_key_id: str | None = None,
                 **details) -> str:
        return register_model(self.engine, owner_key_id or self.key_id, name, version, spline_onnx, **details)

    def delete(self, model_id: str) -> None:
        with make_session_factory(self.engine)() as db:
            db.delete(db.get(ModelVersion, model_id))
            db.commit()


def register_model(engine: sa.Engine, owner_key_id: str, name: str, version: int, spline_onnx: bytes, *,
                   formula_onnx: bytes | None = None, task: str = "regression", input_names=("x0", "x1"),
                   output_names=("y0",)) -> str:
    """Insert a model version with its artifacts (and the finished job it needs);
    returns the model row id."""
    with make_session_factory(engine)() as db:
        job = Job(owner_key_id=owner_key_id, name=name, status="succeeded", spec={}, spec_sha256="0" * 64,
                  queue="cpu")
        db.add(job)
        db.flush()
        model = ModelVersion(owner_key_id=owner_key_id, name=name, version=version, job_id=job.id, task=task,
                             width=[], input_names=list(input_names), output_names=list(output_names),
                             metrics={})
        db.add(model)
        db.flush()
        for kind, data in (("onnx", spline_onnx), ("formula_onnx", formula_onnx)):
            if data is not None:
                db.add(Artifact(model_id=model.id, kind=kind, media_type="application/octet-stream",  # as workers store them
                                filename=f"{name}-v{version}-{kind}.onnx", data=data,
                                sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)))
        db.commit()
        return model.id


def serving_env(tmp_path: Path) -> ServingEnv:
    url = f"sqlite:///{tmp_path / 'kanserve.db'}"
    settings = Settings(data_dir=tmp_path, database_url=url)
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    with make_session_factory(engine)() as db:
        owner, key = create_key(db, "owner")
        other, other_key = create_key(db, "other")
    app = create_app(settings, job_queue=NoQueue())
    return ServingEnv(app, app.state.engine, key, owner.id, other_key, other.id)
