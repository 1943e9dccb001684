"""Function library domain guards and the one-edge fit y ~ c*f(a*x + b) + d."""
import numpy as np
import pytest
import torch

from kanmodel.symbolic.edge_fit import EdgeFit, fit_edge, fit_function, rank
from kanmodel.symbolic.library import LIBRARY, resolve_library

HOSTILE = np.array([-1e6, -3.0, -1.0, -1e-13, 0.0, 1e-13, 0.5, 1.0, 1.5707963, 3.0, 1e6])


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_every_function_is_finite_on_any_input(name):
    fn = LIBRARY[name]
    with np.errstate(divide="raise", invalid="raise", over="raise"):  # underflow to 0 is fine
        out = fn.numpy(HOSTILE)
    assert out.shape == HOSTILE.shape and np.isfinite(out).all()
    out_t = fn.torch(torch.tensor(HOSTILE, dtype=torch.float64))
    assert torch.isfinite(out_t).all()


@pytest.mark.parametrize("name, outside", [("log", [-2.0, 0.0]), ("sqrt", [-1.0]), ("1/x", [0.0]),
                                           ("1/x^2", [0.0]), ("arcsin", [1.5, -2.0])])
def test_domain_predicate_rejects_out_of_domain_points(name, outside):
    assert not LIBRARY[name].valid(np.array(outside)).any()


@pytest.mark.parametrize("name", ["log", "sqrt", "1/x", "1/x^2", "arcsin"])
def test_fitting_data_that_crosses_the_domain_never_raises(name):
    x = np.linspace(-2, 2, 101)  # contains 0 and negatives
    fit = fit_function(x, np.sin(x), name)
    assert fit.name == name
    assert np.isfinite(fit.numpy(x)).all() or fit.r2 == -np.inf


def test_unknown_library_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown function"):
        resolve_library(["sin", "sinc"])


X = np.linspace(-2.0, 3.0, 201)


def test_recovers_a_sine_edge():
    y = 1.5 * np.sin(2.0 * X + 0.3) - 0.7
    best = fit_edge(X, y)[0]
    assert best.name in ("sin", "cos") and best.r2 > 1 - 1e-12
    assert abs(abs(best.a) - 2.0) < 1e-6 and abs(abs(best.c) - 1.5) < 1e-6 and abs(best.d + 0.7) < 1e-6
    np.testing.assert_allclose(best.numpy(X), y, atol=1e-8)


def test_recovers_an_exp_edge():
    y = 0.5 * np.exp(-1.3 * X) + 2.0
    best = fit_edge(X, y)[0]
    assert best.name == "exp"
    # c*exp(a*x + b): b and c are one degree of freedom, c*exp(b) is identified
    assert abs(best.a + 1.3) < 1e-6 and abs(best.c * np.exp(best.b) - 0.5) < 1e-6 and abs(best.d - 2.0) < 1e-6


def test_recovers_a_square_edge():
    y = 3.0 * (X - 0.4) ** 2 + 1.0
    best = fit_edge(X, y)[0]
    assert best.name == "x^2"
    assert abs(-best.b / best.a - 0.4) < 1e-6          # vertex
    assert abs(best.c * best.a ** 2 - 3.0) < 1e-6 and abs(best.d - 1.0) < 1e-6


def test_linear_edge_prefers_x_over_equally_good_complex_functions():
    y = 2.0 * X + 1.0 + 1e-9 * np.sin(7 * X)
    assert fit_edge(X, y)[0].name == "x"


def test_a_clearly_better_fit_beats_a_simpler_one():
    """PyKAN's trap: arctanh (r2 .99999) lost to x (r2 .98). Here arctan vs x."""
    y = np.arctan(2.5 * X)
    ranked = fit_edge(X, y)
    assert ranked[0].name == "arctan"
    assert [f.name for f in ranked].index("x") > 0


def test_rank_uses_complexity_only_within_the_tie():
    good = EdgeFit("tanh", 1, 0, 1, 0, 1 - 1e-6, 3)
    near = EdgeFit("x^2", 1, 0, 1, 0, 1 - 2e-6, 2)
    worse = EdgeFit("x", 1, 0, 1, 0, 1 - 1e-3, 1)
    assert [f.name for f in rank([worse, good, near])] == ["x^2", "tanh", "x"]


def test_constant_edge_is_a_constant():
    (fit,) = fit_edge(X, np.full_like(X, 4.25))
    assert fit.name == "zero" and fit.d == 4.25
    (fit,) = fit_edge(np.full(50, 1.0), np.linspace(0, 1, 50) * 0 + 2.0)
    assert fit.name == "zero"


def test_bad_edge_data_is_a_clear_error():
    with pytest.raises(ValueError, match="equal length"):
        fit_edge(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        fit_edge(np.array([0.0, np.nan]), np.zeros(2))
