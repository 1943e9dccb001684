"""Training data from a formula: uniform inputs in their ranges, target from the formula."""
from __future__ import annotations

import numpy as np

from service.formula_grammar import parse_formula
from service.schemas.jobspec import FormulaSource


class DataError(ValueError):
    """The data cannot be used for training; the message names the row/column or sample."""


def generate(source: FormulaSource) -> tuple[np.ndarray, np.ndarray]:
    """Returns X (n_samples, n_inputs) and y (n_samples, 1), float64, inputs in ``ranges`` order."""
    rng = np.random.default_rng(source.seed)
    names = list(source.ranges)
    lows = np.array([source.ranges[name][0] for name in names])
    highs = np.array([source.ranges[name][1] for name in names])
    X = rng.uniform(lows, highs, size=(source.n_samples, len(names)))
    y = parse_formula(source.formula).evaluate({name: X[:, i] for i, name in enumerate(names)})
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        sample = ", ".join(f"{name}={X[bad[0], i]:.6g}" for i, name in enumerate(names))
        raise DataError(
            f"formula gives a non-finite value at {bad.size} of {source.n_samples} samples "
            f"(first at {sample}); narrow the ranges or change the formula"
        )
    if source.noise:
        y = y + rng.normal(0.0, source.noise, size=y.shape)
    return X, y[:, None]
