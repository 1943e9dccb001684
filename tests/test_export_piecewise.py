"""Local power-basis form of the B-spline basis, against scipy's B-splines."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import BSpline

from kanmodel.export.piecewise import centred, is_uniform, local_bases, uniform_basis


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_local_polynomials_equal_the_b_spline_basis(k):
    rng = np.random.default_rng(k)
    grid = 6
    knots = np.sort(rng.uniform(-2.0, 2.0, size=(3, grid + 2 * k + 1)), axis=1)
    bases = local_bases(knots, k)
    assert bases.shape == (3, grid, k + 1, k + 1)
    for i in range(3):
        for m in range(grid):
            left, right = knots[i, k + m], knots[i, k + m + 1]
            x = np.linspace(left, right, 9)[:-1]
            u = (x - left) / (right - left)
            values = (u[:, None] ** np.arange(k + 1)) @ bases[i, m]
            for j in range(k + 1):
                coef = np.zeros(grid + k)
                coef[m + j] = 1.0
                expected = BSpline(knots[i], coef, k)(x)
                np.testing.assert_allclose(values[:, j], expected, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_centred_coordinates_give_the_same_polynomials(k):
    matrix = uniform_basis(k)
    u = np.linspace(0.0, 1.0, 11)
    in_u = (u[:, None] ** np.arange(k + 1)) @ matrix
    in_s = ((u - 0.5)[:, None] ** np.arange(k + 1)) @ centred(matrix)
    np.testing.assert_allclose(in_s, in_u, atol=1e-13)
    # the uniform basis is a partition of unity
    np.testing.assert_allclose(in_u.sum(axis=1), 1.0, atol=1e-13)


def test_uniformity_check():
    knots = np.linspace(-1.0, 1.0, 12)[None, :].repeat(2, axis=0)
    knots[1] *= 3.0  # rows may have different steps
    assert is_uniform(knots)
    assert is_uniform(knots.astype(np.float32) + np.float32(40.0))  # float32 rounding far from 0
    bent = knots.copy()
    bent[0, 5] += 0.05
    assert not is_uniform(bent)
