"""fit(): train a KAN through a grid schedule with LBFGS or Adam, keeping the weights
with the best validation loss.

One run is stages (one per grid size) of optimizer steps. With a validation split,
every step is scored on the held-out rows and the best weights seen so far (across
stages, knots included) are what the run returns: a stage that does not beat the best
of the stages before it is undone and ends the run (a finer grid that fits the
training rows better but the held-out rows worse is overfitting), and a stage ends
early after `patience` steps without a new best of its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from kanmodel.lbfgs import LBFGS
from kanmodel.model import KAN, as_tensor
from kanmodel.regularization import sparsity_penalty

OPTIMIZERS = ("lbfgs", "adam")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 1e-2}
# Hidden activations drift out of the next layer's grid while training; re-placing
# the grid every few steps in the first half of each stage keeps them inside. Each
# update perturbs the function a little and restarts LBFGS, so not too often
# (hellokan, grid_eps=1, [3, 5, 10, 20] x 400 steps: test RMSE 6.2e-4 updating every
# 50 steps, 1.0e-3 every 10; updating only at stage starts left it near 5e-3, test
# inputs falling outside the drifted grids).
GRID_UPDATE_EVERY = 50
# A longer curvature memory than torch's default 10 pays on KANs (same hellokan run:
# history 10 ends at 2.0e-3, 20 at 1.5e-3, 50 reaches 1e-3).
LBFGS_HISTORY = 50
# Steps without a new best validation loss that end a stage when the caller gives no
# patience. A grid update (every GRID_UPDATE_EVERY steps) can set the validation loss
# back for a few steps before it pays, so the patience outlasts one update interval.
DEFAULT_PATIENCE = 60
# A training cross-entropy this small means every training row is classified with
# certainty: nothing is left to learn, and on separable data the next LBFGS steps
# would only scale the logits towards infinity.
CONVERGED_CROSS_ENTROPY = 1e-7
# Relative to the targets' spread: a regression fit this exact has nothing left to learn.
CONVERGED_RELATIVE_RMSE = 1e-7
# A training loss this many times the larger of the run's first loss and the loss of
# a constant prediction (the targets' spread; log(classes)) is divergence, not noise.
EXPLOSION_FACTOR = 1e4


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite or exploded; the message says where and what to try."""


@dataclass
class TrainProgress:
    """Passed to fit's callback after every optimizer step.

    step counts within the whole run (1-based); total_steps = stages x steps_per_grid.
    Losses: regression = RMSE in raw target units; classification = cross-entropy.
    val_loss is None without a validation split.
    """

    stage: int
    n_stages: int
    grid: int
    step: int
    total_steps: int
    train_loss: float
    val_loss: float | None


@dataclass
class FitResult:
    """history: one {stage, grid, step, train_loss, val_loss} per step.
    train_loss/val_loss: of the returned weights (the best-validation ones).
    best_step/best_grid: where those weights were reached (None without validation).
    early_stopped: a stage did not improve the validation loss and the run ended there.
    diverged: the TrainingDiverged message of a stage that blew up after a best
    validation state existed (the run then ended there with those best weights).
    metrics: validation_metrics of the returned weights on the training rows (train_*)
    and on the validation rows (val_*)."""

    history: list[dict] = field(default_factory=list)
    stopped: bool = False
    stages_completed: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    best_step: int | None = None
    best_grid: int | None = None
    early_stopped: bool = False
    diverged: str | None = None
    metrics: dict = field(default_factory=dict)


@dataclass
class FitOptions:
    """Everything fit can be told besides the model, the data and the hooks.

    grid_schedule: grid sizes of the stages (None: the model's current grid).
    lr: None means DEFAULT_LR[optimizer]. batch_size: Adam mini-batch rows (None: all).
    lamb * (lamb_l1 * L1 + lamb_entropy * entropy) of the edge activations is added to
    the loss, ramped from 0 over the first lamb_warmup fraction of all steps.
    val_fraction: share of rows held out (split_rows(n, val_fraction, seed)).
    patience: steps without a new best validation loss in a stage that end the stage
    (None: DEFAULT_PATIENCE; 0: never end a stage early).
    """

    optimizer: str = "lbfgs"
    grid_schedule: list[int] | None = None
    # hellokan ([2, 5, 1], [3, 5, 10, 20], 2000 rows, 20% validation): test RMSE
    # 0.6-1.8e-3 over seeds 0-2 with 200 steps per grid, 0.3-0.6e-3 with 400.
    steps_per_grid: int = 400
    lr: float | None = None
    batch_size: int | None = None
    lamb: float = 0.0
    lamb_l1: float = 1.0
    lamb_entropy: float = 2.0
    lamb_warmup: float = 0.0
    # weight_decay * (sum of squared weights and coefficients, biases excluded) is added
    # to the loss: an L2 penalty, which keeps a separable classification's optimum finite.
    weight_decay: float = 0.0
    val_fraction: float = 0.2
    patience: int | None = None
    seed: int = 0
    # Which validation fold of the seeded permutation is held out (split_rows).
    fold: int = 0
    # "all": the input standardisation and the grids are placed on every row's inputs
    # (never its targets), so models trained on different folds share their first
    # layer's knots and can be merged into one network (kanmodel.ensemble).
    grid_inputs: str = "train"

    @property
    def resolved_lr(self) -> float:
        return self.lr or DEFAULT_LR[self.optimizer]

    @property
    def resolved_patience(self) -> int | None:
        if self.patience is None:
            return DEFAULT_PATIENCE
        return self.patience or None

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not self.grid_schedule or any(int(g) < 1 for g in self.grid_schedule):
            raise ValueError(f"grid_schedule must be a non-empty list of positive ints, got {self.grid_schedule}")
        if self.steps_per_grid < 1:
            raise ValueError(f"steps_per_grid must be >= 1, got {self.steps_per_grid}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.lamb < 0 or not 0 <= self.lamb_warmup <= 1:
            raise ValueError(f"need lamb >= 0 and 0 <= lamb_warmup <= 1, got {self.lamb}, {self.lamb_warmup}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.grid_inputs not in ("train", "all"):
            raise ValueError(f"grid_inputs must be 'train' or 'all', got {self.grid_inputs!r}")
        if self.fold < 0 or (self.fold > 0 and self.fold * self.val_fraction >= 1):
            raise ValueError(f"fold must be >= 0 with fold * val_fraction < 1, got fold={self.fold}, "
                             f"val_fraction={self.val_fraction}")
        if self.patience is not None and self.patience < 0:
            raise ValueError(f"patience must be >= 0 (0: no early stopping), got {self.patience}")

    def lamb_at(self, step: int, total_steps: int) -> float:
        """The regularisation weight at 1-based step of total_steps (linear warm-up)."""
        warmup_steps = self.lamb_warmup * total_steps
        return self.lamb * (min(1.0, (step - 1) / warmup_steps) if warmup_steps > 0 else 1.0)


OPTION_NAMES = frozenset(f.name for f in fields(FitOptions))


def split_rows(n_rows: int, val_fraction: float, seed: int, fold: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train_rows, val_rows) int64 index arrays: the seeded split fit makes.
    n_val = round(n_rows * val_fraction) rows of a seeded permutation are held out:
    positions [fold * n_val, (fold + 1) * n_val) (fold 0: the first n_val)."""
    order = torch.randperm(int(n_rows), generator=torch.Generator().manual_seed(int(seed))).numpy()
    n_val = int(round(n_rows * val_fraction))
    start = min(int(fold) * n_val, n_rows - n_val)
    val = order[start:start + n_val]
    return np.concatenate([order[:start], order[start + n_val:]]), val


@dataclass
class _Data:
    """Raw inputs x (n, in), standardised inputs z (n, in) and targets (regression:
    standardised (n, out); classification: class indices (n,))."""

    x: torch.Tensor
    z: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return len(self.z)

    def rows(self, index: torch.Tensor) -> "_Data":
        return _Data(self.x[index], self.z[index], self.target[index])


class _Objective:
    """Data loss (+ sparsity penalty) in standardised space, and the loss users read."""

    def __init__(self, model: KAN, lamb_l1: float, lamb_entropy: float, weight_decay: float = 0.0):
        self.model, self.lamb_l1, self.lamb_entropy = model, lamb_l1, lamb_entropy
        self.weight_decay = weight_decay
        self.classification = model.task == "classification"

    def penalty(self) -> torch.Tensor:
        """Sum of squared coefficients and edge weights over all layers."""
        return sum((layer.coef ** 2).sum() + (layer.base_weight ** 2).sum() + (layer.spline_weight ** 2).sum()
                   for layer in self.model.layers)

    def forward(self, data: _Data, lamb: float) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (objective to minimise, reported loss (detached))."""
        if lamb > 0:
            layers = self.model.activations(data.x)
            output = layers[-1][1].sum(-1) + self.model.layers[-1].bias
        else:
            output = self.model.forward_standardised(data.z)
        data_loss, reported = self.data_loss(output, data.target)
        if lamb > 0:
            edges = [acts for _, acts in layers]
            data_loss = data_loss + lamb * sparsity_penalty(edges, self.lamb_l1, self.lamb_entropy)
        if self.weight_decay > 0:
            data_loss = data_loss + self.weight_decay * self.penalty()
        return data_loss, reported

    def data_loss(self, output: torch.Tensor, target: torch.Tensor):
        if self.classification:
            loss = F.cross_entropy(output, target)
            return loss, loss.detach()
        diff = output - target
        loss = (diff * diff).mean()
        rmse_raw = torch.sqrt(((diff.detach() * self.model.out_scale) ** 2).mean())
        return loss, rmse_raw

    @torch.no_grad()
    def evaluate(self, data: _Data) -> float:
        return float(self.data_loss(self.model.forward_standardised(data.z), data.target)[1])

    def converged(self, train_loss: float) -> bool:
        """Nothing left to learn on the training rows."""
        if self.classification:
            return train_loss < CONVERGED_CROSS_ENTROPY
        return train_loss < CONVERGED_RELATIVE_RMSE * float(self.model.out_scale.mean())


class _LBFGSObjective:
    """The objective as one LBFGS run (from one optimizer start to the next) sees it.

    Scaled by 1 / its value at the run's first evaluation: LBFGS (torch's, and
    kanmodel.lbfgs, which follows it) has absolute thresholds (a curvature pair is
    kept only if y.s > 1e-10), which an MSE of ~1e-7 in standardised units, reached
    on the finer grids, never passes; LBFGS then falls back to steepest descent and
    stalls (measured on hellokan: the grid-20 stage froze at 9.5e-4 RMSE). Scaling
    by a constant moves no minimum.

    Remembers its last evaluation: LBFGS starts every step() by evaluating
    the closure at the current parameters, which its line search evaluated at the
    end of the previous step already (it re-applies the same update, so the
    parameters are bit-identical). With one iteration per step that is every second
    evaluation; answering it from memory halves the cost of an LBFGS step.
    """

    def __init__(self, objective: _Objective, data: _Data, params: list[torch.Tensor]):
        self.objective, self.data, self.params = objective, data, params
        self.scale = None
        self.last_params = None

    def __call__(self, lamb: float) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (scaled objective (detached), reported loss); leaves the gradients of
        the scaled objective in the parameters' .grad."""
        if self.last_params is not None and lamb == self.last_lamb and all(
                torch.equal(p, saved) for p, saved in zip(self.params, self.last_params)):
            for p, grad in zip(self.params, self.last_grads):
                p.grad = grad.clone()
            return self.last_value, self.last_reported
        for p in self.params:
            p.grad = None
        loss, reported = self.objective.forward(self.data, lamb)
        if self.scale is None:
            value = float(loss.detach())
            # A run that starts at an exact fit (loss 0) has nothing to scale.
            self.scale = 1.0 / value if value > 0 else 1.0
        loss = loss * self.scale
        loss.backward()
        self.last_params = [p.detach().clone() for p in self.params]
        self.last_grads = [p.grad.clone() for p in self.params]
        self.last_lamb, self.last_value, self.last_reported = lamb, loss.detach(), reported
        return self.last_value, reported


class _LBFGSStepper:
    """Full-batch LBFGS, one iteration per step; restart() after the knots change
    (its curvature pairs describe the old knots: keeping them ends hellokan at
    1.4e-3 instead of 6.2e-4)."""

    def __init__(self, model: KAN, objective: _Objective, train: _Data, lr: float):
        self.model, self.objective, self.train, self.lr = model, objective, train, lr
        self.restart()

    def restart(self) -> None:
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = LBFGS(self.params, lr=self.lr, history_size=LBFGS_HISTORY,
                               tolerance_grad=1e-12, tolerance_change=1e-14)
        self.run_objective = _LBFGSObjective(self.objective, self.train, self.params)
        self.last_value = None

    def step(self, lamb: float) -> tuple[float, float]:
        """-> (objective before the step, training loss before the step)."""
        reported = {}

        def closure():
            loss, shown = self.run_objective(lamb)
            reported.setdefault("loss", shown)
            return loss

        value = self.optimizer.step(closure).detach()
        if self.last_value is not None and bool(value == self.last_value):
            # No movement: LBFGS keeps re-proposing a non-descent direction from its
            # stale history (float32 rounding); restart from steepest descent.
            self.optimizer.reset()
        self.last_value = value
        return float(value), float(reported["loss"])


class _AdamStepper:
    """Adam on mini-batches of batch_size training rows (None: all rows), drawn
    without replacement from seeded permutations."""

    def __init__(self, model: KAN, objective: _Objective, train: _Data, lr: float,
                 batch_size: int | None, generator: torch.Generator):
        self.model, self.objective, self.train, self.lr = model, objective, train, lr
        self.batch_size, self.generator = batch_size, generator
        self.batch_order = torch.empty(0, dtype=torch.long)
        self.restart()

    def restart(self) -> None:
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=self.lr)

    def _batch(self) -> _Data:
        if self.batch_size is None or self.batch_size >= len(self.train):
            return self.train
        if len(self.batch_order) < self.batch_size:
            self.batch_order = torch.randperm(len(self.train), generator=self.generator)
        rows = self.batch_order[:self.batch_size].to(self.train.z.device)
        self.batch_order = self.batch_order[self.batch_size:]
        return self.train.rows(rows)

    def step(self, lamb: float) -> tuple[float, float]:
        self.optimizer.zero_grad(set_to_none=True)
        value, shown = self.objective.forward(self._batch(), lamb)
        value.backward()
        self.optimizer.step()
        return float(value.detach()), float(shown)


class _BestState:
    """The weights (knots and grid size included) with the lowest validation loss so far."""

    def __init__(self):
        self.val_loss, self.state, self.step, self.grid = math.inf, None, None, None

    def offer(self, model: KAN, val_loss: float, step: int | None) -> bool:
        """Keep model's weights if val_loss beats the best; -> whether it did."""
        if not val_loss < self.val_loss:
            return False
        self.val_loss, self.step, self.grid = val_loss, step, model.grid_size
        self.state = [{"coef": layer.coef.detach().clone(), "knots": layer.knots.clone(),
                       "uniform": layer.uniform,
                       **{name: getattr(layer, name).detach().clone()
                          for name in ("base_weight", "spline_weight", "bias", "mask")}}
                      for layer in model.layers]
        return True

    @torch.no_grad()
    def restore(self, model: KAN) -> None:
        for layer, saved in zip(model.layers, self.state):
            if layer.coef.shape == saved["coef"].shape:
                layer.coef.copy_(saved["coef"])
            else:
                # A new Parameter: autograd caches the old shape on the old leaf.
                layer.coef = torch.nn.Parameter(saved["coef"].clone())
            for name in ("base_weight", "spline_weight", "bias", "mask"):
                getattr(layer, name).copy_(saved[name])
            layer.set_knots(saved["knots"].clone(), saved["uniform"])


def _prepare_targets(model: KAN, X: torch.Tensor, y) -> torch.Tensor:
    if model.task == "classification":
        labels = torch.as_tensor(y, device=X.device)
        if labels.is_floating_point():
            if not bool((labels == labels.round()).all()):
                raise ValueError("y must hold integer class labels for classification")
            labels = labels.long()
        labels = labels.reshape(-1)
        n_classes = model.width[-1]
        if len(labels) != len(X):
            raise ValueError(f"y has {len(labels)} labels but X has {len(X)} rows")
        if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"y labels must be in [0, {n_classes - 1}] (width[-1] = {n_classes})")
        return labels.long()
    target = as_tensor(y, X, "y")
    if target.ndim == 1:
        target = target.unsqueeze(1)
    if target.shape != (len(X), model.width[-1]):
        raise ValueError(f"y must have shape ({len(X)}, {model.width[-1]}), got {tuple(target.shape)}")
    return target


@torch.no_grad()
def validation_metrics(model: KAN, X, y, prefix: str = "val_") -> dict:
    """Scores of model on raw X (n, in), y: regression {rmse, r2} (r2 averaged over
    outputs; None for fewer than 2 rows or constant targets), classification
    {accuracy, log_loss}; keys start with prefix. Empty for no rows."""
    X = model.check_input(X)
    target = _prepare_targets(model, X, y)
    if len(X) == 0:
        return {}
    output = model(X)
    if model.task == "classification":
        return {f"{prefix}accuracy": float((output.argmax(1) == target).double().mean()),
                f"{prefix}log_loss": float(F.cross_entropy(output.double(), target))}
    residual = ((output - target).double() ** 2).sum(0)
    spread = ((target - target.mean(0)).double() ** 2).sum(0)
    r2 = float((1 - residual / spread).mean()) if len(X) > 1 and bool((spread > 0).all()) else None
    return {f"{prefix}rmse": float((residual.sum() / target.numel()).sqrt()), f"{prefix}r2": r2}


def fit(model: KAN, X, y, options: FitOptions | None = None, *,
        callback: Callable[[TrainProgress], object] | None = None,
        on_stage_end: Callable[[int, KAN], None] | None = None,
        start_stage: int = 0, **option_values) -> FitResult:
    """Train model on raw X (n, in) and y through a grid schedule.

    y: regression (n,) or (n, out) floats; classification (n,) class indices.
    options: a FitOptions; keyword arguments named like its fields override it
    (fit(model, X, y, optimizer="adam", steps_per_grid=100) works without one).
    Each stage s first adapts the grid to the training inputs (update_grid, then
    refine to grid_schedule[s] when the grid size changes), then takes
    steps_per_grid optimizer steps: LBFGS (strong-Wolfe line search, full batch, one
    iteration per step) or Adam (mini-batches of batch_size rows; None = full batch).
    Validation (val_fraction > 0): see the module docstring; the best weights are
    restored before fit returns, and before each later stage starts.
    callback(TrainProgress) returning a truthy value stops training (stopped=True; the
    best weights so far are restored).
    on_stage_end(stage_index, model) runs after each completed stage.
    start_stage resumes a run whose model already holds stages < start_stage; the
    stored standardisation is kept (it is recomputed only when start_stage == 0), and
    the resumed weights are the best to beat.
    Raises TrainingDiverged on a NaN/infinite loss or parameters, or an exploding
    training loss (see EXPLOSION_FACTOR), unless validation already holds best weights:
    then the run ends there with them (FitResult.diverged says why). A loss of 0 is a
    perfect fit, not divergence.
    """
    if not isinstance(model, KAN):
        raise TypeError("model must be a kanmodel.KAN")
    unknown = sorted(set(option_values) - OPTION_NAMES)
    if unknown:
        raise TypeError(f"fit() got unknown options {unknown}; known: {sorted(OPTION_NAMES)}")
    options = replace(options or FitOptions(), **option_values)
    if options.grid_schedule is None:
        options = replace(options, grid_schedule=[model.grid_size])
    options.check()
    options = replace(options, grid_schedule=[int(g) for g in options.grid_schedule])
    if not 0 <= start_stage <= len(options.grid_schedule):
        raise ValueError(f"start_stage must be in [0, {len(options.grid_schedule)}], got {start_stage}")
    return _Run(model, X, y, options, callback, on_stage_end).train(start_stage)


class _Run:
    """One fit call: the split data, the objective and the best-state tracker."""

    def __init__(self, model: KAN, X, y, options: FitOptions, callback, on_stage_end):
        self.model, self.options = model, options
        self.callback, self.on_stage_end = callback, on_stage_end
        X = model.check_input(X)
        self.X_raw = X
        target = _prepare_targets(model, X, y)
        self.generator = torch.Generator().manual_seed(int(options.seed))
        train_rows, val_rows = split_rows(len(X), options.val_fraction, options.seed, options.fold)
        if len(train_rows) < 1:
            raise ValueError(f"X has {len(X)} rows: too few to train with val_fraction={options.val_fraction}")
        # Adam's batches come from the seeded stream after the split's permutation.
        torch.randperm(len(X), generator=self.generator)
        self.train_rows = torch.from_numpy(train_rows).to(X.device)
        self.val_rows = torch.from_numpy(val_rows).to(X.device)
        self.target = target
        self.objective = _Objective(model, options.lamb_l1, options.lamb_entropy, options.weight_decay)
        self.best = _BestState()
        self.first_loss = None

    def _data(self) -> tuple[_Data, _Data | None]:
        model, target = self.model, self.target
        if model.task == "regression":
            target = (target - model.out_shift) / model.out_scale
        with torch.no_grad():
            data = _Data(self.X_raw, model.standardise(self.X_raw), target)
        return data.rows(self.train_rows), (data.rows(self.val_rows) if len(self.val_rows) else None)

    def _stepper(self, train: _Data):
        options = self.options
        if options.optimizer == "lbfgs":
            return _LBFGSStepper(self.model, self.objective, train, options.resolved_lr)
        return _AdamStepper(self.model, self.objective, train, options.resolved_lr,
                            options.batch_size, self.generator)

    def train(self, start_stage: int) -> FitResult:
        model, options = self.model, self.options
        if start_stage == 0:
            model.set_standardisation(self.X_raw[self.train_rows],
                                      self.target[self.train_rows] if model.task == "regression" else None)
            if options.grid_inputs == "all":
                model.set_standardisation(self.X_raw)      # the inputs' part only
        train, val = self._data()
        grid_x = self.X_raw if options.grid_inputs == "all" else train.x
        result = FitResult(stages_completed=start_stage)
        if val is not None and start_stage > 0:
            self.best.offer(model, self.objective.evaluate(val), None)
        for stage in range(start_stage, len(options.grid_schedule)):
            try:
                improved = self._stage(stage, train, val, grid_x, result)
            except TrainingDiverged as error:
                # With validation the best weights so far are a sound model: a stage
                # that blows up (a fine grid on few rows) ends the run like a stage
                # that stops improving, instead of discarding what earlier stages learnt.
                if self.best.state is None:
                    raise
                result.diverged, result.early_stopped = str(error), True
                break
            if result.stopped:
                return self._finish(result, train, val)
            if self.best.state is not None:
                self.best.restore(model)
            result.stages_completed = stage + 1
            if self.on_stage_end is not None:
                self.on_stage_end(stage, model)
            if val is not None and not improved:
                result.early_stopped = True
                break
        return self._finish(result, train, val)

    def _stage(self, stage: int, train: _Data, val: _Data | None, grid_x: torch.Tensor,
               result: FitResult) -> bool:
        """Place the grid and take the stage's steps; -> whether it improved on the best
        validation loss. Sets result.stopped when the callback asks to stop."""
        model, options = self.model, self.options
        n_stages, steps_per_grid = len(options.grid_schedule), options.steps_per_grid
        total_steps = n_stages * steps_per_grid
        patience = options.resolved_patience if val is not None else None
        grid = options.grid_schedule[stage]
        model.update_grid(grid_x)
        if grid != model.grid_size:
            model.refine(grid, grid_x)
        stepper = self._stepper(train)
        # Patience counts from the stage's own best: after a refinement the
        # validation loss may take a while to climb back to the coarser grid's.
        improved, stage_best, since_best = False, math.inf, 0
        for step_in_stage in range(steps_per_grid):
            step = stage * steps_per_grid + step_in_stage + 1
            if 0 < step_in_stage < steps_per_grid // 2 and step_in_stage % GRID_UPDATE_EVERY == 0:
                model.update_grid(grid_x)
                stepper.restart()
            objective_value, train_loss = stepper.step(options.lamb_at(step, total_steps))
            if self.first_loss is None:
                self.first_loss = train_loss
            self._check_finite(stepper.params, objective_value, train_loss, stage, grid, step)
            val_loss = self.objective.evaluate(val) if val is not None else None
            result.history.append({"stage": stage, "grid": grid, "step": step,
                                   "train_loss": train_loss, "val_loss": val_loss})
            result.train_loss, result.val_loss = train_loss, val_loss
            if val_loss is not None:
                if not math.isfinite(val_loss):
                    self._diverged(stage, grid, step, val_loss, "validation loss")
                improved |= self.best.offer(model, val_loss, step)
                if val_loss < stage_best:
                    stage_best, since_best = val_loss, 0
                else:
                    since_best += 1
            progress = TrainProgress(stage, n_stages, grid, step, total_steps, train_loss, val_loss)
            if self.callback is not None and self.callback(progress):
                result.stopped = True
                break
            if patience is not None and since_best >= patience:
                break
            if self.objective.converged(train_loss):
                break
        return improved

    def _finish(self, result: FitResult, train: _Data, val: _Data | None) -> FitResult:
        if self.best.state is not None:
            self.best.restore(self.model)
            best = self.best
            result.val_loss, result.best_step, result.best_grid = best.val_loss, best.step, best.grid
            result.train_loss = self.objective.evaluate(train)
        result.metrics = validation_metrics(self.model, self.X_raw[self.train_rows],
                                            self.target[self.train_rows], prefix="train_")
        if val is not None:
            result.metrics.update(validation_metrics(self.model, self.X_raw[self.val_rows],
                                                     self.target[self.val_rows]))
        return result

    def _check_finite(self, params, objective_value: float, train_loss: float,
                      stage: int, grid: int, step: int) -> None:
        first_loss = self.first_loss
        if not math.isfinite(objective_value) or not math.isfinite(train_loss) or not bool(
                torch.isfinite(torch.cat([p.detach().reshape(-1) for p in params])).all()):
            self._diverged(stage, grid, step, objective_value, "loss")
        if self.objective.classification:
            constant_prediction = math.log(self.model.width[-1])
        else:
            constant_prediction = float(self.model.out_scale.mean())
        if train_loss > EXPLOSION_FACTOR * max(first_loss, constant_prediction):
            self._diverged(stage, grid, step, train_loss, f"loss (from {first_loss:.4g} at the start)")

    def _diverged(self, stage: int, grid: int, step: int, value: float, what: str):
        raise TrainingDiverged(
            f"training diverged at stage {stage} (grid {grid}), step {step}: the {what} became "
            f"{value:.4g}. Try a smaller lr (now {self.options.resolved_lr}), a smaller lamb, a "
            f"coarser grid, or optimizer='adam'.")
