"""Split a function into sums and products of simpler ones, using a trained model
as the oracle (the separability tests of AI Feynman, on the KAN instead of a new net).

f(x) is additively separable in {x_i} vs the rest when
    f(a_i, b_rest) + f(r_i, r_rest) == f(a_i, r_rest) + f(r_i, b_rest)
for random points a, b and a reference r, and multiplicatively separable when
    f(a_i, b_rest) * f(r_i, r_rest) == f(a_i, r_rest) * f(r_i, b_rest).
The model answers these questions for any point, also for combinations that are
not in the data. Splitting recursively down to one variable leaves 1-D functions,
each fitted with the function library (`fit_edge`). The tree becomes one formula
whose constants are then refitted on the real data (`refit`), so the oracle's own
error does not end up in the formula; a wrong split shows up as a large error there.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import sympy

from . import deadline as time_limit
from .edge_fit import EdgeFit, fit_edge
from .library import LIBRARY

N_PAIRS = 400
N_LEAF_POINTS = 201
MAX_DEPTH = 6
N_ALTERNATIVES = 2


@dataclass
class Leaf:
    variable: int
    fit: EdgeFit
    alternatives: list  # the next-best EdgeFits of the same slice


@dataclass
class Split:
    """kind "sum":     f = part_1 + part_2 - f(r)
    kind "product": f = shift + part_1 * part_2 / (f(r) - shift)
    (the parts are f's slices through the reference point r, minus `shift`)."""

    kind: str
    parts: list          # [Leaf | Split]
    reference_value: float
    shift: float = 0.0


def _mismatch(kind: str, f_ab, f_rr, f_ar, f_rb) -> tuple[float, float]:
    """(relative violation of the separability identity, shift).

    For products the identity is tested on f - shift, with the shift that fits best:
    (f_ab - c)(f_rr - c) - (f_ar - c)(f_rb - c) is linear in c, so c has a closed form.
    That finds products behind an additive constant (E + B*v*sin(theta))."""
    shift = 0.0
    if kind == "sum":
        lhs, rhs = f_ab + f_rr, f_ar + f_rb
    else:
        d = f_ab + f_rr - f_ar - f_rb
        dd = float(d @ d)
        if dd > 0:
            shift = float((f_ab * f_rr - f_ar * f_rb) @ d / dd)
        lhs, rhs = (f_ab - shift) * (f_rr - shift), (f_ar - shift) * (f_rb - shift)
    scale = np.sqrt(np.mean(lhs ** 2)) + 1e-300
    return float(np.sqrt(np.mean((lhs - rhs) ** 2)) / scale), shift


class _Oracle:
    """f - offset, the variables outside the current sub-problem held at `reference`."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], reference: np.ndarray,
                 low: np.ndarray, high: np.ndarray, rng: np.random.Generator, offset: float = 0.0):
        self.predict, self.reference, self.low, self.high, self.rng = predict, reference, low, high, rng
        self.offset = offset

    def shifted(self, shift: float) -> "_Oracle":
        return _Oracle(self.predict, self.reference, self.low, self.high, self.rng, self.offset + shift)

    def points(self, n: int) -> np.ndarray:
        return self.low + (self.high - self.low) * self.rng.random((n, len(self.low)))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.predict(X), dtype=np.float64).reshape(len(X)) - self.offset


def _split_tests(oracle: _Oracle, active: list[int]) -> list[tuple[float, str, int, float]]:
    """(mismatch, kind, variable, shift) for splitting each single variable off `active`."""
    a, b = oracle.points(N_PAIRS), oracle.points(N_PAIRS)
    r = np.broadcast_to(oracle.reference, a.shape).copy()
    f_rr = oracle(r[:1])[0]
    results = []
    for i in active:
        rest = [j for j in active if j != i]
        ab, ar, rb = r.copy(), r.copy(), r.copy()
        ab[:, i], ab[:, rest] = a[:, i], b[:, rest]   # x_i from a, the rest from b
        ar[:, i] = a[:, i]                            # x_i from a, the rest at r
        rb[:, rest] = b[:, rest]                      # x_i at r, the rest from b
        f_ab, f_ar, f_rb = oracle(ab), oracle(ar), oracle(rb)
        for kind in ("sum", "product"):
            mismatch, shift = _mismatch(kind, f_ab, f_rr, f_ar, f_rb)
            results.append((mismatch, kind, i, shift))
    return sorted(results, key=lambda t: t[0])


def decompose(predict: Callable[[np.ndarray], np.ndarray], X: np.ndarray, tolerance: float,
              library: list[str] | None = None, seed: int = 0) -> Split | Leaf | None:
    """Tree of sums/products of 1-D library functions for `predict` over X's box, or None.

    predict: (batch, n) -> (batch,), the oracle. X (batch, n): data, for the ranges
    and the reference point (the row where |predict| is largest, so products are
    not tested against a near-zero value). tolerance: largest relative mismatch
    that counts as separable (the oracle's own relative error sets its scale).
    """
    X = np.asarray(X, dtype=np.float64)
    values = np.asarray(predict(X), dtype=np.float64).reshape(len(X))
    reference = X[int(np.argmax(np.abs(values)))].copy()
    oracle = _Oracle(predict, reference, X.min(0), X.max(0), np.random.default_rng(seed))
    return _decompose(oracle, list(range(X.shape[1])), tolerance, library, 0)


def _leaf(oracle: _Oracle, i: int, library) -> Leaf:
    grid = np.broadcast_to(oracle.reference, (N_LEAF_POINTS, len(oracle.reference))).copy()
    grid[:, i] = np.linspace(oracle.low[i], oracle.high[i], N_LEAF_POINTS)
    fits = fit_edge(grid[:, i], oracle(grid), library)
    return Leaf(i, fits[0], fits[1:1 + N_ALTERNATIVES])


def _decompose(oracle: _Oracle, active: list[int], tolerance: float, library, depth: int):
    time_limit.check()
    if len(active) == 1:
        return _leaf(oracle, active[0], library)
    if depth >= MAX_DEPTH:
        return None
    for mismatch, kind, i, shift in _split_tests(oracle, active):
        if mismatch > tolerance:
            break
        part = oracle.shifted(shift)
        rest = _decompose(part, [j for j in active if j != i], tolerance, library, depth + 1)
        if rest is not None:
            return Split(kind, [_leaf(part, i, library), rest],
                         float(oracle(oracle.reference[None])[0]), shift)
    return None


def tree_expr(tree, symbols: list[sympy.Symbol]) -> tuple[sympy.Expr, dict]:
    """The tree as an expression with parameter symbols (every leaf c*f(a*x+b)+d, every
    product with a free scale), and {symbol: starting value}."""
    values: dict[sympy.Symbol, float] = {}

    def param(v: float) -> sympy.Symbol:
        s = sympy.Dummy(f"q{len(values)}", real=True)
        values[s] = float(v)
        return s

    def build(node) -> sympy.Expr:
        if isinstance(node, Leaf):
            fit, x = node.fit, symbols[node.variable]
            if fit.name == "zero":
                return param(fit.d)
            if fit.name == "x":
                return param(fit.c) * x + param(fit.d)
            return param(fit.c) * LIBRARY[fit.name].sympy(param(fit.a) * x + param(fit.b)) + param(fit.d)
        parts = [build(p) for p in node.parts]
        if node.kind == "sum":
            return sympy.Add(*parts, param(-node.reference_value))
        return sympy.Mul(*parts, param(1.0 / (node.reference_value - node.shift))) + param(node.shift)

    expr = build(tree)
    return expr, values


def _leaves(node) -> list[Leaf]:
    if isinstance(node, Leaf):
        return [node]
    return [leaf for part in node.parts for leaf in _leaves(part)]


def separable_formula(predict: Callable[[np.ndarray], np.ndarray], X: np.ndarray, y: np.ndarray,
                      symbols: list[sympy.Symbol], tolerance: float,
                      library: list[str] | None = None, exact: float = 1e-9,
                      deadline: float = float("inf")) -> tuple[sympy.Expr, float] | None:
    """Decompose with the oracle, then refit the tree's constants on (X, y); while the
    formula is not exact (relative RMSE > exact), leaves try their next-best functions.

    Returns (numeric expression, RMSE on (X, y)) or None when no split passes.
    """
    from .compose import substitute
    from .refit import polish, refit_constants

    tree = decompose(predict, X, tolerance, library)
    if tree is None or isinstance(tree, Leaf):
        return None
    scale = float(np.std(y)) or 1.0

    def evaluate():
        expr, values = tree_expr(tree, symbols)
        values, error = refit_constants(expr, values, symbols, X, y)
        return polish(substitute([expr], values)[0], symbols, X, y)

    best = evaluate()
    for leaf in sorted(_leaves(tree), key=lambda leaf: leaf.fit.r2):
        for alt in list(leaf.alternatives):
            if best[1] <= exact * scale or time.monotonic() > deadline or time_limit.expired():
                return best
            chosen, leaf.fit = leaf.fit, alt
            trial = evaluate()
            if trial[1] < best[1]:
                best = trial
            else:
                leaf.fit = chosen
    return best
