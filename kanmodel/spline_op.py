"""A whole KAN layer as one autograd function.

Forward: evaluate the k + 1 non-zero basis values per input, scatter them into the
(flattened) dense basis matrix (batch, in * (G + k)) and multiply once by the folded weights
(out, in * (G + k)) = coef * spline_weight * mask, plus the base matmul and bias.
Backward: the weight gradient is ``grad_out^T @ dense``; the input gradient needs only
the k + 1 entries of ``grad_out @ weight`` at the scattered positions (one index_select
of overlapping (k + 1)-rows) against the basis derivatives, so no Cox-de Boor table and
no autograd graph of the basis is ever kept. One autograd node per layer also keeps the
per-call overhead low for small layers.

How the ops are chosen (measured on a shared 2-core CPU, docs/benchmarks.md): torch runs
an elementwise op over more than 32768 elements, and MKL a matmul, as a parallel region,
and with 2 threads each region costs 0.1-0.5 ms whenever the other core is busy. So large
layers build the basis from (batch, in) planes, one op per plane (each below that size for
the benchmarked layers), write them with one 1-D scatter per plane (1-D scatter and
index_select run single-threaded), and use a closed form for the cubic basis instead of
a (4 x 4) @ (4 x n) matmul (10x slower under load when MKL threads it). Small layers,
where per-op overhead dominates, do each step as one op over all planes.

On CPU (float32/float64, k <= kernels.MAX_ORDER) the compiled kernels of
kanmodel/csrc/spline_kernels.cpp replace all of that when they were built at install
time: one pass writes an extended basis (batch, in * (G + k + 1)) whose last column per
input is base(x), so a single matmul with the extended weight (out, in * (G + k + 1))
gives the spline and the base term. The backward recomputes the basis derivatives from x
in one kernel pass for the input gradient (fed by grad_out @ weight, or for few outputs
forming the few columns of it that each input needs itself) and has one matmul for all
weight gradients, split by one more pass. CUDA, other dtypes and a missing extension use
the torch path; so does everything when KANMODEL_DISABLE_KERNELS=1 is set or
`use_kernels` is False.
"""
from __future__ import annotations

import functools
import os

import torch

from kanmodel.basis import (CACHED_INDEX_SIZE, IntervalTable, interval_table, uniform_coordinates,
                            uniform_unit_basis)

try:
    from kanmodel import _spline_kernels as kernels
    kernel_import_error = None
except ImportError as error:          # not built (no compiler at install time): torch path
    kernels, kernel_import_error = None, error

# Module flag, so tests can run both paths in one process.
use_kernels = kernels is not None and os.environ.get("KANMODEL_DISABLE_KERNELS", "") != "1"
_KERNEL_DTYPES = (torch.float32, torch.float64)
# Up to this many outputs the input-gradient kernel forms the k + 2 columns of
# grad_out @ weight that each input needs itself, instead of the whole matmul (paired
# fwd+bwd of bench/kan_layer.py's models, commit e3bfb9c: 2-16% faster for those whose
# layers have 1-4 outputs; 0.98-1.00x for [784, 64, 10], whose 10-output layer therefore
# keeps the matmul).
_DIRECT_OUTPUTS = 8
_BASE_CODES = {"zero": 0, "identity": 1, "silu": 2}     # as in spline_kernels.cpp

# Elementwise ops over more elements than this run as parallel regions (at::internal::GRAIN_SIZE).
_PARALLEL_SIZE = 32768
# Up to this many outputs and from this size of dense on, (out, K) @ (K, batch) beats
# (batch, K) @ (K, out) by 1.5-2x (MKL), more than the transpose of the result costs.
_THIN_OUTPUT = 16
_THIN_MIN_SIZE = 65536


def _cubic_values(u: torch.Tensor, values: torch.Tensor):
    """Uniform cubic B-spline at local coordinate u (batch, in) into values (4, batch, in):
    B0 = w^3 / 6, B3 = u^3 / 6 (w = 1 - u), and from the partition of unity and the
    symmetry B2(u) = B1(w): B1 = w + B3 - 2 B0, B2 = u + B0 - 2 B3.
    Returns (w^2, u^2) for _input_grad."""
    w = torch.rsub(u, 1)
    u2, w2 = u * u, w * w
    b0, b1, b2, b3 = values.unbind(0)
    torch.mul(w2, w, out=b0).mul_(1 / 6)
    torch.mul(u2, u, out=b3).mul_(1 / 6)
    torch.add(w, b3, out=b1).sub_(b0, alpha=2)
    torch.add(u, b0, out=b2).sub_(b3, alpha=2)
    return w2, u2


def _uniform_basis(x, k, grid_size, with_derivative, constants):
    """Closed form on equally spaced knots.
    -> (values (k + 1, batch, in), knot interval m (batch, in) int64 (the first non-zero
        function is m - k), derivative state for _input_grad, d coordinate / dx masked to
        zero outside the domain (batch, in))."""
    offset, scale = constants
    t = torch.addcmul(offset, x, scale)
    clamped = t.clamp(k, grid_size + k)
    if k == 3 and (k + 1) * x.numel() > _PARALLEL_SIZE:
        # t >= k > 0, so floor is the knot interval m; the right end belongs to the last one.
        interval = clamped.floor().clamp_(max=grid_size + k - 1)
        values = x.new_empty(k + 1, *x.shape)
        state = _cubic_values(clamped - interval, values)
        interval = interval.long()
    else:
        # Powers of the local coordinate and one small matmul each for the values and
        # the derivatives (d/dt = d/du on unit-spaced knots).
        values, interval, derivatives = uniform_unit_basis(clamped, k, grid_size, with_derivative)
        state = None if derivatives is None else derivatives.view(k + 1, -1)
    chain = None
    if with_derivative:
        outside = torch.sub(t, clamped).abs_().sign_()          # 1 where clamped, else 0
        chain = torch.addcmul(scale, outside, scale, value=-1)
    return values, interval, state, chain


def _input_grad(picked: torch.Tensor, state) -> torch.Tensor:
    """sum_r dB_r/du * picked[r] for picked (k + 1, n): state is either the derivative
    planes (k + 1, n) or (w^2, u^2) from _cubic_values, where dB/du is the quadratic basis
    (w^2 / 2, 1 - (w^2 + u^2) / 2, u^2 / 2) applied to q_r = picked[r + 1] - picked[r]."""
    if isinstance(state, torch.Tensor):
        return torch.mul(picked, state).sum(0)
    w2, u2 = (square.view(-1) for square in state)
    p0, p1, p2, p3 = picked.unbind(0)
    middle = p2 - p1
    grad = torch.addcmul(middle, w2, torch.sub(p1, p0).sub_(middle), value=0.5)
    return grad.addcmul_(u2, torch.sub(p3, p2).sub_(middle), value=0.5)


def _general_basis(x, k, grid_size, with_derivative, table: IntervalTable):
    """Any increasing knots: locate each input's interval with table.locate, gather the
    interval's column of table.rows (start, 1 / width, polynomial coefficients) with one
    index_select and evaluate by Horner.
    -> (values (k + 1, n), first non-zero function (n,) int64, derivatives (k + 1, n),
        d coordinate / dx masked to zero outside the domain (n,)), n = batch * in."""
    clamped = torch.clamp(x, table.low, table.high)
    column = table.locate(clamped)                              # (n,) global interval i G + m
    gathered = table.rows.index_select(1, column)               # (2 + (k + 1)^2, n)
    u = torch.sub(clamped.view(-1), gathered[0]).mul_(gathered[1])
    coefficients = gathered[2:].view(k + 1, k + 1, -1)         # [power, r, n]
    values = torch.addcmul(coefficients[k - 1], coefficients[k], u)
    for p in range(k - 2, -1, -1):
        values = torch.addcmul(coefficients[p], values, u)
    derivatives = chain = None
    if with_derivative:
        derivatives = coefficients[k] * k
        for p in range(k - 1, 0, -1):
            derivatives = torch.addcmul(coefficients[p], derivatives, u, value=1 / p).mul_(p)
        outside = torch.sub(x, clamped).abs_().sign_().view(-1)
        chain = torch.addcmul(gathered[1], outside, gathered[1], value=-1)
    return values, column - table.column_offsets(x.shape[0]), derivatives, chain


def _base_terms(x: torch.Tensor, base: str, with_derivative: bool):
    """-> (base(x), d base / dx or None (identity, or not needed)); base is 'silu' or
    'identity'."""
    if base == "identity":
        return x, None
    if not with_derivative:
        return torch.nn.functional.silu(x), None
    sigmoid = torch.sigmoid(x)
    activated = x * sigmoid
    # silu'(x) = s + s (x - silu(x))
    return activated, torch.addcmul(sigmoid, sigmoid, x - activated)


class KANLayerFunction(torch.autograd.Function):
    """y = base(x) @ (base_weight * mask)^T + bias + dense_basis(clamp(x)) @ weight^T,
    weight = (coef * (spline_weight * mask)[..., None]).view(out, in * (G + k)).

    x: (batch, in); coef: (out, in, G + k); spline_weight, base_weight, mask: (out, in);
    bias: (out,); knots: (in, G + 2k + 1); base: 'silu', 'identity' or 'zero'.
    (The weight gradient is grad_out^T @ dense with a row-major (out, ...) weight: the
    other orientations measured 5-9x slower for thin outputs.)
    Inputs outside [t_k, t_{G+k}] are clamped for the spline term, so its gradient is
    zero there (on the boundary itself the inside derivative is used).
    """

    @staticmethod
    def forward(ctx, x, coef, spline_weight, base_weight, bias, mask, knots,
                k: int, uniform: bool, base: str, constants=None):
        ctx.kernel = _kernels_apply(x, knots, k)
        if ctx.kernel:
            return _kernel_forward(ctx, x, coef, spline_weight, base_weight, bias, mask, knots,
                                   k, uniform, base)
        x = x.contiguous()                   # the flat positions below follow x's layout
        batch, n_in = x.shape
        n_out, _, n_basis = coef.shape
        grid_size = n_basis - k
        need_x_grad = ctx.needs_input_grad[0]
        if constants is not None:  # the caller's cache, asked here: only this path needs them
            constants = constants()
        if uniform:
            if constants is None:
                constants = uniform_coordinates(knots, k)
            values, first, state, chain = _uniform_basis(x, k, grid_size, need_x_grad, constants)
            shift = k                        # the first non-zero function of interval m is m - k
        else:
            if constants is None:
                constants = interval_table(knots, k)
            values, first, state, chain = _general_basis(x, k, grid_size, need_x_grad, constants)
            shift = 0
        # Flat position in dense of each input's first non-zero function; value r goes r
        # further on. Small layers: one scatter (and in backward one index_select) with
        # the positions of all k + 1 planes; large ones: one scatter per plane, and the
        # backward reads (k + 1)-rows of an overlapping view.
        positions = first.view(-1).add_(_block_starts(batch * n_in, n_basis, shift, x.device))
        flat = x.new_zeros(batch * n_in * n_basis)
        all_planes = values.numel() <= _PARALLEL_SIZE
        if all_planes:
            positions = (positions + _ramp(k, x.device)).view(-1)
            flat.scatter_(0, positions, values.view(-1))
        else:
            for r in range(k + 1):
                flat[r:].scatter_(0, positions, values[r].view(-1))
        dense = flat.view(batch, n_in * n_basis)
        scale = spline_weight * mask
        weight = (coef * scale.unsqueeze(-1)).view(n_out, -1)
        activated = base_slope = base_matrix = None
        if base != "zero":
            activated, base_slope = _base_terms(x, base, need_x_grad)
            base_matrix = base_weight * mask
        if n_out <= _THIN_OUTPUT and dense.numel() > _THIN_MIN_SIZE:
            out = torch.addmm(bias.unsqueeze(1), weight, dense.t())
            if base_matrix is not None:
                out.addmm_(base_matrix, activated.t())
            out = out.t().contiguous()
        else:
            out = torch.addmm(bias, dense, weight.t())
            if base_matrix is not None:
                out.addmm_(activated, base_matrix.t())
        # Inputs go through save_for_backward; intermediates made here are kept on ctx
        # directly (cheaper to unpack, which matters for small layers; they live as long
        # as the graph, so repeated backward passes, as in gradcheck, still work).
        ctx.save_for_backward(coef, mask)
        ctx.intermediates = (dense, positions, state, chain, weight, scale,
                             activated, base_slope, base_matrix)
        ctx.layout = (k, all_planes)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.kernel:
            return _kernel_backward(ctx, grad_out)
        coef, mask = ctx.saved_tensors
        (dense, positions, state, chain, weight, scale,
         activated, base_slope, base_matrix) = ctx.intermediates
        k, all_planes = ctx.layout
        need_x, need_coef, need_spline_weight, need_base_weight, need_bias = ctx.needs_input_grad[:5]
        grad_x = grad_coef = grad_spline_weight = grad_base_weight = grad_bias = None
        if need_x:
            batch, n_in = dense.shape[0], coef.shape[1]
            grad_dense = torch.mm(grad_out, weight).view(-1)
            if all_planes:
                picked = grad_dense.index_select(0, positions).view(k + 1, -1)
            else:
                # Row p of the overlapping (len - k, k + 1) view holds entries p .. p + k.
                picked = grad_dense.unfold(0, k + 1, 1).index_select(0, positions).t()
            grad_x = _input_grad(picked, state).view(batch, n_in).mul_(chain.view(batch, n_in))
            if base_matrix is not None:
                grad_base = torch.mm(grad_out, base_matrix)
                if base_slope is None:
                    grad_x.add_(grad_base)
                else:
                    grad_x.addcmul_(grad_base, base_slope)
        if need_coef or need_spline_weight:
            grad_weight = torch.mm(grad_out.t(), dense).view(coef.shape)
            if need_coef:
                grad_coef = grad_weight * scale.unsqueeze(-1)
            if need_spline_weight:
                grad_spline_weight = (grad_weight * coef).sum(-1) * mask
        if need_base_weight and activated is not None:
            grad_base_weight = torch.mm(grad_out.t(), activated).mul_(mask)
        if need_bias:
            grad_bias = grad_out.sum(0)
        return (grad_x, grad_coef, grad_spline_weight, grad_base_weight, grad_bias,
                None, None, None, None, None, None)


def _kernels_apply(x: torch.Tensor, knots: torch.Tensor, k: int) -> bool:
    return (use_kernels and x.device.type == "cpu" and x.dtype in _KERNEL_DTYPES
            and knots.dtype == x.dtype and k <= kernels.MAX_ORDER)


def _kernel_forward(ctx, x, coef, spline_weight, base_weight, bias, mask, knots, k, uniform, base):
    """KANLayerFunction.forward with the compiled kernels: extended basis (batch, in * width)
    @ extended weight (out, in * width)^T, width = G + k (+ 1 with a base function)."""
    x, knots = x.contiguous(), knots.contiguous()
    n_out = coef.shape[0]
    code = _BASE_CODES[base]
    # sigmoid(x) from torch (vectorised exp), for silu(x) = x s and silu'(x) = s (1 + x (1 - s)).
    gate = torch.sigmoid(x) if base == "silu" else None
    dense = kernels.extended_basis(x, knots, k, uniform, code, gate)
    coef, spline_weight, mask = coef.contiguous(), spline_weight.contiguous(), mask.contiguous()
    weight = kernels.extended_weight(coef, spline_weight, base_weight.contiguous() if code else None, mask)
    if n_out <= _THIN_OUTPUT and dense.numel() > _THIN_MIN_SIZE:
        out = torch.addmm(bias.unsqueeze(1), weight, dense.t()).t().contiguous()
    else:
        out = torch.addmm(bias, dense, weight.t())
    ctx.save_for_backward(x, coef, spline_weight, mask, knots)
    ctx.intermediates = (gate, dense, weight)
    ctx.layout = (k, uniform, code)
    return out


def _kernel_backward(ctx, grad_out):
    x, coef, spline_weight, mask, knots = ctx.saved_tensors
    gate, dense, weight = ctx.intermediates
    k, uniform, code = ctx.layout
    need_x, need_coef, need_spline_weight, need_base_weight, need_bias = ctx.needs_input_grad[:5]
    grad_x = grad_coef = grad_spline_weight = grad_base_weight = grad_bias = None
    if need_x:
        if weight.shape[0] <= _DIRECT_OUTPUTS:
            grad_x = kernels.input_grad(x, knots, k, uniform, code, gate, grad_out.contiguous(),
                                        weight.t().contiguous())
        else:
            grad_x = kernels.input_grad(x, knots, k, uniform, code, gate, torch.mm(grad_out, weight), None)
    if need_coef or need_spline_weight or (need_base_weight and code):
        # One matmul for the gradient of the whole extended weight, one pass to split it.
        grad_coef, grad_spline_weight, grad_base_weight = kernels.weight_grads(
            torch.mm(grad_out.t(), dense), coef, spline_weight, mask, code != 0)
    if need_bias:
        grad_bias = grad_out.sum(0)
    return (grad_x, grad_coef, grad_spline_weight, grad_base_weight, grad_bias,
            None, None, None, None, None, None)


def _block_starts(count: int, n_basis: int, shift: int, device: torch.device) -> torch.Tensor:
    """Flat offset in dense of each (row, input) block of n_basis columns, less shift
    (kept for the last few layer shapes unless large)."""
    make = _new_block_starts if count > CACHED_INDEX_SIZE else _cached_block_starts
    return make(count, n_basis, shift, device)


def _new_block_starts(count: int, n_basis: int, shift: int, device: torch.device) -> torch.Tensor:
    return torch.arange(-shift, count * n_basis - shift, n_basis, device=device)


_cached_block_starts = functools.lru_cache(maxsize=16)(_new_block_starts)


@functools.lru_cache(maxsize=16)
def _ramp(k: int, device: torch.device) -> torch.Tensor:
    return torch.arange(k + 1, device=device).view(k + 1, 1)


def kan_layer(x, coef, spline_weight, base_weight, bias, mask, knots, k: int, uniform: bool,
              base: str, constants=None) -> torch.Tensor:
    """(batch, in) -> (batch, out); see KANLayerFunction. constants: when the caller caches
    what depends on the knots only, a function returning it (basis.uniform_coordinates(knots,
    k) for uniform knots, basis.interval_table(knots, k) otherwise); called only by the
    torch path, which needs them."""
    return KANLayerFunction.apply(x, coef, spline_weight, base_weight, bias, mask, knots,
                                  k, uniform, base, constants)
