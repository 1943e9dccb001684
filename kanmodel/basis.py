"""B-spline basis of order k, evaluated only where it is non-zero.

A knot vector ``t`` of length ``G + 2k + 1`` (G intervals plus k extra knots on each
side) defines ``G + k`` basis functions ``B_0 .. B_{G+k-1}``. On the knot interval
``[t_m, t_{m+1})`` with ``k <= m < G + k`` exactly ``k + 1`` of them are non-zero:
``B_{m-k} .. B_m``. This module returns those k + 1 values and the index ``m - k`` of
the first one, instead of the full ``(batch, G + k, in)`` table that the Cox-de Boor
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
    """The non-zero part of the basis at each input, basis index first (so every
    elementwise step runs over one contiguous (batch, in) plane).

    values: (k + 1, batch, in)  B_{first + r}(x) for r = 0..k
    first: (batch, in) int64     index of the first non-zero basis function
    derivatives: (k + 1, batch, in) or None   d/dx of ``values``
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


@functools.lru_cache(maxsize=64)
def _power_tables(k: int, dtype: torch.dtype, device: torch.device):
    """Constant and power parts of the uniform basis matrix and of its d/du, shaped for
    addmm against the powers u^1 .. u^k (rows): values = constant + linear @ powers.

    -> (constant (k + 1, 1), linear (k + 1, k), d constant (k + 1, 1), d linear (k + 1, k - 1)),
    built once per (k, dtype, device)."""
    matrix = torch.as_tensor(uniform_basis_matrix(k), dtype=dtype, device=device)   # (p, r)
    ramp = torch.arange(1, k + 1, dtype=dtype, device=device).unsqueeze(1)
    derivative = matrix[1:] * ramp                                                   # (p - 1, r)
    return (matrix[:1].t().contiguous(), matrix[1:].t().contiguous(),
            derivative[:1].t().contiguous(), derivative[1:].t().contiguous())


def _powers(t: torch.Tensor, interval: torch.Tensor, k: int) -> torch.Tensor:
    """t, interval (n,) -> (k, n) rows u^1 .. u^k of u = t - interval."""
    if t.requires_grad:
        u = t - interval
        return torch.stack([u ** p for p in range(1, k + 1)])
    # Written in place into one buffer: every large temporary costs page faults here.
    powers = t.new_empty(k, t.numel())
    rows = powers.unbind(0)
    u = torch.sub(t, interval, out=rows[0])
    for p in range(1, k):
        torch.mul(rows[p - 1], u, out=rows[p])
    return powers


def uniform_unit_basis(t: torch.Tensor, k: int, grid_size: int, with_derivative: bool):
    """Basis on unit-spaced knots 0, 1, .., G + 2k at knot coordinates t (batch, in),
    already clamped into [k, G + k].

    Returns (values (k + 1, batch, in), interval m (batch, in) int64, d values / dt or None);
    the non-zero functions are B_{m-k} .. B_m.
    """
    # t >= k > 0, so truncation is the floor.
    interval = t.long().clamp_(max=grid_size + k - 1)
    # Powers of the local coordinate u as rows, then one small matmul each for the values
    # and the derivatives: fewer passes over memory than k + 1 Horner planes.
    powers = _powers(t.reshape(-1), interval.reshape(-1), k)
    constant, linear, d_constant, d_linear = _power_tables(k, t.dtype, t.device)
    values = torch.addmm(constant, linear, powers).view(k + 1, *t.shape)
    derivatives = None
    if with_derivative:
        derivatives = (torch.addmm(d_constant, d_linear, powers[: k - 1]) if k > 1
                       else d_constant.expand(-1, t.numel()).clone()).view(k + 1, *t.shape)
    return values, interval, derivatives


def uniform_coordinates(knots: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(offset, scale) per input with t = offset + scale * x the knot coordinate of x on
    equally spaced knots (t = k at the domain start, G + k at its end)."""
    grid_size = knots.shape[1] - 2 * k - 1
    scale = grid_size / (knots[:, grid_size + k] - knots[:, k])
    return k - knots[:, k] * scale, scale


def _uniform_local_basis(x: torch.Tensor, knots: torch.Tensor, k: int,
                         with_derivative: bool) -> LocalBasis:
    grid_size = knots.shape[1] - 2 * k - 1
    offset, scale = uniform_coordinates(knots, k)
    t = torch.addcmul(offset, x, scale).clamp_(k, grid_size + k)
    values, interval, derivatives = uniform_unit_basis(t, k, grid_size, with_derivative)
    if derivatives is not None:
        derivatives = derivatives * scale
    return LocalBasis(values, interval - k, derivatives)


def _general_local_basis(x: torch.Tensor, knots: torch.Tensor, k: int,
                         with_derivative: bool) -> LocalBasis:
    n_in, n_knots = knots.shape
    grid_size = n_knots - 2 * k - 1
    # Interval m with t_m <= x < t_{m+1}, restricted to the domain intervals.
    inner = knots[:, k: grid_size + k + 1].contiguous()
    interval = torch.searchsorted(inner, x.t().contiguous(), right=True).t() - 1
    interval = interval.clamp_(0, grid_size - 1) + k
    # T[o] = t_{m+o} for o = -k+1 .. k, gathered from the flattened knot table: (2k, batch, in).
    offsets = torch.arange(-k + 1, k + 1, device=x.device).view(-1, 1, 1)
    row_start = torch.arange(n_in, device=x.device) * n_knots
    local_knots = knots.reshape(-1)[interval + row_start + offsets]
    xs = x.unsqueeze(0)

    def knot(o_start: int, o_stop: int) -> torch.Tensor:
        # T[o_start .. o_stop] inclusive
        return local_knots[o_start + k - 1: o_stop + k]

    values = torch.ones_like(xs)
    lower_degree = values
    zero = torch.zeros_like(xs)
    for j in range(1, k + 1):
        if j == k:
            lower_degree = values
        right = knot(1, j) - xs
        left = xs - knot(1 - j, 0)
        temp = values / (right + left)
        values = torch.cat([right * temp, zero]) + torch.cat([zero, left * temp])
    derivatives = None
    if with_derivative:
        # B'_{s,k} = k * (B_{s,k-1} / (t_{s+k} - t_s) - B_{s+1,k-1} / (t_{s+k+1} - t_{s+1}))
        scaled = k * lower_degree / (knot(1, k) - knot(1 - k, 0))
        derivatives = torch.cat([zero, scaled]) - torch.cat([scaled, zero])
    return LocalBasis(values, interval - k, derivatives)


def interval_polynomials(knots: torch.Tensor, k: int) -> torch.Tensor:
    """Packed per-interval polynomials for any increasing knots: (rows, in * G).

    On domain interval m of input i the non-zero functions B_{m}, .., B_{m+k} (in
    0-based basis numbering) are polynomials in u = (x - start[i, m]) * inv_width[i, m]
    in [0, 1]. Column i * G + m holds, in rows p * (k + 1) + r, the coefficient of u^p
    in B_{m+r}; then one row with start and one with inv_width. Built once per knot
    table from the de Boor values at k + 1 points inside each interval (an exact
    interpolation: the pieces are degree-k polynomials).
    """
    grid_size = knots.shape[1] - 2 * k - 1
    knots64 = knots.to(torch.float64)
    inner = knots64[:, k: grid_size + k + 1]
    start, width = inner[:, :-1], inner.diff(dim=1)                     # (in, G)
    nodes = (torch.arange(k + 1, dtype=torch.float64, device=knots.device) + 0.5) / (k + 1)
    points = start.unsqueeze(-1) + width.unsqueeze(-1) * nodes         # (in, G, k + 1)
    n_in = knots.shape[0]
    values = _general_local_basis(points.reshape(n_in, -1).t(), knots64, k, False).values
    values = values.reshape(k + 1, grid_size, k + 1, n_in)              # (r, m, node, in)
    powers = torch.arange(k + 1, dtype=torch.float64, device=knots.device)
    inverse_vandermonde = torch.linalg.inv(nodes.unsqueeze(1) ** powers)  # (p, node)
    coefficients = torch.einsum("pq,rmqi->prim", inverse_vandermonde, values)
    table = torch.cat([coefficients.reshape((k + 1) ** 2, n_in * grid_size),
                       start.reshape(1, -1), (1.0 / width).reshape(1, -1)])
    return table.to(knots.dtype)


class IntervalTable(NamedTuple):
    """What the layer op needs from non-uniform knots, built once per knot table
    (interval_table). Intervals are numbered globally: column i * G + m is interval m of
    input i.

    rows: (2 + (k + 1)^2, in * G) per interval (column): start, 1 / width, then the
        coefficient of u^p in B_{m + r} in row 2 + p * (k + 1) + r (see interval_polynomials)
    low, high: (in,) the domain [t_k, t_{G+k}] per input
    cell_offset, cell_scale: (in,) cell coordinate c = cell_offset + cell_scale * x, in
        [0, cells] over the domain (cells equal parts)
    cell_first: (in * cells,) the first column that a point of cell i * cells + c can be in
    next_knot: (in * G,) right end of each interval (+inf for the last one of an input)
    steps: how many knots at most lie in one cell: locate walks that many times
    """

    rows: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    cell_offset: torch.Tensor
    cell_scale: torch.Tensor
    cell_first: torch.Tensor
    next_knot: torch.Tensor
    steps: int
    cells: int
    grid_size: int

    def locate(self, x: torch.Tensor) -> torch.Tensor:
        """x (batch, in) inside the domain -> (batch * in,) int64 global interval column,
        as searchsorted(knots, x, right=True) would give (the right end belongs to the
        last interval): a lookup in equal cells, then at most `steps` steps forward."""
        batch, n_in = x.shape
        cell = torch.addcmul(self.cell_offset, x, self.cell_scale).clamp_(0, self.cells - 1)
        column = self.cell_first.index_select(0, cell.long().view(-1).add_(
            _cell_starts(batch, n_in, self.cells, x.device)))
        flat = x.reshape(-1)
        for _ in range(self.steps):
            column += flat >= self.next_knot.index_select(0, column)
        return column

    def column_offsets(self, batch: int) -> torch.Tensor:
        """(batch * in,) int64: i * G, the column of input i's first interval."""
        return _cell_starts(batch, self.low.shape[0], self.grid_size, self.low.device)


# Index tensors with one entry per (row, input) (here and in spline_op) are kept for the
# last few shapes, but only up to this many entries: no unbounded cached memory for big batches.
CACHED_INDEX_SIZE = 1 << 18


def _cell_starts(batch: int, n_in: int, per_input: int, device: torch.device) -> torch.Tensor:
    """(batch * in,) int64: i * per_input for each (row, input); kept for the last few
    shapes unless large."""
    make = _new_cell_starts if batch * n_in > CACHED_INDEX_SIZE else _cached_cell_starts
    return make(batch, n_in, per_input, device)


def _new_cell_starts(batch: int, n_in: int, per_input: int, device: torch.device) -> torch.Tensor:
    return (torch.arange(n_in, device=device) * per_input).repeat(batch)


_cached_cell_starts = functools.lru_cache(maxsize=16)(_new_cell_starts)


def interval_table(knots: torch.Tensor, k: int, max_entries: int = 1 << 18) -> IntervalTable:
    """IntervalTable for increasing knots (in, G + 2k + 1). The cells are refined (up to
    max_entries lookup entries) until no cell holds more than one knot, so locate
    usually takes one step."""
    n_in = knots.shape[0]
    grid_size = knots.shape[1] - 2 * k - 1
    knots64 = knots.to(torch.float64)
    inner = knots64[:, k: grid_size + k + 1].contiguous()                  # (in, G + 1)
    low, high = inner[:, 0], inner[:, -1]
    # The cell coordinate of x is computed in the knots' dtype: a point may land in a
    # neighbouring cell by its rounding error (relative eps at the domain's magnitude).
    rounding = 8 * torch.finfo(knots.dtype).eps * torch.maximum(low.abs(), high.abs()) / (high - low)
    cells = 4 * grid_size
    while True:
        width = (high - low) / cells
        margin = (0.01 + rounding * cells)[:, None]                         # in cells
        # Look up from the margin before a cell's start, walk up to the margin after its end.
        edges = torch.arange(cells + 1, dtype=torch.float64, device=knots.device)
        first = _interval_of(inner, low[:, None] + (edges[:-1] - margin) * width[:, None])
        last = _interval_of(inner, low[:, None] + (edges[1:] + margin) * width[:, None])
        steps = int((last - first).max())
        if steps <= 1 or 2 * cells * n_in > max_entries:
            break
        cells *= 2
    next_knot = inner[:, 1:].clone()
    next_knot[:, -1] = float("inf")
    offsets = torch.arange(n_in, device=knots.device)
    dtype = knots.dtype
    return IntervalTable(
        rows=interval_polynomials(knots, k).roll(2, dims=0).contiguous(),
        low=low.to(dtype), high=high.to(dtype),
        cell_offset=(-low * cells / (high - low)).to(dtype), cell_scale=(cells / (high - low)).to(dtype),
        cell_first=(first + offsets[:, None] * grid_size).reshape(-1),
        next_knot=next_knot.to(dtype).reshape(-1), steps=steps, cells=cells, grid_size=grid_size)


def _interval_of(inner: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Interval m in [0, G - 1] of each point (in, n) (clamped into the domain)."""
    grid_size = inner.shape[1] - 1
    count = torch.searchsorted(inner, points.contiguous(), right=True)
    return (count - 1).clamp_(0, grid_size - 1)


def local_basis(x: torch.Tensor, knots: torch.Tensor, k: int, uniform: bool,
                with_derivative: bool = False) -> LocalBasis:
    """Non-zero B-spline values at ``x`` (layout: see LocalBasis).

    x: (batch, in), already clamped into each input's domain.
    knots: (in, G + 2k + 1), increasing per row; ``uniform`` says they are equally spaced.
    """
    if uniform:
        return _uniform_local_basis(x, knots, k, with_derivative)
    return _general_local_basis(x, knots, k, with_derivative)


@functools.lru_cache(maxsize=64)
def _row_offsets(start: int, k: int, device: torch.device) -> torch.Tensor:
    return torch.arange(start, start + k + 1, device=device).view(-1, 1, 1)


def basis_rows(first: torch.Tensor, k: int, shift: int = 0) -> torch.Tensor:
    """(batch, in) first indices (less `shift`) -> (k + 1, batch, in) indices of the
    non-zero functions."""
    return first + _row_offsets(-shift, k, first.device)


def dense_basis(x: torch.Tensor, knots: torch.Tensor, k: int, uniform: bool) -> torch.Tensor:
    """The full basis table (batch, G + k, in), zeros outside the k + 1 non-zero entries."""
    basis = local_basis(x, knots, k, uniform)
    n_basis = knots.shape[1] - k - 1
    dense = x.new_zeros(x.shape[0], n_basis, x.shape[1])
    rows = basis_rows(basis.first, k)
    return dense.scatter_(1, rows.transpose(0, 1), basis.values.transpose(0, 1))


def clamp_to_domain(x: torch.Tensor, knots: torch.Tensor, k: int) -> torch.Tensor:
    """Clamp x (batch, in) into [t_k, t_{G+k}] per input: the out-of-grid rule."""
    grid_size = knots.shape[1] - 2 * k - 1
    return torch.clamp(x, knots[:, k], knots[:, grid_size + k])
