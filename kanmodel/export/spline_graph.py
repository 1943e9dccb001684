"""`to_onnx`: a trained KAN as an ONNX graph built from its knots and coefficients.

Per layer, x (batch, in) -> y (batch, out):

    s, m   local coordinate and interval of clamp(x) on each input's knots
    N      the k+1 non-zero B-spline values, zero-padded to k+3 rows, as
           polynomials in s (see `piecewise`)
    dense  (G + k) rows per input: row c of input i is N[c - first + 1], clipped
           into the zero padding (one GatherElements instead of a scatter)
    y      dense @ Ws^T + base(x) @ Wb^T + bias          (Gemm, weights packed once)

with mask, spline_weight and coef folded into Ws, mask into Wb, and the output
standardisation into the last layer. Layouts are chosen for onnxruntime, which
is several times slower on short contiguous runs (broadcasts, GatherElements):
uniform layers work feature-major ((in, batch): one Round finds the interval,
one Gemm evaluates all polynomials); adaptive layers count the interior knots
below x and gather their interval's centre, width and polynomial coefficients
batch-major ((batch, rows, in): the gathered tables never repeat over the batch).
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

# Adaptive layers with at least this many inputs are evaluated batch-major (see _layer).
BATCH_MAJOR_MIN_INPUTS = 32

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
    x = _standardise_input(g, INPUT, _numpy(model.in_shift), _numpy(model.in_scale))
    out_shift, out_scale = _numpy(model.out_shift), _numpy(model.out_scale)
    for index, layer in enumerate(layers):
        last = index == len(layers) - 1
        spline_w, base_w, bias = layer.spline_weight_matrix(), layer.base_weight_matrix(), layer.bias
        if last:
            spline_w, base_w = spline_w * out_scale[:, None], base_w * out_scale[:, None]
            bias = bias * out_scale + out_shift
        x = _layer(g, x, layer, spline_w, base_w, bias, output=OUTPUT if last else None)

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
    """(x - in_shift) / in_scale, skipping identity steps (classification)."""
    if np.any(shift != 0):
        x = g.op("Sub", [x, g.const(shift, "in_shift")], "z")
    if np.any(scale != 1):
        x = g.op("Div", [x, g.const(scale, "in_scale")], "z")
    return x


def _layer(g: GraphBuilder, x: str, layer: LayerArrays, spline_w: np.ndarray, base_w: np.ndarray,
           bias: np.ndarray, output: str | None) -> str:
    """One layer's nodes: x (batch, in) -> y (batch, out)."""
    if layer.uniform:
        dense, transposed = _uniform_dense(g, x, layer), 1     # ((G+k) * in, batch)
    else:
        # Wide layers gather along the inputs (fast at any batch size), narrow ones
        # along the batch (their few inputs would make short runs).
        feature_major = layer.n_in < BATCH_MAJOR_MIN_INPUTS
        dense, transposed = _adaptive_dense(g, x, layer, feature_major), int(feature_major)
    bias_term = g.const(bias, "bias")
    if layer.base != "zero":
        bias_term = g.op("Gemm", [_base_nodes(g, x, layer.base), g.const(base_w.T, "base_weight"), bias_term],
                         "base_out")
    return g.op("Gemm", [dense, g.const(spline_w.T, "spline_weight"), bias_term], "layer_out",
                output=output, transA=transposed)


def _band_index(g: GraphBuilder, first: str, k: int, n_basis: int, columns_shape: tuple[int, ...]) -> str:
    """Row of the padded values read by each dense column: clip(c - first + 1, 0, k+2)
    (padded[r] holds N[r - 1] for r = 1..k+1 and 0 at r = 0 and r = k+2).
    first is int32; the column numbers broadcast against it with columns_shape."""
    columns = (np.arange(n_basis) + 1).reshape(columns_shape)
    index = g.op("Sub", [g.const(columns, "columns", np.int32), first])
    return g.op("Clip", [index, g.const(0, "lo", np.int32), g.const(k + 2, "hi", np.int32)], "index")


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


def _uniform_dense(g: GraphBuilder, x: str, layer: LayerArrays) -> str:
    """Closed form on equally spaced knots, computed like the torch layer but in the
    centred coordinate: v = (x - t_0) / h - 1/2 clamped to [k, G + k] - 1/2 (the
    out-of-grid rule), interval m = round(v) in [k, G + k - 1], s = v - m.
    (At a knot v is a half-integer and either neighbouring interval gives the same
    value: the spline is continuous.) Feature-major, with (input, batch) flattened
    into one long axis. Returns dense ((G + k) * in, batch)."""
    k, grid, n_in = layer.k, layer.grid_size, layer.n_in
    knots32 = layer.knots.astype(np.float32)
    step = (knots32[:, grid + k] - knots32[:, k]) / np.float32(grid)
    centre_of_first = knots32[:, 0] + step / np.float32(2)
    x = g.op("Transpose", [x], "features", perm=[1, 0])                    # (in, batch)
    v = g.op("Sub", [x, g.const(centre_of_first[:, None], "origin")])
    v = g.op("Div", [v, g.const(step[:, None], "step")], "v")
    v = g.op("Clip", [v, g.const(k - 0.5, "lo"), g.const(grid + k - 0.5, "hi")], "v")
    interval = g.op("Clip", [g.op("Round", [v]), g.const(k, "lo"), g.const(grid + k - 1, "hi")], "m")
    s = g.op("Sub", [v, interval], "s")
    # padded values (k+3, in * batch) = M^T [s^1 .. s^k] + M[0]: one Gemm
    matrix = _padded(centred(uniform_basis(k)))                            # (k+1 powers, k+3)
    powers = g.op("Reshape", [_powers(g, s, k), g.const([k, -1], "shape", np.int64)], "powers")
    padded = g.op("Gemm", [g.const(matrix[1:].T, "basis_matrix"), powers, g.const(matrix[:1].T, "basis_row0")],
                  "padded")
    first = g.op("Cast", [g.op("Sub", [interval, g.const(float(k), "k")])], "first", to=TensorProto.INT32)
    first = g.op("Reshape", [first, g.const([1, -1], "shape", np.int64)])
    index = _band_index(g, first, k, grid + k, (-1, 1))                    # (G+k, in * batch)
    dense = g.op("GatherElements", [padded, index], "dense", axis=0)
    return g.op("Reshape", [dense, g.const([(grid + k) * n_in, -1], "shape", np.int64)], "dense")


def _adaptive_dense(g: GraphBuilder, x: str, layer: LayerArrays, feature_major: bool) -> str:
    """Any increasing knots: the interval m is the number of interior knots <= x
    (x clamped to the domain), s = (x - centre_m) / width_m, and the values are
    Horner sums over the gathered coefficients of that interval's basis polynomials.

    feature_major: work on (in, batch) and return dense ((G + k) * in, batch);
    else work on (batch, in) and return dense (batch, (G + k) * in). The gathers
    run along the batch in the first layout and along the inputs in the second."""
    k, grid, n_in = layer.k, layer.grid_size, layer.n_in
    knots = layer.knots
    # tables are laid out so that they broadcast against (in, batch) or (batch, in)
    def per_input(table: np.ndarray) -> np.ndarray:   # (..., in) -> (..., in, 1) if feature-major
        return table[..., None] if feature_major else table

    if feature_major:
        x = g.op("Transpose", [x], "features", perm=[1, 0])
    low, high = knots[:, k], knots[:, grid + k]
    clamped = g.op("Max", [g.op("Min", [x, g.const(per_input(high), "high")]), g.const(per_input(low), "low")],
                   "clamped")
    interior = knots[:, k + 1:grid + k].T                                  # (G-1, in)
    if grid == 1:  # no interior knot: a knot at +inf is never reached
        interior = np.full((1, n_in), np.inf)
    interior = per_input(interior) if feature_major else interior[:, None, :]
    above = g.op("GreaterOrEqual", [_unsqueeze(g, clamped, 0), g.const(interior, "interior")])
    interval = g.op("ReduceSum", [g.op("Cast", [above], to=TensorProto.INT32),
                                  g.const([0], "axes", np.int64)], "m", keepdims=0)

    left, right = knots[:, k:k + grid], knots[:, k + 1:k + grid + 1]      # (in, G)
    interval_axis = 1 if feature_major else 0
    def per_interval(table: np.ndarray) -> np.ndarray:  # (in, G) -> the layout's orientation
        return table if feature_major else table.T

    centre = g.op("GatherElements", [g.const(per_interval((left + right) / 2), "centre"), interval],
                  axis=interval_axis)
    inv_width = g.op("GatherElements", [g.const(per_interval(1.0 / (right - left)), "inv_width"), interval],
                     axis=interval_axis)
    s = g.op("Mul", [g.op("Sub", [clamped, centre]), inv_width], "s")
    # coefficients[p]: s^p coefficient of N_j on interval m of input i, as
    # [j, i, m] (feature-major) or [m, j, i] (batch-major)
    bases = centred(local_bases(knots, k))                                  # (in, G, p, j)
    order = (2, 0, 1) if feature_major else (1, 2, 0)    # axes of bases[:, :, p] = (in, G, j)
    row_axis = 0 if feature_major else 1
    first = _unsqueeze(g, interval, row_axis)
    repeat = [k + 1, 1, 1] if feature_major else [1, k + 1, 1]
    rows = g.op("Expand", [first, g.const(repeat, "shape", np.int64)], "rows")
    s_rows = _unsqueeze(g, s, row_axis)
    values = None
    for p in range(k, -1, -1):
        table = np.transpose(bases[:, :, p, :], order)
        coefficient = g.op("GatherElements", [g.const(table, f"poly{p}"), rows], axis=2 if feature_major else 0)
        values = coefficient if values is None else g.op("Add", [g.op("Mul", [values, s_rows]), coefficient])
    # zero rows around the k+1 values, added after the Horner sums so they cost one copy
    pads = [1, 0, 0, 1, 0, 0] if feature_major else [0, 1, 0, 0, 1, 0]
    padded = g.op("Pad", [values, g.const(pads, "pads", np.int64)], "padded")
    if feature_major:  # flatten (input, batch): one long inner axis for the last gather
        padded = g.op("Reshape", [padded, g.const([k + 3, -1], "shape", np.int64)])
        first = g.op("Reshape", [first, g.const([1, -1], "shape", np.int64)])
        index = _band_index(g, first, k, grid + k, (-1, 1))                # (G+k, in * batch)
        dense = g.op("GatherElements", [padded, index], "dense", axis=0)
        return g.op("Reshape", [dense, g.const([(grid + k) * n_in, -1], "shape", np.int64)], "dense")
    index = _band_index(g, first, k, grid + k, (1, -1, 1))                 # (batch, G+k, in)
    dense = g.op("GatherElements", [padded, index], "dense", axis=1)
    return g.op("Reshape", [dense, g.const([-1, (grid + k) * n_in], "shape", np.int64)], "dense")


def _powers(g: GraphBuilder, s: str, k: int) -> str:
    """s (in, batch) -> [s^1 .. s^k] (k, in, batch), by products (Pow is a slow libm call)."""
    row = _unsqueeze(g, s, 0)
    terms = [row]
    for _ in range(k - 1):
        terms.append(g.op("Mul", [terms[-1], row]))
    return terms[0] if k == 1 else g.op("Concat", terms, "powers", axis=0)


def _unsqueeze(g: GraphBuilder, x: str, axis: int) -> str:
    return g.op("Unsqueeze", [x, g.const([axis], "axes", np.int64)])
