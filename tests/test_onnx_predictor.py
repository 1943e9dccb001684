"""OnnxPredictor: loading, metadata, outputs and clear errors on bad input rows."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import sympy

from kanmodel.export import formula_to_onnx
from service.inference import ModelLoadError, OnnxPredictor, PredictorInputError
from onnx_graphs import affine_model

X0, X1, X2 = sympy.symbols("x0 x1 x2")


@pytest.fixture(scope="module")
def predictor() -> OnnxPredictor:
    blob = formula_to_onnx([X0 + 2 * X1, X2 * X0], variables=["x0", "x1", "x2"], name="demo",
                           version=3, output_names=["sum", "product"])
    return OnnxPredictor(blob)


def test_predicts_and_exposes_metadata(predictor):
    rows = [[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]]
    out = predictor.predict(rows)
    assert list(out) == ["output"]
    np.testing.assert_allclose(out["output"], [[5.0, 3.0], [-1.5, 2.0]], rtol=1e-6)
    assert predictor.n_features == 3
    assert predictor.input_name == "input"
    assert predictor.feature_names == ["x0", "x1", "x2"]
    assert predictor.target_names == ["sum", "product"]
    assert predictor.metadata["name"] == "demo" and predictor.metadata["version"] == "3"
    assert predictor.task == "regression"


def test_integer_rows_are_accepted(predictor):
    out = predictor.predict(np.array([[1, 2, 3]], dtype=np.int64))["output"]
    np.testing.assert_allclose(out, [[5.0, 3.0]])


def test_foreign_graph_without_metadata_gets_default_names():
    predictor = OnnxPredictor(affine_model(np.eye(2, 3), np.zeros(3)))
    assert predictor.input_name == "x" and predictor.output_names == ["y"]
    assert predictor.feature_names == ["x0", "x1"] and predictor.target_names == ["y0", "y1", "y2"]
    np.testing.assert_allclose(predictor.predict([[1.0, 2.0]])["y"], [[1.0, 2.0, 0.0]])


@pytest.mark.parametrize(
    "rows, message",
    [
        ([[1.0, 2.0]], "expected 3 features per row, got 2"),
        ([[1.0, float("nan"), 3.0]], "NaN at row 0, column 1"),
        ([[1.0, 2.0, 3.0], [1.0, 2.0, float("inf")]], "infinite value at row 1, column 2"),
        ([["a", "b", "c"]], "non-numeric"),
        ([[1.0, None, 3.0]], "non-numeric"),
        (np.zeros((0, 3)), "the batch is empty"),
        ([1.0, 2.0, 3.0], "expected a 2-D array"),
        ([[1.0, 2.0, 3.0], [1.0]], "rows must all have 3 values"),
        ([[True, False, True]], "expected real numbers"),
        ([[1e300, 0.0, 0.0]], "exceeds the float32 range"),
    ],
)
def test_bad_rows_raise_a_clear_error(predictor, rows, message):
    with pytest.raises(PredictorInputError, match=message):
        predictor.predict(rows)


@pytest.mark.parametrize("blob", [b"", b"not an onnx model"])
def test_bad_bytes_raise_model_load_error(blob):
    with pytest.raises(ModelLoadError, match="model_bytes"):
        OnnxPredictor(blob)


def test_predictor_module_does_not_import_torch_or_kanmodel():
    code = ("import sys, service.inference.onnx_predictor; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'kanmodel')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().replace("'", '"')) == []


def test_the_bare_run_answers_as_the_session_wrapper(predictor):
    rows = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], np.float32)
    wrapped = predictor._session.run(predictor.output_names, {predictor.input_name: rows})
    bare = predictor.run(rows)
    assert predictor._run.__self__ is predictor._session._sess  # the binding's own run is used
    assert len(bare) == len(wrapped) and all(np.array_equal(a, b) for a, b in zip(bare, wrapped))


def test_the_bare_run_falls_back_to_the_wrapper_when_the_binding_is_absent():
    from service.inference.onnx_predictor import _bare_run

    class WrapperOnly:
        def run(self, output_names, feed, run_options=None):
            return ["wrapper", output_names, feed, run_options]

    session = WrapperOnly()
    assert _bare_run(session)(["y"], {"x": 1}, None) == ["wrapper", ["y"], {"x": 1}, None]
