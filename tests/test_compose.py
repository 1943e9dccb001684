"""docker-compose.yml and the Dockerfile describe a deployment that can work: the right
services, URLs that point at the right services, healthchecks, and commands that the
kanserve CLI accepts."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from service.cli import build_parser
from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_healthchecks(compose):
    services = compose["services"]
    assert {"api", "worker", "redis", "postgres"} <= set(services)
    for name in ("api", "worker", "redis", "postgres"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "8000:8000" in services["api"]["ports"]


def test_api_and_worker_point_at_postgres_and_redis(compose):
    services = compose["services"]
    postgres_env = services["postgres"]["environment"]
    for name in ("api", "worker", "migrate"):
        env = services[name]["environment"]
        database = make_url(env["KANSERVE_DATABASE_URL"])
        assert database.drivername == "postgresql+psycopg" and database.host == "postgres"
        assert (database.username, database.password, database.database) == (
            postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_PASSWORD"], postgres_env["POSTGRES_DB"])
        assert env["KANSERVE_BROKER_URL"].startswith("redis://redis:6379/")
        assert env["OMP_WAIT_POLICY"] == "PASSIVE"
        fields = {field.upper() for field in Settings.model_fields}
        for key in env:
            if key.startswith("KANSERVE_"):
                assert key.removeprefix("KANSERVE_") in fields, f"{key} is not a setting"


def test_commands_are_valid_cli_invocations_and_start_in_order(compose):
    services = compose["services"]
    parser = build_parser()
    assert parser.parse_args(services["api"]["command"]).command == "api"
    worker = parser.parse_args(services["worker"]["command"])
    assert worker.command == "worker" and "train" in worker.queues.split(",")
    assert parser.parse_args(services["migrate"]["command"]).action == "upgrade"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_dockerfile_pins_cpu_torch_and_runs_kanserve():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and "whl/cpu" in dockerfile
    assert 'ENTRYPOINT ["kanserve"]' in dockerfile
    for path in ("kanmodel", "service", "workers", "migrations", "alembic.ini"):
        assert path in dockerfile and (ROOT / path).exists()
