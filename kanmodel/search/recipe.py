"""A direct search for compact formulas on the data, before any network is trained.

For the target y (and y divided by its power-law part, when y and X are positive),
and for every transform T that the data allow (`transforms`), three fits of T(y):
  1. a full polynomial in the variables (degree 2 to 4, as many columns as the
     data carry), pruned term by term while it stays exact;
  2. a sparse sum of a few terms of the dictionary (`terms`), by beam search;
  3. a rational form: T(y) = N(x) / D(x) with N, D sparse polynomials (velocity
     additions, 1/(1 + chi), Doppler factors), from the null space of [N, -T(y) D].
Every fit that is exact on the training rows becomes a formula in the raw
variables; its constants are snapped to simple rationals (times pi, sqrt 2...)
where the data agree, and it is scored on the held-out rows. The result is the
Pareto front of formula size against held-out error.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
import sympy

from kanmodel.symbolic import deadline as time_limit
from kanmodel.symbolic.formula import evaluate, rmse
from kanmodel.symbolic.rounding import round_constants

from .sparse import EXACT, Selection, beam_search, prune_exact, rational_exact
from .terms import Term, dictionary, expression_size
from .transforms import TRANSFORMS, Transform

# columns of the full polynomial fit: the degree is the highest whose column count fits
MAX_POLYNOMIAL_COLUMNS = 210
MAX_POLYNOMIAL_DEGREE = 4
# columns of the rational fit b * D(x) = N(x) (half for N, half for D)
MAX_RATIONAL_COLUMNS = 260
# fits with a relative error above this on the transformed target are not turned into
# formulas (sympy and rounding cost ~0.5 s a formula)
NEAR_EXACT = 1e-6
# sympy rewrites (cancel, factor) are tried on formulas up to this many operations
MAX_SIMPLIFY_OPS = 80
# dividing y by one variable at a time is tried unless a formula this accurate is known
PEEL_UNLESS_BELOW = 1e-9
# an exact fit means something only with many more rows than columns: with fewer
# than MIN_SEARCH_ROWS rows there is no search, and a dense fit gets at most one
# column per ROWS_PER_COLUMN rows
MIN_SEARCH_ROWS = 40
ROWS_PER_COLUMN = 2
# rows the search fits on (more add time, not certainty: an exact fit is exact on any rows)
MAX_SEARCH_ROWS = 500


@dataclass
class Candidate:
    expr: sympy.Expr
    error: float        # held-out RMSE / std(y)
    size: int           # nodes of the expression tree
    method: str         # which target, transform and fit found it


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates no other one beats in both size and error, smallest first."""
    front, best_error = [], float("inf")
    for c in sorted(candidates, key=lambda c: (c.size, c.error)):
        if c.error < best_error:
            front.append(c)
            best_error = c.error
    return front


def choose(front: list[Candidate], exact: float) -> Candidate | None:
    """The smallest exact candidate, else the one with the lowest error (a candidate
    within 10% of that error and smaller wins: the error does not tell them apart)."""
    if not front:
        return None
    exact_ones = [c for c in front if c.error <= exact]
    if exact_ones:
        return min(exact_ones, key=lambda c: c.size)
    lowest = min(c.error for c in front)
    return min((c for c in front if c.error <= 1.1 * lowest), key=lambda c: c.size)


def _power_law(X: np.ndarray, y: np.ndarray, symbols) -> tuple[sympy.Expr, np.ndarray] | None:
    """y's power-law part: prod x_i^a_i with the least-squares exponents of log|y| on
    log x, rounded to halves; None when the data are not positive or all round to 0."""
    if not (np.all(X > 0) and (np.all(y > 0) or np.all(y < 0))):
        return None
    L = np.column_stack([np.ones(len(X)), np.log(X)])
    coef, *_ = np.linalg.lstsq(L, np.log(np.abs(y)), rcond=None)
    halves = np.round(coef[1:] * 2) / 2
    if not np.any(halves):
        return None
    expr = sympy.Mul(*[s ** sympy.Rational(int(h * 2), 2) for s, h in zip(symbols, halves) if h])
    return expr, np.prod(X ** halves, axis=1)


def _polynomial(X: np.ndarray, symbols) -> list[Term]:
    d = X.shape[1]
    degree = MAX_POLYNOMIAL_DEGREE
    limit = min(MAX_POLYNOMIAL_COLUMNS, len(X) // ROWS_PER_COLUMN)
    while degree > 1 and sum(1 for _ in _exponent_vectors(d, degree)) > limit:
        degree -= 1
    # logs too: log y of a monomial is a sum of logs, and the pruning finds which
    terms = [Term(sympy.log(s), np.log(X[:, i])) for i, s in enumerate(symbols) if np.all(X[:, i] > 0)]
    for powers in _exponent_vectors(d, degree):
        expr = sympy.Mul(*[s ** p for s, p in zip(symbols, powers) if p])
        terms.append(Term(expr, np.prod([X[:, i] ** p for i, p in enumerate(powers)], axis=0)))
    return terms


def _monomial_basis(X: np.ndarray, symbols, max_columns: int) -> tuple[list[sympy.Expr], np.ndarray]:
    """1 and the monomials of the highest degree (<= 4) whose count fits max_columns."""
    d = X.shape[1]
    degree = MAX_POLYNOMIAL_DEGREE
    while degree > 1 and sum(1 for _ in _exponent_vectors(d, degree)) + 1 > max_columns:
        degree -= 1
    exprs, columns = [sympy.Integer(1)], [np.ones(len(X))]
    for powers in _exponent_vectors(d, degree):
        exprs.append(sympy.Mul(*[s ** p for s, p in zip(symbols, powers) if p]))
        columns.append(np.prod([X[:, i] ** p for i, p in enumerate(powers)], axis=0))
    return exprs, np.column_stack(columns)


def _exponent_vectors(d: int, degree: int):
    for total in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(d), total):
            yield tuple(combo.count(i) for i in range(d))


class _Search:
    def __init__(self, X, y, symbols, X_val, y_val):
        self.X, self.y, self.symbols = X, y, symbols
        self.X_val, self.y_val = X_val, y_val
        self.scale_val = float(np.std(y_val)) or 1.0
        self.candidates: list[Candidate] = []
        # the best inexact sum of terms for y itself: the answer when nothing is exact
        self.fallback: tuple[float, sympy.Expr | None, str] = (float("inf"), None, "")
        self.terms, self.level_ends = dictionary(X, symbols)
        self.A = np.column_stack([t.column for t in self.terms]) if self.terms else np.zeros((len(X), 0))
        self.polynomial = _polynomial(X, symbols)
        self.rational_basis, self.R = _monomial_basis(
            X, symbols, min(MAX_RATIONAL_COLUMNS, len(X) // ROWS_PER_COLUMN) // 2)
        self.P = np.column_stack([t.column for t in self.polynomial])

    def add(self, expr: sympy.Expr, method: str) -> None:
        try:
            expr = self._simplest(round_constants(expr, self.symbols, self.X, self.y))
            error = rmse(evaluate(expr, self.symbols, self.X_val), self.y_val) / self.scale_val
        except (TypeError, ValueError, KeyError, ZeroDivisionError, OverflowError, RecursionError):
            return
        if np.isfinite(error):
            self.candidates.append(Candidate(expr, error, expression_size(expr), method))

    def _simplest(self, expr: sympy.Expr) -> sympy.Expr:
        """expr or a smaller equal form (common factors of a ratio cancelled, factored):
        only for formulas with exact constants, and only when the data agree."""
        if expr.atoms(sympy.Float) or sympy.count_ops(expr) > MAX_SIMPLIFY_OPS:
            return expr
        best, size = expr, expression_size(expr)
        reference = evaluate(expr, self.symbols, self.X)
        for rewrite in (sympy.expand, sympy.cancel, sympy.factor, lambda e: sympy.factor(sympy.cancel(e))):
            try:
                other = rewrite(expr)
            except (RecursionError, MemoryError, TypeError, ValueError, AttributeError):
                continue
            if expression_size(other) < size and np.allclose(evaluate(other, self.symbols, self.X), reference,
                                                             rtol=1e-12, atol=0):
                best, size = other, expression_size(other)
        return best

    def run_target(self, label: str, y_target: np.ndarray, factor: sympy.Expr) -> None:
        for transform in TRANSFORMS:
            if time_limit.expired():
                return
            if not transform.allows(y_target):
                continue
            t = transform.apply(y_target)
            if not np.all(np.isfinite(t)) or np.ptp(t) <= 1e-12 * (1 + np.max(np.abs(t))):
                continue
            sign = transform.sign(y_target)
            method = f"{label}, {transform.name}"
            polynomial = prune_exact(self.P, t)
            if polynomial is not None:
                self.add(factor * self._undo(transform, polynomial, sign, self.polynomial),
                         method + ", polynomial")
            for selection in self._sparse(t):
                expr = factor * self._undo(transform, selection, sign, self.terms)
                if selection.error <= NEAR_EXACT:
                    self.add(expr, method + ", sparse")
                elif transform.name == "identity" and selection.error < self.fallback[0]:
                    self.fallback = (selection.error, expr, method + ", sparse")
            self._rational(transform, t, sign, factor, method)

    def peel(self, y: np.ndarray) -> None:
        """y / x_i and y * x_i as sparse sums: a factor of every term (q in q*(E + B*v*sin t))
        hides the sum from the dictionary, and a target that changes sign has no
        power-law part to divide by."""
        for i, symbol in enumerate(self.symbols):
            x = self.X[:, i]
            if np.min(np.abs(x)) < 1e-9:
                continue
            for power in (1, -1):
                if time_limit.expired():
                    return
                target = y / x ** power
                for selection in self._sparse(target):
                    if selection.error <= NEAR_EXACT:
                        self.add(symbol ** power * self._sum(selection, self.terms), f"y/{symbol ** power}, sparse")

    def _sparse(self, t: np.ndarray) -> list[Selection]:
        """Beam search on the dictionary's levels in turn (a small dictionary misleads
        the pursuit less); the first level with an exact fit ends it."""
        found = []
        for end in sorted(set(self.level_ends)):
            if time_limit.expired():
                break
            found = beam_search(self.A[:, :end], t)
            if found and found[0].error <= EXACT:
                return found[:3]
        return found[-1:]

    def _rational(self, transform: Transform, t: np.ndarray, sign: int, factor, method: str) -> None:
        """T(y) = N(x) / D(x), N and D sparse polynomials (`sparse.rational_exact`)."""
        if time_limit.expired():
            return
        ratio = rational_exact(self.R, t)
        if ratio is None:
            return
        N = sum((sympy.Float(a) * self.rational_basis[i] for a, i in zip(ratio.a, ratio.numerator)), sympy.Integer(0))
        D = sum((sympy.Float(c) * self.rational_basis[i] for c, i in zip(ratio.c, ratio.denominator)), sympy.Integer(0))
        # the scale of N and D is free: make the denominator's largest coefficient 1
        scale = sympy.Float(ratio.c[np.argmax(np.abs(ratio.c))])
        self.add(factor * transform.undo(sympy.expand(N / scale) / sympy.expand(D / scale), sign),
                 method + ", rational")

    def _sum(self, selection: Selection, terms: list[Term]) -> sympy.Expr:
        return sympy.Float(selection.intercept) + sum(
            (sympy.Float(c) * terms[k].expr for c, k in zip(selection.coefficients, selection.columns)),
            sympy.Integer(0))

    def _undo(self, transform: Transform, selection: Selection, sign: int, terms: list[Term]) -> sympy.Expr:
        if transform.name != "log":
            return transform.undo(self._sum(selection, terms), sign)
        # exp(c0 + sum c_k t_k): logs become powers, the constant a factor (so both round)
        product, rest = sympy.Float(np.exp(selection.intercept)), []
        for c, k in zip(selection.coefficients, selection.columns):
            term = terms[k].expr
            if isinstance(term, sympy.log):
                product *= term.args[0] ** sympy.Float(c)
            else:
                rest.append(sympy.Float(c) * term)
        return sign * product * sympy.exp(sympy.Add(*rest))


def search(X: np.ndarray, y: np.ndarray, symbols, X_val: np.ndarray, y_val: np.ndarray,
           time_budget: float = 60.0) -> list[Candidate]:
    """The Pareto front (size against held-out error) of the formulas found.

    X (rows, d), y (rows,): training data; X_val, y_val: held-out rows for the error.
    Stops when time_budget seconds are spent (or the outer time limit runs out).
    """
    X = np.asarray(X, dtype=np.float64)[:MAX_SEARCH_ROWS]
    y = np.asarray(y, dtype=np.float64).ravel()[:MAX_SEARCH_ROWS]
    if len(X) < MIN_SEARCH_ROWS:
        return []
    with time_limit.within(time.monotonic() + time_budget):
        run = _Search(X, y, symbols, X_val, y_val)
        run.run_target("y", y, sympy.Integer(1))
        power = _power_law(X, y, symbols)
        if power is not None:
            ratio = y / power[1]
            if np.ptp(ratio) <= 1e-12 * np.max(np.abs(ratio)):  # y is the power law itself
                run.add(sympy.Float(float(np.mean(ratio))) * power[0], "y, power law")
            else:
                run.run_target(f"y/({power[0]})", ratio, power[0])
        if not any(c.error <= PEEL_UNLESS_BELOW for c in run.candidates):
            run.peel(y)
        if not run.candidates and run.fallback[1] is not None:
            run.add(run.fallback[1], run.fallback[2])
    return pareto_front(run.candidates)
