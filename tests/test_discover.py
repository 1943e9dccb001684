"""discover(): the default recipe end to end, and its input checks."""
import numpy as np
import pytest
import sympy
import torch

import kanmodel

torch.set_num_threads(1)
FAST = {"warmup_steps": 150, "steps_per_grid": 40, "grid_schedule": (3, 5, 10)}


def test_product_of_positive_variables_is_found_exactly():
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 5, (500, 2))
    y = 1.5 * X[:, 0] * X[:, 1] ** 2
    found = kanmodel.discover(X, y, variables=["p", "V"], **FAST)
    assert isinstance(found, kanmodel.Discovery) and isinstance(found.model, kanmodel.KAN)
    (formula,) = found.formulas
    p, V = formula.symbols
    assert sympy.simplify(formula.expr - sympy.Rational(3, 2) * p * V ** 2) == 0
    assert formula.rmse < 1e-9 * y.std()
    assert found.metrics["formula_rmse"] == [formula.rmse]
    assert found.metrics["n_validation_rows"] == 100  # 20% held out
    assert found.history and found.attempts
    # the direct search finds it exactly; one network is then trained to be served (the
    # simplest shape, in log space) and nothing else is tried
    assert found.metrics["method"] == "search" and found.stopped == "exact"
    assert found.metrics["attempts"] == 2 and found.space == "log"


def test_formula_error_is_reported_honestly_when_no_exact_formula_exists():
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, (400, 1))
    y = np.where(X[:, 0] > 0.2, 1.0, 0.0) + 0.3 * X[:, 0]  # a step: no library function
    found = kanmodel.discover(X, y, widths=[[1, 1]], **FAST)
    (formula,) = found.formulas
    X_check = rng.uniform(-1, 1, (400, 1))
    y_check = np.where(X_check[:, 0] > 0.2, 1.0, 0.0) + 0.3 * X_check[:, 0]
    assert formula.rmse > 1e-3 and np.isfinite(formula.rmse)
    assert formula.r2 < 1.0
    # the reported held-out error is of the same size as on fresh data
    fresh = np.sqrt(np.mean((formula.func(X_check) - y_check) ** 2))
    assert 0.5 * fresh < formula.rmse < 2 * fresh


def test_classification_gives_one_formula_per_class():
    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, (400, 2))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    found = kanmodel.discover(X, y, task="classification", widths=[[2, 2]], **FAST)
    assert len(found.formulas) == 2
    assert found.metrics["formula_accuracy"] > 0.9 and found.metrics["spline_accuracy"] > 0.9


@pytest.mark.parametrize("kwargs, message", [
    ({"X": np.zeros((5, 2)), "y": np.zeros(5)}, "at least 10 rows"),
    ({"X": np.zeros((20, 2)), "y": np.zeros(19)}, "rows"),
    ({"X": np.full((20, 2), np.nan), "y": np.zeros(20)}, "finite"),
    ({"X": np.zeros((20, 2)), "y": np.zeros(20), "task": "ranking"}, "task"),
    ({"X": np.zeros((20, 2)), "y": np.zeros(20), "steps": 3}, "unknown option"),
    ({"X": np.zeros((20, 2)), "y": np.zeros(20), "variables": ["a b", "c"]}, "valid variable name"),
    ({"X": np.zeros((20, 2)), "y": np.full(20, 0.5), "task": "classification"}, "class labels"),
])
def test_bad_input_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kanmodel.discover(**kwargs)


def _parsed_matches(formula, X):
    from sympy.parsing.sympy_parser import parse_expr
    names = formula.variables
    symbols = [sympy.Symbol(n) for n in names]
    parsed = parse_expr(formula.text, local_dict=dict(zip(names, symbols)))
    values = sympy.lambdify(symbols, parsed, modules="numpy")(*X.T)
    return np.allclose(values, formula.func(X), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("names", [["m1", "m2", "r1", "r2"], ["p0", "r0", "q0", "x0"],
                                   ["E", "I", "N", "S"], ["Q", "O", "beta", "gamma"],
                                   ["zeta", "lambd", "E_n", "I_0"]])
def test_variable_names_equal_to_internal_or_sympy_names_work(names):
    rng = np.random.default_rng(3)
    X = rng.uniform(1, 5, (400, 4))
    y = (X[:, 0] * X[:, 2] + X[:, 1] * X[:, 3]) / (X[:, 0] + X[:, 1])
    found = kanmodel.discover(X, y, variables=names, widths=[[4, 1]], spaces=("raw",), **FAST)
    (formula,) = found.formulas
    assert formula.variables == names and np.isfinite(formula.rmse)
    assert _parsed_matches(formula, X)


def test_a_spent_budget_returns_the_best_formula_so_far():
    rng = np.random.default_rng(4)
    X = rng.uniform(1, 5, (600, 5))
    y = -X[:, 0] * X[:, 1] ** 4 / (2 * (4 * np.pi * X[:, 4]) ** 2 * (X[:, 2] / (2 * np.pi)) ** 2) / X[:, 3] ** 2
    events = []
    found = kanmodel.discover(X, y, variables=["m", "q", "h", "n", "epsilon"], time_budget=1.0,
                              progress=events.append)
    assert found.stopped in ("budget", "exact")
    assert found.time_budget == 1.0 and found.metrics["stopped"] == found.stopped
    (formula,) = found.formulas
    assert formula.text and formula.func(X).shape == (600,)
    assert isinstance(found.model, kanmodel.KAN)
    assert events[0]["event"] == "attempt" and events[0]["attempt"] == 1
    assert {"kind", "width", "space", "best_error", "elapsed"} <= set(events[-1])


def test_should_stop_cancels_and_still_returns_a_formula():
    rng = np.random.default_rng(5)
    X = rng.uniform(-1, 1, (400, 2))
    y = np.exp(np.sin(np.pi * X[:, 0]) + X[:, 1] ** 2)
    asked = []

    def should_stop():
        asked.append(1)
        return True

    found = kanmodel.discover(X, y, should_stop=should_stop, **FAST)
    assert asked and found.stopped == "cancelled"
    assert len(found.formulas) == 1 and found.metrics["attempts"] <= 2


def test_log_space_model_says_how_it_maps_to_y():
    rng = np.random.default_rng(6)
    X = rng.uniform(1, 5, (400, 2))
    y = X[:, 0] / X[:, 1] ** 2
    found = kanmodel.discover(X, y, widths=[[2, 1]], spaces=("log",), **FAST)
    assert found.input_transform == "log" and found.target_transform == "log"
    with torch.no_grad():
        out = found.model(torch.as_tensor(np.log(X), dtype=found.model.in_shift.dtype)).double().numpy()[:, 0]
    assert np.allclose(np.exp(out), y, rtol=1e-3)
