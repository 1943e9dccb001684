"""Refit all constants of a composed formula in float64 against the data.

Each edge was fitted to the spline's curve, which is only as exact as the spline.
Least squares on the whole formula, with the exact Jacobian from sympy, removes
the spline's error: when the structure is right, the error drops to rounding level.
"""
from __future__ import annotations

import numpy as np
import sympy
from scipy.optimize import least_squares

from . import deadline
from .formula import is_finite_expr, lambdify, rmse

# A Jacobian with more operations than this is not derived symbolically (it would cost
# more to build than finite differences cost to run).
MAX_SYMBOLIC_JACOBIAN_OPS = 4000
_BAD_RESIDUAL = 1e150


def refit_constants(expr: sympy.Expr, values: dict, symbols: list[sympy.Symbol],
                    X: np.ndarray, y: np.ndarray, max_nfev: int = 2000) -> tuple[dict, float]:
    """Least squares over the parameters of `expr` that appear in `values`.

    expr: over `symbols` (variables) and parameter symbols; X (batch, n_vars); y (batch,).
    Returns (new values, rmse); the old values are kept when the fit does not improve them
    or the time limit (`deadline`) runs out during the fit.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    if not is_finite_expr(expr):
        return dict(values), float("inf")
    free = [s for s in values if s in expr.free_symbols]
    f = lambdify(free + list(symbols), expr)
    columns = list(X.T)

    def predict(p: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            out = f(*p, *columns)
        return np.broadcast_to(np.asarray(out, dtype=np.float64), y.shape)

    def residual(p: np.ndarray) -> np.ndarray:
        if deadline.expired():
            raise deadline.OutOfTime("refit stopped")
        r = predict(p) - y
        return np.nan_to_num(r, nan=_BAD_RESIDUAL, posinf=_BAD_RESIDUAL, neginf=-_BAD_RESIDUAL)

    p0 = np.array([values[s] for s in free], dtype=np.float64)
    start_err = rmse(predict(p0), y)
    if not free:
        return dict(values), start_err

    jac = "2-point"
    if sympy.count_ops(expr) * len(free) <= MAX_SYMBOLIC_JACOBIAN_OPS:
        grads = lambdify(free + list(symbols), [sympy.diff(expr, s) for s in free])

        def jac(p: np.ndarray) -> np.ndarray:
            with np.errstate(all="ignore"):
                cols = grads(*p, *columns)
            J = np.stack([np.broadcast_to(np.asarray(c, dtype=np.float64), y.shape) for c in cols], axis=1)
            return np.nan_to_num(J, nan=0.0, posinf=0.0, neginf=0.0)

    method = "lm" if y.size >= len(free) else "trf"
    try:
        sol = least_squares(residual, p0, jac=jac, method=method, xtol=1e-15, ftol=1e-15,
                            gtol=1e-15, max_nfev=max_nfev, x_scale="jac")
    except (ValueError, np.linalg.LinAlgError, OverflowError, ZeroDivisionError, deadline.OutOfTime):
        # out of time: the starting values are a valid (if unrefined) answer
        return dict(values), start_err
    new_err = rmse(predict(sol.x), y)
    if not new_err < start_err:
        return dict(values), start_err
    new = dict(values)
    new.update({s: float(v) for s, v in zip(free, sol.x)})
    return new, new_err


def polish(expr: sympy.Expr, symbols: list[sympy.Symbol], X: np.ndarray, y: np.ndarray,
           max_ops: int = 400) -> tuple[sympy.Expr, float]:
    """Refit a numeric formula once more in its expanded form.

    The composed formula carries many redundant constants (every edge's c and d, every
    node's scale); expanding multiplies them into single numbers, and a refit of those
    few numbers is well conditioned where the redundant one stalls. Every float of
    the expanded form becomes a parameter. Returns (expression, RMSE); the input is
    returned unchanged when expansion blows it up or the refit does not help.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    before = rmse(_predict(expr, symbols, X, len(y)), y)
    try:
        expanded = sympy.expand(expr)
    except (RecursionError, MemoryError):
        return expr, before
    if sympy.count_ops(expanded) > max_ops:
        return expr, before
    floats = sorted(expanded.atoms(sympy.Float), key=float)
    if not floats:
        return expr, before
    params = {f: sympy.Dummy(real=True) for f in floats}
    template = expanded.xreplace(params)
    values, after = refit_constants(template, {params[f]: float(f) for f in floats}, symbols, X, y)
    if not after < before:
        return expr, before
    return template.xreplace({s: sympy.Float(v) for s, v in values.items()}), after


def _predict(expr, symbols, X, n):
    if not is_finite_expr(expr):
        return np.full(n, np.nan)
    f = lambdify(list(symbols), expr, cse=False)
    with np.errstate(all="ignore"):
        return np.broadcast_to(np.asarray(f(*X.T), dtype=np.float64), (n,))
