"""formula_to_onnx: the formula graph agrees with numpy evaluation of the sympy tree."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import sympy

from kanmodel.export import FormulaExportError, formula_to_onnx

x0, x1, x2 = sympy.symbols("x0 x1 x2")

FORMULAS = [
    sympy.exp(sympy.sin(sympy.pi * x0) + x1 ** 2),
    x0 * sympy.exp(-x1 ** 2) / (1 + x2 ** 2),
    (x0 + x1) / (1 + x0 * x1),
    sympy.sqrt(x2 ** 2 + 1) - sympy.Rational(3, 7) * sympy.tan(x1),
    sympy.atan(x0) + sympy.asin(x1 / 2) + sympy.tanh(x2) - sympy.acos(x1 / 3),
    sympy.log(sympy.Abs(x0) + 1) * sympy.cos(x1) ** 3,
    x0 ** sympy.Rational(-3, 2) + x1 ** sympy.Rational(1, 3),
    sympy.Float(1.2345) * x0 ** 5 - 7 * x1 ** -2 + sympy.E ** x2,
    sympy.sinh(x0) * sympy.cosh(x1) + sympy.asinh(x2) + sympy.atanh(x0 / 2) + sympy.erf(x1),
    sympy.exp(-((x0 - 0.5) / x1) ** 2 / 2) / (sympy.sqrt(2 * sympy.pi) * x1),
    sympy.Max(x0, x1) + sympy.Min(x1, x2) + sympy.sign(x0 - x2),
]


def run(blob: bytes, rows: np.ndarray) -> dict[str, np.ndarray]:
    s = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {"input": rows})))


def numpy_values(exprs, rows: np.ndarray) -> np.ndarray:
    columns = [np.broadcast_to(sympy.lambdify([x0, x1, x2], e, ["scipy", "numpy"])(*rows.astype(np.float64).T), len(rows))
               for e in exprs]
    return np.stack(columns, axis=1)


def test_formula_graph_matches_numpy():
    rows = np.random.default_rng(0).uniform(0.1, 1.5, size=(500, 3)).astype(np.float32)
    blob = formula_to_onnx(FORMULAS, variables=["x0", "x1", "x2"])
    onnx.checker.check_model(onnx.load_from_string(blob), full_check=True)
    got = run(blob, rows)["output"]
    expected = numpy_values(FORMULAS, rows)
    assert got.shape == (500, len(FORMULAS)) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=0)


def test_formula_objects_constants_and_column_order():
    """Objects with .expr/.variables (kanmodel.symbolic.Formula) are accepted; the
    variables fix the column order; a constant formula still gives one value per row."""
    formulas = [SimpleNamespace(expr=x1 - 2 * x0, variables=["x1", "x0"]),
                SimpleNamespace(expr=sympy.Integer(3), variables=["x1", "x0"])]
    blob = formula_to_onnx(formulas, name="f", version=4, output_names=["d", "c"])
    rows = np.array([[1.0, 2.0], [5.0, -1.0]], dtype=np.float32)   # columns: x1, x0
    np.testing.assert_allclose(run(blob, rows)["output"], [[-3.0, 3.0], [7.0, 3.0]], rtol=1e-7)
    props = {p.key: p.value for p in onnx.load_from_string(blob).metadata_props}
    assert json.loads(props["input_names"]) == ["x1", "x0"]
    assert json.loads(props["output_names"]) == ["d", "c"]
    assert props["kind"] == "formula" and props["name"] == "f" and props["version"] == "4"


def test_kanmodel_formulas_with_any_variable_names():
    """kanmodel.symbolic.Formula objects (real symbols, names from the user's columns)."""
    from kanmodel import Formula

    a, b = sympy.Symbol("petal width", real=True), sympy.Symbol("b", real=True)
    formulas = [Formula(sympy.sin(a) * sympy.exp(-b ** 2) + 0.5, variables=["petal width", "b"]),
                Formula(sympy.sqrt(sympy.Abs(a - b)), variables=["petal width", "b"])]
    rows = np.random.default_rng(2).normal(size=(64, 2)).astype(np.float32)
    got = run(formula_to_onnx(formulas), rows)["output"]
    expected = np.stack([f.func(rows.astype(np.float64)) for f in formulas], axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_classification_formulas_also_give_probabilities():
    logits = [x0, 2 * x0 - x1, sympy.Integer(0)]
    rows = np.random.default_rng(1).normal(size=(7, 2)).astype(np.float32)
    out = run(formula_to_onnx(logits, variables=["x0", "x1"], task="classification"), rows)
    expected = numpy_values(logits, np.c_[rows, np.zeros(7)])
    np.testing.assert_allclose(out["output"], expected, rtol=1e-6, atol=1e-7)
    soft = np.exp(expected) / np.exp(expected).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out["probabilities"], soft, rtol=1e-5)


def test_free_variables_default_to_sorted_symbols():
    blob = formula_to_onnx(x1 * 10 + x0)
    props = {p.key: p.value for p in onnx.load_from_string(blob).metadata_props}
    assert json.loads(props["input_names"]) == ["x0", "x1"]
    np.testing.assert_allclose(run(blob, np.array([[1.0, 2.0]], np.float32))["output"], [[21.0]])


@pytest.mark.parametrize(
    "formulas, variables, message",
    [
        ([sympy.besselj(0, x0)], ["x0"], "formula 0: besselj has no ONNX export"),
        ([x0, x0 + x2], ["x0", "x1"], r"formula 1: symbols \['x2'\] are not among the variables"),
        ([sympy.sqrt(-1) * x0], ["x0"], "has no ONNX export"),
        ([], None, "at least one formula"),
        (["x0 +"], None, "formula 0: not a sympy expression"),
        ([x0], ["x0", "x0"], "names must be distinct"),
    ],
)
def test_unsupported_formulas_raise_clear_errors(formulas, variables, message):
    with pytest.raises(FormulaExportError, match=message):
        formula_to_onnx(formulas, variables=variables)
