"""The spline term of a KAN layer as one autograd function.

Forward: evaluate the k + 1 non-zero basis values per input, scatter them into the
dense basis matrix (batch, in * (G + k)) and multiply once by the folded weights
(out, in * (G + k)). The basis values are computed as (k + 1, batch, in) planes so
every elementwise step runs over contiguous memory. Backward: the weight gradient is ``dense^T @ grad_out``; the
input gradient needs only the k + 1 basis derivatives gathered against
``grad_out @ weight^T``, so no Cox-de Boor table and no autograd graph of the basis
is ever kept.
"""
from __future__ import annotations

import torch

from kanmodel.basis import basis_rows, interval_polynomials, uniform_coordinates, uniform_unit_basis


def _uniform_basis(x, knots, k, grid_size, with_derivative, constants):
    """Closed form on equally spaced knots. -> (values (k + 1, batch, in), first index
    (batch, in), d values / d local coordinate, d coordinate / dx masked to zero
    outside the domain)."""
    offset, scale = constants if constants is not None else uniform_coordinates(knots, k)
    t = torch.addcmul(offset, x, scale)
    clamped = t.clamp(k, grid_size + k)
    values, interval, derivatives = uniform_unit_basis(clamped, k, grid_size, with_derivative)
    chain = (clamped == t) * scale if with_derivative else None
    return values, interval.long() - k, derivatives, chain


def _general_basis(x, knots, k, grid_size, with_derivative, constants):
    """Any increasing knots: locate the interval, gather its polynomials (see
    basis.interval_polynomials) and evaluate them; same outputs as _uniform_basis."""
    table = constants if constants is not None else interval_polynomials(knots, k)
    batch, n_in = x.shape
    low, high = knots[:, k], knots[:, grid_size + k]
    clamped = torch.clamp(x, low, high)
    inner = knots[:, k: grid_size + k + 1].contiguous()
    count = torch.searchsorted(inner, clamped.t().contiguous(), right=True).t()
    interval = (count - 1).clamp_(0, grid_size - 1)
    column = interval + torch.arange(n_in, device=x.device) * grid_size
    gathered = table.index_select(1, column.reshape(-1)).view(-1, batch, n_in)
    powers = gathered[: (k + 1) ** 2].view(k + 1, k + 1, batch, n_in)
    start, inverse_width = gathered[-2], gathered[-1]
    u = (clamped - start) * inverse_width
    values = torch.addcmul(powers[k - 1], powers[k], u)
    for p in range(k - 2, -1, -1):
        values = torch.addcmul(powers[p], values, u)
    derivatives = chain = None
    if with_derivative:
        derivatives = powers[k] * k
        for p in range(k - 1, 0, -1):
            derivatives = torch.add(derivatives * u, powers[p], alpha=p)
        chain = ((x >= low) & (x <= high)) * inverse_width
    return values, interval, derivatives, chain


class SplineMatmul(torch.autograd.Function):
    """spline(x) = dense_basis(clamp(x)) @ weight.

    x: (batch, in); knots: (in, G + 2k + 1); weight: (out, in * (G + k)), column
    i * (G + k) + j for basis function j of input i. (This orientation, and grad_out^T @ dense rather
    than dense^T @ grad_out, keeps every matmul on the fast BLAS path: the other
    orientations measured 5-9x slower for thin outputs.)
    Inputs outside [t_k, t_{G+k}] are clamped, so their gradient is zero there
    (on the boundary itself the inside derivative is used).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, knots: torch.Tensor, weight: torch.Tensor,
                k: int, uniform: bool, constants=None) -> torch.Tensor:
        batch, n_in = x.shape
        grid_size = knots.shape[1] - 2 * k - 1
        n_basis = grid_size + k
        need_x_grad = ctx.needs_input_grad[0]
        evaluate = _uniform_basis if uniform else _general_basis
        values, first, derivatives, chain = evaluate(x, knots, k, grid_size, need_x_grad, constants)
        # (k + 1, batch, in) planes, seen as (batch, in, k + 1) by scatter and gather.
        rows = basis_rows(first, k).permute(1, 2, 0)
        dense = x.new_zeros(batch, n_in, n_basis).scatter_(2, rows, values.permute(1, 2, 0))
        if derivatives is not None:
            derivatives = derivatives.permute(1, 2, 0)
        dense = dense.view(batch, n_in * n_basis)
        ctx.save_for_backward(dense, rows, derivatives, chain, weight)
        ctx.shape = (batch, n_in, n_basis)
        return dense @ weight.t()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        dense, rows, derivatives, chain, weight = ctx.saved_tensors
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_dense = (grad_out @ weight).view(ctx.shape)
            grad_x = (grad_dense.gather(2, rows) * derivatives).sum(2) * chain
        if ctx.needs_input_grad[2]:
            grad_weight = grad_out.t() @ dense
        return grad_x, None, grad_weight, None, None, None


def spline_matmul(x: torch.Tensor, knots: torch.Tensor, weight: torch.Tensor,
                  k: int, uniform: bool, constants=None) -> torch.Tensor:
    """(batch, in) -> (batch, out); see SplineMatmul. constants: what depends on the
    knots only, when the caller has it cached: basis.uniform_coordinates(knots, k) for
    uniform knots, basis.interval_polynomials(knots, k) otherwise."""
    return SplineMatmul.apply(x, knots, weight, k, uniform, constants)
