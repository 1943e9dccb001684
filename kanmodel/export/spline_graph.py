"""`to_onnx`: a trained KAN as an ONNX graph built from its knots and coefficients.

Every layer, x (batch, in) -> y (batch, out), first locates each input on its
knots: the interval m and a local coordinate s in [-1/2, 1/2] of clamp(x) (the
out-of-grid rule). Uniform knots need one Round; adaptive knots count the
interior knots below x and gather that interval's centre and width. On interval
m only k+1 B-spline basis functions are non-zero, and each is a polynomial of
degree k in s (see `piecewise`). The layer is then one Gemm against folded,
pre-packed weights, over one of two sparse feature rows per input:

    basis     the (G + k) B-spline values, k+1 of them non-zero: the k+1 values
              are evaluated (one small Gemm on uniform knots, Horner sums over
              the interval's gathered polynomial coefficients on adaptive ones)
              and placed by one GatherElements; weights mask * spline_weight * coef
    interval  the G * (k+1) products onehot(m) * s^p, k+1 of them non-zero; the
              weights hold each edge spline's own polynomial on each interval,
              so nothing but the interval's centre and width is gathered

plus base(x) @ (mask * base_weight)^T + bias, with the output standardisation
folded into the last layer. `_features` picks the cheaper row per layer.

Layouts are chosen for onnxruntime, which is several times slower on short
contiguous runs (broadcasts, GatherElements): layers with few inputs build their
rows feature-major ((rows, in * batch), then Gemm with transA), wide layers
batch-major ((batch, rows, in), the faster untransposed Gemm); adaptive basis
rows exist only batch-major (the gathered tables must not repeat over the batch).
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

# Rough per-element costs (ns) of onnxruntime 1.32 CPU kernels on one core, measured
# with its profiler on the bench shapes: a GatherElements element, an elementwise
# element on a long run, a Gemm multiply-add. Only their ratios matter.
GATHER_NS, ELEMENTWISE_NS, GEMM_NS = 2.0, 0.3, 0.036
# Layers with this many inputs build their rows batch-major ((batch, rows, in)), the
# others feature-major ((rows, in * batch)): either way the innermost runs are long.
# Adaptive basis rows exist only batch-major; narrower adaptive layers use interval rows.
BATCH_MAJOR_MIN_INPUTS = 32


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

    def folded_coef(self) -> np.ndarray:
        """mask * spline_weight * coef (out, in, G + k)."""
        return (self.mask * self.spline_weight)[..., None] * self.coef

    def basis_weight(self) -> np.ndarray:
        """(out, (G + k) * in): column c * in + i weighs basis function c of input i."""
        return np.swapaxes(self.folded_coef(), 1, 2).reshape(self.n_out, -1)

    def interval_weight(self) -> np.ndarray:
        """(out, G * (k+1) * in): column (m * (k+1) + p) * in + i is the coefficient
        of s^p in edge i -> out's spline on interval m of input i."""
        k, grid = self.k, self.grid_size
        if self.uniform:
            bases = np.broadcast_to(centred(uniform_basis(k)), (self.n_in, grid, k + 1, k + 1))
        else:
            bases = centred(local_bases(self.knots, k))                   # (in, G, p, j)
        folded = self.folded_coef()
        window = np.stack([folded[:, :, m:m + k + 1] for m in range(grid)], axis=2)  # (out, in, G, j)
        return np.einsum("impj,oimj->ompi", bases, window).reshape(self.n_out, -1)

    def base_weight_matrix(self) -> np.ndarray:
        """mask * base_weight (out, in)."""
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
    for index, layer in enumerate(layers):
        if index == len(layers) - 1:
            x = _layer(g, x, layer, _numpy(model.out_scale), _numpy(model.out_shift), output=OUTPUT)
        else:
            x = _layer(g, x, layer, np.ones(layer.n_out), np.zeros(layer.n_out))

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


def _features(layer: LayerArrays) -> str:
    """The cheaper feature row for this layer, "interval" or "basis", by a cost per
    (input, row) pair. Interval rows are wider (G * (k+1) vs G + k: a bigger Gemm)
    but need no GatherElements beyond the interval's centre and width."""
    k, grid, out = layer.k, layer.grid_size, layer.n_out
    if not layer.uniform and layer.n_in < BATCH_MAJOR_MIN_INPUTS:
        return "interval"
    interval = grid * (k + 1) * (out * GEMM_NS + ELEMENTWISE_NS)
    gathers = grid + k + (0 if layer.uniform else (k + 1) ** 2)
    basis = gathers * GATHER_NS + (grid + k) * out * GEMM_NS
    return "interval" if interval < basis else "basis"


def _layer(g: GraphBuilder, x: str, layer: LayerArrays, out_scale: np.ndarray, out_shift: np.ndarray,
           output: str | None = None) -> str:
    """One layer's nodes: x (batch, in) -> y (batch, out) * out_scale + out_shift."""
    # Wide layers build their rows batch-major: (batch, in) runs are long enough, and
    # Gemm is faster with the rows as its untransposed first operand.
    batch_major = layer.n_in >= BATCH_MAJOR_MIN_INPUTS
    if _features(layer) == "interval":
        rows, weight = _interval_rows(g, x, layer, batch_major), layer.interval_weight()
    elif layer.uniform:
        rows, weight = _uniform_basis_rows(g, x, layer, batch_major), layer.basis_weight()
    else:  # only built batch-major (chosen by _features for wide layers only)
        rows, weight, batch_major = _adaptive_basis_rows(g, x, layer), layer.basis_weight(), True
    bias = g.const(layer.bias * out_scale + out_shift, "bias")
    if layer.base != "zero":
        base_w = layer.base_weight_matrix() * out_scale[:, None]
        bias = g.op("Gemm", [_base_nodes(g, x, layer.base), g.const(base_w.T, "base_weight"), bias], "base_out")
    weight = g.const((weight * out_scale[:, None]).T, "spline_weight")
    return g.op("Gemm", [rows, weight, bias], "layer_out", output=output, transA=int(not batch_major))


def _base_nodes(g: GraphBuilder, x: str, base: str) -> str:
    if base == "silu":
        return g.op("Mul", [x, g.op("Sigmoid", [x])], "silu")
    if base == "identity":
        return x
    raise ValueError(f"base function {base!r} has no ONNX export (supported: silu, identity, zero)")


def _uniform_location(g: GraphBuilder, x: str, layer: LayerArrays, feature_major: bool) -> tuple[str, str]:
    """x on equally spaced knots -> (m, s), both float and laid out like x: (in, batch)
    if feature_major else (batch, in).

    Computed like the torch layer but in the centred coordinate: v = (x - t_0) / h
    - 1/2 clamped to [k, G + k] - 1/2 (the out-of-grid rule), m = round(v) in
    [k, G + k - 1], s = v - m. (At a knot v is a half-integer and either
    neighbouring interval gives the same value: the spline is continuous.)"""
    k, grid = layer.k, layer.grid_size
    knots32 = layer.knots.astype(np.float32)
    step = (knots32[:, grid + k] - knots32[:, k]) / np.float32(grid)
    centre_of_first = knots32[:, 0] + step / np.float32(2)
    if feature_major:
        step, centre_of_first = step[:, None], centre_of_first[:, None]
    v = g.op("Sub", [x, g.const(centre_of_first, "origin")])
    v = g.op("Div", [v, g.const(step, "step")], "v")
    v = g.op("Clip", [v, g.const(k - 0.5, "lo"), g.const(grid + k - 0.5, "hi")], "v")
    interval = g.op("Clip", [g.op("Round", [v]), g.const(k, "lo"), g.const(grid + k - 1, "hi")], "m")
    return interval, g.op("Sub", [v, interval], "s")


def _adaptive_location(g: GraphBuilder, x: str, layer: LayerArrays, feature_major: bool) -> tuple[str, str]:
    """x on any increasing knots -> (m int32, s float), laid out like x: (in, batch)
    if feature_major else (batch, in). m is the number of interior knots <= clamp(x),
    s = (clamp(x) - centre_m) / width_m."""
    k, grid, n_in = layer.k, layer.grid_size, layer.n_in
    knots = layer.knots

    def oriented(table: np.ndarray) -> np.ndarray:
        """(rows, in) table -> broadcastable against x's layout."""
        return table[..., None] if feature_major else table[:, None, :]

    low, high = knots[:, k], knots[:, grid + k]
    if feature_major:
        low, high = low[:, None], high[:, None]
    clamped = g.op("Max", [g.op("Min", [x, g.const(high, "high")]), g.const(low, "low")], "clamped")
    interior = knots[:, k + 1:grid + k].T if grid > 1 else np.full((1, n_in), np.inf)  # +inf: never reached
    above = g.op("GreaterOrEqual", [_unsqueeze(g, clamped, 0), g.const(oriented(interior), "interior")])
    # Counted by a (1, G-1) @ (G-1, in * batch) MatMul: several times faster than
    # onnxruntime's ReduceSum over the leading axis.
    above = g.op("Reshape", [g.op("Cast", [above], to=TensorProto.FLOAT),
                             g.const([len(interior), -1], "shape", np.int64)])
    interval = g.op("MatMul", [g.const(np.ones((1, len(interior))), "ones"), above])
    interval = g.op("Reshape", [interval, g.const([n_in, -1] if feature_major else [-1, n_in], "shape", np.int64)])
    interval = g.op("Cast", [interval], "m", to=TensorProto.INT32)
    left, right = knots[:, k:k + grid].T, knots[:, k + 1:k + grid + 1].T  # (G, in)
    axis = 1 if feature_major else 0
    centre, inv_width = (left + right) / 2, 1.0 / (right - left)
    centre = g.op("GatherElements", [g.const(centre.T if feature_major else centre, "centre"), interval], axis=axis)
    inv_width = g.op("GatherElements", [g.const(inv_width.T if feature_major else inv_width, "inv_width"),
                                        interval], axis=axis)
    return interval, g.op("Mul", [g.op("Sub", [clamped, centre]), inv_width], "s")


def _interval_rows(g: GraphBuilder, x: str, layer: LayerArrays, batch_major: bool) -> str:
    """Rows whose entry (m, p, i) is s_i^p where input i lies in interval m, else 0:
    (batch, G * (k+1) * in) if batch_major else (G * (k+1) * in, batch)."""
    k, grid, n_in = layer.k, layer.grid_size, layer.n_in
    if not batch_major:
        x = g.op("Transpose", [x], "features", perm=[1, 0])                # (in, batch)
    if layer.uniform:
        interval, s = _uniform_location(g, x, layer, feature_major=not batch_major)
        labels = (np.arange(grid) + k).astype(np.float32)
    else:
        interval, s = _adaptive_location(g, x, layer, feature_major=not batch_major)
        labels = np.arange(grid, dtype=np.int32)
    if batch_major:   # (batch, 1, in) against (G, 1): rows (batch, G, k+1, in)
        interval, s, axis = _unsqueeze(g, interval, 1), _unsqueeze(g, s, 1), 1
    else:             # (1, in * batch) against (G, 1): rows (G, k+1, in * batch)
        flat = g.const([1, -1], "shape", np.int64)
        interval, s, axis = g.op("Reshape", [interval, flat]), g.op("Reshape", [s, flat]), 0
    onehot = g.op("Cast", [g.op("Equal", [interval, g.const(labels[:, None], "labels", labels.dtype)])],
                  "onehot", to=TensorProto.FLOAT)
    ones = g.op("Add", [g.op("Mul", [s, g.const(0.0, "zero")]), g.const(1.0, "one")])
    terms = [ones, s]
    for _ in range(k - 1):
        terms.append(g.op("Mul", [terms[-1], s]))
    powers = g.op("Concat", terms, "powers", axis=axis)
    rows = g.op("Mul", [_unsqueeze(g, onehot, axis + 1), _unsqueeze(g, powers, axis)], "rows")
    shape = [-1, grid * (k + 1) * n_in] if batch_major else [grid * (k + 1) * n_in, -1]
    return g.op("Reshape", [rows, g.const(shape, "shape", np.int64)], "rows")


def _band_index(g: GraphBuilder, first: str, k: int, n_basis: int, columns_shape: tuple[int, ...]) -> str:
    """Row of the padded values read by each basis column: clip(c - first + 1, 0, k+2)
    (padded[r] holds N[r - 1] for r = 1..k+1 and 0 at r = 0 and r = k+2).
    first is int32; the column numbers broadcast against it with columns_shape."""
    columns = (np.arange(n_basis) + 1).reshape(columns_shape)
    index = g.op("Sub", [g.const(columns, "columns", np.int32), first])
    return g.op("Clip", [index, g.const(0, "lo", np.int32), g.const(k + 2, "hi", np.int32)], "index")


def _padded(matrix: np.ndarray) -> np.ndarray:
    """(..., k+1) -> (..., k+3) with a zero column on each side."""
    return np.pad(matrix, [(0, 0)] * (matrix.ndim - 1) + [(1, 1)])


def _uniform_basis_rows(g: GraphBuilder, x: str, layer: LayerArrays, batch_major: bool) -> str:
    """Basis rows on equally spaced knots: (batch, (G + k) * in) if batch_major else
    ((G + k) * in, batch), with (input, batch) flattened into one long axis."""
    k, grid, n_in = layer.k, layer.grid_size, layer.n_in
    matrix = _padded(centred(uniform_basis(k)))                            # (k+1 powers, k+3)
    if batch_major:
        interval, s = _uniform_location(g, x, layer, feature_major=False)  # (batch, in)
        # padded values (batch, k+3, in) = M^T [s^1 .. s^k] + M[0]
        powers = _powers(g, s, k, axis=1)                                  # (batch, k, in)
        padded = g.op("Add", [g.op("MatMul", [g.const(matrix[1:].T, "basis_matrix"), powers]),
                              g.const(matrix[:1].T, "basis_row0")], "padded")
        first = _unsqueeze(g, g.op("Cast", [g.op("Sub", [interval, g.const(float(k), "k")])], "first",
                                   to=TensorProto.INT32), 1)               # (batch, 1, in)
        index = _band_index(g, first, k, grid + k, (1, -1, 1))             # (batch, G+k, in)
        rows = g.op("GatherElements", [padded, index], "rows", axis=1)
        return g.op("Reshape", [rows, g.const([-1, (grid + k) * n_in], "shape", np.int64)], "rows")
    x = g.op("Transpose", [x], "features", perm=[1, 0])                    # (in, batch)
    interval, s = _uniform_location(g, x, layer, feature_major=True)
    # padded values (k+3, in * batch) = M^T [s^1 .. s^k] + M[0]: one Gemm
    powers = g.op("Reshape", [_powers(g, s, k, axis=0), g.const([k, -1], "shape", np.int64)], "powers")
    padded = g.op("Gemm", [g.const(matrix[1:].T, "basis_matrix"), powers, g.const(matrix[:1].T, "basis_row0")],
                  "padded")
    first = g.op("Cast", [g.op("Sub", [interval, g.const(float(k), "k")])], "first", to=TensorProto.INT32)
    first = g.op("Reshape", [first, g.const([1, -1], "shape", np.int64)])
    index = _band_index(g, first, k, grid + k, (-1, 1))                    # (G+k, in * batch)
    rows = g.op("GatherElements", [padded, index], "rows", axis=0)
    return g.op("Reshape", [rows, g.const([(grid + k) * n_in, -1], "shape", np.int64)], "rows")


def _adaptive_basis_rows(g: GraphBuilder, x: str, layer: LayerArrays) -> str:
    """Basis rows (batch, (G + k) * in) on any increasing knots, batch-major: the
    values are Horner sums over the gathered polynomial coefficients of each input's
    interval."""
    k, grid, n_in = layer.k, layer.grid_size, layer.n_in
    interval, s = _adaptive_location(g, x, layer, feature_major=False)     # (batch, in)
    # coefficients[p][m, j, i]: s^p coefficient of N_j on interval m of input i
    coefficients = np.transpose(centred(local_bases(layer.knots, k)), (2, 1, 3, 0))
    first = _unsqueeze(g, interval, 1)                                      # (batch, 1, in)
    rows = g.op("Expand", [first, g.const([1, k + 1, 1], "shape", np.int64)], "rows")
    s_rows = _unsqueeze(g, s, 1)
    values = None
    for p in range(k, -1, -1):
        coefficient = g.op("GatherElements", [g.const(coefficients[p], f"poly{p}"), rows], axis=0)
        values = coefficient if values is None else g.op("Add", [g.op("Mul", [values, s_rows]), coefficient])
    # zero rows around the k+1 values, added after the Horner sums so they cost one copy
    padded = g.op("Pad", [values, g.const([0, 1, 0, 0, 1, 0], "pads", np.int64)], "padded")
    index = _band_index(g, first, k, grid + k, (1, -1, 1))                 # (batch, G+k, in)
    rows = g.op("GatherElements", [padded, index], "rows", axis=1)
    return g.op("Reshape", [rows, g.const([-1, (grid + k) * n_in], "shape", np.int64)], "rows")


def _powers(g: GraphBuilder, s: str, k: int, axis: int) -> str:
    """s -> [s^1 .. s^k] stacked on a new axis, by products (Pow is a slow libm call)."""
    row = _unsqueeze(g, s, axis)
    terms = [row]
    for _ in range(k - 1):
        terms.append(g.op("Mul", [terms[-1], row]))
    return terms[0] if k == 1 else g.op("Concat", terms, "powers", axis=axis)


def _unsqueeze(g: GraphBuilder, x: str, axis: int) -> str:
    return g.op("Unsqueeze", [x, g.const([axis], "axes", np.int64)])
