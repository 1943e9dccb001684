"""Alembic migrations: upgrade head / downgrade base on SQLite and PostgreSQL, and the
models agree with the migrations (no pending autogenerate diff)."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from kanserve_harness import scratch_postgres
from service.db import migrate
from service.db.models import Base
from service.db.session import make_engine

TABLES = {"api_keys", "datasets", "jobs", "checkpoints", "models", "artifacts", "formulas"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
    else:
        with scratch_postgres() as url:
            yield url


def test_upgrade_matches_models_and_downgrade_removes_everything(database_url):
    migrate.upgrade(database_url)
    engine = make_engine(database_url)
    try:
        assert TABLES <= set(sa.inspect(engine).get_table_names())
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        assert diff == [], f"models and migrations disagree; run alembic revision --autogenerate: {diff}"

        migrate.downgrade(database_url)
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(database_url)  # and back up again from base
        assert TABLES <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_constraints_hold_on_both_backends(database_url):
    """The job_id uniqueness on models is what keeps a resumed job from registering twice."""
    migrate.upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.begin() as c:
            c.execute(sa.text("INSERT INTO api_keys (id, name, prefix, key_hash, created_at) "
                              "VALUES ('k', 'n', 'p', 'h', CURRENT_TIMESTAMP)"))
            c.execute(sa.text(
                "INSERT INTO jobs (id, owner_key_id, name, status, spec, spec_sha256, queue, progress, "
                "cancel_requested, deliveries, created_at, updated_at) VALUES ('j', 'k', 'n', 'queued', '{}', 's', "
                "'train', '{}', false, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        insert_model = sa.text(
            "INSERT INTO models (id, owner_key_id, name, version, job_id, task, width, input_names, output_names, "
            "metrics, created_at) VALUES (:id, 'k', 'm', :version, 'j', 'regression', '[]', '[]', '[]', '{}', "
            "CURRENT_TIMESTAMP)")
        with engine.begin() as c:
            c.execute(insert_model, {"id": "m1", "version": 1})
        with pytest.raises(sa.exc.IntegrityError):
            with engine.begin() as c:
                c.execute(insert_model, {"id": "m2", "version": 2})
        with pytest.raises(sa.exc.IntegrityError):
            with engine.begin() as c:
                c.execute(sa.text("UPDATE jobs SET status = 'exploded' WHERE id = 'j'"))
    finally:
        engine.dispose()
