"""Separability splits with a model as the oracle (here: oracles with a known error)."""
import numpy as np
import sympy

from kanmodel.symbolic.separable import Leaf, Split, decompose, separable_formula


def oracle(f, relative_error, seed=0):
    """f with a smooth-ish multiplicative error, like a trained model's."""
    rng = np.random.default_rng(seed)
    return lambda X: f(X) * (1 + relative_error * rng.standard_normal(len(X)))


def sample(ranges, n=1200, seed=1):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(lo, hi, n) for lo, hi in ranges], axis=1)


def test_product_behind_a_sum_is_split_and_refitted_exactly():
    # q*(E + B*v*sin(theta)): product, then a sum, then products with a shift
    f = lambda X: X[:, 0] * (X[:, 1] + X[:, 2] * X[:, 3] * np.sin(X[:, 4]))  # noqa: E731
    X = sample([(1, 5)] * 5)
    symbols = sympy.symbols("q E B v theta", real=True)
    tree = decompose(oracle(f, 1e-3), X, 1e-2)
    assert isinstance(tree, Split) and tree.kind == "product" and isinstance(tree.parts[0], Leaf)
    expr, error = separable_formula(oracle(f, 1e-3), X, f(X), list(symbols), 1e-2)
    assert error < 1e-9 * f(X).std()
    q, E, B, v, theta = symbols
    X_new = sample([(1, 5)] * 5, seed=7)
    got = sympy.lambdify(symbols, expr)(*X_new.T)
    np.testing.assert_allclose(got, f(X_new), rtol=1e-9)


def test_leaf_alternatives_fix_a_wrong_first_choice():
    f = lambda X: np.sin(X[:, 0]) * np.exp(-X[:, 1] ** 2)  # noqa: E731
    X = sample([(-3.14, 3.14), (-1, 1)])
    x, y = sympy.symbols("x y", real=True)
    expr, error = separable_formula(oracle(f, 1e-3), X, f(X), [x, y], 1e-2)
    assert error < 1e-9 * f(X).std()


def test_a_function_that_does_not_split_gives_none():
    f = lambda X: (X[:, 0] + X[:, 1]) / (1 + X[:, 0] * X[:, 1] / X[:, 2] ** 2)  # noqa: E731
    X = sample([(1, 5), (1, 5), (3, 10)])
    assert decompose(oracle(f, 1e-3), X, 1e-2) is None
