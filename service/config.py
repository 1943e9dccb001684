"""Settings for the gateway, the workers and the CLI (environment prefix ``KANSERVE_``).

The defaults need no configuration at all: a SQLite database and a SQLite-backed
Celery transport under ``./.kanserve/``. Production points the two URLs at
PostgreSQL and Redis.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KANSERVE_", extra="ignore")

    data_dir: Path = Field(Path(".kanserve"), description="Where the embedded default keeps its files.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite file in data_dir.")
    broker_url: str | None = Field(None, description="Celery broker URL; default: SQLite transport in data_dir.")
    api_keys: str = Field("", description="Comma-separated bootstrap API keys (containers, CI).")

    host: str = "127.0.0.1"
    port: int = 8000

    # Limits on what a client may ask for.
    max_upload_bytes: int = 20_000_000
    max_request_bytes: int = 25_000_000
    max_rows: int = 200_000
    max_columns: int = 1_000
    max_layer_width: int = 1_024
    max_grid: int = 200
    max_total_steps: int = 100_000
    max_job_seconds: int = 3_600
    # Sized for a worker with 24 GiB of memory: training may use 16 of them, the rest is the
    # process itself, the data, the formula-search child and the checkpoint being written.
    max_parameters: int = Field(20_000_000, description="Parameters of a given-width model at its final grid "
                                "(L-BFGS takes about 480 bytes per parameter: 9 GiB at the default).")
    max_training_memory_gib: float = Field(16.0, description="Estimated training memory of a given-width job "
                                           "(rows x spline-basis values per row, plus parameters x optimizer "
                                           "state), in GiB.")

    # Worker behaviour.
    worker_concurrency: int = 1
    worker_cores: int | None = Field(None, description="Cores a worker may use; default: all visible.")
    job_lease_seconds: float = Field(30.0, description="A running job whose lease is older is taken over.")
    max_deliveries: int = Field(3, description="A job claimed this many times without finishing fails.")
    progress_interval_seconds: float = 0.5
    cancel_poll_seconds: float = 0.25
    reaper_interval_seconds: float = 10.0

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Absolute so that a worker started from another directory shares the same files.
        return value.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'kanserve.db'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.sqlite'}"

    @property
    def bootstrap_keys(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def torch_threads(self) -> int:
        cores = self.worker_cores or len(os.sched_getaffinity(0))
        return max(1, cores // max(1, self.worker_concurrency))

    @property
    def broker_visibility_timeout(self) -> int:
        """Seconds Redis waits before redelivering an unacked message: beyond the longest job."""
        return int(self.max_job_seconds * 2 + 600)

    def ensure_data_dir(self) -> None:
        if self.database_url is None or self.broker_url is None:
            self.data_dir.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
