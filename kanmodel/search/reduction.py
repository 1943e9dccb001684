"""Dimension reduction: is y a function of one monomial u = prod x_i^e_i alone?

Then log y, as a function of log x, changes only along the direction e: its
gradient is a multiple of e at every point (and with a power-law factor,
y = prod x^a * g(u), the gradient is a + multiple of e: the gradients lie on a line). A network trained in log space is a
smooth oracle for that gradient (the data alone give no derivatives). The ratios
of the gradient's components, when they are the same at every point and close to
simple fractions, give e; the problem is then one-dimensional, y = g(u), and g is
fitted with the function library under each target transform (c*f(a*u + b) + d,
where a free scale like 1/(2*pi) inside exp is found), refitted in float64 on the
data, and snapped.
"""
from __future__ import annotations

import numpy as np
import sympy
import torch

from kanmodel.symbolic import deadline as time_limit
from kanmodel.symbolic.compose import substitute
from kanmodel.symbolic.edge_fit import fit_edge
from kanmodel.symbolic.formula import evaluate, rmse
from kanmodel.symbolic.library import LIBRARY
from kanmodel.symbolic.refit import refit_constants
from kanmodel.symbolic.rounding import round_constants

from .recipe import Candidate
from .terms import expression_size
from .transforms import TRANSFORMS

# the gradient ratios must agree to this (spread relative to 1 + |ratio|) over the rows
RATIO_SPREAD = 0.05
# and lie this close to a multiple of 1/2 or 1/3 (loose: a network at 1e-3 is no
# sharper; a wrong guess costs a 1-D fit, which then is not exact)
SNAP = 0.08
N_GRADIENT_ROWS = 300
EXACT_FIT = 1e-10


def _snap(values: np.ndarray) -> np.ndarray | None:
    """values rounded to multiples of 1/2 or 1/3 when all are that close, else None."""
    out = np.zeros(len(values))
    for i, r in enumerate(values):
        for q in (1, 2, 3):
            if abs(r * q - round(r * q)) <= SNAP * q:
                out[i] = round(r * q) / q
                break
        else:
            return None
    return out


def _log_gradients(model, X: np.ndarray) -> np.ndarray:
    """d log y / d log x at the first N_GRADIENT_ROWS rows, (rows, n), from the network."""
    x = torch.tensor(np.log(X[:N_GRADIENT_ROWS]), dtype=model.in_shift.dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(model(x)[:, 0].sum(), x)
    return grad.detach().double().numpy()


def monomial_exponents(model, X: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Candidate (a, e) with y = prod x^a * g(prod x^e), from a network `model` that maps
    log X to log y; empty when its gradients do not say so.

    The gradient of log y in log x is then a + g'(.) * e: the gradients lie on one
    line. Its direction is e; a is a point of the line with a zero component where e
    has one (the split between the power law and g is free: each is a candidate)."""
    g = _log_gradients(model, X)
    mean = g.mean(axis=0)
    _, s, vt = np.linalg.svd(g - mean, full_matrices=False)
    if s[0] <= 1e-6 * np.sqrt(len(g)) or (len(s) > 1 and s[1] > RATIO_SPREAD * s[0]):
        return []  # a power law alone (the search's job), or more than one direction
    direction = vt[0] / vt[0][np.argmax(np.abs(vt[0]))]
    e = _snap(direction)
    if e is None or np.count_nonzero(e) < 2:
        return []
    found = []
    for i in np.flatnonzero(e):
        a = _snap(mean - mean[i] / e[i] * e)
        if a is not None and not any(np.array_equal(a, b) for b, _ in found):
            found.append((a, e))
    return found


def one_dimensional(X: np.ndarray, y: np.ndarray, symbols, exponents: np.ndarray,
                    X_val: np.ndarray, y_val: np.ndarray, library=None,
                    power: np.ndarray | None = None) -> list[Candidate]:
    """Formulas y = prod x^power * T^-1(c*f(a*u + b) + d) with u = prod x^exponents or
    its inverse (exp(a/u) is not exp(a*u + b)), exact ones only."""
    power = np.zeros(X.shape[1]) if power is None else power
    factor = sympy.Mul(*[s ** sympy.nsimplify(p) for s, p in zip(symbols, power) if p])
    y_rest = y / np.prod(X ** power, axis=1)
    y_val_rest = y_val / np.prod(X_val ** power, axis=1)
    found = []
    for sign in (1, -1):
        for c in _fits(X, y_rest, symbols, sign * exponents, X_val, y_val_rest, library):
            expr = factor * c.expr
            error = rmse(evaluate(expr, symbols, X_val), y_val) / (float(np.std(y_val)) or 1.0)
            found.append(Candidate(expr, error, expression_size(expr), c.method))
    return found


def _fits(X, y, symbols, exponents, X_val, y_val, library) -> list[Candidate]:
    u_expr = sympy.Mul(*[s ** sympy.nsimplify(e) for s, e in zip(symbols, exponents) if e])
    u = np.prod(X ** exponents, axis=1)
    scale = float(np.std(y_val)) or 1.0
    found = []
    for transform in TRANSFORMS:
        if time_limit.expired():
            break
        if not transform.allows(y):
            continue
        t = transform.apply(y)
        if not np.all(np.isfinite(t)):
            continue
        for fit in fit_edge(u, t, library)[:2]:
            if fit.r2 < 1 - 1e-8:
                continue
            params = {s: v for s, v in zip(sympy.symbols("a b c d", cls=sympy.Dummy),
                                             (fit.a, fit.b, fit.c, fit.d))}
            a, b, c, d = params
            inner = u_expr if fit.name in ("x", "zero") else LIBRARY[fit.name].sympy(a * u_expr + b)
            template = transform.undo(c * inner + d, transform.sign(y))
            try:
                values, _ = refit_constants(template, params, symbols, X, y)
                expr = round_constants(substitute([template], values)[0], symbols, X, y)
                error = rmse(evaluate(expr, symbols, X_val), y_val) / scale
            except (ArithmeticError, ValueError, TypeError):
                continue
            if error <= EXACT_FIT * 1e3:
                found.append(Candidate(expr, error, expression_size(expr), f"g(u), u = {u_expr}, {transform.name}"))
    return found
