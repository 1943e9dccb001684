"""The space a model is trained in, relative to the user's raw variables.

"raw": the model sees X and predicts y. "log": the model sees log(X) and predicts
log(y) (only for strictly positive data); products, quotients and powers of the
variables become sums there, which a one-layer KAN represents exactly. Formulas are
always written in the raw variables: the composed expression gets log(variable) as
its inputs and exp(...) around its outputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy

SPACES = ("raw", "log")


@dataclass(frozen=True)
class Space:
    name: str = "raw"

    def __post_init__(self) -> None:
        if self.name not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.name!r}")

    @staticmethod
    def allows(name: str, X: np.ndarray, y: np.ndarray | None) -> bool:
        if name == "raw":
            return True
        return bool((np.asarray(X) > 0).all() and (y is None or (np.asarray(y) > 0).all()))

    def inputs(self, X: np.ndarray) -> np.ndarray:
        return np.log(X) if self.name == "log" else X

    def targets(self, y: np.ndarray) -> np.ndarray:
        return np.log(y) if self.name == "log" else y

    def input_exprs(self, symbols: list[sympy.Symbol]) -> list[sympy.Expr]:
        return [sympy.log(s) for s in symbols] if self.name == "log" else list(symbols)

    def output_expr(self, expr: sympy.Expr) -> sympy.Expr:
        return sympy.exp(expr) if self.name == "log" else expr
