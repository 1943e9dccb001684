"""One KAN layer: a learnable 1-D function on every (input, output) edge."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kanmodel.basis import clamp_to_domain, dense_basis, interval_table, uniform_coordinates
from kanmodel.grid import data_knots, fit_coefficients, refined_knots, uniform_knots
from kanmodel.spline_op import kan_layer

BASE_FUNCTIONS = {
    "silu": F.silu,
    "identity": lambda x: x,
    "zero": torch.zeros_like,
}


class KANLayer(nn.Module):
    """y_j = sum_i phi[j, i](x_i) + bias_j with
    phi[j, i](x) = mask[j, i] * (base_weight[j, i] * base(x)
                                 + spline_weight[j, i] * sum_b coef[j, i, b] B_b(x)).

    The spline term sees x clamped into the input's domain [knots[i, k], knots[i, G + k]]
    (constant extrapolation); the base term sees x unchanged.

    Buffers: knots (in, G + 2k + 1), mask (out, in).
    Parameters: coef (out, in, G + k), base_weight (out, in), spline_weight (out, in), bias (out,).
    """

    def __init__(self, in_features: int, out_features: int, grid_size: int = 5, k: int = 3,
                 grid_range: tuple[float, float] = (-1.0, 1.0), base: str = "silu",
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"layer widths must be >= 1, got {in_features} -> {out_features}")
        if grid_size < 1:
            raise ValueError(f"grid_size must be >= 1, got {grid_size}")
        if k < 1:
            raise ValueError(f"spline order k must be >= 1, got {k}")
        if not grid_range[0] < grid_range[1]:
            raise ValueError(f"grid_range must be increasing, got {grid_range}")
        if base not in BASE_FUNCTIONS:
            raise ValueError(f"base must be one of {sorted(BASE_FUNCTIONS)}, got {base!r}")
        dtype = dtype or torch.get_default_dtype()
        self.in_features, self.out_features, self.k, self.base = in_features, out_features, k, base
        self.base_fn = BASE_FUNCTIONS[base]
        self.uniform = True
        self._constants_key = None
        self.register_buffer("knots", uniform_knots(in_features, grid_size, k, *grid_range, dtype=dtype))
        self.register_buffer("mask", torch.ones(out_features, in_features, dtype=dtype))
        n_basis = grid_size + k

        def uniform_noise(*shape):
            return torch.rand(*shape, generator=generator, dtype=torch.float64).to(dtype) * 2 - 1

        # Small spline noise: the base term carries the signal at the start, as in PyKAN.
        self.coef = nn.Parameter(0.05 * uniform_noise(out_features, in_features, n_basis))
        self.base_weight = nn.Parameter(uniform_noise(out_features, in_features) / math.sqrt(in_features))
        self.spline_weight = nn.Parameter(torch.full((out_features, in_features), 1 / math.sqrt(in_features),
                                                     dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype))

    @property
    def grid_size(self) -> int:
        return self.knots.shape[1] - 2 * self.k - 1

    def _grid_constants(self):
        """What the layer op derives from the knots alone (see spline_op.kan_layer), recomputed
        only when the knot tensor changes (new tensor, in-place edit, dtype or device)."""
        knots = self.knots
        key = (knots.data_ptr(), knots._version, knots.dtype, knots.device, knots.shape, self.uniform)
        if self._constants_key != key:
            self._constants = (uniform_coordinates(knots, self.k) if self.uniform
                               else interval_table(knots, self.k))
            self._constants_key = key
        return self._constants

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in) -> (batch, out)."""
        return kan_layer(x, self.coef, self.spline_weight, self.base_weight, self.bias, self.mask,
                         self.knots, self.k, self.uniform, self.base, self._grid_constants)

    def spline_values(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in) -> (batch, out, in): sum_b coef[j, i, b] B_b(clamp(x_i)), no weights."""
        basis = dense_basis(clamp_to_domain(x, self.knots, self.k), self.knots, self.k, self.uniform)
        return torch.einsum("bni,oin->boi", basis, self.coef)

    def edge_activations(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in) -> (batch, out, in): the phi[j, i](x_i) values."""
        base = self.base_fn(x).unsqueeze(1) * self.base_weight
        return self.mask * (base + self.spline_weight * self.spline_values(x))

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor, grid_eps: float) -> None:
        """Spread the knots over the samples x (batch, in) (grid_eps mixes uniform and
        quantile knots) and re-fit coef so every spline keeps its values at x."""
        knots = data_knots(x, self.grid_size, self.k, grid_eps)
        self._refit(x, knots, uniform=grid_eps >= 1.0)

    @torch.no_grad()
    def refine(self, x: torch.Tensor, grid_size: int) -> None:
        """Grid extension to grid_size intervals on the same domain (see refined_knots),
        coef least-squares fitted to the current splines at the samples x (batch, in)
        and across the domain."""
        if grid_size < 1:
            raise ValueError(f"grid_size must be >= 1, got {grid_size}")
        knots = refined_knots(self.knots, self.k, grid_size)
        # Fit on the samples and on points covering every new interval, so the spline
        # is kept on the whole domain, not only where the samples happen to lie.
        inner = knots[:, self.k: grid_size + self.k + 1]
        fractions = (torch.arange(2 * self.k + 2, dtype=x.dtype, device=x.device) + 0.5) / (2 * self.k + 2)
        cover = inner[:, :-1, None] + inner.diff(dim=1)[:, :, None] * fractions
        samples = torch.cat([x, cover.reshape(self.in_features, -1).t()])
        self._refit(samples, knots, self.uniform)

    def _refit(self, x: torch.Tensor, knots: torch.Tensor, uniform: bool) -> None:
        targets = self.spline_values(x)
        inside = clamp_to_domain(x, knots, self.k)
        coef = fit_coefficients(inside, targets, knots, self.k, uniform)
        if coef.shape == self.coef.shape:
            # In place: an optimizer holding this parameter keeps working.
            self.coef.copy_(coef)
        else:
            # A new Parameter, not .data: autograd caches the old shape on the old leaf.
            self.coef = nn.Parameter(coef)
        self.knots = knots
        self._constants_key = None
        self.uniform = uniform

    def set_knots(self, knots: torch.Tensor, uniform: bool) -> None:
        """Install a knot table (in, G + 2k + 1) whose G matches coef (used by checkpoints)."""
        expected = (self.in_features, self.coef.shape[-1] + self.k + 1)
        if tuple(knots.shape) != expected:
            raise ValueError(f"knots must have shape {expected}, got {tuple(knots.shape)}")
        self.knots = knots
        self._constants_key = None
        self.uniform = uniform

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"grid_size={self.grid_size}, k={self.k}, base={self.base!r}, uniform={self.uniform}")
