"""merge(): the average of several KANs as one KAN, so an ensemble exports and serves
as a single network (kanmodel.export.to_onnx needs nothing new).

The members must share width, k, base, task, input standardisation, grid size and the
first layer's knots (fit with grid_inputs="all" places them on every row's inputs, so
members trained on different folds agree). Then, for members m = 1..M:

- one layer ([n_in, n_out]): the knots are shared per input, so the average of the
  edge functions is one edge function: base weights and spline coefficients average.
- deeper: the hidden layers stand side by side. Layer 0 concatenates the members'
  outputs (M * h1 units); a middle layer is block-diagonal (the mask zeroes the edges
  between members; every hidden unit keeps its own knots); the last layer sums all
  members' hidden units into the outputs.

Regression members have their own output standardisation (s_m, c_m), the merged net
one (S = mean s_m, C = mean c_m): member m's last-layer edges are scaled by
s_m / (M S) and its bias becomes (b_m s_m + c_m - C) / (M S), which makes
S * (sum of the scaled members) + C = mean_m (s_m f_m + c_m). Classification averages
the logits.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from kanmodel.model import KAN

# Relative tolerance for "the same knots / standardisation": members whose grids were
# placed on the same inputs differ only by float rounding.
SAME_TOLERANCE = 1e-5


def merge(models: list[KAN], x=None) -> KAN:
    """One KAN computing the mean of the members' outputs (raw outputs or logits).

    Members on coarser grids are refined (copies; KAN.refine on the raw inputs
    x (batch, in), needed then) to the finest member's grid first: exact when it is
    a multiple of theirs, otherwise a least-squares re-fit, so the merged net then
    averages the refined members."""
    if not models:
        raise ValueError("merge needs at least one model")
    if len(models) == 1:
        return models[0]
    finest = max(model.grid_size for model in models)
    if any(model.grid_size != finest for model in models):
        if x is None:
            raise ValueError("members have different grid sizes: pass x to refine them to one grid")
        models = [_refined(model, finest, x) for model in models]
    first = models[0]
    _check_compatible(models)
    n_members = len(models)
    depth = len(first.layers)
    width = [first.width[0], *(n_members * w for w in first.width[1:-1]), first.width[-1]]
    merged = KAN(width, grid=first.grid_size, k=first.k, grid_range=first.grid_range,
                 grid_eps=first.grid_eps, base=first.base, seed=first.seed, task=first.task)
    merged = merged.to(dtype=first.in_shift.dtype, device=first.in_shift.device)
    scales = torch.stack([m.out_scale for m in models])            # (M, out)
    shifts = torch.stack([m.out_shift for m in models])
    out_scale, out_shift = scales.mean(0), shifts.mean(0)
    # Per member and output: the factor on its last-layer edges and its bias.
    factor = scales / (n_members * out_scale)                       # (M, out)
    with torch.no_grad():
        merged.in_shift.copy_(first.in_shift)
        merged.in_scale.copy_(first.in_scale)
        merged.out_shift.copy_(out_shift)
        merged.out_scale.copy_(out_scale)
        for index, target in enumerate(merged.layers):
            layers = [m.layers[index] for m in models]
            last = index == depth - 1
            if index == 0 and last:
                _average_single_layer(target, layers, factor, shifts - out_shift, n_members, out_scale)
            else:
                _side_by_side(target, layers, first_layer=index == 0, last_layer=last,
                              factor=factor, offset=(shifts - out_shift) / (n_members * out_scale))
    return merged


def _refined(model: KAN, grid: int, x) -> KAN:
    if model.grid_size == grid:
        return model
    model = copy.deepcopy(model)
    model.refine(grid, x)
    return model


def _check_compatible(models: list[KAN]) -> None:
    first = models[0]
    for model in models[1:]:
        if (model.width, model.k, model.base, model.task) != (first.width, first.k, first.base, first.task):
            raise ValueError("members must share width, k, base and task")
        if any(a.grid_size != b.grid_size for a, b in zip(model.layers, first.layers)):
            raise ValueError("members must share the grid size (refine them to one grid first)")
        for name in ("in_shift", "in_scale"):
            if not torch.allclose(getattr(model, name), getattr(first, name), rtol=SAME_TOLERANCE, atol=1e-12):
                raise ValueError("members must share the input standardisation (fit with grid_inputs='all')")
        if not _same_knots(model.layers[0].knots, first.layers[0].knots):
            raise ValueError("members must share the first layer's knots (fit with grid_inputs='all')")


def _same_knots(a: torch.Tensor, b: torch.Tensor) -> bool:
    spread = (b.amax(1, keepdim=True) - b.amin(1, keepdim=True)).clamp_min(1e-12)
    return bool(((a - b).abs() <= SAME_TOLERANCE * spread).all())


def _average_single_layer(target, layers, factor, shift_offsets, n_members, out_scale) -> None:
    """[n_in, n_out]: mean of edge functions on shared knots. factor, shift_offsets (M, out)."""
    f = factor[:, :, None]                                           # (M, out, 1)
    masks = torch.stack([layer.mask for layer in layers])            # (M, out, in)
    base = (f * masks * torch.stack([layer.base_weight for layer in layers])).sum(0)
    spline = (f[..., None] * (masks * torch.stack([layer.spline_weight for layer in layers]))[..., None]
              * torch.stack([layer.coef for layer in layers])).sum(0)
    target.coef = nn.Parameter(spline)
    target.set_knots(layers[0].knots.clone(), all(layer.uniform for layer in layers))
    target.base_weight.copy_(base)
    target.spline_weight.fill_(1.0)
    target.mask.copy_((masks.amax(0) > 0).to(target.mask.dtype))
    biases = torch.stack([layer.bias for layer in layers])           # (M, out)
    target.bias.copy_((factor * biases).sum(0) + shift_offsets.sum(0) / (n_members * out_scale))


def _side_by_side(target, layers, first_layer: bool, last_layer: bool, factor, offset) -> None:
    """Block structure: inputs shared (first layer) or stacked; outputs stacked or summed
    (last layer, scaled by factor (M, out), biases plus offset (M, out))."""
    n_members = len(layers)
    out_f, in_f, n_basis = layers[0].coef.shape
    rows_total = out_f if last_layer else n_members * out_f
    cols_total = in_f if first_layer else n_members * in_f
    like = layers[0].coef
    coef = torch.zeros(rows_total, cols_total, n_basis, dtype=like.dtype, device=like.device)
    base_weight = torch.zeros(rows_total, cols_total, dtype=like.dtype, device=like.device)
    spline_weight = torch.zeros_like(base_weight)
    mask = torch.zeros_like(base_weight)
    bias = torch.zeros(rows_total, dtype=like.dtype, device=like.device)
    for m, layer in enumerate(layers):
        rows = slice(0, out_f) if last_layer else slice(m * out_f, (m + 1) * out_f)
        cols = slice(0, in_f) if first_layer else slice(m * in_f, (m + 1) * in_f)
        scale = factor[m][:, None] if last_layer else torch.ones_like(layer.bias)[:, None]
        coef[rows, cols] = layer.coef
        base_weight[rows, cols] = layer.base_weight * scale
        spline_weight[rows, cols] = layer.spline_weight * scale
        mask[rows, cols] = layer.mask
        bias[rows] += layer.bias * scale[:, 0] + (offset[m] if last_layer else 0)
    knots = layers[0].knots if first_layer else torch.cat([layer.knots for layer in layers])
    target.coef = nn.Parameter(coef)
    target.set_knots(knots.clone(), all(layer.uniform for layer in layers))
    target.base_weight.copy_(base_weight)
    target.spline_weight.copy_(spline_weight)
    target.mask.copy_(mask)
    target.bias.copy_(bias)
