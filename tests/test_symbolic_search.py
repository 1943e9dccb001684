"""The direct search (kanmodel.search): sparse and rational fits, target transforms,
snapped constants and the choice on the Pareto front. Equations made up for the
tests, in the style of physics formulas."""
import numpy as np
import sympy

from kanmodel.search import Candidate, choose, pareto_front, search
from kanmodel.search.sparse import beam_search, least_squares, rational_exact
from kanmodel.search.terms import dictionary, expression_size
from kanmodel.symbolic.auto import make_symbols


def data(f, names, low, high, n=600, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(low, high, (n, len(names)))
    return X, f(*X.T), make_symbols(names, X)


def found(f, names, low=1.0, high=5.0):
    X, y, symbols = data(f, names, low, high)
    front = search(X[:400], y[:400], symbols, X[400:], y[400:], time_budget=60)
    return choose(front, 1e-9), symbols


def test_beam_search_finds_two_columns_that_correlate_with_many_others():
    X, y, symbols = data(lambda a, b: 2 * a / b ** 2 + np.log(b), ["a", "b"], 1, 3)
    terms, ends = dictionary(X, symbols)
    A = np.column_stack([t.column for t in terms])
    (best, *_) = beam_search(A[:, :ends[1]], y)
    assert best.error < 1e-9
    assert {str(terms[k].expr) for k in best.columns} == {"a/b**2", "log(b)"}


def test_least_squares_reports_relative_error():
    A = np.arange(20.0).reshape(10, 2)
    fit = least_squares(A, 3 * A[:, 0] + 1, (0,))
    assert fit.error < 1e-12 and abs(fit.coefficients[0] - 3) < 1e-9 and abs(fit.intercept - 1) < 1e-9


def test_rational_fit_from_the_null_space():
    X, y, _ = data(lambda a, b: (a + 2 * b) / (1 + a * b), ["a", "b"], 1, 5)
    M = np.column_stack([np.ones(len(X)), X[:, 0], X[:, 1], X[:, 0] * X[:, 1]])
    ratio = rational_exact(M, y)
    assert ratio is not None
    pred = (M[:, list(ratio.numerator)] @ ratio.a) / (M[:, list(ratio.denominator)] @ ratio.c)
    assert np.allclose(pred, y, rtol=1e-10)
    assert rational_exact(M, np.exp(X[:, 0] / 3)) is None


def test_a_velocity_addition_law_is_found_as_a_ratio():
    best, (p, q, w) = found(lambda p, q, w: (p + q) / (1 + p * q / w ** 2), ["p", "q", "w"])
    assert best.error < 1e-9
    assert sympy.simplify(best.expr - (p + q) / (1 + p * q / w ** 2)) == 0


def test_transforms_turn_roots_and_inverse_sines_into_sums():
    best, (a, b) = found(lambda a, b: a / np.sqrt(1 - b ** 2 / 36), ["a", "b"])
    assert best.error < 1e-9 and sympy.simplify(best.expr - a / sympy.sqrt(1 - b ** 2 / 36)) == 0
    best, (a, b) = found(lambda a, b: np.arcsin(a * np.sin(b) / 6), ["a", "b"])
    assert best.error < 1e-9 and sympy.simplify(sympy.sin(best.expr) - a * sympy.sin(b) / 6) == 0


def test_constants_are_snapped_to_multiples_of_pi_where_the_data_agree():
    best, (a, b, r) = found(lambda a, b, r: a * b / (4 * np.pi * r ** 2), ["a", "b", "r"])
    assert sympy.simplify(best.expr - a * b / (4 * sympy.pi * r ** 2)) == 0
    # 1.0005 is not 1: it stays a float
    best, (a, b) = found(lambda a, b: 1.0005 * a * b, ["a", "b"])
    assert best.expr.atoms(sympy.Float)


def test_a_common_factor_of_every_term_is_divided_out():
    best, (k, u, t) = found(lambda k, u, t: k * (u + 2 * u * np.cos(t)), ["k", "u", "t"])
    assert best.error < 1e-9
    assert sympy.simplify(best.expr - k * u * (1 + 2 * sympy.cos(t))) == 0


def test_no_huge_exact_formula_imitates_a_function_outside_the_dictionary():
    X, y, symbols = data(lambda a, b: 1 / (np.exp(a * b / 7) - 1), ["a", "b"], 1, 5)
    front = search(X[:400], y[:400], symbols, X[400:], y[400:], time_budget=60)
    assert all(c.size <= 60 for c in front if c.error <= 1e-7)


def test_choose_takes_the_smallest_exact_formula_and_otherwise_the_most_accurate():
    x = sympy.Symbol("x")
    small, big = Candidate(x, 1e-12, 1, "a"), Candidate(x + 0 * x ** 2, 1e-13, 9, "b")
    assert choose(pareto_front([big, small]), 1e-9) is small
    rough, better = Candidate(x, 1e-2, 1, "a"), Candidate(x ** 2, 1e-3, 3, "b")
    assert choose(pareto_front([rough, better]), 1e-9) is better
    tie = Candidate(x ** 3, 1.05e-3, 2, "c")
    assert choose(pareto_front([tie, better, rough]), 1e-9) is tie


def test_expression_size_counts_nodes():
    a, b = sympy.symbols("a b")
    assert expression_size(a * b) == 3 and expression_size(a / b) == 5


def test_a_function_of_one_monomial_is_fitted_in_one_dimension():
    from kanmodel.search.reduction import one_dimensional
    X, y, (a, b, c) = data(lambda a, b, c: 1 / (np.exp(a * b / (3 * c)) - 1), ["a", "b", "c"], 1, 3)
    found = one_dimensional(X[:400], y[:400], [a, b, c], np.array([1.0, 1.0, -1.0]), X[400:], y[400:])
    best = choose(found, 1e-9)
    assert best is not None and best.error < 1e-9
    assert sympy.simplify(best.expr - 1 / (sympy.exp(a * b / (3 * c)) - 1)) == 0


def test_a_power_law_times_a_function_of_one_monomial():
    from kanmodel.search.reduction import one_dimensional
    X, y, (a, b, c) = data(lambda a, b, c: a * b / (np.exp(a * b / (2 * np.pi * c)) - 1), ["a", "b", "c"], 1, 3)
    found = one_dimensional(X[:400], y[:400], [a, b, c], np.array([1.0, 1.0, -1.0]), X[400:], y[400:],
                            power=np.array([1.0, 1.0, 0.0]))
    best = choose(found, 1e-9)
    assert best is not None and best.error < 1e-9
    assert sympy.simplify(best.expr - a * b / (sympy.exp(a * b / (2 * sympy.pi * c)) - 1)) == 0


def test_network_gradients_give_the_monomial_and_the_power_law():
    import torch
    from kanmodel.search.reduction import monomial_exponents

    class ExactLogModel(torch.nn.Module):
        """log y as a function of log x, as a network trained in log space would give it."""
        in_shift = torch.zeros(1, dtype=torch.float64)

        def forward(self, log_x):
            a, b, c = torch.exp(log_x).T
            return torch.log(a * b / (torch.exp(a * b / c) - 1))[:, None]

    X = np.random.default_rng(0).uniform(1, 3, (300, 3))
    found = monomial_exponents(ExactLogModel(), X)
    assert found
    for power, exponents in found:
        assert np.array_equal(np.abs(exponents), [1, 1, 1]) and exponents[0] == -exponents[2]
    assert any(np.array_equal(power, [1, 1, 0]) for power, _ in found)


def test_a_function_of_one_variable_times_a_root_of_a_product():
    best, (a, b, d) = found(lambda a, b, d: a + b + 2 * np.sqrt(a * b) * np.cos(d), ["a", "b", "d"])
    assert best.error < 1e-9
    assert sympy.simplify(best.expr - (a + b + 2 * sympy.sqrt(a * b) * sympy.cos(d))) == 0
