"""The worker pipeline as a plain function on a real SQLite database: checkpoints per
stage, resume after a crash, exactly-once registration, cancel, divergence, poison
jobs, lease take-over and the stale-job sweep."""
from __future__ import annotations

import copy
import logging
import os
import signal
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from kanserve_harness import HELLOKAN_SPEC, api_harness
from service.db.models import Checkpoint, Job, ModelVersion
from service.db.types import utcnow
from workers import outputs, pipeline, symbolic_runner
from workers.claim import LeaseLost, claim_job, guarded_update, requeue_stale, take_unsent
from workers.pipeline import run_job
from workers.progress import ProgressReporter

SPEC = copy.deepcopy(HELLOKAN_SPEC)
SPEC["train"] = {"grid_schedule": [3, 5], "steps_per_grid": 8}
SPEC["symbolic"] = {"enabled": False}
SPEC["export"] = {"onnx": True, "plots": False}


@pytest.fixture
def api(tmp_path):
    with api_harness(tmp_path, progress_interval_seconds=0.02, cancel_poll_seconds=0.02,
                     job_lease_seconds=5, max_deliveries=3) as harness:
        yield harness


def submit(api, spec=SPEC) -> str:
    response = api.client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def job_row(api, job_id) -> Job:
    with api.session_factory() as db:
        return db.get(Job, job_id)


def count(api, model, **where) -> int:
    with api.session_factory() as db:
        return db.scalar(sa.select(sa.func.count()).select_from(model).filter_by(**where))


def expire_lease(api, job_id) -> None:
    with api.session_factory() as db:
        db.execute(sa.update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        db.commit()


class WorkerKilled(BaseException):
    """Escapes the pipeline's error handling the way SIGKILL does: nothing gets written."""


def test_success_checkpoints_every_stage_and_registers_once(api):
    job_id = submit(api)
    assert run_job(job_id, api.session_factory, api.settings, "w1") == "succeeded"
    job = job_row(api, job_id)
    assert job.status == "succeeded" and job.deliveries == 1 and job.claim_token is None
    # Where it trained ("auto" on a machine without CUDA), as the API shows it.
    assert api.client.get(f"/v1/jobs/{job_id}").json()["progress"]["device"] == "cpu"
    with api.session_factory() as db:
        stages = db.execute(sa.select(Checkpoint.stage, Checkpoint.grid).where(Checkpoint.job_id == job_id)
                            .order_by(Checkpoint.stage)).all()
    assert [tuple(row) for row in stages] == [(0, 3), (1, 5)]
    # A redelivered message for a finished job does nothing.
    assert run_job(job_id, api.session_factory, api.settings, "w2") is None
    assert count(api, ModelVersion, job_id=job_id) == 1
    version = api.client.get("/v1/models/hellokan/versions/1").json()
    assert {a["kind"] for a in version["artifacts"]} >= {"checkpoint", "onnx"}


def test_killed_after_a_stage_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(api, monkeypatch):
    reference_id = submit(api, {**SPEC, "name": "reference"})
    assert run_job(reference_id, api.session_factory, api.settings, "w0") == "succeeded"

    job_id = submit(api)
    real_save = pipeline.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise WorkerKilled

    monkeypatch.setattr(pipeline, "save_checkpoint", save_then_die)
    with pytest.raises(WorkerKilled):
        run_job(job_id, api.session_factory, api.settings, "w1")
    monkeypatch.setattr(pipeline, "save_checkpoint", real_save)
    assert job_row(api, job_id).status == "running" and count(api, Checkpoint, job_id=job_id) == 1

    # While the dead worker's lease is fresh nobody else may run the job...
    assert run_job(job_id, api.session_factory, api.settings, "w2") is None
    expire_lease(api, job_id)
    # ...and once it expires the next delivery resumes at stage 1.
    assert run_job(job_id, api.session_factory, api.settings, "w2") == "succeeded"
    job = api.client.get(f"/v1/jobs/{job_id}").json()
    assert job["deliveries"] == 2 and job["progress"]["resumed_from_stage"] == 1
    assert count(api, ModelVersion, job_id=job_id) == 1
    with api.session_factory() as db:
        history = db.scalar(sa.select(Checkpoint.history).where(Checkpoint.job_id == job_id, Checkpoint.stage == 1))
    assert {entry["stage"] for entry in history} == {0, 1}  # the loss curve spans the crash

    resumed = api.client.get("/v1/models/hellokan/versions/1").json()["metrics"]
    reference = api.client.get("/v1/models/reference/versions/1").json()["metrics"]
    assert resumed["val_loss"] == pytest.approx(reference["val_loss"], rel=1e-4)


def test_cancel_while_running_stops_training_at_the_next_step(api, monkeypatch):
    spec = {**SPEC, "train": {"optimizer": "adam", "grid_schedule": [3], "steps_per_grid": 20_000}}
    job_id = submit(api, spec)
    seen = {}
    trained_steps, stop_answers = [], []
    real_on_step = ProgressReporter.on_step

    def recording_on_step(reporter, progress):
        stop = real_on_step(reporter, progress)
        trained_steps.append(progress.step)
        if stop:
            stop_answers.append((progress.step, reporter.monitor.stop_reason))
        return stop

    monkeypatch.setattr(ProgressReporter, "on_step", recording_on_step)

    def cancel_when_training():
        deadline = time.monotonic() + 60  # hang guard only
        while time.monotonic() < deadline:
            job = api.client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] == "running" and (job["progress"].get("step") or 0) >= 3:
                seen["step"] = job["progress"]["step"]
                assert api.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
                return
            time.sleep(0.01)

    canceller = threading.Thread(target=cancel_when_training)
    canceller.start()
    assert run_job(job_id, api.session_factory, api.settings, "w1") == "cancelled"
    canceller.join()
    job = api.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["cancel_requested"] and job["model"] is None
    # Training asked to stop once, because of the cancel, after the step the canceller saw,
    # and took no step after that: the last step trained is the one the job reports.
    [(stopped_at, reason)] = stop_answers
    assert reason == "cancelled" and seen["step"] <= stopped_at < 20_000
    assert trained_steps[-1] == stopped_at == job["progress"]["step"]
    assert job["progress"]["phase"] == "done"
    assert count(api, ModelVersion) == 0 and count(api, Checkpoint, job_id=job_id) == 0


def test_diverging_loss_fails_with_an_actionable_message(api):
    spec = {**SPEC, "train": {"optimizer": "adam", "lr": 1e12, "grid_schedule": [3], "steps_per_grid": 50}}
    job_id = submit(api, spec)
    assert run_job(job_id, api.session_factory, api.settings, "w1") == "failed"
    job = api.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and "diverged" in job["error"] and "smaller lr" in job["error"]
    assert count(api, ModelVersion) == 0


def test_time_limit_fails_the_job(tmp_path):
    with api_harness(tmp_path, max_job_seconds=1, cancel_poll_seconds=0.05) as api:
        # No validation split: early stopping must not end the run before the limit does.
        spec = {**SPEC, "train": {"optimizer": "adam", "grid_schedule": [3], "steps_per_grid": 50_000,
                                  "val_fraction": 0.0}}
        job_id = submit(api, spec)
        assert run_job(job_id, api.session_factory, api.settings, "w1") == "failed"
        assert "longer than the limit of 1 s" in job_row(api, job_id).error


def test_a_job_that_keeps_killing_its_worker_fails_after_max_deliveries(api):
    job_id = submit(api)
    for attempt in range(api.settings.max_deliveries):
        assert claim_job(api.session_factory, job_id, f"doomed-{attempt}", lease_seconds=5) is not None
        expire_lease(api, job_id)
    assert run_job(job_id, api.session_factory, api.settings, "w-last") == "failed"
    job = job_row(api, job_id)
    assert job.deliveries == 4 and "started 4 times" in job.error


def test_a_worker_that_lost_its_lease_cannot_write(api):
    job_id = submit(api)
    stalled = claim_job(api.session_factory, job_id, "stalled", lease_seconds=5)
    assert claim_job(api.session_factory, job_id, "eager", lease_seconds=5) is None  # lease still fresh
    expire_lease(api, job_id)
    assert requeue_stale(api.session_factory) == [(job_id, "train")]
    assert job_row(api, job_id).status == "queued"
    assert requeue_stale(api.session_factory) == []  # a re-queued job is not sent twice
    taker = claim_job(api.session_factory, job_id, "taker", lease_seconds=5)
    assert taker is not None and taker.deliveries == 2
    with api.session_factory() as db, pytest.raises(LeaseLost):
        guarded_update(db, stalled, progress={"phase": "stale write"})
    assert job_row(api, job_id).claimed_by == "taker"


def test_cuda_jobs_train_on_the_gpu_or_fail_clearly_without_one(api):
    import torch

    job_id = submit(api, {**SPEC, "device": "cuda"})
    status = run_job(job_id, api.session_factory, api.settings, "w1")
    if not torch.cuda.is_available():
        assert status == "failed" and "no CUDA device" in job_row(api, job_id).error
        return
    assert status == "succeeded", job_row(api, job_id).error
    version = api.client.get("/v1/models/hellokan/versions/1").json()
    assert {"checkpoint", "onnx"} <= {a["kind"] for a in version["artifacts"]}
    assert version["metrics"]["val_loss"] < 1.0


def symbolic_child_pids(caplog) -> dict[int, int | None]:
    """{pid: exit code} of each formula-search child, from the runner's log (None: not yet reaped)."""
    children: dict[int, int | None] = {}
    for record in caplog.records:
        if record.name != symbolic_runner.log.name:
            continue
        if record.msg.endswith("child process %d started"):
            children[record.args[0]] = None
        elif record.msg.endswith("child process %d ended with exit code %d"):
            children[record.args[0]] = record.args[1]
    return children


def assert_killed_and_reaped(caplog) -> None:
    """Exactly one formula-search child ran; it was killed (SIGKILL) and no process, not even
    a zombie, is left with its pid."""
    [(pid, exit_code)] = symbolic_child_pids(caplog).items()
    assert exit_code == -signal.SIGKILL, exit_code
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # signal 0 only checks existence; a zombie would still answer


def test_formula_search_past_its_time_budget_is_killed_and_the_model_still_registers(api, caplog):
    caplog.set_level(logging.INFO, logger=symbolic_runner.log.name)
    spec = copy.deepcopy(SPEC)
    # less than the child needs to start
    spec["symbolic"] = {"enabled": True, "mode": "network", "time_budget_seconds": 0.3}
    job_id = submit(api, spec)
    assert run_job(job_id, api.session_factory, api.settings, "w1") == "succeeded"
    assert_killed_and_reaped(caplog)
    version = api.client.get("/v1/models/hellokan/versions/1").json()
    assert version["formulas"] == []
    assert any("time budget of 0.3 s" in note for note in version["metrics"]["notes"]), version["metrics"]
    assert "formula_onnx" not in {a["kind"] for a in version["artifacts"]}
    assert any("time budget" in note for note in api.client.get(f"/v1/jobs/{job_id}").json()["progress"]["notes"])


def test_cancel_during_formula_search_kills_the_search_and_ends_without_a_model(api, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger=symbolic_runner.log.name)
    spec = copy.deepcopy(SPEC)
    spec["symbolic"] = {"enabled": True, "mode": "network", "time_budget_seconds": 120}
    job_id = submit(api, spec)
    searches = []
    real_extract = outputs.search_in_subprocess

    def cancel_then_extract(request, should_stop, on_progress=None):
        # Cancelled over the API as the search starts: the child cannot finish importing
        # torch before the runner sees the cancel, so a result here means it was waited for.
        searches.append({"phase": api.client.get(f"/v1/jobs/{job_id}").json()["progress"]["phase"]})
        assert api.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        try:
            searches[-1]["result"] = real_extract(request, should_stop, on_progress)
        except symbolic_runner.SymbolicStopped as exc:
            searches[-1]["stopped"] = str(exc)
            raise

    monkeypatch.setattr(outputs, "search_in_subprocess", cancel_then_extract)
    assert run_job(job_id, api.session_factory, api.settings, "w1") == "cancelled"
    [search] = searches
    assert search["phase"] == "symbolic" and "result" not in search
    assert "the job is stopping" in search["stopped"]
    assert_killed_and_reaped(caplog)
    job = api.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["cancel_requested"] and job["model"] is None
    assert count(api, ModelVersion) == 0


def test_dataset_job_trains_on_the_named_columns(api):
    import numpy as np

    rng = np.random.default_rng(1)
    a, b, noise = rng.uniform(-1, 1, 200), rng.uniform(-1, 1, 200), rng.uniform(-1, 1, 200)
    csv = "a,noise,b,target\n" + "\n".join(f"{x},{n},{y},{x * x + np.sin(2 * y)}" for x, n, y in zip(a, noise, b))
    dataset_id = api.client.post("/v1/datasets", content=csv, headers={"content-type": "text/csv"}).json()["id"]
    spec = {**SPEC, "name": "from-csv", "model": {"width": [2, 4, 1]},
            "data": {"dataset_id": dataset_id, "target": ["target"], "features": ["b", "a"]}}
    job_id = submit(api, spec)
    assert run_job(job_id, api.session_factory, api.settings, "w1") == "succeeded"
    version = api.client.get("/v1/models/from-csv/versions/1").json()
    assert version["input_names"] == ["b", "a"] and version["output_names"] == ["target"]
    assert version["metrics"]["n_rows"] == 200 and version["metrics"]["val_loss"] < 0.5


def test_classification_job_from_inline_data(api):
    import numpy as np

    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, (200, 2))
    labels = (X[:, 0] * X[:, 1] > 0).astype(float)  # XOR-like quadrants
    spec = {**SPEC, "name": "quadrants", "task": "classification", "model": {"width": [2, 4, 2]},
            "data": {"inline": {"X": X.tolist(), "y": labels[:, None].tolist(), "feature_names": ["u", "v"]}},
            "symbolic": {"enabled": True, "prune": True}, "class_names": ["different", "same"]}
    job_id = submit(api, spec)
    assert run_job(job_id, api.session_factory, api.settings, "w1") == "succeeded", job_row(api, job_id).error
    version = api.client.get("/v1/models/quadrants/versions/1").json()
    assert version["task"] == "classification" and version["metrics"]["loss"] == "cross_entropy"
    assert version["output_names"] == ["different", "same"] and version["input_names"] == ["u", "v"]
    assert "onnx" in {artifact["kind"] for artifact in version["artifacts"]}
    assert version["metrics"]["val_loss"] < np.log(2)  # better than guessing
    assert [note for note in version["metrics"]["notes"] if "regression only" not in note] == []  # pruned fine


def test_worker_shutdown_hands_the_job_back_and_it_resumes_later(api):
    spec = {**SPEC, "train": {"optimizer": "adam", "grid_schedule": [3, 5], "steps_per_grid": 150}}
    job_id = submit(api, spec)
    shutdown = threading.Event()

    def stop_after_first_stage():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and count(api, Checkpoint, job_id=job_id) == 0:
            time.sleep(0.01)
        shutdown.set()

    stopper = threading.Thread(target=stop_after_first_stage)
    stopper.start()
    assert run_job(job_id, api.session_factory, api.settings, "w1", shutdown) == "queued"
    stopper.join()
    job = api.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "queued" and job["progress"]["phase"] == "queued"
    assert any("shut down" in note for note in job["progress"]["notes"])
    # No lease to wait for: the next sweep re-sends it at once, once only.
    assert requeue_stale(api.session_factory) == [(job_id, "train")]
    assert requeue_stale(api.session_factory) == []
    assert run_job(job_id, api.session_factory, api.settings, "w2") == "succeeded"
    job = api.client.get(f"/v1/jobs/{job_id}").json()
    assert job["deliveries"] == 2 and job["progress"]["resumed_from_stage"] == 1
    assert count(api, ModelVersion, job_id=job_id) == 1


def test_queued_jobs_the_broker_lost_are_taken_oldest_first_and_once(api):
    first, second, third, running = (submit(api) for _ in range(4))
    assert claim_job(api.session_factory, running, "w1", lease_seconds=5) is not None
    with api.session_factory() as db:  # all four were queued a minute ago
        db.execute(sa.update(Job).values(updated_at=utcnow() - timedelta(seconds=60)))
        db.commit()
    settled = utcnow() - timedelta(seconds=30)
    # The broker holds one message for the three queued jobs: the two oldest were lost.
    assert take_unsent(api.session_factory, "train", 1, settled) == [first, second]
    # Taken jobs count as just sent: the next sweep takes the third only when the broker
    # is short of it too, and never the running job or another queue's.
    assert take_unsent(api.session_factory, "train", 1, settled) == []
    assert take_unsent(api.session_factory, "train", 0, settled) == [third]
    assert take_unsent(api.session_factory, "gpu", 0, settled) == []
    # A job queued after the settling time may still have its message on the way.
    assert take_unsent(api.session_factory, "train", 0, utcnow() - timedelta(seconds=120)) == []
