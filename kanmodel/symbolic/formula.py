"""The `Formula` result and numpy evaluation of sympy expressions."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import sympy
from sympy.printing.str import StrPrinter


# Printed in formula text as function calls, so a variable must not be named like them.
RESERVED_NAMES = frozenset({"pi", "exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "asin", "acos",
                            "atan", "sinh", "cosh", "Abs", "sign"})
_NOT_FINITE = (sympy.zoo, sympy.oo, -sympy.oo, sympy.nan)


def is_finite_expr(expr: sympy.Expr) -> bool:
    """False when expr holds an infinite or undefined constant (zoo, oo, nan): such a
    candidate (e.g. from a constant rounded to 0 under a division) is rejected."""
    try:
        return not any(expr.has(c) for c in _NOT_FINITE)
    except (TypeError, AttributeError):
        return False


def lambdify(args: list[sympy.Symbol], expr, cse: bool = True) -> Callable[..., np.ndarray]:
    """sympy.lambdify with every argument replaced by a fresh Dummy first.

    The generated code then holds no user name at all: a variable called r1, exp,
    E or lambd can neither collide with another argument (a fitted parameter) nor
    shadow a numpy function in the generated module."""
    dummies = [sympy.Dummy() for _ in args]
    table = dict(zip(args, dummies))
    body = [e.xreplace(table) for e in expr] if isinstance(expr, (list, tuple)) else expr.xreplace(table)
    return sympy.lambdify(dummies, body, modules="numpy", cse=cse)


class _TextPrinter(StrPrinter):
    """str() of a formula that parses back with the variables as plain symbols:
    Euler's number is written exp(1), since a variable may be called E."""

    def _print_Exp1(self, expr) -> str:
        return "exp(1)"


def formula_text(expr: sympy.Expr) -> str:
    return _TextPrinter().doprint(expr)


def numpy_function(expr: sympy.Expr, symbols: list[sympy.Symbol]) -> Callable[..., np.ndarray]:
    """expr as a numpy function of `symbols` (positional arrays), constants broadcast.
    An expression holding zoo, oo or nan evaluates to NaN everywhere."""
    if is_finite_expr(expr):
        raw = lambdify(symbols, expr)
    else:
        def raw(*args):
            return np.nan

    def call(*args: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            out = raw(*args)
        shape = np.broadcast_shapes(*(np.shape(a) for a in args)) if args else ()
        return np.broadcast_to(np.asarray(out, dtype=np.float64), shape).copy() if shape \
            else np.asarray(out, dtype=np.float64)

    return call


def evaluate(expr: sympy.Expr, symbols: list[sympy.Symbol], X: np.ndarray) -> np.ndarray:
    """expr at the rows of X (batch, len(symbols)) -> (batch,), float64."""
    X = np.asarray(X, dtype=np.float64)
    return numpy_function(expr, symbols)(*X.T)


def rmse(pred: np.ndarray, y: np.ndarray) -> float:
    """Root mean squared error; inf when the prediction has non-finite values."""
    pred = np.asarray(pred, dtype=np.float64)
    if not np.isfinite(pred).all():
        return float("inf")
    return float(np.sqrt(np.mean((pred - np.asarray(y, dtype=np.float64)) ** 2)))


def r2_score(pred: np.ndarray, y: np.ndarray) -> float:
    """Coefficient of determination; -inf for non-finite predictions."""
    y = np.asarray(y, dtype=np.float64)
    err = rmse(pred, y)
    if not np.isfinite(err):
        return float("-inf")
    var = float(np.var(y))
    return 1.0 - err ** 2 / var if var > 0 else (1.0 if err == 0 else float("-inf"))


@dataclass
class Formula:
    """One output's formula in the user's variables.

    expr: sympy expression over `symbols` (one per variable, same order).
    r2, rmse: on held-out data, the formula's own error, whatever it is.
    spline_rmse: the trained model's error on the same held-out data, for comparison.
    edge_functions: per layer {(j, i): library function name} of the network edges
    the formula was composed from (None for a formula not made from a network).
    """

    expr: sympy.Expr
    variables: list[str]
    r2: float = float("nan")
    rmse: float = float("nan")
    output: str = "y"
    spline_rmse: float = float("nan")
    symbols: list[sympy.Symbol] = field(default=None)
    edge_functions: list[dict] | None = None

    def __post_init__(self) -> None:
        if self.symbols is None:
            by_name = {s.name: s for s in self.expr.free_symbols}
            self.symbols = [by_name.get(v, sympy.Symbol(v, real=True)) for v in self.variables]
        self._func = None

    @property
    def text(self) -> str:
        return formula_text(self.expr)

    @property
    def latex(self) -> str:
        return sympy.latex(self.expr)

    @property
    def func(self) -> Callable[[np.ndarray], np.ndarray]:
        """numpy callable: X (batch, n_variables) -> (batch,)."""
        if self._func is None:
            f = numpy_function(self.expr, self.symbols)
            n = len(self.symbols)

            def call(X: np.ndarray) -> np.ndarray:
                X = np.asarray(X, dtype=np.float64)
                if X.ndim != 2 or X.shape[1] != n:
                    raise ValueError(f"Formula.func: expected X of shape (batch, {n}), got {X.shape}")
                out = f(*X.T)
                return np.broadcast_to(out, (X.shape[0],)).copy()

            self._func = call
        return self._func

    def score(self, X: np.ndarray, y: np.ndarray) -> "Formula":
        """Set r2 and rmse from data (X (batch, n), y (batch,)); returns self."""
        pred = self.func(X)
        self.rmse = rmse(pred, y)
        self.r2 = r2_score(pred, y)
        return self

    def to_dict(self) -> dict:
        return {"output": self.output, "variables": list(self.variables), "text": self.text,
                "latex": self.latex, "r2": self.r2, "rmse": self.rmse, "spline_rmse": self.spline_rmse}

    def __repr__(self) -> str:
        return f"Formula({self.output} = {self.text}, r2={self.r2:.6g}, rmse={self.rmse:.3g})"
