"""auto_fit(): a KAN for a table with no knobs, chosen by validation error.

The search is successive halving where a rung is one grid stage: every candidate
architecture trains its first (coarsest) grid, the better half by validation loss goes
on to the next grid, and so on. fit keeps each candidate's best-validation weights and
ends a candidate whose finer grid does not improve on its coarser one, so the grid
schedule itself is chosen along the way. All candidates see the same seeded split
(split_rows), so their validation losses compare like with like.

Validation loss is RMSE (regression) or cross-entropy (classification): smoother than
accuracy on small validation sets, where one row moves accuracy by several points.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from kanmodel.model import KAN, TASKS
from kanmodel.training import FitOptions, TrainProgress, fit, split_rows, validation_metrics

# Seconds auto_fit may spend when the caller gives no time_budget. Five small tables
# (178-1797 rows, 4-64 columns) finish their search well inside it on one CPU core.
DEFAULT_TIME_BUDGET = 120.0
GRID_SCHEDULE = (3, 5, 10, 20)
STEPS_PER_GRID = 200
# Uniform knots: on the hellokan benchmark they train to a lower test error than
# quantile knots (see docs/kanmodel-api.md, defaults), and they extrapolate the same
# way on every edge.
GRID_EPS = 1.0


@dataclass(frozen=True)
class Candidate:
    """One architecture of the search: hidden layer sizes (empty: an additive model,
    one spline per input and output) and the sparsity weight lamb."""

    hidden: tuple[int, ...]
    lamb: float = 0.0

    def width(self, n_in: int, n_out: int) -> list[int]:
        return [n_in, *self.hidden, n_out]


def candidates_for(n_rows: int, n_in: int, task: str) -> list[Candidate]:
    """The architectures tried: from additive (a generalised additive model, the right
    size for small noisy tables) to one hidden layer wide enough for interactions."""
    del n_rows, n_in, task
    return [Candidate(()), Candidate((2,)), Candidate((5,)), Candidate((10,)),
            Candidate((5,), lamb=1e-3)]


@dataclass
class AutoFitResult:
    """model: the chosen KAN, trained (raw inputs -> raw outputs / logits).
    config: the chosen width, grid schedule, lamb, optimizer, steps (JSON-able).
    candidates: every candidate's config, validation loss and score, rungs trained.
    metrics: the chosen model's train_/val_ metrics (validation_metrics) and val_loss.
    history: the chosen model's fit history. stopped: should_stop or the time budget
    ended the search early (the best model trained so far is returned)."""

    model: KAN
    config: dict
    candidates: list[dict]
    metrics: dict
    history: list[dict] = field(default_factory=list)
    stopped: bool = False


@dataclass
class _Trial:
    """A candidate during the search: its model and how far it got."""

    index: int
    candidate: Candidate
    model: KAN
    options: FitOptions
    stages_done: int = 0
    val_loss: float = math.inf
    finished: bool = False
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def config(self) -> dict:
        schedule = list(self.options.grid_schedule)
        kept = schedule[:schedule.index(self.model.grid_size) + 1] if self.model.grid_size in schedule else schedule[:1]
        return {"width": list(self.model.width), "grid_schedule": kept, "grid": self.model.grid_size,
                "k": self.model.k, "grid_eps": self.model.grid_eps, "lamb": self.options.lamb, "optimizer": self.options.optimizer,
                "steps_per_grid": self.options.steps_per_grid, "val_fraction": self.options.val_fraction,
                "seed": self.options.seed}


def _check_data(X, y, task: str) -> tuple[np.ndarray, np.ndarray, int]:
    """-> X (n, in) float, y ((n, out) float or (n,) int labels), n_out."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or len(X) == 0 or X.shape[1] == 0:
        raise ValueError(f"X must be a non-empty (rows, columns) table, got shape {X.shape}")
    if len(y) != len(X):
        raise ValueError(f"y has {len(y)} rows but X has {len(X)}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values")
    if task == "classification":
        labels = y.reshape(-1)
        if labels.dtype.kind == "f" and not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
            raise ValueError("classification: y must hold integer class labels 0, 1, ...")
        if labels.dtype.kind not in "iuf" or labels.min() < 0:
            raise ValueError("classification: y must hold integer class labels 0, 1, ...")
        labels = labels.astype(np.int64)
        return X, labels, max(2, int(labels.max()) + 1)
    y = y.astype(np.float64).reshape(len(X), -1)
    if not np.isfinite(y).all():
        raise ValueError("y contains NaN or infinite values")
    return X, y, y.shape[1]


def auto_fit(X, y, task: str = "regression", *, val_fraction: float = 0.2, seed: int = 0,
             time_budget: float | None = None, progress: Callable[[dict], None] | None = None,
             should_stop: Callable[[], bool] | None = None, device="cpu") -> AutoFitResult:
    """Choose and train a KAN for raw X (n, in) and y by validation error.

    y: regression (n,) or (n, out) floats; classification (n,) integer labels 0..C-1.
    time_budget: seconds (None: DEFAULT_TIME_BUDGET); when it runs out the best model
    trained so far is returned. progress(event) receives one dict per candidate and
    rung: {"phase": "auto_fit", "candidate", "rung", "config", "val_loss", "val_score"}
    (val_score: R^2 or accuracy), and a last {"phase": "auto_fit", "chosen": index}.
    should_stop() returning True ends the search like the budget does.
    """
    X, y, n_out = _check_data(X, y, task)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1) for auto_fit, got {val_fraction}")
    budget = DEFAULT_TIME_BUDGET if time_budget is None else float(time_budget)
    if not budget > 0:
        raise ValueError(f"time_budget must be > 0 seconds, got {time_budget}")
    deadline = time.monotonic() + budget
    dtype = torch.float32
    X_t = torch.as_tensor(X, dtype=dtype, device=device)
    y_t = torch.as_tensor(y, device=device) if task == "classification" else torch.as_tensor(y, dtype=dtype, device=device)
    n_rows, n_in = X.shape
    if n_rows - round(n_rows * val_fraction) < 2 or round(n_rows * val_fraction) < 1:
        raise ValueError(f"X has {n_rows} rows: too few to hold out val_fraction={val_fraction} and train")

    trials = []
    for index, candidate in enumerate(candidates_for(n_rows, n_in, task)):
        model = KAN(candidate.width(n_in, n_out), grid=GRID_SCHEDULE[0], grid_eps=GRID_EPS,
                    seed=seed, task=task).to(device)
        options = FitOptions(grid_schedule=list(GRID_SCHEDULE), steps_per_grid=STEPS_PER_GRID,
                             lamb=candidate.lamb, val_fraction=val_fraction, seed=seed)
        trials.append(_Trial(index, candidate, model, options))

    train_rows, val_rows = (torch.from_numpy(rows).to(device) for rows in split_rows(n_rows, val_fraction, seed))
    scored = _Scorer(X_t, y_t, train_rows, val_rows)
    stopped = False

    def out_of_time(_: TrainProgress) -> bool:
        nonlocal stopped
        if time.monotonic() > deadline or (should_stop is not None and should_stop()):
            stopped = True
        return stopped

    for rung in range(len(GRID_SCHEDULE)):
        for trial in [t for t in trials if not t.finished]:
            _train_one_more_grid(trial, X_t, y_t, out_of_time)
            if progress is not None:
                progress({"phase": "auto_fit", "candidate": trial.index, "rung": rung,
                          "config": trial.config(), "val_loss": _finite(trial.val_loss),
                          "val_score": scored.score(trial.model)})
            if stopped:
                break
        if stopped:
            break
        # Successive halving: the better half (rounded up) trains the next grid.
        ranked = sorted((t for t in trials if not t.finished), key=lambda t: t.val_loss)
        for trial in ranked[math.ceil(len(ranked) / 2):]:
            trial.finished = True

    best = min(trials, key=lambda t: (t.val_loss, t.index))
    metrics = {**scored.metrics(best.model), "val_loss": _finite(best.val_loss)}
    if progress is not None:
        progress({"phase": "auto_fit", "chosen": best.index, "config": best.config(),
                  "val_loss": _finite(best.val_loss), "val_score": scored.score(best.model)})
    candidates = [{"candidate": t.index, "config": t.config(), "val_loss": _finite(t.val_loss),
                   "val_score": scored.score(t.model) if t.stages_done else None,
                   "grids_trained": t.stages_done, "seconds": round(t.seconds, 3)} for t in trials]
    return AutoFitResult(best.model, best.config(), candidates, metrics, best.history, stopped)


def _train_one_more_grid(trial: _Trial, X: torch.Tensor, y: torch.Tensor, callback) -> None:
    """One rung: fit the trial's next grid stage, resuming from its best weights."""
    started = time.monotonic()
    stage = trial.stages_done
    options = replace(trial.options, grid_schedule=trial.options.grid_schedule[:stage + 1])
    result = fit(trial.model, X, y, options, callback=callback, start_stage=stage)
    trial.seconds += time.monotonic() - started
    trial.history += result.history
    if result.val_loss is not None and result.val_loss < trial.val_loss:
        trial.val_loss = result.val_loss
    trial.stages_done = result.stages_completed
    if result.early_stopped or trial.stages_done >= len(trial.options.grid_schedule):
        trial.finished = True


class _Scorer:
    """Scores models on the search's fixed split."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, train_rows: torch.Tensor, val_rows: torch.Tensor):
        self.X, self.y, self.train_rows, self.val_rows = X, y, train_rows, val_rows

    def metrics(self, model: KAN) -> dict:
        return {**validation_metrics(model, self.X[self.train_rows], self.y[self.train_rows], prefix="train_"),
                **validation_metrics(model, self.X[self.val_rows], self.y[self.val_rows])}

    def score(self, model: KAN) -> float | None:
        """Validation R^2 (regression) or accuracy (classification)."""
        metrics = validation_metrics(model, self.X[self.val_rows], self.y[self.val_rows])
        return metrics.get("val_accuracy", metrics.get("val_r2"))


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
