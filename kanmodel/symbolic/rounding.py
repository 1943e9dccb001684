"""Tidy a fitted numeric formula: canonical form, nice constants, simplification.

Every step is checked against the data: a rounding or rewrite is kept only when the
formula's error stays within `tolerance` of the error before it. A formula is never
made worse for the sake of looking nicer (beyond that stated tolerance).
"""
from __future__ import annotations

import numpy as np
import sympy

from .formula import evaluate, rmse

# Constants are compared with p/q * base for these bases and q <= MAX_DENOMINATOR.
_BASES = [
    sympy.Integer(1), sympy.pi, 1 / sympy.pi, sympy.sqrt(sympy.pi), 1 / sympy.sqrt(sympy.pi),
    sympy.sqrt(2), 1 / sympy.sqrt(2), sympy.sqrt(2 * sympy.pi), 1 / sympy.sqrt(2 * sympy.pi),
    sympy.pi ** 2, 1 / sympy.pi ** 2,
]
_BASE_VALUES = [float(b) for b in _BASES]
MAX_DENOMINATOR = 36
MAX_NUMERATOR = 1000
RELATIVE_MATCH = 1e-6
# Constants smaller than this (relative to the data's scale) are candidates for 0.
TINY = 1e-7
# sympy.simplify is tried only on expressions up to this many operations (it can take
# minutes on big ones), and only on formulas this accurate (relative RMSE): an
# approximate formula has no hidden simple form worth seconds of algebra.
MAX_SIMPLIFY_OPS = 60
SIMPLIFY_BELOW_ERROR = 1e-6


def nice_number(v: float, rel: float = RELATIVE_MATCH) -> sympy.Expr | None:
    """The simplest p/q * base within `rel` of v, or None."""
    v = float(v)
    if not np.isfinite(v) or v == 0 or not 1e-12 < abs(v) < 1e12:
        return None
    for base, bv in zip(_BASES, _BASE_VALUES):
        r = v / bv
        for q in range(1, MAX_DENOMINATOR + 1):
            p = round(r * q)
            if p == 0 or abs(p) > MAX_NUMERATOR:
                continue
            if abs(p / q - r) <= rel * abs(r):
                return sympy.Rational(p, q) * base
    return None


def canonical(expr: sympy.Expr) -> sympy.Expr:
    """Expanded form: products of exponentials split, polynomials multiplied out,
    so that redundant fitted constants collapse into single numbers."""
    try:
        expanded = sympy.expand(expr)
    except (RecursionError, MemoryError):
        return expr
    return expanded if sympy.count_ops(expanded) <= 4 * sympy.count_ops(expr) + 20 else expr


def merge_close_floats(expr: sympy.Expr, rel: float = 1e-11) -> sympy.Expr:
    """Give floats that agree to `rel` one shared value, so that terms which are equal
    up to float noise (0.648461451576444*A - 0.648461451576445*A) cancel or combine."""
    floats = sorted(expr.atoms(sympy.Float), key=float)
    table, anchor = {}, None
    for f in floats:
        if anchor is not None and abs(float(f) - float(anchor)) <= rel * abs(float(anchor)):
            table[f] = anchor
        else:
            anchor = f
    return expr.xreplace(table) if table else expr


class _Checker:
    """Error of candidate expressions on the data, and the bound they must meet."""

    def __init__(self, symbols, X, y, reference_error: float, tolerance: float):
        self.symbols, self.X, self.y = symbols, X, y
        scale = float(np.std(y)) or 1.0
        self.bound = reference_error * (1 + tolerance) + 1e-12 * scale

    def error(self, expr: sympy.Expr) -> float:
        try:
            return rmse(evaluate(expr, self.symbols, self.X), self.y)
        except (TypeError, ValueError, KeyError, ZeroDivisionError, OverflowError, NameError):
            return float("inf")

    def ok(self, expr: sympy.Expr) -> bool:
        return self.error(expr) <= self.bound


def round_constants(expr: sympy.Expr, symbols, X: np.ndarray, y: np.ndarray,
                    tolerance: float = 0.01) -> sympy.Expr:
    """Replace floats by nice numbers (and tiny ones by 0) where the data allow it.

    All at once first; if that hurts, one constant at a time (largest first).
    tolerance: relative increase of the RMSE on (X, y) that is accepted.
    """
    checker = _Checker(symbols, X, y, rmse(evaluate(expr, symbols, X), y), tolerance)
    scale = float(np.std(y)) or 1.0
    proposals = {}
    for f in expr.atoms(sympy.Float):
        if abs(float(f)) < TINY * scale:
            proposals[f] = sympy.Integer(0)
        else:
            nice = nice_number(float(f))
            if nice is not None:
                proposals[f] = nice
    if not proposals:
        return expr
    together = expr.xreplace(proposals)
    if checker.ok(together):
        return together
    current = expr
    for f in sorted(proposals, key=lambda f: -abs(float(f))):
        trial = current.xreplace({f: proposals[f]})
        if checker.ok(trial):
            current = trial
    return current


def tidy(expr: sympy.Expr, symbols, X: np.ndarray, y: np.ndarray, tolerance: float = 0.01) -> sympy.Expr:
    """canonical -> round constants -> simplify, each step verified on (X, y)."""
    base_error = rmse(evaluate(expr, symbols, X), y)
    checker = _Checker(symbols, X, y, base_error, tolerance)
    current = expr
    expanded = canonical(expr)
    if checker.ok(expanded):
        current = expanded
    current = round_constants(current, symbols, X, y, tolerance)
    accurate = base_error <= SIMPLIFY_BELOW_ERROR * (float(np.std(y)) or 1.0)
    if accurate and sympy.count_ops(current) <= MAX_SIMPLIFY_OPS:
        for rewrite in (sympy.simplify, lambda e: sympy.simplify(sympy.expand_trig(e))):
            try:
                simpler = merge_close_floats(rewrite(current))
            except (RecursionError, MemoryError, TypeError, ValueError, AttributeError):
                continue
            # a rewrite can multiply fitted floats into near-nice constants: round again
            simpler = round_constants(simpler, symbols, X, y, tolerance)
            if sympy.count_ops(simpler) < sympy.count_ops(current) and checker.ok(simpler):
                current = simpler
    return current
