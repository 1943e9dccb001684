"""One training job from claim to registered model: a plain function, no Celery in sight.

``run_job`` claims the job, loads its data, trains a network (a given width through the
grid schedule, with one checkpoint per grid stage, resuming from the newest checkpoint if
an earlier attempt died; or, with no width, the architecture ``kanmodel.auto_fit``
chooses by validation error), writes progress, then discovers or extracts formulas,
exports, plots and registers the model version. Every way it can end is written to the
job row.
"""
from __future__ import annotations

import logging
import threading

import sqlalchemy as sa
import torch
from sqlalchemy.orm import Session, sessionmaker

import kanmodel
from service.config import Settings
from service.datasets.formula_data import DataError
from service.db.models import Job
from service.schemas.jobspec import JobSpec
from workers.architecture import choose_architecture
from workers.checkpoints import checkpoints_newest_first, save_checkpoint
from workers.claim import Claim, LeaseLost, claim_job, finish, release
from workers.finite import finite_or_none
from workers.monitor import JobMonitor
from workers.outputs import OutputBuilder
from workers.progress import ProgressReporter
from workers.registry import register_model
from workers.trained import Resume, Trained
from workers.training_data import TrainingData, load_training_data

log = logging.getLogger(__name__)

STOP_MESSAGES = {
    "timeout": "the job ran longer than the limit of {max_seconds} s; use fewer steps_per_grid, a shorter "
               "grid_schedule or smaller time budgets (train.time_budget_seconds, symbolic.time_budget_seconds)",
}


class JobFailed(Exception):
    """Ends the job as failed with this message (meant for the user)."""


def run_job(job_id: str, session_factory: sessionmaker[Session], settings: Settings, worker_name: str,
            shutdown: threading.Event | None = None) -> str | None:
    """Runs the job if it can be claimed; returns its final status, "queued" when the
    worker is shutting down (``shutdown`` set: the job is handed back, to resume from its
    checkpoint), or None when another worker holds it (or took it over from this one)."""
    claim = claim_job(session_factory, job_id, worker_name, settings.job_lease_seconds)
    if claim is None:
        log.info("job %s: not claimable (finished, or running under a live lease)", job_id)
        return None
    with session_factory() as db:
        job = db.get(Job, job_id)
        owner, spec_json, cancel, progress = job.owner_key_id, job.spec, job.cancel_requested, dict(job.progress)
    if cancel:
        finish(session_factory, claim, "cancelled", progress={**progress, "phase": "done"})
        return "cancelled"
    if claim.deliveries > settings.max_deliveries:
        finish(session_factory, claim, "failed", error=(
            f"the job was started {claim.deliveries} times and its worker was lost every time (killed, out of "
            f"memory, or crashed); it is not retried again. Try a smaller model or dataset."))
        return "failed"
    monitor = JobMonitor(session_factory, claim, settings.job_lease_seconds, settings.cancel_poll_seconds,
                         settings.max_job_seconds, shutdown)
    reporter = ProgressReporter(session_factory, claim, monitor, settings.progress_interval_seconds,
                                {**progress, "notes": []}, history=[])
    try:
        with monitor:
            return _run_claimed(claim, owner, JobSpec.model_validate(spec_json), session_factory, settings,
                                monitor, reporter)
    except LeaseLost:
        log.warning("job %s: lost its lease to another worker; this attempt stops", job_id)
        return None
    except (JobFailed, kanmodel.TrainingDiverged, DataError) as exc:
        return _fail(session_factory, claim, reporter, str(exc))
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        # The database went away (restart, failover): not the job's fault, so not a failure.
        log.warning("job %s: the database is unavailable (%s); handing the job back", job_id, type(exc).__name__)
        return _hand_back(session_factory, claim, reporter)
    except Exception as exc:
        log.exception("job %s failed", job_id)
        phase = reporter.progress.get("phase", "start")
        return _fail(session_factory, claim, reporter,
                     f"internal error during {phase}: {type(exc).__name__}: {exc}"[:2000])


def _hand_back(session_factory, claim: Claim, reporter: ProgressReporter) -> str | None:
    """Queued again, to resume from its last checkpoint; while the database is still away
    the lease lapses instead and the stale-job sweep re-queues it. "queued" or None."""
    reporter.note("the database was unavailable mid-job; the job was re-queued and resumes from its last checkpoint")
    try:
        release(session_factory, claim, progress={**reporter.progress, "phase": "queued"})
    except (LeaseLost, sa.exc.OperationalError, sa.exc.InterfaceError):
        return None
    return "queued"


def _fail(session_factory, claim: Claim, reporter: ProgressReporter, message: str) -> str | None:
    try:
        finish(session_factory, claim, "failed", error=message, progress={**reporter.progress, "phase": "done"})
    except LeaseLost:
        return None
    return "failed"


def _device(spec: JobSpec) -> torch.device:
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise JobFailed("the job asks for device 'cuda' but this worker has no CUDA device; run a worker with a "
                        "GPU on the 'gpu' queue, or submit with device 'auto' or 'cpu'")
    if spec.device == "cuda" or (spec.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _resume_point(session_factory, claim: Claim, reporter: ProgressReporter) -> Resume | None:
    """The newest readable checkpoint of this job (a corrupt one is skipped, with a note)."""
    for checkpoint in checkpoints_newest_first(session_factory, claim.job_id):
        try:
            model = kanmodel.from_bytes(checkpoint.blob)
        except kanmodel.CheckpointError as exc:
            reporter.note(f"checkpoint of stage {checkpoint.stage} is unreadable and was skipped: {exc}")
            continue
        return Resume(model, checkpoint.stage + 1, list(checkpoint.history))
    return None


def _run_claimed(claim: Claim, owner: str, spec: JobSpec, session_factory, settings: Settings,
                 monitor: JobMonitor, reporter: ProgressReporter) -> str:
    device = _device(spec)
    with session_factory() as db:
        data = load_training_data(db, owner, spec)
    resume = _resume_point(session_factory, claim, reporter)
    if spec.auto_architecture:
        trained = choose_architecture(claim, spec, data, device, session_factory, reporter, resume)
    else:
        trained = _train_given_width(claim, spec, data, device, session_factory, reporter, resume)
    stopped = _honour_stop(claim, session_factory, settings, monitor, reporter)
    if stopped:
        return stopped
    return _register(claim, owner, spec, data, trained, session_factory, settings, reporter)


def _train_given_width(claim: Claim, spec: JobSpec, data: TrainingData, device: torch.device, session_factory,
                       reporter: ProgressReporter, resume: Resume | None) -> Trained:
    """fit through the grid schedule, one checkpoint per stage, resuming after the last one."""
    if resume is None:
        model = kanmodel.KAN(width=spec.model.width, grid=spec.train.grid_schedule[0], k=spec.model.k,
                             seed=spec.model.seed, task=spec.task)
        start_stage = 0
    else:
        model, start_stage, reporter.history = resume.model, resume.start_stage, resume.history
        reporter.progress["resumed_from_stage"] = start_stage
        log.info("job %s: resuming at stage %d from its checkpoint", claim.job_id, start_stage)
    model = model.to(device)
    reporter.set_phase("training", checkpoints=start_stage, device=device.type)

    def on_stage_end(stage: int, trained: kanmodel.KAN) -> None:
        reporter.progress["checkpoints"] = stage + 1
        save_checkpoint(session_factory, claim, stage, spec.train.grid_schedule[stage],
                        kanmodel.to_bytes(trained.cpu() if device.type != "cpu" else trained),
                        reporter.stored_history(), dict(reporter.progress))
        if device.type != "cpu":
            trained.to(device)

    train = spec.train
    targets = data.y[:, 0] if spec.task == "classification" else data.y
    result = None
    if start_stage < len(train.grid_schedule):
        result = kanmodel.fit(
            model, data.X, targets, optimizer=train.optimizer, grid_schedule=train.grid_schedule,
            steps_per_grid=train.steps_per_grid, lr=train.resolved_lr, batch_size=train.batch_size,
            lamb=train.lamb, lamb_l1=train.lamb_l1, lamb_entropy=train.lamb_entropy,
            val_fraction=train.val_fraction, patience=train.patience, seed=train.seed,
            callback=reporter.on_step, on_stage_end=on_stage_end, start_stage=start_stage)
    final = reporter.history[-1] if reporter.history else {}
    return Trained(model.cpu(), result.train_loss if result else final.get("train_loss"),
                   result.val_loss if result else final.get("val_loss"), final.get("step"))


def _honour_stop(claim: Claim, session_factory, settings: Settings, monitor: JobMonitor,
                 reporter: ProgressReporter) -> str | None:
    """Ends the job if the monitor asked it to stop; returns the status it ended with."""
    if monitor.stop_reason == "lease_lost":
        raise LeaseLost(claim.job_id)
    if monitor.stop_reason == "cancelled":
        finish(session_factory, claim, "cancelled", progress={**reporter.progress, "phase": "done"})
        return "cancelled"
    if monitor.stop_reason == "shutdown":
        reporter.note("the worker shut down mid-job; the job was re-queued and resumes from its last checkpoint")
        release(session_factory, claim, progress={**reporter.progress, "phase": "queued"})
        return "queued"
    if monitor.stop_reason is not None:
        raise JobFailed(STOP_MESSAGES[monitor.stop_reason].format(max_seconds=settings.max_job_seconds))
    return None


def _register(claim: Claim, owner: str, spec: JobSpec, data: TrainingData, trained: Trained, session_factory,
              settings: Settings, reporter: ProgressReporter) -> str:
    builder = OutputBuilder(spec, data, lambda phase: reporter.set_phase(phase),
                            should_stop=lambda: reporter.monitor.should_stop, on_discovery=reporter.on_discovery)
    outputs = builder.build(trained.model)
    # A cancel or the time limit during formula search ends the job here, not with a model.
    stopped = _honour_stop(claim, session_factory, settings, reporter.monitor, reporter)
    if stopped:
        return stopped
    history = reporter.history
    model = outputs.model
    metrics = {
        "loss": "cross_entropy" if spec.task == "classification" else "rmse",
        "train_loss": finite_or_none(trained.train_loss), "val_loss": finite_or_none(trained.val_loss),
        "n_rows": int(len(data.X)), "grid": model.grid_size, "steps": trained.steps,
        "symbolic_mode": spec.symbolic_mode if spec.symbolic.enabled else None,
        "notes": outputs.notes,
    }
    if trained.architecture is not None:
        metrics["architecture"] = trained.architecture
    if outputs.discovery is not None:
        metrics["discovery"] = outputs.discovery
    reporter.set_phase("registering")
    earlier_notes = list(reporter.progress.get("notes", []))
    progress = {**reporter.progress, "phase": "done", "eta_seconds": 0}
    describe = dict(task=spec.task, width=list(model.width), input_names=data.input_names,
                    output_names=data.output_names, metrics=metrics)

    def artifacts_for(version: int):
        blobs = builder.artifacts(outputs, history, version)
        # Export and plot notes exist only now; the dicts are stored after this returns.
        metrics["notes"] = list(outputs.notes)
        progress["notes"] = earlier_notes + list(outputs.notes)
        return blobs

    register_model(session_factory, claim, owner, spec.name, describe, outputs.formula_rows(data.output_names),
                   artifacts_for, progress)
    return "succeeded"
