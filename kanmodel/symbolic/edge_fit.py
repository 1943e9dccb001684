"""Fit one edge's learned curve with y ~ c*f(a*x + b) + d for each library function f.

The search is a variable projection: for fixed (a, b) the best c, d are a linear least
squares with a closed form, so only (a, b) are searched, first on a coarse vectorised
grid (all candidates at once, one numpy array) and then refined locally with
scipy's least_squares from the best few grid points. Milliseconds per function,
against seconds for a nested grid-zoom search.

x is mapped to u = (x - mid) / half_range in [-1, 1] for the search so that one
grid fits every edge, and the result is mapped back to x.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy
from scipy.optimize import least_squares

from .library import LIBRARY, LibraryFunction, resolve_library

# Candidates whose unexplained variance (1 - R^2) is within TIE_FACTOR of the best one
# (or within TIE_ABS of it) count as equally good; among those the simpler one wins.
# Outside the tie, R^2 decides alone: a simple function never beats a clearly better fit.
TIE_FACTOR = 3.0
TIE_ABS = 1e-7
N_REFINE_STARTS = 2
# Only the functions whose grid search came out best are refined locally; the rest
# keep their grid result (they are far behind and the refinement costs most of the time).
N_REFINED_FUNCTIONS = 6
# A fit whose c*f(...) reaches more than this many times the edge's own size only
# imitates the edge by cancellation against d (e.g. a huge, almost linear piece of
# exp): reject it.
MAX_CANCELLATION = 1e3

_INNER_PARAMETERS = {"none": 0, "shift": 1, "scale": 1, "periodic": 2, "full": 2}
_A_SCALE = np.geomspace(1e-2, 30.0, 60)
_A_FULL = np.geomspace(0.05, 30.0, 50)
_CENTRES = np.linspace(-3.0, 3.0, 41)
_PHASES = np.linspace(-np.pi, np.pi, 32, endpoint=False)
_SHIFTS = np.concatenate([np.linspace(-3.0, 3.0, 61),
                          1.0 + np.geomspace(1e-3, 1e3, 40),
                          -1.0 - np.geomspace(1e-3, 1e3, 40)])


@dataclass(frozen=True)
class EdgeFit:
    """y ~ c * f(a*x + b) + d, with its R^2 on the fitted points."""

    name: str
    a: float
    b: float
    c: float
    d: float
    r2: float
    complexity: int

    @property
    def function(self) -> LibraryFunction:
        return LIBRARY[self.name]

    def numpy(self, x: np.ndarray) -> np.ndarray:
        return self.c * self.function.numpy(self.a * np.asarray(x, dtype=np.float64) + self.b) + self.d

    def sympy(self, x: sympy.Expr) -> sympy.Expr:
        """The edge as a sympy expression of x (zero edges give the constant d)."""
        if self.name == "zero":
            return sympy.Float(self.d)
        if self.name == "x":
            return sympy.Float(self.c) * x + sympy.Float(self.d)
        inner = sympy.Float(self.a) * x + sympy.Float(self.b)
        return sympy.Float(self.c) * self.function.sympy(inner) + sympy.Float(self.d)


def _project(F: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best c, d for each row of F (K, N) against y (N,): returns c, d, r2 (K,).

    r2 is -inf for degenerate fits (see MAX_CANCELLATION)."""
    yc = y - y.mean()
    syy = float(yc @ yc)
    Fm = F.mean(axis=1, keepdims=True)
    Fc = F - Fm
    # Each row scaled to max |Fc| = 1 first: a candidate whose values are tiny (a gaussian
    # far in its tail, ~1e-160) would otherwise square them into subnormals, and the lost
    # digits gave R^2 > 1 (numpy 2.4 / scipy 1.17: gaussian "beat" an exact exp edge).
    scale = np.abs(Fc).max(axis=1)
    scale = np.where(scale > 0, scale, 1.0)     # a constant row stays zero (sff = 0 below)
    with np.errstate(divide="ignore", invalid="ignore"):
        Fn = Fc / scale[:, None]
    sff = np.einsum("kn,kn->k", Fn, Fn)
    sfy = Fn @ yc
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        c = np.where(sff > 0, sfy / sff / scale, 0.0)
        r2 = np.where(sff > 0, np.minimum(sfy ** 2 / (sff * syy), 1.0), 0.0)
        # An overflowing c (inf * 0 = NaN in d) fails the reach test below: r2 = -inf.
        d = y.mean() - c * Fm[:, 0]
        reach = np.abs(c) * np.abs(F).max(axis=1)
    size = float(np.abs(y).max() + np.ptp(y))
    r2 = np.where(reach <= MAX_CANCELLATION * max(size, 1e-300), r2, -np.inf)
    return c, d, np.nan_to_num(r2, nan=-np.inf)


def _candidates(fn: LibraryFunction) -> np.ndarray:
    """Grid of (a, b) in u-space, shape (K, 2)."""
    if fn.family == "shift":
        signs = [1.0, -1.0] if fn.signed else [1.0]
        return np.array([(s, b) for s in signs for b in _SHIFTS])
    if fn.family == "scale":
        a = np.concatenate([_A_SCALE, -_A_SCALE])
        return np.stack([a, np.zeros_like(a)], axis=1)
    if fn.family == "periodic":
        A, B = np.meshgrid(_A_FULL, _PHASES, indexing="ij")
        return np.stack([A.ravel(), B.ravel()], axis=1)
    A, T = np.meshgrid(_A_FULL, _CENTRES, indexing="ij")
    return np.stack([A.ravel(), -(A * T).ravel()], axis=1)


def _grid_search(fn: LibraryFunction, u: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns the grid (K, 2) and the R^2 of each point (K,); -inf where out of domain."""
    ab = _candidates(fn)
    Z = ab[:, :1] * u[None, :] + ab[:, 1:]
    with np.errstate(all="ignore"):
        F = fn.numpy(Z)
    ok = fn.valid(Z).all(axis=1) & np.isfinite(F).all(axis=1)
    _, _, r2 = _project(np.where(ok[:, None], F, 0.0), y)
    r2 = np.where(ok, r2, -np.inf)
    return ab, r2


def _refine(fn: LibraryFunction, u: np.ndarray, y: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Local least squares over the free nonlinear parameters, c and d projected out."""
    free = {"shift": [1], "scale": [0]}.get(fn.family, [0, 1])

    def params(theta: np.ndarray) -> np.ndarray:
        ab = start.copy()
        ab[free] = theta
        return ab

    def residual(theta: np.ndarray) -> np.ndarray:
        a, b = params(theta)
        with np.errstate(all="ignore"):
            f = fn.numpy(a * u + b)
        c, d, _ = _project(f[None, :], y)
        with np.errstate(all="ignore"):  # a runaway c (inf * 0) is mapped to a large residual below
            r = y - (c[0] * f + d[0])
        return np.nan_to_num(r, nan=1e6, posinf=1e6, neginf=-1e6)

    try:
        sol = least_squares(residual, start[free], method="lm", max_nfev=200, xtol=1e-14, ftol=1e-14)
    except ValueError:  # fewer points than parameters: keep the grid point
        return start
    ab = params(sol.x)
    z = ab[0] * u + ab[1]
    return ab if fn.valid(z).all() else start


def _x_space(x: np.ndarray) -> tuple[np.ndarray, float, float]:
    mid = 0.5 * (x.max() + x.min())
    half = 0.5 * (x.max() - x.min())
    return (x - mid) / half, mid, half


def _finish(fn: LibraryFunction, u: np.ndarray, y: np.ndarray, starts: list[np.ndarray],
            mid: float, half: float, refine: bool) -> EdgeFit:
    """Refine (optionally) from the start points; map the best back to x."""
    best = None
    for start in starts:
        cand = _refine(fn, u, y, start.copy()) if refine else start
        with np.errstate(all="ignore"):
            f = fn.numpy(cand[0] * u + cand[1])
        c, d, rr = _project(f[None, :], y)
        if best is None or rr[0] > best[0]:
            best = (rr[0], cand, c[0], d[0])
    r2_best, (a_u, b_u), c, d = best
    # back to x: a_u * u + b_u = (a_u / half) * x + (b_u - a_u * mid / half)
    return EdgeFit(fn.name, float(a_u / half), float(b_u - a_u * mid / half), float(c), float(d),
                   float(r2_best), fn.complexity)


def _closed_form(fn: LibraryFunction, x: np.ndarray, y: np.ndarray) -> EdgeFit:
    if fn.name == "zero":
        return EdgeFit("zero", 0.0, 0.0, 0.0, float(y.mean()), 0.0, fn.complexity)
    c, d, r2 = _project(x[None, :], y)
    return EdgeFit("x", 1.0, 0.0, float(c[0]), float(d[0]), float(r2[0]), fn.complexity)


def _starts(ab: np.ndarray, r2: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(-r2)[:N_REFINE_STARTS]
    return [ab[k] for k in order if np.isfinite(r2[k])]


def fit_function(x: np.ndarray, y: np.ndarray, fn: LibraryFunction | str) -> EdgeFit:
    """Best c*f(a*x+b)+d for one function f (grid search, then local refinement).
    x, y: (N,) samples of the edge."""
    fn = LIBRARY[fn] if isinstance(fn, str) else fn
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if fn.family == "none":
        return _closed_form(fn, x, y)
    u, mid, half = _x_space(x)
    starts = _starts(*_grid_search(fn, u, y))
    if not starts:
        return EdgeFit(fn.name, 1.0, 0.0, 0.0, float(y.mean()), -np.inf, fn.complexity)
    return _finish(fn, u, y, starts, mid, half, refine=True)


def rank(fits: list[EdgeFit]) -> list[EdgeFit]:
    """Best first: R^2 decides, complexity breaks ties between near-equal fits."""
    if not fits:
        return []
    best_err = min(1.0 - f.r2 for f in fits)
    tie = max(TIE_FACTOR * best_err, best_err + TIE_ABS)
    # within the tie: simpler function first, then fewer fitted inner parameters (a
    # parabola beats an equally good flat piece of cos), then R^2
    tied = sorted((f for f in fits if 1.0 - f.r2 <= tie),
                  key=lambda f: (f.complexity, _INNER_PARAMETERS[f.function.family], -f.r2))
    rest = sorted((f for f in fits if 1.0 - f.r2 > tie), key=lambda f: -f.r2)
    return tied + rest


def is_constant(x: np.ndarray, y: np.ndarray) -> bool:
    """True when the edge carries no signal: its input or its output does not vary."""
    scale = 1.0 + float(np.abs(y).max(initial=0.0))
    return float(np.ptp(x)) <= 1e-12 * (1.0 + float(np.abs(x).max(initial=0.0))) \
        or float(np.ptp(y)) <= 1e-12 * scale


def fit_edge(x: np.ndarray, y: np.ndarray, library: list[str] | None = None) -> list[EdgeFit]:
    """All candidates for one edge, ranked best first (see `rank`).

    x, y: (N,) samples of the edge's input and its learned output. A constant edge
    (constant input or output) has one exact answer, the constant itself.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"fit_edge: x and y must be non-empty and of equal length, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("fit_edge: x and y must be finite")
    if is_constant(x, y):
        return [EdgeFit("zero", 0.0, 0.0, 0.0, float(y.mean()), 1.0, 0)]
    u, mid, half = _x_space(x)
    fits, searched = [], []
    for fn in resolve_library(library):
        if fn.family == "none":
            fits.append(_closed_form(fn, x, y))
            continue
        starts = _starts(*_grid_search(fn, u, y))
        if starts:
            searched.append((fn, starts))
        else:
            fits.append(EdgeFit(fn.name, 1.0, 0.0, 0.0, float(y.mean()), -np.inf, fn.complexity))
    coarse = [_finish(fn, u, y, starts[:1], mid, half, refine=False) for fn, starts in searched]
    keep = set(np.argsort([-f.r2 for f in coarse])[:N_REFINED_FUNCTIONS].tolist())
    for index, (fn, starts) in enumerate(searched):
        fits.append(_finish(fn, u, y, starts, mid, half, refine=True) if index in keep else coarse[index])
    return rank(fits)
