"""B-spline basis of order k, evaluated only where it is non-zero.

A knot vector ``t`` of length ``G + 2k + 1`` (G intervals plus k extra knots on each
side) defines ``G + k`` basis functions ``B_0 .. B_{G+k-1}``. On the knot interval
``[t_m, t_{m+1})`` with ``k <= m < G + k`` exactly ``k + 1`` of them are non-zero:
``B_{m-k} .. B_m``. This module returns those k + 1 values and the index ``m - k`` of
the first one, instead of the full ``(batch, in, G + k)`` table that the Cox-de Boor
recursion builds.

Two evaluation paths give the same numbers:
- uniform knots: the k + 1 values are fixed polynomials of the local coordinate
  ``u = (x - t_m) / h`` (the uniform B-spline basis matrix), one small matmul;
- any increasing knots: the local de Boor triangle (NURBS Book, algorithm A2.2),
  vectorised over the batch.

Inputs must already lie in the spline domain ``[t_k, t_{G+k}]`` (callers clamp).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch


class LocalBasis(NamedTuple):
    """The non-zero part of the basis at each input.

    values: (batch, in, k + 1)  B_{first + r}(x) for r = 0..k
    first: (batch, in) int64     index of the first non-zero basis function
    derivatives: (batch, in, k + 1) or None   d/dx of ``values``
    """

    values: torch.Tensor
    first: torch.Tensor
    derivatives: torch.Tensor | None


@functools.lru_cache(maxsize=None)
def uniform_basis_matrix(k: int) -> np.ndarray:
    """M (k+1, k+1) with ``[1, u, .., u^k] @ M = [B_{m-k}, .., B_m]`` on uniform knots.

    Built from the de Boor triangle on polynomial coefficients: with unit knot
    spacing every denominator of the recursion equals the current degree j, so the
    triangle is exact in rational arithmetic and float64 holds it exactly for small k.
    """
    poly = np.polynomial.polynomial
    values = [np.array([1.0])]
    for j in range(1, k + 1):
        new = [np.zeros(1) for _ in range(j + 1)]
        for r in range(j):
            # right[r+1] = (r + 1) - u ; left[j - r] = u + (j - r) - 1 (unit spacing)
            right = np.array([r + 1.0, -1.0])
            left = np.array([j - r - 1.0, 1.0])
            temp = values[r] / j
            new[r] = poly.polyadd(new[r], poly.polymul(right, temp))
            new[r + 1] = poly.polyadd(new[r + 1], poly.polymul(left, temp))
        values = new
    matrix = np.zeros((k + 1, k + 1))
    for r, coeffs in enumerate(values):
        matrix[: len(coeffs), r] = coeffs
    return matrix


def _uniform_local_basis(x: torch.Tensor, knots: torch.Tensor, k: int,
                         with_derivative: bool) -> LocalBasis:
    grid_size = knots.shape[1] - 2 * k - 1
    origin = knots[:, 0]
    step = (knots[:, grid_size + k] - knots[:, k]) / grid_size
    t = (x - origin) / step
    interval = torch.floor(t).clamp_(k, grid_size + k - 1)
    u = t - interval
    exponents = torch.arange(k + 1, dtype=x.dtype, device=x.device)
    powers = u.unsqueeze(-1) ** exponents
    matrix = torch.as_tensor(uniform_basis_matrix(k), dtype=x.dtype, device=x.device)
    values = powers @ matrix
    derivatives = None
    if with_derivative:
        # d/du of u^p is p u^(p-1); du/dx = 1/step.
        dpowers = powers[..., :-1] * exponents[1:]
        derivatives = (dpowers @ matrix[1:]) / step.unsqueeze(-1)
    return LocalBasis(values, interval.long() - k, derivatives)


def _general_local_basis(x: torch.Tensor, knots: torch.Tensor, k: int,
                         with_derivative: bool) -> LocalBasis:
    n_in, n_knots = knots.shape
    grid_size = n_knots - 2 * k - 1
    # Interval m with t_m <= x < t_{m+1}, restricted to the domain intervals.
    inner = knots[:, k: grid_size + k + 1].contiguous()
    interval = torch.searchsorted(inner, x.t().contiguous(), right=True).t() - 1
    interval = interval.clamp_(0, grid_size - 1) + k
    # T[o] = t_{m+o} for o = -k+1 .. k, gathered from the flattened knot table.
    offsets = torch.arange(-k + 1, k + 1, device=x.device)
    row_start = torch.arange(n_in, device=x.device) * n_knots
    index = (interval + row_start).unsqueeze(-1) + offsets
    local_knots = knots.reshape(-1)[index]
    xs = x.unsqueeze(-1)

    def knot(o_start: int, o_stop: int) -> torch.Tensor:
        # T[o_start .. o_stop] inclusive
        return local_knots[..., o_start + k - 1: o_stop + k]

    values = torch.ones_like(xs)
    lower_degree = values
    for j in range(1, k + 1):
        if j == k:
            lower_degree = values
        right = knot(1, j) - xs
        left = xs - knot(1 - j, 0)
        temp = values / (right + left)
        zero = torch.zeros_like(xs)
        values = torch.cat([right * temp, zero], -1) + torch.cat([zero, left * temp], -1)
    derivatives = None
    if with_derivative:
        if k == 0:
            derivatives = torch.zeros_like(values)
        else:
            # B'_{s,k} = k * (B_{s,k-1} / (t_{s+k} - t_s) - B_{s+1,k-1} / (t_{s+k+1} - t_{s+1}))
            scaled = k * lower_degree / (knot(1, k) - knot(1 - k, 0))
            zero = torch.zeros_like(xs)
            derivatives = torch.cat([zero, scaled], -1) - torch.cat([scaled, zero], -1)
    return LocalBasis(values, interval - k, derivatives)


def local_basis(x: torch.Tensor, knots: torch.Tensor, k: int, uniform: bool,
                with_derivative: bool = False) -> LocalBasis:
    """Non-zero B-spline values at ``x``.

    x: (batch, in), already clamped into each input's domain.
    knots: (in, G + 2k + 1), increasing per row; ``uniform`` says they are equally spaced.
    """
    if uniform:
        return _uniform_local_basis(x, knots, k, with_derivative)
    return _general_local_basis(x, knots, k, with_derivative)


def dense_basis(x: torch.Tensor, knots: torch.Tensor, k: int, uniform: bool) -> torch.Tensor:
    """The full basis table (batch, in, G + k), zeros outside the k + 1 non-zero entries."""
    basis = local_basis(x, knots, k, uniform)
    n_basis = knots.shape[1] - k - 1
    dense = x.new_zeros(*x.shape, n_basis)
    columns = basis.first.unsqueeze(-1) + torch.arange(k + 1, device=x.device)
    return dense.scatter_(-1, columns, basis.values)


def clamp_to_domain(x: torch.Tensor, knots: torch.Tensor, k: int) -> torch.Tensor:
    """Clamp x (batch, in) into [t_k, t_{G+k}] per input: the out-of-grid rule."""
    grid_size = knots.shape[1] - 2 * k - 1
    return torch.clamp(x, knots[:, k], knots[:, grid_size + k])
