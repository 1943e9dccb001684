"""fit(): train a KAN through a grid schedule with LBFGS or Adam."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

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


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says where and what to try."""


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
    history: list[dict] = field(default_factory=list)
    stopped: bool = False
    stages_completed: int = 0
    train_loss: float | None = None
    val_loss: float | None = None


@dataclass
class _Data:
    """Standardised inputs z (n, in) and targets (regression: standardised (n, out);
    classification: class indices (n,))."""

    z: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return len(self.z)

    def rows(self, index: torch.Tensor) -> "_Data":
        return _Data(self.z[index], self.target[index])


class _Objective:
    """Data loss (+ sparsity penalty) in standardised space, and the loss users read."""

    def __init__(self, model: KAN, lamb_l1: float, lamb_entropy: float):
        self.model, self.lamb_l1, self.lamb_entropy = model, lamb_l1, lamb_entropy
        self.classification = model.task == "classification"

    def forward(self, data: _Data, lamb: float) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (objective to minimise, reported loss (detached))."""
        if lamb > 0:
            z, edges = data.z, []
            for layer in self.model.layers:
                acts = layer.edge_activations(z)
                edges.append(acts)
                z = acts.sum(-1) + layer.bias
            output = z
        else:
            output = self.model.forward_standardised(data.z)
        data_loss, reported = self.data_loss(output, data.target)
        if lamb > 0:
            data_loss = data_loss + lamb * sparsity_penalty(edges, self.lamb_l1, self.lamb_entropy)
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


def _check_options(model, optimizer, grid_schedule, steps_per_grid, lr, batch_size, lamb,
                   lamb_warmup, val_fraction, patience, start_stage):
    if not isinstance(model, KAN):
        raise TypeError("model must be a kanmodel.KAN")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if not grid_schedule or any(int(g) < 1 for g in grid_schedule):
        raise ValueError(f"grid_schedule must be a non-empty list of positive ints, got {grid_schedule}")
    if steps_per_grid < 1:
        raise ValueError(f"steps_per_grid must be >= 1, got {steps_per_grid}")
    if lr is not None and not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if lamb < 0 or not 0 <= lamb_warmup <= 1:
        raise ValueError(f"need lamb >= 0 and 0 <= lamb_warmup <= 1, got {lamb}, {lamb_warmup}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    if not 0 <= start_stage <= len(grid_schedule):
        raise ValueError(f"start_stage must be in [0, {len(grid_schedule)}], got {start_stage}")


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
            self.scale = 1.0 / max(float(loss.detach()), 1e-30)
        loss = loss * self.scale
        loss.backward()
        self.last_params = [p.detach().clone() for p in self.params]
        self.last_grads = [p.grad.clone() for p in self.params]
        self.last_lamb, self.last_value, self.last_reported = lamb, loss.detach(), reported
        return self.last_value, reported


def _new_optimizer(model: KAN, optimizer: str, lr: float):
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "lbfgs":
        return params, LBFGS(params, lr=lr, history_size=LBFGS_HISTORY,
                             tolerance_grad=1e-12, tolerance_change=1e-14)
    return params, torch.optim.Adam(params, lr=lr)


def fit(model: KAN, X, y, optimizer: str = "lbfgs", grid_schedule: list[int] | None = None,
        steps_per_grid: int = 200, lr: float | None = None, batch_size: int | None = None,
        lamb: float = 0.0, lamb_l1: float = 1.0, lamb_entropy: float = 2.0,
        lamb_warmup: float = 0.0, val_fraction: float = 0.2, patience: int | None = None,
        seed: int = 0, callback: Callable[[TrainProgress], object] | None = None,
        on_stage_end: Callable[[int, KAN], None] | None = None,
        start_stage: int = 0) -> FitResult:
    """Train model on raw X (n, in) and y through a grid schedule.

    y: regression (n,) or (n, out) floats; classification (n,) class indices.
    Each stage s first adapts the grid to the training inputs (update_grid, then
    refine to grid_schedule[s] when the grid size changes), then takes
    steps_per_grid optimizer steps: LBFGS (strong-Wolfe line search, full batch, one
    iteration per step) or Adam (mini-batches of batch_size rows; None = full batch).
    lr defaults to 1.0 for LBFGS and 1e-2 for Adam.
    Sparsity: lamb * (lamb_l1 * L1 + lamb_entropy * entropy) of the edge activations,
    ramped linearly from 0 (at the first step) over the first lamb_warmup fraction
    of all steps.
    Validation: val_fraction of the rows (seeded split) are held out; at the end of
    each stage the parameters with the best validation loss are restored, and with
    patience a stage ends after that many steps without improvement.
    callback(TrainProgress) returning a truthy value stops training (stopped=True).
    on_stage_end(stage_index, model) runs after each completed stage.
    start_stage resumes a run whose model already holds stages < start_stage; the
    stored standardisation is kept (it is recomputed only when start_stage == 0).
    Raises TrainingDiverged on a non-finite loss or parameters.
    """
    grid_schedule = [int(g) for g in (grid_schedule or [model.grid_size])]
    _check_options(model, optimizer, grid_schedule, steps_per_grid, lr, batch_size, lamb,
                   lamb_warmup, val_fraction, patience, start_stage)
    lr = lr or DEFAULT_LR[optimizer]
    X = model.check_input(X)
    target = _prepare_targets(model, X, y)
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(X), generator=generator).to(X.device)
    n_val = int(round(len(X) * val_fraction))
    if len(X) - n_val < 1:
        raise ValueError(f"X has {len(X)} rows: too few to train with val_fraction={val_fraction}")
    train_rows, val_rows = order[n_val:], order[:n_val]
    if start_stage == 0:
        model.set_standardisation(X[train_rows], target[train_rows] if model.task == "regression" else None)
    if model.task == "regression":
        target = (target - model.out_shift) / model.out_scale
    with torch.no_grad():
        data = _Data(model.standardise(X), target)
    train, val = data.rows(train_rows), (data.rows(val_rows) if n_val else None)
    x_train_raw = X[train_rows]

    objective = _Objective(model, lamb_l1, lamb_entropy)
    n_stages = len(grid_schedule)
    total_steps = n_stages * steps_per_grid
    warmup_steps = lamb_warmup * total_steps
    result = FitResult(stages_completed=start_stage)
    batch_order = torch.empty(0, dtype=torch.long)

    for stage in range(start_stage, n_stages):
        grid = grid_schedule[stage]
        model.update_grid(x_train_raw)
        if grid != model.grid_size:
            model.refine(grid, x_train_raw)
        params, opt = _new_optimizer(model, optimizer, lr)
        lbfgs_objective = _LBFGSObjective(objective, train, params)
        best_val, best_state, since_best = math.inf, None, 0
        last_objective = None

        for step_in_stage in range(steps_per_grid):
            step = stage * steps_per_grid + step_in_stage + 1
            lamb_now = lamb * (min(1.0, (step - 1) / warmup_steps) if warmup_steps > 0 else 1.0)
            if 0 < step_in_stage < steps_per_grid // 2 and step_in_stage % GRID_UPDATE_EVERY == 0:
                model.update_grid(x_train_raw)
                # A fresh LBFGS: its curvature pairs describe the old knots (measured:
                # keeping them ends hellokan at 1.4e-3 instead of 6.2e-4).
                params, opt = _new_optimizer(model, optimizer, lr)
                lbfgs_objective = _LBFGSObjective(objective, train, params)
                last_objective = None
            if optimizer == "lbfgs":
                reported = {}

                def closure():
                    loss, shown = lbfgs_objective(lamb_now)
                    reported.setdefault("loss", shown)
                    return loss

                objective_value = opt.step(closure).detach()
                if last_objective is not None and bool(objective_value == last_objective):
                    # No movement: LBFGS keeps re-proposing a non-descent direction
                    # from its stale history (float32 rounding); restart from steepest descent.
                    opt.reset()
                last_objective = objective_value
                train_loss = float(reported["loss"])
            else:
                if batch_size is None or batch_size >= len(train):
                    batch = train
                else:
                    if len(batch_order) < batch_size:
                        batch_order = torch.randperm(len(train), generator=generator)
                    batch = train.rows(batch_order[:batch_size].to(X.device))
                    batch_order = batch_order[batch_size:]
                opt.zero_grad(set_to_none=True)
                objective_value, shown = objective.forward(batch, lamb_now)
                objective_value.backward()
                opt.step()
                objective_value = objective_value.detach()
                train_loss = float(shown)
            if not math.isfinite(float(objective_value)) or not bool(
                    torch.isfinite(torch.cat([p.detach().reshape(-1) for p in params])).all()):
                raise TrainingDiverged(
                    f"training diverged at stage {stage} (grid {grid}), step {step}: the loss "
                    f"became {float(objective_value)}. Try a smaller lr (now {lr}), a smaller "
                    f"lamb, a coarser grid, or optimizer='adam'.")
            val_loss = objective.evaluate(val) if val is not None else None
            result.history.append({"stage": stage, "grid": grid, "step": step,
                                   "train_loss": train_loss, "val_loss": val_loss})
            result.train_loss, result.val_loss = train_loss, val_loss
            if val_loss is not None:
                if val_loss < best_val:
                    best_val, since_best = val_loss, 0
                    best_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
                else:
                    since_best += 1
            progress = TrainProgress(stage, n_stages, grid, step, total_steps, train_loss, val_loss)
            if callback is not None and callback(progress):
                result.stopped = True
                return result
            if patience is not None and since_best >= patience:
                break

        if best_state is not None:
            model.load_state_dict(best_state)
            result.val_loss = best_val
            result.train_loss = objective.evaluate(train)
        result.stages_completed = stage + 1
        if on_stage_end is not None:
            on_stage_end(stage, model)
    return result
