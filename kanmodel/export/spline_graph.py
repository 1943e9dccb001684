"""`to_onnx`: a trained KAN as an ONNX graph built from its knots and coefficients.

The graph works feature-major: after one transpose of the input, every tensor is
(..., in, batch), so elementwise ops broadcast constants over long contiguous
runs (onnxruntime is several times slower on short broadcast spans). Per layer:

    s, m   local coordinate and interval of clamp(x) on each input's knots
    N      the k+1 non-zero B-spline values (k+3, in, batch), zero-padded,
           as polynomials in s (see `piecewise`)
    dense  (G + k, in, batch): column c of input i is N[c - first + 1], clipped
           into the zero padding (one GatherElements instead of a scatter)
    y      Ws (out, (G + k) * in) @ dense + Wb (out, in) @ base(x) + bias

with mask, spline_weight and coef folded into Ws, mask into Wb, and the output
standardisation into the last layer. Uniform grids find the interval with one
round; adaptive grids count the interior knots below x and gather that
interval's centre, width and basis polynomials (GatherElements).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from onnx import TensorProto

from kanmodel.export.metadata import column_names, input_ranges, model_props
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

    def spline_weight_matrix(self) -> np.ndarray:
        """Ws (out, (G + k) * in): column c * in + i is the folded coefficient of
        basis function c of input i (the dense tensor's row order)."""
        folded = (self.mask * self.spline_weight)[..., None] * self.coef      # (out, in, G+k)
        return np.swapaxes(folded, 1, 2).reshape(self.n_out, -1)

    def base_weight_matrix(self) -> np.ndarray:
        """Wb (out, in)."""
        return self.mask * self.base_weight


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
    x = g.op("Transpose", [INPUT], "features", perm=[1, 0])               # (in, batch)
    x = _standardise_input(g, x, _numpy(model.in_shift), _numpy(model.in_scale))
    out_shift, out_scale = _numpy(model.out_shift), _numpy(model.out_scale)
    for index, layer in enumerate(layers):
        spline_w, base_w, bias = layer.spline_weight_matrix(), layer.base_weight_matrix(), layer.bias
        if index == len(layers) - 1:
            spline_w, base_w = spline_w * out_scale[:, None], base_w * out_scale[:, None]
            bias = bias * out_scale + out_shift
        x = _layer(g, x, layer, spline_w, base_w, bias)
    g.op("Transpose", [x], output=OUTPUT, perm=[1, 0])

    outputs = [batch_tensor(OUTPUT, n_out)]
    if task == "classification":
        g.op("Softmax", [OUTPUT], output=PROBABILITIES, axis=-1)
        outputs.append(batch_tensor(PROBABILITIES, n_out))
    props = model_props(name=name, version=version, task=task, kind="spline",
                        input_names=input_names, output_names=output_names,
                        extra={"width": str(list(model.width)),
                               "input_ranges": json.dumps(input_ranges(model))})
    doc = f"KAN {list(model.width)} exported by kanserve from its spline coefficients"
    return g.model(str(name), [batch_tensor(INPUT, n_in)], outputs, props, doc).SerializeToString()


def _base_name(model, layer) -> str:
    return str(getattr(layer, "base", None) or getattr(model, "base", "silu"))


def _standardise_input(g: GraphBuilder, x: str, shift: np.ndarray, scale: np.ndarray) -> str:
    """(x - in_shift) / in_scale on (in, batch), skipping identity steps (classification)."""
    if np.any(shift != 0):
        x = g.op("Sub", [x, g.const(shift[:, None], "in_shift")], "z")
    if np.any(scale != 1):
        x = g.op("Div", [x, g.const(scale[:, None], "in_scale")], "z")
    return x


def _layer(g: GraphBuilder, x: str, layer: LayerArrays, spline_w: np.ndarray, base_w: np.ndarray,
           bias: np.ndarray) -> str:
    """One layer's nodes: x (in, batch) -> (out, batch)."""
    if layer.uniform:
        padded, first = _uniform_basis_nodes(g, x, layer)
    else:
        padded, first = _adaptive_basis_nodes(g, x, layer)
    k, n_basis = layer.k, layer.grid_size + layer.k
    # padded[r] holds N[r - 1] (r = 1..k+1) and 0 at r = 0 and r = k+2, so column c
    # reads padded[clip(c - first + 1, 0, k+2)].
    first = g.op("Cast", [first], to=TensorProto.INT32)
    index = g.op("Sub", [g.const(np.arange(n_basis)[:, None, None] + 1, "columns", np.int32), first])
    index = g.op("Clip", [index, g.const(0, "lo", np.int32), g.const(k + 2, "hi", np.int32)], "index")
    dense = g.op("GatherElements", [padded, index], "dense", axis=0)          # (G+k, in, batch)
    dense = g.op("Reshape", [dense, g.const([n_basis * layer.n_in, -1], "shape", np.int64)], "dense")
    out = g.op("MatMul", [g.const(spline_w, "spline_weight"), dense], "spline_out")
    if layer.base != "zero":
        base = g.op("MatMul", [g.const(base_w, "base_weight"), _base_nodes(g, x, layer.base)], "base_out")
        out = g.op("Add", [out, base])
    return g.op("Add", [out, g.const(bias[:, None], "bias")], "layer_out")


def _base_nodes(g: GraphBuilder, x: str, base: str) -> str:
    if base == "silu":
        return g.op("Mul", [x, g.op("Sigmoid", [x])], "silu")
    if base == "identity":
        return x
    raise ValueError(f"base function {base!r} has no ONNX export (supported: silu, identity, zero)")


def _padded(matrix: np.ndarray) -> np.ndarray:
    """(..., k+1) -> (..., k+3) with a zero column on each side."""
    pad = [(0, 0)] * (matrix.ndim - 1) + [(1, 1)]
    return np.pad(matrix, pad)


def _uniform_basis_nodes(g: GraphBuilder, x: str, layer: LayerArrays) -> tuple[str, str]:
    """Closed form on equally spaced knots, computed like the torch layer but in the
    centred coordinate: v = (x - t_0) / h - 1/2 clamped to [k, G + k] - 1/2 (the
    out-of-grid rule), interval m = round(v) in [k, G + k - 1], s = v - m.
    (At a knot v is a half-integer and either neighbouring interval gives the same
    value: the spline is continuous.) Returns the zero-padded values (k+3, in, batch)
    and the dense column of the first one (in, batch)."""
    k, grid = layer.k, layer.grid_size
    knots32 = layer.knots.astype(np.float32)
    step = (knots32[:, grid + k] - knots32[:, k]) / np.float32(grid)
    centre_of_first = knots32[:, 0] + step / np.float32(2)
    v = g.op("Sub", [x, g.const(centre_of_first[:, None], "origin")])
    v = g.op("Div", [v, g.const(step[:, None], "step")], "v")
    v = g.op("Clip", [v, g.const(k - 0.5, "lo"), g.const(grid + k - 0.5, "hi")], "v")
    interval = g.op("Clip", [g.op("Round", [v]), g.const(k, "lo"), g.const(grid + k - 1, "hi")], "m")
    s = g.op("Sub", [v, interval], "s")
    # padded values = M^T [s^1 .. s^k] + M[0]: one Gemm over all (input, row) pairs
    matrix = _padded(centred(uniform_basis(k)))                            # (k+1 powers, k+3)
    powers = g.op("Reshape", [_powers(g, s, k), g.const([k, -1], "shape", np.int64)], "powers")
    values = g.op("Gemm", [g.const(matrix[1:].T, "basis_matrix"), powers, g.const(matrix[:1].T, "basis_row0")],
                  "values")
    values = g.op("Reshape", [values, g.const([k + 3, layer.n_in, -1], "shape", np.int64)], "values")
    first = g.op("Sub", [interval, g.const(float(k), "k")], "first")
    return values, first


def _adaptive_basis_nodes(g: GraphBuilder, x: str, layer: LayerArrays) -> tuple[str, str]:
    """Any increasing knots: the interval m is the number of interior knots <= x
    (x clamped to the domain), s = (x - centre_m) / width_m, and the values are
    Horner sums over the gathered coefficients of that interval's basis polynomials."""
    k, grid, n_in = layer.k, layer.grid_size, layer.n_in
    knots = layer.knots
    low, high = knots[:, k], knots[:, grid + k]
    clamped = g.op("Max", [g.op("Min", [x, g.const(high[:, None], "high")]), g.const(low[:, None], "low")],
                   "clamped")
    interior = knots[:, k + 1:grid + k].T[:, :, None]                     # (G-1, in, 1)
    if grid == 1:  # no interior knot: a knot at +inf is never reached
        interior = np.full((1, n_in, 1), np.inf)
    above = g.op("GreaterOrEqual", [_unsqueeze(g, clamped, 0), g.const(interior, "interior")])
    interval = g.op("ReduceSum", [g.op("Cast", [above], to=TensorProto.INT64),
                                  g.const([0], "axes", np.int64)], "m", keepdims=0)    # (in, batch)

    left, right = knots[:, k:k + grid], knots[:, k + 1:k + grid + 1]
    centre = g.op("GatherElements", [g.const((left + right) / 2, "centre"), interval], axis=1)
    inv_width = g.op("GatherElements", [g.const(1.0 / (right - left), "inv_width"), interval], axis=1)
    s = g.op("Mul", [g.op("Sub", [clamped, centre]), inv_width], "s")
    # coefficients[p][r, i, m]: s^p coefficient of padded value r on interval m of input i
    coefficients = np.moveaxis(_padded(centred(local_bases(knots, k))), (2, 3, 0, 1), (0, 1, 2, 3))
    rows = g.op("Expand", [_unsqueeze(g, interval, 0), g.const([k + 3, 1, 1], "shape", np.int64)], "rows")
    s_rows = _unsqueeze(g, s, 0)
    values = None
    for p in range(k, -1, -1):
        coefficient = g.op("GatherElements", [g.const(coefficients[p], f"poly{p}"), rows], axis=2)
        values = coefficient if values is None else g.op("Add", [g.op("Mul", [values, s_rows]), coefficient])
    return values, interval


def _powers(g: GraphBuilder, s: str, k: int) -> str:
    """s (in, batch) -> [s^1 .. s^k] (k, in, batch), by products (Pow is a slow libm call)."""
    row = _unsqueeze(g, s, 0)
    terms = [row]
    for _ in range(k - 1):
        terms.append(g.op("Mul", [terms[-1], row]))
    return terms[0] if k == 1 else g.op("Concat", terms, "powers", axis=0)


def _unsqueeze(g: GraphBuilder, x: str, axis: int) -> str:
    return g.op("Unsqueeze", [x, g.const([axis], "axes", np.int64)])
