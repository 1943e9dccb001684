"""auto_symbolic and suggest on a trained KAN: exact formulas, several outputs,
named variables, agreement with the forward pass."""
import numpy as np
import pytest
import sympy
import torch

import kanmodel
from kanmodel.symbolic.auto import _output_exprs, edge_candidates
from kanmodel.symbolic.compose import substitute
from kanmodel.symbolic.spaces import Space

torch.set_num_threads(1)


def targets(X):
    return np.stack([np.sin(np.pi * X[:, 0]) + X[:, 1] ** 2, np.exp(X[:, 0]) - 2 * X[:, 1]], axis=1)


@pytest.fixture(scope="module")
def two_outputs():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (700, 2))
    Y = targets(X)
    model = kanmodel.KAN([2, 2], grid=5, seed=0).double()
    kanmodel.fit(model, X, Y, optimizer="adam", grid_schedule=[5], steps_per_grid=150)
    kanmodel.fit(model, X, Y, grid_schedule=[10], steps_per_grid=40)
    X_val = rng.uniform(-1, 1, (300, 2))
    return model, X, Y, X_val, targets(X_val)


def test_every_output_gets_its_exact_formula_in_named_variables(two_outputs):
    model, X, Y, X_val, Y_val = two_outputs
    formulas = kanmodel.auto_symbolic(model, X, Y, variables=["u", "v"], X_val=X_val, y_val=Y_val)
    assert len(formulas) == 2
    u, v = formulas[0].symbols
    assert formulas[0].variables == ["u", "v"] and {s.name for s in formulas[0].expr.free_symbols} == {"u", "v"}
    assert sympy.simplify(formulas[0].expr - (sympy.sin(sympy.pi * u) + v ** 2)) == 0
    assert sympy.simplify(formulas[1].expr - (sympy.exp(u) - 2 * v)) == 0
    for o, f in enumerate(formulas):
        assert f.rmse < 1e-9 * Y_val[:, o].std() and f.r2 > 1 - 1e-12
        assert f.rmse < f.spline_rmse  # honest comparison with the spline model
        np.testing.assert_allclose(f.func(X_val), Y_val[:, o], atol=1e-8)


def test_suggest_lists_the_right_function_first(two_outputs):
    model, X, _, _, _ = two_outputs
    top = kanmodel.suggest(model, 0, 0, 0, top=3, X=X)
    assert len(top) == 3 and top[0].name in ("sin", "cos") and top[0].r2 > 0.999
    assert kanmodel.suggest(model, 0, 1, 0, X=X)[0].name == "x^2"
    with pytest.raises(ValueError, match="outside"):
        kanmodel.suggest(model, 0, 5, 0)


def test_composed_edges_agree_with_the_forward_pass_before_any_refit(two_outputs):
    model, X, _, _, _ = two_outputs
    candidates = edge_candidates(model, X)
    choice = [{key: fits[0] for key, fits in layer.items()} for layer in candidates]
    symbols = sympy.symbols("x0 x1", real=True)
    exprs, values = _output_exprs(model, choice, list(symbols), Space("raw"))
    with torch.no_grad():
        spline = model(torch.as_tensor(X)).numpy()
    for o, expr in enumerate(substitute(exprs, values)):
        composed = sympy.lambdify(symbols, expr)(X[:, 0], X[:, 1])
        # as close as the edge fits (R^2 ~ 0.9999); a wrong standardisation would be O(std)
        assert np.sqrt(np.mean((composed - spline[:, o]) ** 2)) < 1e-2 * spline[:, o].std()


def test_bad_arguments_are_clear_errors(two_outputs):
    model, X, Y, _, _ = two_outputs
    with pytest.raises(ValueError, match="variables"):
        kanmodel.auto_symbolic(model, X, Y, variables=["u"])
    with pytest.raises(ValueError, match="valid variable name"):
        kanmodel.auto_symbolic(model, X, Y, variables=["u", "lambda"])
    with pytest.raises(ValueError, match="column"):
        kanmodel.auto_symbolic(model, X, Y[:, 0])
    with pytest.raises(ValueError, match="positive"):
        kanmodel.auto_symbolic(model, X, Y, space="log")
