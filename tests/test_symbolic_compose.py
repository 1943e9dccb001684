"""Composition of symbolic edges, float64 refit, constant rounding, Formula."""
import numpy as np
import pytest
import sympy
import torch

import kanmodel
from kanmodel.symbolic.auto import _output_exprs
from kanmodel.symbolic.compose import SymbolicLayer, compose, substitute
from kanmodel.symbolic.edge_fit import EdgeFit
from kanmodel.symbolic.formula import Formula
from kanmodel.symbolic.refit import refit_constants
from kanmodel.symbolic.rounding import nice_number, tidy
from kanmodel.symbolic.spaces import Space

x, y = sympy.symbols("x y", real=True)


def edge(name, a=1.0, b=0.0, c=1.0, d=0.0):
    return EdgeFit(name, a, b, c, d, 1.0, 1)


def test_hand_built_network_composes_to_the_exact_formula():
    # exp(sin(x) + y**2) as a [2, 1, 1] network
    first = SymbolicLayer(2, 1, {(0, 0): edge("sin"), (0, 1): edge("x^2")})
    second = SymbolicLayer(1, 1, {(0, 0): edge("exp")})
    exprs, values = compose([first, second], [x, y])
    assert substitute(exprs, values)[0] == sympy.exp(sympy.sin(x) + y ** 2)


def test_constants_edges_and_biases_compose_like_the_forward_pass():
    first = SymbolicLayer(2, 2, {(0, 0): edge("x", c=2.0, d=1.0), (1, 1): edge("x^2", b=-1.0, c=3.0),
                                 (1, 0): edge("zero", d=0.5)}, bias=np.array([0.25, -1.0]))
    second = SymbolicLayer(2, 1, {(0, 0): edge("x"), (0, 1): edge("sin", a=2.0)}, bias=np.array([0.0]))
    exprs, values = compose([first, second], [x, y])
    expected = (2 * x + 1.25) + sympy.sin(2 * (3 * (y - 1) ** 2 - 0.5))
    assert sympy.simplify(substitute(exprs, values)[0] - expected) == 0


def test_multi_output_network_gives_one_formula_per_output():
    layer = SymbolicLayer(2, 2, {(0, 0): edge("sin"), (0, 1): edge("x"), (1, 1): edge("exp")},
                          bias=np.array([0.0, 2.0]))
    exprs, values = compose([layer], [x, y])
    assert substitute(exprs, values) == [sympy.sin(x) + y, sympy.exp(y) + 2]


def test_pruned_edges_stay_out_of_the_formula():
    layer = SymbolicLayer(3, 1, {(0, 0): edge("sin")})
    z = sympy.Symbol("z")
    exprs, values = compose([layer], [x, y, z])
    assert substitute(exprs, values)[0] == sympy.sin(x)


def test_bad_networks_are_clear_errors():
    with pytest.raises(ValueError, match="input expressions"):
        compose([SymbolicLayer(2, 1, {})], [x])
    with pytest.raises(ValueError, match="outside"):
        SymbolicLayer(2, 1, {(1, 0): edge("x")})


def test_standardisation_is_substituted_so_formulas_use_raw_variables():
    """The composed formula of a real KAN equals its forward pass on raw inputs."""
    model = kanmodel.KAN([2, 1], grid=3, seed=0).double()
    with torch.no_grad():
        model.in_shift.copy_(torch.tensor([10.0, -3.0]))
        model.in_scale.copy_(torch.tensor([2.0, 0.5]))
        model.out_shift.copy_(torch.tensor([100.0]))
        model.out_scale.copy_(torch.tensor([4.0]))
        model.layers[0].bias.fill_(0.3)
    choice = [{(0, 0): edge("sin", a=1.5, c=0.7), (0, 1): edge("x", c=-2.0, d=0.1)}]
    exprs, values = _output_exprs(model, choice, [x, y], Space("raw"))
    formula = substitute(exprs, values)[0]
    X = np.random.default_rng(0).normal(size=(50, 2)) * 3
    z = (X - [10.0, -3.0]) / [2.0, 0.5]
    expected = (0.7 * np.sin(1.5 * z[:, 0]) - 2.0 * z[:, 1] + 0.1 + 0.3) * 4.0 + 100.0
    got = sympy.lambdify([x, y], formula)(X[:, 0], X[:, 1])
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_refit_turns_approximate_constants_into_exact_ones():
    first = SymbolicLayer(2, 1, {(0, 0): edge("sin", a=3.1, b=0.02, c=1.03, d=0.1),
                                 (0, 1): edge("x^2", b=0.03, c=0.97)})
    second = SymbolicLayer(1, 1, {(0, 0): edge("exp", a=1.02, c=0.95, d=0.04)})
    exprs, values = compose([first, second], [x, y])
    X = np.random.default_rng(1).uniform(-1, 1, (500, 2))
    target = np.exp(np.sin(np.pi * X[:, 0]) + X[:, 1] ** 2)
    new_values, error = refit_constants(exprs[0], values, [x, y], X, target)
    assert error < 1e-10 * target.std()
    tidied = tidy(substitute(exprs, new_values)[0], [x, y], X, target)
    assert tidied == sympy.exp(sympy.sin(sympy.pi * x) + y ** 2)


def test_refit_never_makes_a_formula_worse():
    exprs, values = compose([SymbolicLayer(1, 1, {(0, 0): edge("x", c=2.0)})], [x])
    X = np.linspace(0, 1, 20)[:, None]
    target = np.sin(40 * X[:, 0])  # a line cannot fit this; whatever happens, no worse
    before = np.sqrt(np.mean((2 * X[:, 0] - target) ** 2))
    _, error = refit_constants(exprs[0], values, [x], X, target)
    assert error <= before


@pytest.mark.parametrize("value, expected", [
    (0.5000000001, sympy.Rational(1, 2)), (3.14159265358979, sympy.pi),
    (0.0795774715459477, 1 / (4 * sympy.pi)), (0.398942280401433, 1 / sympy.sqrt(2 * sympy.pi)),
    (-1.5, sympy.Rational(-3, 2)), (0.123456789, None)])
def test_nice_numbers(value, expected):
    got = nice_number(value)
    assert (got is None) if expected is None else sympy.simplify(got - expected) == 0


def test_rounding_is_rejected_when_the_data_disagree():
    # 0.5000004 is within the matching tolerance of 1/2, but the data are exactly 0.5000004*x
    X = np.linspace(1, 2, 50)[:, None]
    expr = sympy.Float(0.5000004) * x
    assert nice_number(0.5000004) == sympy.Rational(1, 2)
    assert tidy(expr, [x], X, 0.5000004 * X[:, 0]) == expr
    assert tidy(expr, [x], X, 0.5 * X[:, 0]) == x / 2


def test_formula_outputs():
    a, b = sympy.symbols("theta N", positive=True)
    f = Formula(a * b + sympy.pi, ["theta", "N"])
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(f.func(X), [2 + np.pi, 12 + np.pi])
    assert f.text == "N*theta + pi" and "\\theta" in f.latex
    f.score(X, np.array([2 + np.pi, 12 + np.pi]))
    assert f.rmse == 0 and f.r2 == 1
    constant = Formula(sympy.Integer(3), ["theta", "N"])
    np.testing.assert_allclose(constant.func(X), [3.0, 3.0])
    with pytest.raises(ValueError, match="shape"):
        f.func(np.zeros((2, 3)))
