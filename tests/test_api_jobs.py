"""POST/GET /v1/jobs, cancel, Idempotency-Key, pagination, events, and the model endpoints
(the worker part runs through the real pipeline function, in process)."""
from __future__ import annotations

import copy
import hashlib

import pytest

from kanserve_harness import HELLOKAN_SPEC, api_harness, follow_events

FAST_SPEC = copy.deepcopy(HELLOKAN_SPEC)
FAST_SPEC["train"] = {"grid_schedule": [3, 5], "steps_per_grid": 5}
FAST_SPEC["symbolic"] = {"enabled": False}


@pytest.fixture
def api(tmp_path):
    with api_harness(tmp_path) as harness:
        yield harness


def test_submit_answers_202_with_links_and_enqueues_by_name(api):
    response = api.client.post("/v1/jobs", json=HELLOKAN_SPEC)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["queue"] == "train"
    assert job["links"]["self"] == f"/v1/jobs/{job['id']}" and response.headers["location"] == job["links"]["self"]
    assert job["links"]["events"].endswith("/events") and job["model"] is None
    assert api.queue.sent == [(job["id"], "train")]
    assert api.client.get(job["links"]["self"]).json()["spec"]["model"]["width"] == [2, 5, 1]


def test_inline_data_is_not_echoed_back(api):
    X = [[i / 100, (i % 7) / 7] for i in range(100)]
    spec = {**FAST_SPEC, "data": {"inline": {"X": X, "y": [[sum(row)] for row in X], "feature_names": ["a", "b"]}}}
    job = api.client.post("/v1/jobs", json=spec).json()
    assert job["spec"]["data"] == {"inline": {"n_rows": 100, "n_inputs": 2, "n_outputs": 1, "feature_names": ["a", "b"]}}
    assert api.client.get(f"/v1/jobs/{job['id']}").json()["spec"]["data"] == job["spec"]["data"]


def test_cuda_jobs_go_to_the_gpu_queue(api):
    spec = {**FAST_SPEC, "device": "cuda"}
    assert api.client.post("/v1/jobs", json=spec).json()["queue"] == "gpu"
    assert api.queue.sent[-1][1] == "gpu"


def test_idempotency_key_same_body_same_job_other_body_conflict(api):
    headers = {"Idempotency-Key": "abc-123"}
    first = api.client.post("/v1/jobs", json=FAST_SPEC, headers=headers)
    again = api.client.post("/v1/jobs", json=FAST_SPEC, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(api.queue.sent) == 1  # the replay was not enqueued again
    changed = {**FAST_SPEC, "name": "other"}
    conflict = api.client.post("/v1/jobs", json=changed, headers=headers)
    assert conflict.status_code == 409
    assert "abc-123" in conflict.json()["detail"] and first.json()["id"] in conflict.json()["detail"]
    # Keys are per API key: the other key may use the same string for its own job.
    assert api.other.post("/v1/jobs", json=FAST_SPEC, headers=headers).json()["id"] != first.json()["id"]


def test_list_filters_by_status_and_paginates(api):
    ids = [api.client.post("/v1/jobs", json=FAST_SPEC).json()["id"] for _ in range(5)]
    api.client.post(f"/v1/jobs/{ids[0]}/cancel")
    page = api.client.get("/v1/jobs", params={"limit": 2}).json()
    assert page["total"] == 5 and len(page["items"]) == 2 and "offset=2" in page["next"]
    seen = [job["id"] for job in page["items"]]
    while page["next"]:
        page = api.client.get(page["next"]).json()
        seen += [job["id"] for job in page["items"]]
    assert sorted(seen) == sorted(ids)
    cancelled = api.client.get("/v1/jobs", params={"status": "cancelled"}).json()
    assert [job["id"] for job in cancelled["items"]] == [ids[0]]
    assert api.client.get("/v1/jobs", params={"status": "exploded"}).status_code == 422


def test_cancel_queued_job_ends_it_and_a_second_cancel_conflicts(api):
    job_id = api.client.post("/v1/jobs", json=FAST_SPEC).json()["id"]
    response = api.client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None
    again = api.client.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    from workers.pipeline import run_job

    # The message still reaches a worker: it must not run the cancelled job.
    assert run_job(job_id, api.session_factory, api.settings, "test-worker") is None
    assert api.client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_finished_job_links_model_formulas_artifacts_and_events(api):
    from workers.pipeline import run_job

    job_id = api.client.post("/v1/jobs", json=FAST_SPEC).json()["id"]
    assert run_job(job_id, api.session_factory, api.settings, "test-worker") == "succeeded"
    job = api.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["error"] is None
    assert job["model"] == {"name": "hellokan", "version": 1, "url": "/v1/models/hellokan/versions/1"}
    progress = job["progress"]
    assert progress["step"] == progress["total_steps"] == 10 and progress["checkpoints"] == 2
    assert progress["train_loss"] > 0 and progress["phase"] == "done"

    events = follow_events(api.client, job_id)
    assert [name for name, _ in events] == ["progress", "end"]
    assert events[-1][1]["status"] == "succeeded"

    listing = api.client.get("/v1/models").json()["items"]
    assert [(m["name"], m["latest_version"], m["n_versions"]) for m in listing] == [("hellokan", 1, 1)]
    model = api.client.get("/v1/models/hellokan").json()
    version = model["versions"][0]
    assert version["job_id"] == job_id and version["input_names"] == ["x0", "x1"]
    assert version["metrics"]["val_loss"] > 0
    kinds = {artifact["kind"]: artifact for artifact in version["artifacts"]}
    assert "checkpoint" in kinds
    for artifact in kinds.values():
        download = api.client.get(artifact["url"])
        assert download.status_code == 200
        assert hashlib.sha256(download.content).hexdigest() == artifact["sha256"]
        assert len(download.content) == artifact["size_bytes"]
        cached = api.client.get(artifact["url"], headers={"If-None-Match": download.headers["etag"]})
        assert cached.status_code == 304
    assert api.client.get("/v1/models/hellokan/versions/latest").json()["version"] == 1
    missing = api.client.get("/v1/models/hellokan/versions/1/artifacts/nothing")
    assert missing.status_code == 404 and "checkpoint" in missing.json()["detail"]
    assert api.client.get("/v1/models/hellokan/versions/7").status_code == 404
    # Another key sees none of it.
    assert api.other.get("/v1/models").json()["items"] == []
    for path in ("/v1/models/hellokan", "/v1/models/hellokan/versions/1", kinds["checkpoint"]["url"]):
        assert api.other.get(path).status_code == 404


def test_a_second_job_with_the_same_name_makes_version_2(api):
    from workers.pipeline import run_job

    for _ in range(2):
        job_id = api.client.post("/v1/jobs", json=FAST_SPEC).json()["id"]
        assert run_job(job_id, api.session_factory, api.settings, "test-worker") == "succeeded"
    model = api.client.get("/v1/models/hellokan").json()
    assert model["latest_version"] == 2 and [v["version"] for v in model["versions"]] == [2, 1]


def test_health_and_readiness(api):
    assert api.anonymous.get("/healthz").json() == {"status": "ok"}
    ready = api.anonymous.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_the_gateways_symbolic_function_names_are_kanmodels():
    # The gateway cannot import kanmodel (torch), so it keeps its own copy of the names.
    from kanmodel.symbolic.library import DEFAULT_LIBRARY
    from service.schemas.jobspec import SYMBOLIC_FUNCTIONS

    assert SYMBOLIC_FUNCTIONS == DEFAULT_LIBRARY


def test_docs_show_the_smallest_job_and_its_defaults(api):
    document = api.anonymous.get("/openapi.json").json()
    job_spec = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(job_spec["required"]) == {"name", "data"}
    schemas = document["components"]["schemas"]
    width = schemas["ModelSpec"]["properties"]["width"]
    assert width["default"] == "auto" and {"const": "auto"} in width["anyOf"]
    assert schemas["TrainSpec"]["properties"]["time_budget_seconds"]["default"] == 120
    mode = schemas["SymbolicSpec"]["properties"]["mode"]
    assert "discover" in mode["description"] and "network" in mode["description"]
    assert schemas["SymbolicSpec"]["properties"]["time_budget_seconds"]["default"] == 180
