"""auto_fit(): a KAN for a table with no knobs, chosen by validation error.

The search is successive halving where a rung is one grid stage: every candidate
architecture trains its first (coarsest) grid, the better half by validation loss goes
on to the next grid, and so on. fit keeps each candidate's best-validation weights and
ends a candidate whose finer grid does not improve on its coarser one, so the grid
schedule itself is chosen along the way. All candidates see the same seeded split
(split_rows), so their validation losses compare like with like.

Validation loss is RMSE (regression) or cross-entropy (classification): smoother than
accuracy on small validation sets, where one row moves accuracy by several points.

The two best candidates then train on a second fold each and the one with the lower
mean validation loss over both folds wins. It trains once more on each other validation
fold (FitOptions.fold; 1 / val_fraction folds, at most MAX_MEMBERS models in all), each
with its own best-validation weights, and the members are merged into one KAN that
averages them (kanmodel.ensemble.merge): every row is trained on by most members, and
the average of models that saw different rows varies less than any one of them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from kanmodel.ensemble import merge
from kanmodel.model import KAN, TASKS
from kanmodel.training import FitOptions, TrainProgress, fit, split_rows, validation_metrics

# Seconds auto_fit may spend when the caller gives no time_budget. The tables of
# bench/tabular.py (178-1797 rows, 10-64 columns) finish search and members in 4-51 s
# on one shared CPU core, so the budget only binds on larger tables.
DEFAULT_TIME_BUDGET = 120.0
GRID_SCHEDULE = (3, 5, 10, 20)
STEPS_PER_GRID = 200
# Models averaged (the search's winner and one per further validation fold).
MAX_MEMBERS = 5
# Candidates compared on two folds before the winner trains its other folds.
FINALISTS = 2
# Uniform knots: on the hellokan benchmark they train to a lower test error than
# quantile knots (see docs/kanmodel-api.md, defaults), and they extrapolate the same
# way on every edge.
GRID_EPS = 1.0


@dataclass(frozen=True)
class Candidate:
    """One architecture of the search: hidden layer sizes (empty: an additive model,
    one spline per input and output), spline order k and grid sizes, the sparsity
    weight lamb, the L2 weight_decay and the optimizer."""

    hidden: tuple[int, ...]
    lamb: float = 0.0
    optimizer: str = "lbfgs"
    weight_decay: float = 0.0
    k: int = 3
    grids: tuple[int, ...] = GRID_SCHEDULE
    base: str = "silu"

    def width(self, n_in: int, n_out: int) -> list[int]:
        return [n_in, *self.hidden, n_out]


# Adam's settings for the candidates that use it: mini-batches are what regularise it.
ADAM = {"lr": 1e-2, "batch_size": 128}
# Linear splines on one interval and an identity base: every edge is a straight line
# (clamped outside the data's range), with an L2 penalty: the KAN counterpart of ridge /
# logistic regression, which small noisy tables favour. Measured alone through auto_fit
# (bench/tabular.py folds): diabetes R^2 0.489 (0.480 with the silu base), breast_cancer
# accuracy 0.981 (0.965 with silu).
LINEAR = Candidate((), weight_decay=1e-3, k=1, grids=(1,), base="identity")


def candidates_for(n_rows: int, n_in: int, task: str) -> list[Candidate]:
    """The architectures tried: from (almost) linear and additive (the right size for
    small noisy tables) to one hidden layer wide enough for interactions.
    Classification adds penalised runs: unpenalised LBFGS drives the training
    cross-entropy to 0 within a few dozen steps on the usual small tables, before the
    validation loss has settled (digits, one fold: 0.94-0.95 accuracy unpenalised,
    0.96-0.97 with weight_decay 1e-4 or Adam with lamb 1e-3 at [64, 32, 10])."""
    del n_rows, n_in
    if task == "classification":
        return [LINEAR, Candidate((), weight_decay=1e-3), Candidate((32,), weight_decay=1e-4),
                Candidate((8,), 1e-3, "adam"), Candidate((32,), 1e-3, "adam")]
    return [LINEAR, Candidate(()), Candidate((2,)), Candidate((5,)), Candidate((10,)),
            Candidate((5,), lamb=1e-3)]


@dataclass
class AutoFitResult:
    """model: the trained KAN (raw inputs -> raw outputs / logits): the members' average
    merged into one network (its width is the members' hidden widths times members).
    config: the chosen architecture and training (JSON-able): member width, grid
    schedule, grid, lamb, optimizer, steps, members (how many were averaged).
    candidates: every candidate's config, validation loss and score on fold 0, grids
    trained, seconds, and fold_val_losses (the finalists' and members' per fold).
    metrics: val_* (validation_metrics) out of fold: every member scored on the rows it
    did not train on, pooled; train_* of the merged model on all rows; train_loss and
    val_loss: the RMSE (raw units) or cross-entropy among them, as fit reports losses.
    history: the search winner's fit history. stopped: should_stop or the time budget
    ended training early (the best models trained so far are used)."""

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
    members: list["_Member"] = field(default_factory=list)

    def config(self) -> dict:
        schedule = list(self.options.grid_schedule)
        grid = self.model.grid_size
        kept = schedule[:schedule.index(grid) + 1] if grid in schedule else schedule[:1]
        options = self.options
        return {"width": list(self.model.width), "grid_schedule": kept, "grid": self.model.grid_size,
                "k": self.model.k, "base": self.model.base, "grid_eps": self.model.grid_eps,
                "lamb": options.lamb,
                "weight_decay": options.weight_decay, "optimizer": options.optimizer,
                "lr": options.resolved_lr, "batch_size": options.batch_size,
                "steps_per_grid": options.steps_per_grid, "patience": options.resolved_patience,
                "val_fraction": options.val_fraction, "seed": options.seed}


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
        if labels.dtype.kind == "f" and not (np.isfinite(labels).all()
                                             and (labels == np.round(labels)).all()):
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
    time_budget: seconds (None: DEFAULT_TIME_BUDGET); when it runs out the best models
    trained so far are used. progress(event) receives dicts with "phase": "auto_fit":
    one per candidate and rung {"candidate", "rung", "config", "val_loss", "val_score"}
    (val_score: validation R^2 or accuracy), one per further member {"member", "fold",
    "val_loss", "val_score"}, and a last {"chosen", "config", "metrics"}.
    should_stop() returning True ends training like the budget does.
    """
    X, y, n_out = _check_data(X, y, task)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1) for auto_fit, got {val_fraction}")
    budget = DEFAULT_TIME_BUDGET if time_budget is None else float(time_budget)
    if not budget > 0:
        raise ValueError(f"time_budget must be > 0 seconds, got {time_budget}")
    n_rows, n_in = X.shape
    if n_rows - round(n_rows * val_fraction) < 2 or round(n_rows * val_fraction) < 1:
        raise ValueError(f"X has {n_rows} rows: too few to hold out val_fraction={val_fraction} and train")
    report = progress or (lambda event: None)
    deadline = time.monotonic() + budget
    stopped = False

    def out_of_time(_: TrainProgress | None = None) -> bool:
        nonlocal stopped
        if time.monotonic() > deadline or (should_stop is not None and should_stop()):
            stopped = True
        return stopped

    X_t = torch.as_tensor(X, dtype=torch.float32, device=device)
    y_t = torch.as_tensor(y, device=device, dtype=torch.long if task == "classification" else torch.float32)
    data = _Data(X_t, y_t, val_fraction, seed)
    trials = [_Trial(index, candidate, KAN(candidate.width(n_in, n_out), grid=candidate.grids[0],
                                           k=candidate.k, grid_eps=GRID_EPS, base=candidate.base, seed=seed,
                                           task=task).to(device),
                     _options(candidate, val_fraction, seed, fold=0))
              for index, candidate in enumerate(candidates_for(n_rows, n_in, task))]
    _successive_halving(trials, data, out_of_time, report)
    n_folds = min(MAX_MEMBERS, max(1, int(round(1 / val_fraction))))

    def train_member(trial: _Trial, fold: int) -> _Member | None:
        member = _train_member(trial.candidate, n_in, n_out, task, data, seed, fold, device, out_of_time)
        if member is not None:
            trial.members.append(member)
            report({"phase": "auto_fit", "candidate": trial.index, "member": len(trial.members) - 1,
                    "fold": fold, "val_loss": _finite(member.val_loss),
                    "val_score": data.score(member.model, fold)})
        return member

    # One fold's validation loss is a noisy ranking on small tables: the two best
    # candidates are compared on the mean over two folds.
    finalists = sorted(trials, key=lambda t: (t.val_loss, t.index))[:FINALISTS]
    for trial in finalists:
        trial.members = [_Member(trial.model, 0, trial.val_loss)]
        if n_folds > 1 and len(finalists) > 1 and not out_of_time():
            train_member(trial, 1)
    best = min(finalists, key=lambda t: (_mean_val_loss(t), t.index))
    for fold in range(len(best.members), n_folds):
        if out_of_time():
            break
        train_member(best, fold)
    members = best.members

    model = merge([m.model for m in members], X_t)
    schedule = list(best.candidate.grids)
    config = {**best.config(), "members": len(members), "served_width": list(model.width),
              "grid": model.grid_size, "grid_schedule": schedule[:schedule.index(model.grid_size) + 1]
              if model.grid_size in schedule else schedule}
    metrics = {**validation_metrics(model, X_t, y_t, prefix="train_"), **data.out_of_fold(members)}
    # The losses fit reports (RMSE in raw units or cross-entropy), under fit's names.
    loss = "log_loss" if task == "classification" else "rmse"
    metrics["train_loss"], metrics["val_loss"] = metrics[f"train_{loss}"], metrics[f"val_{loss}"]
    report({"phase": "auto_fit", "chosen": best.index, "config": config, "metrics": metrics})
    candidates = [{"candidate": t.index, "config": t.config(), "val_loss": _finite(t.val_loss),
                   "val_score": data.score(t.model, 0) if t.stages_done else None,
                   "grids_trained": t.stages_done, "seconds": round(t.seconds, 3),
                   "fold_val_losses": [_finite(m.val_loss) for m in t.members]} for t in trials]
    return AutoFitResult(model, config, candidates, metrics, best.history, stopped)


def _mean_val_loss(trial: _Trial) -> float:
    """Mean validation loss of the trial's models trained so far (one per fold)."""
    losses = [m.val_loss for m in trial.members]
    return sum(losses) / len(losses) if all(math.isfinite(v) for v in losses) else math.inf


def _options(candidate: Candidate, val_fraction: float, seed: int, fold: int) -> FitOptions:
    return FitOptions(grid_schedule=list(candidate.grids), steps_per_grid=STEPS_PER_GRID,
                      lamb=candidate.lamb, weight_decay=candidate.weight_decay,
                      val_fraction=val_fraction, seed=seed, fold=fold,
                      grid_inputs="all", optimizer=candidate.optimizer,
                      **(ADAM if candidate.optimizer == "adam" else {}))


def _successive_halving(trials: list[_Trial], data: "_Data", out_of_time, report) -> None:
    for rung in range(max(len(t.candidate.grids) for t in trials)):
        for trial in [t for t in trials if not t.finished]:
            _train_one_more_grid(trial, data, out_of_time)
            report({"phase": "auto_fit", "candidate": trial.index, "rung": rung, "config": trial.config(),
                    "val_loss": _finite(trial.val_loss), "val_score": data.score(trial.model, 0)})
            if out_of_time():
                return
        # The better half (rounded up) trains the next grid.
        ranked = sorted((t for t in trials if not t.finished), key=lambda t: t.val_loss)
        for trial in ranked[math.ceil(len(ranked) / 2):]:
            trial.finished = True


def _train_one_more_grid(trial: _Trial, data: "_Data", callback) -> None:
    """One rung: fit the trial's next grid stage, resuming from its best weights."""
    started = time.monotonic()
    stage = trial.stages_done
    options = replace(trial.options, grid_schedule=trial.options.grid_schedule[:stage + 1])
    result = fit(trial.model, data.X, data.y, options, callback=callback, start_stage=stage)
    trial.seconds += time.monotonic() - started
    trial.history += result.history
    if result.val_loss is not None and result.val_loss < trial.val_loss:
        trial.val_loss = result.val_loss
    trial.stages_done = result.stages_completed
    if result.early_stopped or trial.stages_done >= len(trial.options.grid_schedule):
        trial.finished = True


@dataclass
class _Member:
    """A model of the average and the validation fold it did not train on."""

    model: KAN
    fold: int
    val_loss: float = math.nan


def _train_member(candidate: Candidate, n_in: int, n_out: int, task: str, data: "_Data", seed: int,
                  fold: int, device, callback) -> _Member | None:
    """The chosen architecture on another fold (its own initial weights); None if the
    budget ended it before one stage was complete."""
    model = KAN(candidate.width(n_in, n_out), grid=candidate.grids[0], k=candidate.k, grid_eps=GRID_EPS,
                base=candidate.base, seed=seed + fold, task=task).to(device)
    result = fit(model, data.X, data.y, _options(candidate, data.val_fraction, seed, fold), callback=callback)
    if result.stages_completed == 0:
        return None
    return _Member(model, fold, result.val_loss)


class _Data:
    """The table as tensors and its seeded validation folds."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int):
        self.X, self.y, self.val_fraction, self.seed = X, y, val_fraction, seed

    def val_rows(self, fold: int) -> torch.Tensor:
        rows = split_rows(len(self.X), self.val_fraction, self.seed, fold)[1]
        return torch.from_numpy(rows).to(self.X.device)

    def score(self, model: KAN, fold: int) -> float | None:
        """Validation R^2 (regression) or accuracy (classification) on fold's rows."""
        rows = self.val_rows(fold)
        metrics = validation_metrics(model, self.X[rows], self.y[rows])
        return metrics.get("val_accuracy", metrics.get("val_r2"))

    def out_of_fold(self, members: list[_Member]) -> dict:
        """val_* metrics of every member on its own validation rows, pooled."""
        rows = torch.cat([self.val_rows(m.fold) for m in members])
        with torch.no_grad():
            predictions = torch.cat([m.model(self.X[self.val_rows(m.fold)]) for m in members])
        classification = members[0].model.task == "classification"
        return _pooled_metrics(predictions, self.y[rows], classification)


def _pooled_metrics(output: torch.Tensor, target: torch.Tensor, classification: bool) -> dict:
    if classification:
        return {"val_accuracy": float((output.argmax(1) == target).double().mean()),
                "val_log_loss": float(torch.nn.functional.cross_entropy(output.double(), target))}
    target = target.reshape(len(target), -1).to(output.dtype)
    residual = ((output - target).double() ** 2).sum(0)
    spread = ((target - target.mean(0)).double() ** 2).sum(0)
    r2 = float((1 - residual / spread).mean()) if bool((spread > 0).all()) else None
    return {"val_rmse": float((residual.sum() / target.numel()).sqrt()), "val_r2": r2}


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
