"""`to_onnx`: a trained KAN as an ONNX graph built from its knots and coefficients.

Each layer becomes (batch, in) -> (batch, out):

    dense = [base(x) | scatter of the k+1 non-zero B-spline values of clamp(x)]
    y     = dense @ W + bias

where W (in * (1 + G + k), out) stacks mask * base_weight and the pruning mask,
spline_weight and coef folded together, so each layer costs one matrix product
over a row that is mostly zeros, and the k+1 basis values are closed-form
polynomials of a local coordinate (see `piecewise`). Uniform grids find the
interval with one floor; adaptive grids count the interior knots below x and
gather that interval's basis polynomials. The output standardisation is folded
into the last layer's W and bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from onnx import TensorProto

from kanmodel.export.metadata import column_names, model_props
from kanmodel.export.onnx_builder import GraphBuilder, batch_tensor
from kanmodel.export.piecewise import centred, is_uniform, local_bases, uniform_basis

INPUT = "input"
OUTPUT = "output"
PROBABILITIES = "probabilities"


@dataclass
class LayerArrays:
    """One KAN layer's parameters as float64 arrays (shapes as in KANLayer)."""

    knots: np.ndarray          # (in, G + 2k + 1)
    coef: np.ndarray           # (out, in, G + k)
    base_weight: np.ndarray    # (out, in)
    spline_weight: np.ndarray  # (out, in)
    bias: np.ndarray           # (out,)
    mask: np.ndarray           # (out, in)
    k: int
    base: str
    uniform: bool              # knots equally spaced: closed-form interval search

    @property
    def n_in(self) -> int:
        return self.knots.shape[0]

    @property
    def n_out(self) -> int:
        return self.coef.shape[0]

    @property
    def grid_size(self) -> int:
        return self.knots.shape[1] - 2 * self.k - 1

    def stacked_weight(self) -> np.ndarray:
        """W (in * (1 + G + k), out): base rows first, then input i's G + k spline rows."""
        base_rows = (self.mask * self.base_weight).T
        if self.base == "zero":
            base_rows = np.zeros_like(base_rows)
        spline = (self.mask * self.spline_weight)[..., None] * self.coef    # (out, in, G+k)
        spline_rows = spline.reshape(self.n_out, -1).T
        return np.concatenate([base_rows, spline_rows], axis=0)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().to(torch.float64).numpy()


def layer_arrays(layer, base: str) -> LayerArrays:
    return LayerArrays(
        knots=_numpy(layer.knots), coef=_numpy(layer.coef), base_weight=_numpy(layer.base_weight),
        spline_weight=_numpy(layer.spline_weight), bias=_numpy(layer.bias), mask=_numpy(layer.mask),
        k=int(layer.k), base=base,
        # Follow the torch layer's choice of path, but never trust a flag the knots contradict.
        uniform=bool(getattr(layer, "uniform", True)) and is_uniform(_numpy(layer.knots)),
    )


def to_onnx(model, name: str = "model", version=1, input_names=None, output_names=None) -> bytes:
    """Serialise a trained `kanmodel.KAN` as ONNX bytes.

    Graph input "input" (batch, n_in) float32 in raw units; output "output"
    (batch, n_out) float32 in raw units (logits for classification, plus
    "probabilities" (batch, n_out), their softmax).
    """
    layers = [layer_arrays(layer, _base_name(model, layer)) for layer in model.layers]
    n_in, n_out = layers[0].n_in, layers[-1].n_out
    task = str(getattr(model, "task", "regression"))
    input_names = column_names(input_names, n_in, "x", "input_names")
    output_names = column_names(output_names, n_out, "y", "output_names")

    g = GraphBuilder()
    x = _standardise_input(g, _numpy(model.in_shift), _numpy(model.in_scale))
    out_shift, out_scale = _numpy(model.out_shift), _numpy(model.out_scale)
    for index, layer in enumerate(layers):
        last = index == len(layers) - 1
        weight, bias = layer.stacked_weight(), layer.bias
        if last:
            weight = weight * out_scale
            bias = bias * out_scale + out_shift
        x = _layer(g, x, layer, weight, bias, output=OUTPUT if last else None)

    outputs = [batch_tensor(OUTPUT, n_out)]
    if task == "classification":
        g.op("Softmax", [OUTPUT], output=PROBABILITIES, axis=-1)
        outputs.append(batch_tensor(PROBABILITIES, n_out))
    props = model_props(name=name, version=version, task=task, kind="spline",
                        input_names=input_names, output_names=output_names,
                        extra={"width": str(list(model.width))})
    doc = f"KAN {list(model.width)} exported by kanserve from its spline coefficients"
    return g.model(str(name), [batch_tensor(INPUT, n_in)], outputs, props, doc).SerializeToString()


def _base_name(model, layer) -> str:
    return str(getattr(layer, "base", None) or getattr(model, "base", "silu"))


def _standardise_input(g: GraphBuilder, shift: np.ndarray, scale: np.ndarray) -> str:
    """(x - in_shift) / in_scale, skipping the identity steps (classification)."""
    x = INPUT
    if np.any(shift != 0):
        x = g.op("Sub", [x, g.const(shift, "in_shift")], "z")
    if np.any(scale != 1):
        x = g.op("Div", [x, g.const(scale, "in_scale")], "z")
    return x


def _layer(g: GraphBuilder, x: str, layer: LayerArrays, weight: np.ndarray, bias: np.ndarray,
           output: str | None) -> str:
    """Add one layer's nodes: x (batch, in) -> (batch, out)."""
    if layer.uniform:
        values, columns = _uniform_basis_nodes(g, x, layer)
    else:
        values, columns = _adaptive_basis_nodes(g, x, layer)
    width = layer.n_in * (layer.k + 1)
    values = g.op("Reshape", [values, g.const([-1, width], "shape", np.int64)], "basis_values")
    columns = g.op("Reshape", [columns, g.const([-1, width], "shape", np.int64)], "basis_columns")

    base = _base_nodes(g, x, layer.base)
    n_spline = layer.n_in * (layer.grid_size + layer.k)
    dense = g.op("Pad", [base, g.const([0, 0, 0, n_spline], "pads", np.int64)], "dense")
    dense = g.op("ScatterElements", [dense, columns, values], "dense", axis=1)
    product = g.op("MatMul", [dense, g.const(weight, "weight")], "product")
    return g.op("Add", [product, g.const(bias, "bias")], "layer_out", output=output)


def _base_nodes(g: GraphBuilder, x: str, base: str) -> str:
    """base(x) (batch, in), the first in columns of the dense row."""
    if base == "silu":
        return g.op("Mul", [x, g.op("Sigmoid", [x])], "silu")
    if base == "identity":
        return x
    if base == "zero":  # zero-width columns would do, but Pad needs a (batch, ...) tensor to grow
        return g.op("Mul", [x, g.const(0.0, "zero")], "zeros")
    raise ValueError(f"base function {base!r} has no ONNX export (supported: silu, identity, zero)")


def _uniform_basis_nodes(g: GraphBuilder, x: str, layer: LayerArrays) -> tuple[str, str]:
    """Closed form on equally spaced knots, computed like the torch layer but in the
    centred coordinate: v = (x - t_0) / h - 1/2 clamped to [k, G + k] - 1/2 (the
    out-of-grid rule), interval m = round(v) in [k, G + k - 1], s = v - m.
    (At a knot v is a half-integer and either neighbouring interval gives the same
    value: the spline is continuous.) Returns values (batch, in, k+1) float and
    their dense column indices (batch, in, k+1) int64."""
    k, grid, n_in = layer.k, layer.grid_size, layer.n_in
    knots32 = layer.knots.astype(np.float32)
    step = (knots32[:, grid + k] - knots32[:, k]) / np.float32(grid)
    centre_of_first = knots32[:, 0] + step / np.float32(2)
    v = g.op("Div", [g.op("Sub", [x, g.const(centre_of_first, "origin")]), g.const(step, "step")], "v")
    v = g.op("Clip", [v, g.const(k - 0.5, "lo"), g.const(grid + k - 0.5, "hi")], "v")
    interval = g.op("Clip", [g.op("Round", [v]), g.const(k, "lo"), g.const(grid + k - 1, "hi")], "m")
    s = g.op("Sub", [v, interval], "s")
    values = _polynomial_nodes(g, s, centred(uniform_basis(k)))
    # Column of basis value j: n_in base columns, then input i's block, then m - k + j.
    offsets = n_in + np.arange(n_in)[:, None] * (grid + k) + np.arange(k + 1)[None, :] - k
    columns = g.op("Add", [_unsqueeze(g, interval), g.const(offsets, "offsets")])
    return values, g.op("Cast", [columns], "columns", to=TensorProto.INT64)


def _adaptive_basis_nodes(g: GraphBuilder, x: str, layer: LayerArrays) -> tuple[str, str]:
    """Any increasing knots: the interval is the number of interior knots <= x
    (x clamped to the domain), s = (x - centre_m) / width_m and the basis
    polynomials of that interval are gathered from a (in * G, k+1, k+1) table."""
    k, grid, n_in = layer.k, layer.grid_size, layer.n_in
    knots = layer.knots
    low, high = knots[:, k], knots[:, grid + k]
    clamped = g.op("Max", [g.op("Min", [x, g.const(high, "high")]), g.const(low, "low")], "clamped")
    interior = knots[:, k + 1:grid + k]
    if grid == 1:  # no interior knot: a knot at +inf is never reached
        interior = np.full((n_in, 1), np.inf)
    above = g.op("GreaterOrEqual", [_unsqueeze(g, clamped), g.const(interior, "interior")])
    interval = g.op("ReduceSum", [g.op("Cast", [above], to=TensorProto.INT64),
                                  g.const([-1], "axes", np.int64)], "m", keepdims=0)
    row = g.op("Add", [interval, g.const(np.arange(n_in) * grid, "rows", np.int64)], "row")

    left, right = knots[:, k:k + grid], knots[:, k + 1:k + grid + 1]
    centre = g.op("Gather", [g.const(((left + right) / 2).reshape(-1), "centre"), row], axis=0)
    inv_width = g.op("Gather", [g.const((1.0 / (right - left)).reshape(-1), "inv_width"), row], axis=0)
    s = g.op("Mul", [g.op("Sub", [clamped, centre]), inv_width], "s")
    table = centred(local_bases(knots, k)).reshape(n_in * grid, k + 1, k + 1)
    polys = g.op("Gather", [g.const(table, "bases"), row], "polys", axis=0)   # (batch, in, k+1, k+1)
    values = g.op("ReduceSum", [g.op("Mul", [_unsqueeze(g, _powers(g, s, k)), polys]),
                                g.const([-2], "axes", np.int64)], "values", keepdims=0)
    offsets = n_in + np.arange(n_in)[:, None] * (grid + k) + np.arange(k + 1)[None, :]
    columns = g.op("Add", [_unsqueeze(g, interval), g.const(offsets, "offsets", np.int64)], "columns")
    return values, columns


def _powers(g: GraphBuilder, s: str, k: int) -> str:
    """s (batch, in) -> [s^0 .. s^k] (batch, in, k+1)."""
    return g.op("Pow", [_unsqueeze(g, s), g.const(np.arange(k + 1), "exponents")], "powers")


def _polynomial_nodes(g: GraphBuilder, s: str, matrix: np.ndarray) -> str:
    """[s^0 .. s^k] @ matrix: (batch, in) -> (batch, in, k+1)."""
    return g.op("MatMul", [_powers(g, s, matrix.shape[0] - 1), g.const(matrix, "basis_matrix")], "values")


def _unsqueeze(g: GraphBuilder, x: str) -> str:
    return g.op("Unsqueeze", [x, g.const([-1], "axes", np.int64)])
