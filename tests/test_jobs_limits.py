"""Jobs that would run a worker out of memory are refused at submission: a 422 naming the
field and the configured limit (defaults sized for a 24 GiB worker). A job that leaves
the architecture to the service is sized by its search and is not refused here."""
from __future__ import annotations

import copy

import pytest

from kanserve_harness import HELLOKAN_SPEC, api_harness
from service.config import Settings
from service.jobs.checks import model_parameters, training_memory_bytes
from service.schemas.jobspec import JobSpec

SPEC = copy.deepcopy(HELLOKAN_SPEC)
SPEC["symbolic"] = {"enabled": False}


@pytest.fixture
def api(tmp_path):
    with api_harness(tmp_path) as harness:
        yield harness


def only_error(response) -> dict:
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    return error


def test_many_wide_layers_at_a_fine_grid_are_refused_by_their_parameter_count(api):
    spec = {**SPEC, "model": {"width": [2, 1024, 1024, 1024, 1]}, "train": {"grid_schedule": [3, 200]}}
    error = only_error(api.client.post("/v1/jobs", json=spec))
    assert error["loc"] == ["body", "model", "width"]
    assert "KANSERVE_MAX_PARAMETERS" in error["msg"] and f"{Settings().max_parameters:,}" in error["msg"]
    assert f"{model_parameters([2, 1024, 1024, 1024, 1], 200, 3):,} parameters" in error["msg"]
    assert api.queue.sent == []


def test_many_rows_through_a_wide_model_are_refused_by_their_training_memory(api):
    # 6.6 million parameters (under the limit), but 200000 rows of 1282 x 24 basis values.
    spec = copy.deepcopy(SPEC)
    spec["model"] = {"width": [2, 1024, 256, 1]}
    spec["train"] = {"grid_schedule": [5, 20], "steps_per_grid": 10}
    spec["data"]["n_samples"] = Settings().max_rows
    error = only_error(api.client.post("/v1/jobs", json=spec))
    assert error["loc"] == ["body", "model", "width"]
    assert "KANSERVE_MAX_TRAINING_MEMORY_GIB" in error["msg"] and "above the limit of 16 GiB" in error["msg"]
    assert "200000 rows (data.n_samples)" in error["msg"]
    assert api.queue.sent == []
    # The same model on fewer rows fits.
    spec["data"]["n_samples"] = 2000
    assert api.client.post("/v1/jobs", json=spec).status_code == 202


def test_the_limits_are_settings(tmp_path):
    for folder in ("parameters", "memory"):
        (tmp_path / folder).mkdir()
    with api_harness(tmp_path / "parameters", max_parameters=100) as api:
        error = only_error(api.client.post("/v1/jobs", json={**SPEC, "train": {"grid_schedule": [3, 5]}}))
        # [2, 5, 1] at grid 5: 15 edges x 10 values + 6 biases.
        assert "156 parameters, above the limit of 100 (KANSERVE_MAX_PARAMETERS)" in error["msg"]
    with api_harness(tmp_path / "memory", max_training_memory_gib=0.0001) as api:  # 600 rows need ~0.0004
        error = only_error(api.client.post("/v1/jobs", json={**SPEC, "train": {"grid_schedule": [3, 5]}}))
        assert error["loc"] == ["body", "model", "width"]
        assert "above the limit of 0.0001 GiB (KANSERVE_MAX_TRAINING_MEMORY_GIB)" in error["msg"]


@pytest.mark.parametrize("model", [None, {"width": "auto"}])
def test_a_job_that_chooses_its_architecture_is_not_sized_here(tmp_path, model):
    spec = {key: value for key, value in SPEC.items() if key != "model"}
    if model is not None:
        spec["model"] = model
    with api_harness(tmp_path, max_parameters=1, max_training_memory_gib=1e-9) as api:
        assert api.client.post("/v1/jobs", json=spec).status_code == 202


def test_grid_and_rows_limits_name_their_settings(api):
    too_fine = only_error(api.client.post("/v1/jobs", json={**SPEC, "train": {"grid_schedule": [3, 201]}}))
    assert too_fine["loc"] == ["body", "train", "grid_schedule"] and "(KANSERVE_MAX_GRID)" in too_fine["msg"]
    spec = copy.deepcopy(SPEC)
    spec["data"]["n_samples"] = Settings().max_rows + 1
    too_many = only_error(api.client.post("/v1/jobs", json=spec))
    assert too_many["loc"] == ["body", "data", "n_samples"] and "(KANSERVE_MAX_ROWS)" in too_many["msg"]


def test_the_estimate_grows_with_rows_grid_and_the_sparsity_penalty():
    spec = JobSpec.model_validate({**SPEC, "train": {"grid_schedule": [3, 10]}})
    base = training_memory_bytes(spec, 1000)
    assert training_memory_bytes(spec, 2000) > base
    finer = JobSpec.model_validate({**SPEC, "train": {"grid_schedule": [3, 20]}})
    assert training_memory_bytes(finer, 1000) > base
    penalised = JobSpec.model_validate({**SPEC, "train": {"grid_schedule": [3, 10], "lamb": 0.01}})
    assert training_memory_bytes(penalised, 1000) > base
