"""A job with no width: ``kanmodel.auto_fit`` chooses the architecture by validation error.

The search is one library call, so there are no per-stage checkpoints: the chosen model
is checkpointed once (stage 0) with the search's record in the job's progress, and a job
resumed after a crash registers that model instead of searching again.
"""
from __future__ import annotations

import logging

import torch

import kanmodel
from service.schemas.jobspec import JobSpec
from workers.checkpoints import save_checkpoint
from workers.claim import Claim
from workers.progress import ProgressReporter, json_ready
from workers.trained import Resume, Trained
from workers.training_data import TrainingData

log = logging.getLogger(__name__)


def choose_architecture(claim: Claim, spec: JobSpec, data: TrainingData, device: torch.device, session_factory,
                        reporter: ProgressReporter, resume: Resume | None) -> Trained | None:
    """The chosen, trained network; None when the job was asked to stop during the search."""
    record = (reporter.progress.get("architecture") or {}).get("result")
    if resume is not None and record is not None:
        log.info("job %s: resuming with the architecture chosen before the restart", claim.job_id)
        reporter.progress["resumed_from_stage"] = resume.start_stage
        reporter.history = resume.history
        return _trained(resume.model, record)
    reporter.set_phase("architecture", architecture={"candidates_scored": 0}, device=device.type)
    train = spec.train
    targets = data.y[:, 0] if spec.task == "classification" else data.y

    def stop() -> bool:
        return reporter.monitor.should_stop

    try:
        result = kanmodel.auto_fit(data.X, targets, task=spec.task, val_fraction=train.val_fraction,
                                   seed=train.seed, time_budget=train.time_budget_seconds,
                                   progress=reporter.on_candidate, should_stop=stop, device=device.type)
    except kanmodel.TrainingDiverged as exc:
        if stop():
            return None
        # The spec has no lr or optimizer to change here: say what the user can do instead.
        raise kanmodel.TrainingDiverged(
            f"the automatic architecture search failed: {exc} Give model.width (and train options) to "
            "choose the network yourself.") from exc
    except Exception:
        if stop():  # the search gave up because the job is stopping; the caller says how it ends
            return None
        raise
    if stop():
        return None
    model = result.model.cpu()
    record = json_ready({"config": result.config, "candidates": result.candidates, "metrics": result.metrics,
                         "stopped": result.stopped})
    # Stored with the checkpoint: a resumed job registers this model with this record.
    reporter.progress["architecture"] = {**(reporter.progress.get("architecture") or {}), "result": record}
    reporter.progress["checkpoints"] = 1
    reporter.history = list(result.history)
    save_checkpoint(session_factory, claim, 0, model.grid_size, kanmodel.to_bytes(model),
                    reporter.stored_history(), dict(reporter.progress))
    return _trained(model, record)


def _trained(model: kanmodel.KAN, record: dict) -> Trained:
    """metrics: what auto_fit measured out of fold (val_loss: RMSE in the target's own
    units, or cross-entropy for classification; val_r2 or val_accuracy beside it)."""
    metrics = record.get("metrics") or {}
    config = record.get("config") or {}
    return Trained(model, metrics.get("train_loss"), metrics.get("val_loss"), None,
                   architecture={"chosen": config, "candidates": record.get("candidates"),
                                 "validation": metrics, "stopped_early": record.get("stopped")})
