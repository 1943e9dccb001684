"""Dimension reduction: is y a function of one monomial u = prod x_i^e_i alone?

Then log y, as a function of log x, changes only along the direction e: its
gradient is a multiple of e at every point. A network trained in log space is a
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
RATIO_SPREAD = 0.02
# and lie this close to a multiple of 1/2 or 1/3
SNAP = 0.03
N_GRADIENT_ROWS = 300
EXACT_FIT = 1e-10


def monomial_exponents(model, X: np.ndarray) -> np.ndarray | None:
    """Exponents e (n,) with y a function of prod x^e, from a network `model` that maps
    log X to log y; None when its gradients do not point one way everywhere."""
    rows = np.log(X[:N_GRADIENT_ROWS])
    x = torch.tensor(rows, dtype=model.in_shift.dtype, requires_grad=True)
    out = model(x)[:, 0].sum()
    (grad,) = torch.autograd.grad(out, x)
    g = grad.detach().double().numpy()
    lead = int(np.argmax(np.mean(np.abs(g), axis=0)))
    if np.min(np.abs(g[:, lead])) < 1e-6 * np.max(np.abs(g[:, lead])):
        return None
    ratios = g / g[:, lead:lead + 1]
    centre = np.median(ratios, axis=0)
    if np.any(np.std(ratios, axis=0) > RATIO_SPREAD * (1 + np.abs(centre))):
        return None
    exponents = np.zeros(len(centre))
    for i, r in enumerate(centre):
        for q in (1, 2, 3):
            if abs(r * q - round(r * q)) <= SNAP * q:
                exponents[i] = round(r * q) / q
                break
        else:
            return None
    return exponents if np.count_nonzero(exponents) >= 2 else None


def one_dimensional(X: np.ndarray, y: np.ndarray, symbols, exponents: np.ndarray,
                    X_val: np.ndarray, y_val: np.ndarray, library=None) -> list[Candidate]:
    """Formulas y = T^-1(c*f(a*u + b) + d) with u = prod x^exponents or its inverse
    (exp(a/u) is not exp(a*u + b)), exact ones only."""
    found = []
    for sign in (1, -1):
        found += _fits(X, y, symbols, sign * exponents, X_val, y_val, library)
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
