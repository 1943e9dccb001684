"""Which few columns is a target an exact linear combination of?

Beam search over column subsets, a forward selection that keeps the `beam` best
subsets at each size instead of one: every subset is extended by the columns that
lower its least-squares residual (with an intercept) the most, and the best
extensions survive. Greedy selection alone is misled by correlated columns (x and
x^2 on [1, 5] correlate at 0.98); a small beam recovers.
A subset is exact when its residual is at most `exact` times the target's spread.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kanmodel.symbolic import deadline as time_limit

EXACT = 1e-9


@dataclass(frozen=True)
class Selection:
    columns: tuple[int, ...]
    coefficients: np.ndarray      # one per column
    intercept: float
    error: float                  # RMS residual / std(target)


def least_squares(A: np.ndarray, b: np.ndarray, columns: tuple[int, ...]) -> Selection:
    """Fit b ~ intercept + A[:, columns] @ coefficients on the raw columns."""
    M = np.column_stack([np.ones(len(b))] + [A[:, c] for c in columns])
    scale = np.maximum(np.abs(M).max(axis=0), 1e-300)
    coef, *_ = np.linalg.lstsq(M / scale, b, rcond=None)
    coef = coef / scale
    residual = b - M @ coef
    spread = float(np.std(b)) or 1.0
    return Selection(tuple(columns), coef[1:], float(coef[0]), float(np.sqrt(np.mean(residual ** 2)) / spread))


def beam_search(A: np.ndarray, b: np.ndarray, max_terms: int = 5, beam: int = 6, expand: int = 8,
                exact: float = EXACT, first_beam: int = 16) -> list[Selection]:
    """Subsets of A's columns (A: (rows, m), b: (rows,)) that fit b, best first.

    Each subset is extended by the columns that lower its least-squares residual the
    most (orthogonal least squares: every column is first made orthogonal to the
    subset, so a column is judged by what it adds, not by its correlation with the
    residual, which misleads when the right columns correlate with each other).
    Returns the exact subsets found (none is extended further: a superset of an
    exact subset is never simpler), else the best subset of each size. The first
    step keeps `first_beam` single columns.
    """
    n = len(b)
    column_norms2 = np.sum((A - A.mean(axis=0)) ** 2, axis=0)
    states: list[tuple[int, ...]] = [()]
    exact_found: list[Selection] = []
    best_by_size: list[Selection] = []
    for _ in range(max_terms):
        if time_limit.expired():
            break
        trials: dict[tuple[int, ...], Selection] = {}
        for chosen in states:
            basis = np.column_stack([np.ones(n)] + [A[:, c] for c in chosen])
            Q, _ = np.linalg.qr(basis)
            residual = b - Q @ (Q.T @ b)
            projected = A - Q @ (Q.T @ A)
            norms2 = np.sum(projected ** 2, axis=0)
            usable = norms2 > 1e-20 * np.maximum(column_norms2, 1e-300)
            gains = np.where(usable, (projected.T @ residual) ** 2 / np.where(usable, norms2, 1.0), -1.0)
            gains[list(chosen)] = -1.0
            for c in np.argsort(-gains)[:expand]:
                if gains[c] < 0:
                    break
                key = tuple(sorted(chosen + (int(c),)))
                if key not in trials:
                    trials[key] = least_squares(A, b, key)
        if not trials:
            break
        ranked = sorted(trials.values(), key=lambda s: s.error)
        exact_found += [s for s in ranked if s.error <= exact]
        best_by_size.append(ranked[0])
        if exact_found:
            break
        width = first_beam if not states[0] else beam
        states = [s.columns for s in ranked[:width]]
    return exact_found or best_by_size


def prune_exact(A: np.ndarray, b: np.ndarray, exact: float = EXACT) -> Selection | None:
    """Least squares on all of A's columns; when that is exact, drop columns one at a
    time (the one whose removal hurts least) while the fit stays exact."""
    columns = tuple(range(A.shape[1]))
    current = least_squares(A, b, columns)
    if current.error > exact:
        return None
    while len(current.columns) > 1:
        if time_limit.expired():
            break
        order = np.argsort(np.abs(current.coefficients) * np.std(A[:, list(current.columns)], axis=0))
        for k in order:
            trial = least_squares(A, b, tuple(c for i, c in enumerate(current.columns) if i != k))
            if trial.error <= exact:
                current = trial
                break
        else:
            break
    return current


@dataclass(frozen=True)
class Ratio:
    """b = (M[:, numerator] @ a) / (M[:, denominator] @ c)."""

    numerator: tuple[int, ...]
    a: np.ndarray
    denominator: tuple[int, ...]
    c: np.ndarray


def _null_vector(columns: np.ndarray) -> tuple[np.ndarray, float]:
    """The unit vector v minimising |columns @ v| (columns unit-norm), and that minimum."""
    _, s, vt = np.linalg.svd(columns, full_matrices=False)
    return vt[-1], float(s[-1])


# A ratio with more terms than this is a numeric approximation of something else
# (a degree-4 ratio imitates exp to 1e-10 on a short range), not a formula.
MAX_RATIO_TERMS = 10


def rational_exact(M: np.ndarray, b: np.ndarray, exact: float = EXACT) -> Ratio | None:
    """A ratio of two sparse combinations of M's columns (M: (rows, m), the first
    column the constant 1) equal to b, or None.

    b * D(x) = N(x) is linear in the coefficients of N and D: the smallest singular
    vector of [M, -b * M] (columns scaled to unit norm) holds them when its singular
    value is ~0. Columns are then dropped, the least important first, while it stays
    ~0: the first few drops remove the common factors N and D may share.
    """
    m = M.shape[1]
    full = np.column_stack([M, -b[:, None] * M])
    norms = np.linalg.norm(full, axis=0)
    if not np.all(norms > 0) or not np.all(np.isfinite(full)):
        return None
    unit = full / norms
    active = list(range(2 * m))
    v, s = _null_vector(unit[:, active])
    if s > exact:
        return None
    while len(active) > 2:
        if time_limit.expired():
            break
        for k in np.argsort(np.abs(v)):
            trial = active[:k] + active[k + 1:]
            if not any(i < m for i in trial) or not any(i >= m for i in trial):
                continue
            v_trial, s_trial = _null_vector(unit[:, trial])
            if s_trial <= exact:
                active, v = trial, v_trial
                break
        else:
            break
    coef = v / norms[active]
    num = [(i, c) for i, c in zip(active, coef) if i < m]
    den = [(i - m, c) for i, c in zip(active, coef) if i >= m]
    if not num or not den or len(num) + len(den) > MAX_RATIO_TERMS:
        return None
    return Ratio(tuple(i for i, _ in num), np.array([c for _, c in num]),
                 tuple(i for i, _ in den), np.array([c for _, c in den]))
