"""Variable names never collide with the symbols formulas are built from, and the
formula text parses back to the same function; constants like zoo never crash."""
import numpy as np
import pytest
import sympy
from sympy.parsing.sympy_parser import parse_expr

from kanmodel.symbolic.auto import make_symbols
from kanmodel.symbolic.compose import SymbolicLayer, compose
from kanmodel.symbolic.edge_fit import EdgeFit
from kanmodel.symbolic.formula import Formula, evaluate, numpy_function
from kanmodel.symbolic.refit import polish, refit_constants
from kanmodel.symbolic.rounding import tidy

# the names parameters and common subexpressions were once given, and names sympy
# parses specially (constants, functions, assumptions)
INTERNAL = ["p0", "p1", "r0", "r1", "q0", "q1", "x0", "x1"]
SPECIAL = ["E", "I", "N", "S", "Q", "O", "beta", "gamma", "zeta", "lambd", "E_n", "I_0"]


def parse_back(text: str, names: list[str]) -> sympy.Expr:
    return parse_expr(text, local_dict={n: sympy.Symbol(n) for n in names})


def same_function(text: str, names: list[str], X: np.ndarray, y: np.ndarray) -> bool:
    parsed = parse_back(text, names)
    values = evaluate(parsed, [sympy.Symbol(n) for n in names], X)
    return bool(np.allclose(values, y, rtol=1e-9, atol=1e-12))


@pytest.mark.parametrize("names", [INTERNAL, SPECIAL], ids=["internal", "special"])
def test_refit_and_polish_with_variables_named_like_parameters(names):
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 2, (200, len(names)))
    symbols = make_symbols(names, X)
    truth = sum((k + 1) * s for k, s in enumerate(symbols)) + sympy.exp(symbols[0] * symbols[1] / 4)
    y = evaluate(truth, symbols, X)
    # a composed network: every edge a parameterised x (constants off by 10%)
    layer = SymbolicLayer(len(names), 1, {(0, i): EdgeFit("x", 1, 0, 1.1 * (i + 1), 0, 1.0, 1)
                                          for i in range(len(names))})
    (expr,), values = compose([layer], symbols)
    expr = expr + sympy.exp(symbols[0] * symbols[1] / 4)
    values, error = refit_constants(expr, values, symbols, X, y)
    assert error < 1e-9
    numeric = expr.xreplace({s: sympy.Float(v) for s, v in values.items()})
    polished, error = polish(numeric * 1.0001, symbols, X, y)
    assert error < 1e-9
    formula = Formula(tidy(polished, symbols, X, y), names, symbols=symbols)
    assert same_function(formula.text, names, X, y)


def test_formula_text_writes_eulers_number_so_a_variable_named_E_parses_back():
    X = np.random.default_rng(1).uniform(1, 2, (50, 3))
    symbols = make_symbols(["E", "I", "lambd"], X)
    expr = sympy.E * symbols[0] + symbols[1] ** 2 / symbols[2] + sympy.exp(symbols[2] + 1)
    formula = Formula(expr, ["E", "I", "lambd"], symbols=symbols)
    assert "exp(1)" in formula.text
    assert same_function(formula.text, ["E", "I", "lambd"], X, formula.func(X))


def test_variable_names_that_are_functions_of_formula_text_are_refused():
    with pytest.raises(ValueError, match="'exp' is the name of a function"):
        make_symbols(["exp", "x"], np.ones((3, 2)))


def test_infinite_constants_evaluate_to_nan_instead_of_crashing():
    x = sympy.Symbol("x", positive=True)
    X = np.linspace(1, 2, 20)[:, None]
    for bad in (sympy.zoo * x, x + sympy.oo, sympy.nan * x, x / sympy.Integer(0)):
        assert np.isnan(numpy_function(bad, [x])(X[:, 0])).all()
        values, error = refit_constants(bad, {}, [x], X, X[:, 0])
        assert error == float("inf")
    # a constant that rounds to 0 under a division makes zoo: the rounding is refused
    tiny = sympy.Float(1e-12)
    expr = x / (tiny * x + tiny) + x
    y = evaluate(expr, [x], X)
    tidied = tidy(expr, [x], X, y)
    assert np.allclose(evaluate(tidied, [x], X), y)
