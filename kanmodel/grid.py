"""Knot vectors and the least-squares re-fit used by grid update and grid extension.

Everything here is deterministic and returns finite numbers for any finite input:
constant inputs get a small domain around their value, tied quantiles are spread to
a minimum knot gap, and the coefficient fit is a penalised least squares whose
normal matrix is positive definite by construction.
"""
from __future__ import annotations

import torch

from kanmodel.basis import dense_basis

# Relative weight of the smoothness penalty in the coefficient fit. Small enough to
# leave a well-sampled fit untouched (errors ~1e-7 of the signal), large enough to
# fill empty knot intervals smoothly instead of with arbitrary values.
PENALTY_WEIGHT = 1e-7
# Smallest knot gap, as a fraction of the uniform gap of the same domain.
MIN_GAP_FRACTION = 1e-3
# The grid of a layer after the first spans its inputs' range widened by this fraction
# on each side. Hidden activations are not bounded like raw inputs: training moves them,
# and inputs the training rows do not cover (the corners of the input box) reach past
# the training activations' range, where the spline is clamped (hellokan, 1000 rows,
# seeds 0-3, at f019652 before the compiled kernels: final test RMSE 0.7-6e-3 with no
# margin, 0.7-1.4e-3 with 10%, <= 7.2e-4 with 3%: a wide margin leaves data-free
# intervals that training never constrains; with 3% at 55f08fd: 0.73-1.9e-3 with the
# kernels, 0.45-0.82e-3 on the torch path, the two rounding differently).
HIDDEN_MARGIN = 0.03


def extend_knots(inner: torch.Tensor, k: int) -> torch.Tensor:
    """(in, G + 1) domain knots -> (in, G + 2k + 1), k extra knots per side.

    The extra knots use the mean inner spacing, so a uniform inner grid stays uniform.
    """
    grid_size = inner.shape[1] - 1
    step = (inner[:, -1:] - inner[:, :1]) / grid_size
    ramp = torch.arange(1, k + 1, dtype=inner.dtype, device=inner.device)
    left = inner[:, :1] - step * ramp.flip(0)
    right = inner[:, -1:] + step * ramp
    return torch.cat([left, inner, right], dim=1)


def uniform_knots(n_in: int, grid_size: int, k: int, low: float, high: float,
                  dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """(in, G + 2k + 1) equally spaced knots with domain [low, high] for every input."""
    steps = torch.arange(grid_size + 1, dtype=torch.float64) / grid_size
    inner = (low + (high - low) * steps).expand(n_in, -1)
    return extend_knots(inner, k).to(dtype=dtype, device=device)


def range_ends(x: torch.Tensor, margin: float) -> torch.Tensor:
    """(2, in) rows at min - margin * range and max + margin * range of x (batch, in):
    appended to the samples a grid is placed on, they widen its domain by the margin."""
    low, high = x.min(dim=0).values, x.max(dim=0).values
    widen = (high - low) * margin
    return torch.stack([low - widen, high + widen])


def data_knots(x: torch.Tensor, grid_size: int, k: int, grid_eps: float) -> torch.Tensor:
    """Knots adapted to samples x (batch, in): (in, G + 2k + 1), increasing per row.

    Inner knots = grid_eps * uniform(min, max) + (1 - grid_eps) * quantiles(x), so
    grid_eps = 1 is a uniform grid over the data range and grid_eps = 0 puts the
    same number of samples in every interval.
    """
    x64 = x.detach().to(torch.float64)
    low = x64.min(dim=0).values
    high = x64.max(dim=0).values
    # A constant input still needs a non-empty domain.
    width = high - low
    tiny = 1e-6 * (1.0 + low.abs() + high.abs())
    degenerate = width < tiny
    half = torch.where(degenerate, 0.5 * (1.0 + low.abs()), torch.zeros_like(low))
    low, high = low - half, high + half
    levels = torch.arange(grid_size + 1, dtype=torch.float64, device=x.device) / grid_size
    uniform = low.unsqueeze(1) + (high - low).unsqueeze(1) * levels
    quantiles = torch.quantile(x64, levels, dim=0).t()
    quantiles = torch.where(degenerate.unsqueeze(1), uniform, quantiles)
    inner = grid_eps * uniform + (1.0 - grid_eps) * quantiles
    inner[:, 0], inner[:, -1] = low, high
    # Tied quantiles (discrete features) would give zero-width intervals: enforce a gap.
    gap = (MIN_GAP_FRACTION * (high - low) / grid_size).unsqueeze(1)
    position = torch.arange(grid_size + 1, dtype=torch.float64, device=x.device)
    inner = torch.cummax(inner - gap * position, dim=1).values + gap * position
    return extend_knots(inner, k).to(x.dtype)


def refined_knots(knots: torch.Tensor, k: int, grid_size: int) -> torch.Tensor:
    """(in, G + 2k + 1) -> (in, grid_size + 2k + 1) on the same domain.

    The new inner knots interpolate the old ones linearly in knot index, so the old
    knot density is kept, and when grid_size is a multiple of G every old knot is
    kept: the old spline is then exactly representable (knot insertion).
    """
    old_size = knots.shape[1] - 2 * k - 1
    inner = knots[:, k: old_size + k + 1].to(torch.float64)
    position = torch.arange(grid_size + 1, dtype=torch.float64, device=knots.device) * old_size / grid_size
    left = position.floor().long().clamp(max=old_size - 1)
    fraction = position - left
    new_inner = inner[:, left] * (1 - fraction) + inner[:, left + 1] * fraction
    new_inner[:, -1] = inner[:, -1]
    return extend_knots(new_inner, k).to(knots.dtype)


def fit_coefficients(x: torch.Tensor, targets: torch.Tensor, knots: torch.Tensor,
                     k: int, uniform: bool) -> torch.Tensor:
    """Spline coefficients that reproduce targets at x, per input.

    x: (batch, in) inside the knots' domain; targets: (batch, out, in);
    knots: (in, G + 2k + 1). Returns coef (out, in, G + k) in x's dtype.

    Solves (A^T A + lam P) c = A^T y per input in float64 with a second-difference
    smoothness penalty P (plus a tiny ridge so P has no null space); lam scales with
    the data so the fit stays scale-free.
    """
    basis = dense_basis(x.to(torch.float64), knots.to(torch.float64), k, uniform)
    a = basis.permute(2, 0, 1)                           # (in, batch, n_basis)
    y = targets.to(torch.float64).permute(2, 0, 1)       # (in, batch, out)
    n_basis = a.shape[-1]
    normal = a.transpose(1, 2) @ a                       # (in, n_basis, n_basis)
    rhs = a.transpose(1, 2) @ y                          # (in, n_basis, out)
    eye = torch.eye(n_basis, dtype=torch.float64, device=x.device)
    diff = torch.diff(eye, n=2, dim=0) if n_basis > 2 else eye[:0]
    penalty = diff.t() @ diff + 1e-3 * eye
    scale = normal.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-300)
    system = normal + PENALTY_WEIGHT * scale[:, None, None] * penalty
    factor, info = torch.linalg.cholesky_ex(system)
    if bool((info == 0).all()):
        coef = torch.cholesky_solve(rhs, factor)
    else:
        coef = torch.linalg.pinv(system, hermitian=True) @ rhs
    return coef.permute(2, 0, 1).to(x.dtype).contiguous()
