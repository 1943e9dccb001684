"""The library of one-variable functions an edge can be snapped to.

Every function comes in three equivalent forms (numpy for fitting, torch for the
forward pass of a partly symbolic model, sympy for the formula) and with a domain
guard: the numpy and torch forms never raise and never return NaN or inf, whatever
their input. Out-of-domain inputs are clamped into the domain; `valid` tells the
fitter which inputs were really inside, so that a candidate whose data leave the
domain is rejected instead of silently fitted to clamped values.

`family` says which of the affine parameters of c*f(a*x + b) + d are free:
  "none"     f(x) = x or 0: c, d only (a and b are redundant).
  "shift"    homogeneous functions (powers, 1/x, sqrt, abs, log): |a| is absorbed by
             c (or by d for log), so a is a sign and only b is searched.
  "scale"    exp: b is absorbed by c, so only a is searched.
  "periodic" sin, cos: a > 0 and b in [-pi, pi).
  "full"     the rest: a > 0 and a centre t, b = -a*t.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import sympy
import torch

# Smallest magnitude a pole-type function (1/x, log) is evaluated at: keeps outputs finite.
POLE_EPS = 1e-12
# exp arguments are clipped here: e^100 is finite and far beyond any sensible edge value.
EXP_CLIP = 100.0
HALF_PI = np.pi / 2


@dataclass(frozen=True)
class LibraryFunction:
    """One candidate f for an edge y = c*f(a*x + b) + d."""

    name: str
    numpy: Callable[[np.ndarray], np.ndarray]
    torch: Callable[[torch.Tensor], torch.Tensor]
    sympy: Callable[[sympy.Expr], sympy.Expr]
    valid: Callable[[np.ndarray], np.ndarray]
    complexity: int
    family: str
    # "shift" functions whose sign of a matters (sqrt(-x) is not sqrt(x) up to c):
    signed: bool = False


def _all_valid(z: np.ndarray) -> np.ndarray:
    return np.isfinite(z)


def _away_from_zero_np(z: np.ndarray) -> np.ndarray:
    return np.where(np.abs(z) < POLE_EPS, np.where(z < 0, -POLE_EPS, POLE_EPS), z)


def _away_from_zero_t(z: torch.Tensor) -> torch.Tensor:
    eps = torch.full_like(z, POLE_EPS)
    return torch.where(z.abs() < POLE_EPS, torch.where(z < 0, -eps, eps), z)


def _nonzero(z: np.ndarray) -> np.ndarray:
    return np.isfinite(z) & (np.abs(z) > 1e-9)


def _positive(z: np.ndarray) -> np.ndarray:
    return np.isfinite(z) & (z > 1e-9)


def _non_negative(z: np.ndarray) -> np.ndarray:
    return np.isfinite(z) & (z >= 0)


def _unit_interval(z: np.ndarray) -> np.ndarray:
    return np.isfinite(z) & (np.abs(z) <= 1)


def _tan_branch(z: np.ndarray) -> np.ndarray:
    # the principal branch only, and not so close to the pole that tan explodes
    return np.isfinite(z) & (np.abs(z) < HALF_PI - 1e-3)


_TAN_LIMIT = HALF_PI - 1e-6

_FUNCTIONS = [
    LibraryFunction("zero", lambda z: np.zeros_like(z), lambda z: torch.zeros_like(z),
                    lambda z: sympy.Integer(0), _all_valid, 0, "none"),
    LibraryFunction("x", lambda z: z, lambda z: z, lambda z: z, _all_valid, 1, "none"),
    LibraryFunction("x^2", lambda z: z ** 2, lambda z: z ** 2, lambda z: z ** 2,
                    _all_valid, 2, "shift"),
    LibraryFunction("x^3", lambda z: z ** 3, lambda z: z ** 3, lambda z: z ** 3,
                    _all_valid, 3, "shift"),
    LibraryFunction("x^4", lambda z: z ** 4, lambda z: z ** 4, lambda z: z ** 4,
                    _all_valid, 3, "shift"),
    LibraryFunction("1/x", lambda z: 1 / _away_from_zero_np(z), lambda z: 1 / _away_from_zero_t(z),
                    lambda z: 1 / z, _nonzero, 2, "shift"),
    LibraryFunction("1/x^2", lambda z: 1 / _away_from_zero_np(z) ** 2,
                    lambda z: 1 / _away_from_zero_t(z) ** 2, lambda z: z ** -2, _nonzero, 3, "shift"),
    LibraryFunction("sqrt", lambda z: np.sqrt(np.clip(z, 0, None)),
                    lambda z: torch.sqrt(torch.clamp(z, min=POLE_EPS)),
                    sympy.sqrt, _non_negative, 2, "shift", signed=True),
    LibraryFunction("log", lambda z: np.log(np.clip(z, POLE_EPS, None)),
                    lambda z: torch.log(torch.clamp(z, min=POLE_EPS)),
                    sympy.log, _positive, 2, "shift", signed=True),
    LibraryFunction("abs", np.abs, torch.abs, sympy.Abs, _all_valid, 3, "shift"),
    LibraryFunction("exp", lambda z: np.exp(np.clip(z, -EXP_CLIP, EXP_CLIP)),
                    lambda z: torch.exp(torch.clamp(z, -EXP_CLIP, EXP_CLIP)),
                    sympy.exp, _all_valid, 2, "scale"),
    LibraryFunction("sin", np.sin, torch.sin, sympy.sin, _all_valid, 2, "periodic"),
    LibraryFunction("cos", np.cos, torch.cos, sympy.cos, _all_valid, 2, "periodic"),
    LibraryFunction("tan", lambda z: np.tan(np.clip(z, -_TAN_LIMIT, _TAN_LIMIT)),
                    lambda z: torch.tan(torch.clamp(z, -_TAN_LIMIT, _TAN_LIMIT)),
                    sympy.tan, _tan_branch, 3, "full"),
    LibraryFunction("tanh", np.tanh, torch.tanh, sympy.tanh, _all_valid, 3, "full"),
    LibraryFunction("arcsin", lambda z: np.arcsin(np.clip(z, -1, 1)),
                    lambda z: torch.asin(torch.clamp(z, -1, 1)),
                    sympy.asin, _unit_interval, 4, "full"),
    LibraryFunction("arctan", np.arctan, torch.atan, sympy.atan, _all_valid, 4, "full"),
    LibraryFunction("gaussian", lambda z: np.exp(-np.clip(z, -30, 30) ** 2),
                    lambda z: torch.exp(-torch.clamp(z, -30, 30) ** 2),
                    lambda z: sympy.exp(-z ** 2), _all_valid, 3, "full"),
]

LIBRARY: dict[str, LibraryFunction] = {f.name: f for f in _FUNCTIONS}
DEFAULT_LIBRARY: tuple[str, ...] = tuple(LIBRARY)


def resolve_library(library: list[str] | tuple[str, ...] | None) -> list[LibraryFunction]:
    """Names -> functions; None means the whole library. Unknown names raise ValueError."""
    names = DEFAULT_LIBRARY if library is None else tuple(library)
    unknown = [n for n in names if n not in LIBRARY]
    if unknown:
        raise ValueError(f"library: unknown function(s) {unknown}; known: {sorted(LIBRARY)}")
    if not names:
        raise ValueError("library: needs at least one function")
    return [LIBRARY[n] for n in names]
