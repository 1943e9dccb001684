"""The spline term of a KAN layer as one autograd function.

Forward: evaluate the k + 1 non-zero basis values per input, scatter them into the
dense basis matrix (batch, in * (G + k)) and multiply once by the folded weights
(in * (G + k), out). Backward: the weight gradient is ``dense^T @ grad_out``; the
input gradient needs only the k + 1 basis derivatives gathered against
``grad_out @ weight^T``, so no Cox-de Boor table and no per-step autograd graph of
the basis is ever kept.
"""
from __future__ import annotations

import torch

from kanmodel.basis import local_basis


class SplineMatmul(torch.autograd.Function):
    """spline(x) = dense_basis(clamp(x)) @ weight.

    x: (batch, in); knots: (in, G + 2k + 1); weight: (in * (G + k), out).
    Inputs outside [t_k, t_{G+k}] are clamped, so their gradient is zero there
    (on the boundary itself the inside derivative is used).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, knots: torch.Tensor, weight: torch.Tensor,
                k: int, uniform: bool) -> torch.Tensor:
        batch, n_in = x.shape
        grid_size = knots.shape[1] - 2 * k - 1
        n_basis = grid_size + k
        low, high = knots[:, k], knots[:, grid_size + k]
        clamped = torch.clamp(x, low, high)
        basis = local_basis(clamped, knots, k, uniform, with_derivative=ctx.needs_input_grad[0])
        columns = basis.first.unsqueeze(-1) + torch.arange(k + 1, device=x.device)
        dense = x.new_zeros(batch, n_in, n_basis).scatter_(-1, columns, basis.values)
        dense = dense.view(batch, n_in * n_basis)
        out = dense @ weight
        derivatives = None
        if ctx.needs_input_grad[0]:
            inside = (x >= low) & (x <= high)
            derivatives = basis.derivatives * inside.unsqueeze(-1)
        ctx.save_for_backward(dense, columns, derivatives, weight)
        ctx.shape = (batch, n_in, n_basis)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        dense, columns, derivatives, weight = ctx.saved_tensors
        batch, n_in, n_basis = ctx.shape
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_dense = (grad_out @ weight.t()).view(batch, n_in, n_basis)
            grad_x = (grad_dense.gather(-1, columns) * derivatives).sum(-1)
        if ctx.needs_input_grad[2]:
            grad_weight = dense.t() @ grad_out
        return grad_x, None, grad_weight, None, None


def spline_matmul(x: torch.Tensor, knots: torch.Tensor, weight: torch.Tensor,
                  k: int, uniform: bool) -> torch.Tensor:
    """(batch, in) -> (batch, out); see SplineMatmul."""
    return SplineMatmul.apply(x, knots, weight, k, uniform)
