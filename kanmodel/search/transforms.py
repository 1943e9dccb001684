"""Transformations of the target tried by the search: T(y) is fitted, y = T^-1(fit).

A formula that is not a sum of simple terms often becomes one after a transform:
m/sqrt(1 - v^2/c^2) is 1/m^2 - v^2/(m^2 c^2) after 1/y^2, a product is a sum after
log, asin(n sin t) is a product after sin. Each transform says on which data it is
defined (`allows`); the sign of a one-signed target is carried outside (`sign`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import sympy


@dataclass(frozen=True)
class Transform:
    name: str
    forward: Callable[[np.ndarray], np.ndarray]       # T(|y|) for one-signed transforms, else T(y)
    inverse: Callable[[sympy.Expr], sympy.Expr]       # T^-1, before the sign is put back
    one_signed: bool                                  # needs y > 0 everywhere or y < 0 everywhere
    allows_values: Callable[[np.ndarray], bool] = lambda y: True

    def allows(self, y: np.ndarray) -> bool:
        if self.one_signed and not (np.all(y > 0) or np.all(y < 0)):
            return False
        return bool(self.allows_values(y))

    def sign(self, y: np.ndarray) -> int:
        return -1 if self.one_signed and np.all(y < 0) else 1

    def apply(self, y: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return self.forward(np.abs(y) if self.one_signed else y)

    def undo(self, expr: sympy.Expr, sign: int) -> sympy.Expr:
        return sign * self.inverse(expr)


def _away_from_zero(y: np.ndarray) -> bool:
    return bool(np.min(np.abs(y)) > 1e-8 * np.max(np.abs(y)))


# Order: cheapest and most common structure first (ties in formula size keep the earlier).
TRANSFORMS: tuple[Transform, ...] = (
    Transform("identity", lambda y: y, lambda e: e, False),
    Transform("log", np.log, sympy.exp, True),
    Transform("inverse", lambda y: 1 / y, lambda e: 1 / e, False, _away_from_zero),
    Transform("square", lambda y: y ** 2, sympy.sqrt, True),
    Transform("inverse_square", lambda y: y ** -2.0, lambda e: 1 / sympy.sqrt(e), True),
    Transform("sqrt", np.sqrt, lambda e: e ** 2, True),
    Transform("sin", np.sin, sympy.asin, False, lambda y: bool(np.all(np.abs(y) <= np.pi / 2))),
    Transform("cos", np.cos, sympy.acos, False, lambda y: bool(np.all((y >= 0) & (y <= np.pi)))),
    Transform("exp", np.exp, sympy.log, False, lambda y: bool(np.all(np.abs(y) < 30))),
)
