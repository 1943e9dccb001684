"""to_onnx: onnxruntime on the exported spline graph reproduces the torch model."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import kanmodel
from kanmodel.export import spline_graph, to_onnx

torch.set_num_threads(1)


@dataclass(frozen=True)
class Case:
    width: tuple[int, ...]
    k: int
    task: str = "regression"
    grid_eps: float = 1.0       # 1.0 keeps the grid uniform through fit/update_grid
    train: str = "random"      # "random" coefficients, or a few steps of "lbfgs"/"adam"
    prune: bool = False
    base: str = "silu"

    @property
    def label(self) -> str:
        grid = "uniform" if self.grid_eps >= 1 else "adaptive"
        return f"{self.task}-{list(self.width)}-k{self.k}-{grid}-{self.train}{'-pruned' if self.prune else ''}"


CASES = [
    Case((2, 5, 1), k=3, train="lbfgs"),
    Case((3, 4, 2), k=2, grid_eps=0.02, prune=True),
    Case((2, 3, 1), k=5, prune=True),
    Case((3, 4, 1), k=5, grid_eps=0.02, train="lbfgs"),
    Case((4, 6, 3), k=3, task="classification", grid_eps=0.02, train="adam"),
    Case((4, 5, 3), k=2, task="classification", prune=True),
    Case((2, 4, 1), k=3, grid_eps=0.02, base="identity", prune=True),
    Case((2, 3, 1), k=2, base="zero"),
    # >= BATCH_MAJOR_MIN_INPUTS inputs: adaptive layers evaluated batch-major
    Case((40, 33, 2), k=2, grid_eps=0.02, prune=True),
    Case((36, 3), k=5, grid_eps=0.02, task="classification"),
]


def training_data(case: Case, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Inputs with per-column offsets and scales (so standardisation matters) and a target."""
    n_in = case.width[0]
    X = rng.normal(size=(256, n_in)) * rng.uniform(0.5, 3.0, n_in) + rng.uniform(-2, 2, n_in)
    signal = np.sin(X[:, 0]) + 0.3 * X[:, -1] ** 2
    if case.task == "classification":
        y = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, case.width[-1] + 1)[1:-1]))
    else:
        y = signal + 1.0
    return X.astype(np.float32), y.astype(np.int64 if case.task == "classification" else np.float32)


def build_model(case: Case) -> tuple[kanmodel.KAN, np.ndarray]:
    seed = zlib.crc32(case.label.encode())
    X, y = training_data(case, np.random.default_rng(seed))
    generator = torch.Generator().manual_seed(seed)
    model = kanmodel.KAN(list(case.width), grid=5, k=case.k, grid_eps=case.grid_eps, base=case.base,
                         seed=1, task=case.task)
    if case.train == "random":  # non-trivial splines without training time
        with torch.no_grad():
            for layer in model.layers:
                spread = 0.5 / layer.in_features ** 0.5   # outputs O(1) whatever the width
                layer.coef.normal_(0.0, spread, generator=generator)
                layer.base_weight.normal_(0.0, spread, generator=generator)
                layer.spline_weight.uniform_(0.5, 1.0, generator=generator)
                layer.bias.normal_(0.0, 0.1, generator=generator)
        model.set_standardisation(X, y)
        model.update_grid(X)
    else:
        kanmodel.fit(model, X, y, optimizer=case.train, steps_per_grid=4, val_fraction=0.0, seed=0)
    if case.prune:
        with torch.no_grad():
            for layer in model.layers:
                dead = torch.rand(layer.mask.shape, generator=generator) < 0.35
                dead[:, 0] = False  # every output keeps an edge
                layer.mask[dead] = 0.0
    model.eval()
    return model, X


def probe_inputs(X: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Rows inside the training range and up to its half-width beyond it on each side
    (off the grid, which update_grid/fit placed on the training range)."""
    rng = np.random.default_rng(seed)
    low, high = X.min(0), X.max(0)
    centre, half = (low + high) / 2, (high - low) / 2
    rows = centre + half * rng.uniform(-2.0, 2.0, size=(n, X.shape[1]))
    return rows.astype(np.float32)


def session(blob: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.label)
def exported(request):
    model, X = build_model(request.param)
    return request.param, model, X, to_onnx(model, name="parity", version=2)


def test_graph_passes_the_checker_and_has_a_dynamic_batch(exported):
    case, _, _, blob = exported
    graph_model = onnx.load_from_string(blob)
    onnx.checker.check_model(graph_model, full_check=True)
    assert graph_model.opset_import[0].version >= 17
    (graph_input,) = graph_model.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "input" and dims[0].dim_param and dims[1].dim_value == case.width[0]
    names = [o.name for o in graph_model.graph.output]
    assert names == (["output", "probabilities"] if case.task == "classification" else ["output"])


@pytest.mark.parametrize("batch", [1, 7, 4096])
def test_onnxruntime_matches_torch(exported, batch):
    case, model, X, blob = exported
    rows = probe_inputs(X, batch, seed=batch)
    with torch.inference_mode():
        expected = model(torch.from_numpy(rows)).numpy()
    outputs = dict(zip([o.name for o in session(blob).get_outputs()], session(blob).run(None, {"input": rows})))
    assert outputs["output"].shape == (batch, case.width[-1])
    np.testing.assert_allclose(outputs["output"], expected, rtol=0, atol=1e-5)
    if case.task == "classification":
        probabilities = torch.softmax(torch.from_numpy(expected), -1).numpy()
        np.testing.assert_allclose(outputs["probabilities"], probabilities, rtol=0, atol=1e-5)


@pytest.mark.parametrize("features", ["basis", "interval"])
@pytest.mark.parametrize("case", [Case((3, 4, 2), k=3), Case((3, 5, 2), k=2, grid_eps=0.02, prune=True),
                                  Case((40, 33, 2), k=3), Case((40, 33, 2), k=3, grid_eps=0.02)],
                         ids=lambda c: c.label)
def test_both_feature_rows_match_torch(monkeypatch, case, features):
    """Each layer is built from basis rows or interval rows, whichever costs less,
    feature-major when narrow and batch-major when wide; force each row on every
    combination of grid kind and width."""
    monkeypatch.setattr(spline_graph, "_features", lambda layer: features)
    model, X = build_model(case)
    rows = probe_inputs(X, 333, seed=11)
    with torch.inference_mode():
        expected = model(torch.from_numpy(rows)).numpy()
    got = session(to_onnx(model)).run(["output"], {"input": rows})[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_far_outside_the_grid_follows_the_clamp_rule(exported):
    """Far off the grid the spline is constant and only the (unclamped) base term moves."""
    case, model, X, blob = exported
    rows = np.repeat(X[:1], 4, axis=0)
    rows[:, 0] = X[:, 0].min() - np.array([10.0, 20.0, 0.0, 0.0]) * X[:, 0].std()
    rows[2:, 0] = X[:, 0].max() + np.array([10.0, 20.0]) * X[:, 0].std()
    with torch.inference_mode():
        expected = model(torch.from_numpy(rows)).numpy()
    got = session(blob).run(["output"], {"input": rows})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)


def test_metadata_props(exported):
    case, _, _, blob = exported
    props = {p.key: p.value for p in onnx.load_from_string(blob).metadata_props}
    assert props["name"] == "parity" and props["version"] == "2"
    assert props["task"] == case.task and props["kind"] == "spline"
    assert json.loads(props["input_names"]) == [f"x{i}" for i in range(case.width[0])]
    assert json.loads(props["output_names"]) == [f"y{i}" for i in range(case.width[-1])]
    assert props["kanserve_version"]


@pytest.mark.parametrize("grid_eps", [1.0, 0.02], ids=["uniform", "adaptive"])
def test_graph_size_does_not_grow_with_the_grid(grid_eps):
    """Only the k+1 non-zero basis functions are evaluated: refining the grid changes
    the weight tables, not the nodes."""
    model = kanmodel.KAN([3, 4, 1], grid=5, k=3, grid_eps=grid_eps)
    X = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    model.refine(5, X)
    small = onnx.load_from_string(to_onnx(model)).graph
    model.refine(40, X)
    large = onnx.load_from_string(to_onnx(model)).graph
    assert [n.op_type for n in small.node] == [n.op_type for n in large.node]


def test_custom_names_are_stored_and_checked():
    model = kanmodel.KAN([2, 3, 1], grid=3, k=3)
    props = {p.key: p.value for p in onnx.load_from_string(
        to_onnx(model, input_names=["a", "b"], output_names=["target"])).metadata_props}
    assert json.loads(props["input_names"]) == ["a", "b"]
    assert json.loads(props["output_names"]) == ["target"]
    with pytest.raises(ValueError, match="input_names: expected 2 names, got 3"):
        to_onnx(model, input_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="output_names: names must be distinct"):
        to_onnx(kanmodel.KAN([2, 2], grid=3), output_names=["y", "y"])


def test_models_from_prune_and_checkpoints_export_with_parity():
    """kanmodel.prune's output and a checkpoint round trip export like any model."""
    case = Case((3, 6, 1), k=3, grid_eps=0.02)
    model, X = build_model(case)
    with torch.no_grad():   # make two hidden nodes negligible so prune has something to cut
        model.layers[0].coef[:2] *= 1e-4
        model.layers[0].base_weight[:2] *= 1e-4
    pruned = kanmodel.prune(model, X, threshold=0.05).eval()
    reloaded = kanmodel.from_bytes(kanmodel.to_bytes(pruned)).eval()
    rows = probe_inputs(X, 256, seed=3)
    with torch.inference_mode():
        expected = pruned(torch.from_numpy(rows)).numpy()
    for candidate in (pruned, reloaded):
        got = session(to_onnx(candidate)).run(["output"], {"input": rows})[0]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert pruned.width[1] < 6 or float(pruned.layers[0].mask.sum()) < 18
