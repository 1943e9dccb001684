"""The KAN model: stacked KAN layers between stored input/output standardisation."""
from __future__ import annotations

import torch
from torch import nn

from kanmodel.grid import HIDDEN_MARGIN, range_ends
from kanmodel.layer import BASE_FUNCTIONS, KANLayer

TASKS = ("regression", "classification")


def as_tensor(values, like: torch.Tensor, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """values (array-like or tensor) -> tensor on like's device, checked to be finite."""
    tensor = torch.as_tensor(values, device=like.device)
    tensor = tensor.to(dtype or like.dtype)
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return tensor


class KAN(nn.Module):
    """Kolmogorov-Arnold network mapping raw inputs (batch, width[0]) to raw outputs
    (batch, width[-1]); for classification the outputs are logits.

    forward(x) = layers((x - in_shift) / in_scale) * out_scale + out_shift

    grid_eps defaults to 1.0 (uniform knots over the data's range): on hellokan they
    train to a lower test error than quantile-placed knots (docs/kanmodel-api.md, defaults).
    """

    def __init__(self, width: list[int], grid: int = 5, k: int = 3,
                 grid_range: tuple[float, float] = (-1.0, 1.0), grid_eps: float = 1.0,
                 base: str = "silu", seed: int = 0, task: str = "regression"):
        super().__init__()
        width = [int(w) for w in width]
        if len(width) < 2 or min(width) < 1:
            raise ValueError(f"width must list >= 2 positive layer sizes, got {width}")
        if not 0.0 <= grid_eps <= 1.0:
            raise ValueError(f"grid_eps must be in [0, 1], got {grid_eps}")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if base not in BASE_FUNCTIONS:
            raise ValueError(f"base must be one of {sorted(BASE_FUNCTIONS)}, got {base!r}")
        if task == "classification" and width[-1] < 2:
            raise ValueError("classification needs width[-1] >= 2 (one logit per class)")
        self.width, self.k, self.task = width, int(k), task
        self.grid_range = (float(grid_range[0]), float(grid_range[1]))
        self.grid_eps, self.base, self.seed = float(grid_eps), base, int(seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.layers = nn.ModuleList(
            KANLayer(n_in, n_out, grid, self.k, self.grid_range, base, generator)
            for n_in, n_out in zip(width[:-1], width[1:]))
        self.register_buffer("in_shift", torch.zeros(width[0]))
        self.register_buffer("in_scale", torch.ones(width[0]))
        self.register_buffer("out_shift", torch.zeros(width[-1]))
        self.register_buffer("out_scale", torch.ones(width[-1]))

    @property
    def grid_size(self) -> int:
        return self.layers[0].grid_size

    def config(self) -> dict:
        """JSON-able constructor arguments (grid is the current grid size)."""
        return {"width": list(self.width), "grid": self.grid_size, "k": self.k,
                "grid_range": list(self.grid_range), "grid_eps": self.grid_eps,
                "base": self.base, "seed": self.seed, "task": self.task}

    def check_input(self, x) -> torch.Tensor:
        """x -> (batch, width[0]) tensor in the model's dtype and device."""
        x = as_tensor(x, self.in_shift, "x")
        if x.ndim != 2 or x.shape[1] != self.width[0]:
            raise ValueError(f"x must have shape (batch, {self.width[0]}), got {tuple(x.shape)}")
        return x

    @torch.no_grad()
    def set_standardisation(self, X, y=None) -> None:
        """Store mean/std of X (and of y for regression) so callers pass raw values."""
        X = self.check_input(X)
        self.in_shift.copy_(X.mean(0))
        self.in_scale.copy_(_safe_std(X))
        if y is not None and self.task == "regression":
            y = as_tensor(y, self.out_shift, "y").reshape(len(X), -1)
            self.out_shift.copy_(y.mean(0))
            self.out_scale.copy_(_safe_std(y))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.in_shift) / self.in_scale

    def forward_standardised(self, z: torch.Tensor) -> torch.Tensor:
        """(batch, in) standardised inputs -> (batch, out) standardised outputs."""
        for layer in self.layers:
            z = layer(z)
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in) raw inputs -> (batch, out) raw outputs (logits for classification)."""
        if x.ndim != 2 or x.shape[1] != self.width[0]:
            raise ValueError(f"x must have shape (batch, {self.width[0]}), got {tuple(x.shape)}")
        out = self.forward_standardised(self.standardise(x))
        return out * self.out_scale + self.out_shift

    @torch.no_grad()
    def predict_proba(self, x) -> torch.Tensor:
        """(batch, in) -> (batch, classes) softmax probabilities (classification only)."""
        if self.task != "classification":
            raise ValueError("predict_proba needs a classification model")
        return torch.softmax(self(self.check_input(x)), dim=-1)

    def activations(self, x) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(layer input (batch, in), edge activations (batch, out, in))] per layer,
        in the standardised space."""
        z = self.standardise(self.check_input(x))
        result = []
        for layer in self.layers:
            edges = layer.edge_activations(z)
            result.append((z, edges))
            z = edges.sum(-1) + layer.bias
        return result

    @torch.no_grad()
    def update_grid(self, x) -> None:
        """Adapt every layer's knots to the data x (raw inputs, (batch, in)): the domain
        spans the data (for layers after the first, their inputs' range widened by
        grid.HIDDEN_MARGIN on each side) and the coefficients are re-fitted (least
        squares) to keep the function on x. Where x left the old domain the old function
        was clamped (a kink a spline only approximates), so there the function is kept
        approximately."""
        z = self._grid_samples(x)
        for index, layer in enumerate(self.layers):
            samples = z if index == 0 else torch.cat([z, range_ends(z, HIDDEN_MARGIN)])
            layer.update_grid(samples, self.grid_eps)
            z = layer(z)

    @torch.no_grad()
    def refine(self, new_grid: int, x) -> None:
        """Grid extension: new_grid intervals per edge on each edge's current domain,
        coefficients least-squares fitted to the current activations on x (raw inputs,
        (batch, in)). With new_grid a multiple of the grid size the function is kept
        exactly (up to the fit's rounding)."""
        z = self._grid_samples(x)
        for layer in self.layers:
            layer.refine(z, int(new_grid))
            z = layer(z)

    def _grid_samples(self, x) -> torch.Tensor:
        z = self.standardise(self.check_input(x))
        if len(z) == 0:
            raise ValueError("x must contain at least one row to place the grid")
        return z


def _safe_std(values: torch.Tensor) -> torch.Tensor:
    """Population std per column; 1 where a column is constant (nothing to scale)."""
    std = values.std(0, unbiased=False) if len(values) > 1 else torch.zeros_like(values[0])
    return torch.where(std > 1e-12 * (1 + values.abs().amax(0)), std, torch.ones_like(std))
