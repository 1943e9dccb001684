"""B-spline basis: values and derivatives against scipy, on uniform and adaptive knots."""
import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline

from kanmodel.basis import dense_basis, local_basis, uniform_basis_matrix
from kanmodel.grid import data_knots, uniform_knots


def scipy_basis(knots_row: np.ndarray, k: int, x: np.ndarray, nu: int = 0) -> np.ndarray:
    """(len(x), G + k) table of B_b(x) (or its nu-th derivative) from scipy."""
    n_basis = len(knots_row) - k - 1
    table = np.empty((len(x), n_basis))
    for b in range(n_basis):
        coef = np.zeros(n_basis)
        coef[b] = 1.0
        spline = BSpline(knots_row, coef, k, extrapolate=False)
        table[:, b] = spline.derivative(nu)(x) if nu else spline(x)
    return table


def knot_sets(k: int, grid_size: int = 6):
    """(name, knots (2, G + 2k + 1), uniform flag) for the evaluation paths."""
    uniform = uniform_knots(2, grid_size, k, -1.0, 2.0, dtype=torch.float64)
    samples = torch.from_numpy(np.random.default_rng(k).standard_normal((300, 2)) ** 3)
    adaptive = data_knots(samples, grid_size, k, grid_eps=0.02)
    return [("uniform-closed-form", uniform, True),
            ("uniform-de-boor", uniform, False),
            ("adaptive-de-boor", adaptive, False)]


def inside_points(knots: torch.Tensor, k: int, n: int = 257) -> torch.Tensor:
    grid_size = knots.shape[1] - 2 * k - 1
    low, high = knots[:, k], knots[:, grid_size + k]
    levels = torch.linspace(0, 1, n, dtype=torch.float64).unsqueeze(1)
    # Stay a hair inside the right end: scipy's basis elements are half-open there.
    return low + (high - low) * levels * (1 - 1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_basis_matches_scipy(k):
    for name, knots, uniform in knot_sets(k):
        x = inside_points(knots, k)
        ours = dense_basis(x, knots, k, uniform)
        for i in range(knots.shape[0]):
            reference = scipy_basis(knots[i].numpy(), k, x[:, i].numpy())
            np.testing.assert_allclose(ours[:, :, i].numpy(), reference, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_basis_derivative_matches_scipy(k):
    for name, knots, uniform in knot_sets(k):
        x = inside_points(knots, k)
        basis = local_basis(x, knots, k, uniform, with_derivative=True)
        for i in range(knots.shape[0]):
            reference = scipy_basis(knots[i].numpy(), k, x[:, i].numpy(), nu=1)
            picked = np.take_along_axis(reference, basis.first[:, i, None].numpy() + np.arange(k + 1), 1)
            scale = np.abs(reference).max()
            np.testing.assert_allclose(basis.derivatives[:, :, i].t().numpy() / scale, picked / scale,
                                       atol=1e-6, err_msg=name)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_partition_of_unity_inside_grid(k):
    for _, knots, uniform in knot_sets(k):
        x = inside_points(knots, k)
        total = dense_basis(x, knots, k, uniform).sum(1)
        torch.testing.assert_close(total, torch.ones_like(total), atol=1e-12, rtol=0)


def test_only_k_plus_one_values_are_non_zero():
    k = 3
    knots = uniform_knots(1, 10, k, -1.0, 1.0, dtype=torch.float64)
    x = torch.rand(100, 1, dtype=torch.float64) * 2 - 1
    assert ((dense_basis(x, knots, k, True) > 0).sum(1) <= k + 1).all()


def test_uniform_basis_matrix_is_the_cubic_bspline():
    # Textbook cubic uniform B-spline blending functions at u = 0: 1/6, 4/6, 1/6, 0.
    values = np.array([1.0, 0.0, 0.0, 0.0]) @ uniform_basis_matrix(3)
    np.testing.assert_allclose(values, [1 / 6, 4 / 6, 1 / 6, 0.0])


def test_float32_matches_float64():
    knots = uniform_knots(3, 5, 3, -1.0, 1.0, dtype=torch.float64)
    x = torch.rand(50, 3, dtype=torch.float64) * 2 - 1
    for uniform in (True, False):
        b64 = dense_basis(x, knots, 3, uniform)
        b32 = dense_basis(x.float(), knots.float(), 3, uniform)
        assert b32.dtype == torch.float32
        torch.testing.assert_close(b32.double(), b64, atol=1e-6, rtol=0)
