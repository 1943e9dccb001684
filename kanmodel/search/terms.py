"""The dictionary of candidate terms a transformed target is a sparse sum of.

A term is a monomial of the variables (small integer and half-integer powers), a
unary function (sin, cos, exp, log) of one variable or of a product or ratio of
two, squared or not, or such a function times a small monomial. Columns are
generated simplest first and capped (`max_columns`): with many variables the
deeper products are the ones left out. Columns that are not finite, constant, or
repeat an earlier column are dropped.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import sympy

HALF = sympy.Rational(1, 2)
# exponents of a variable in a monomial, by how many variables the monomial has
EXPONENTS = {
    1: (-3, -2, -1, -HALF, HALF, 1, 2, 3, 4),
    2: (-2, -1, -HALF, HALF, 1, 2),
    3: (-2, -1, 1, 2),
    4: (-1, 1),
}
# exponents of the monomial a unary function is multiplied with
FACTOR_EXPONENTS = (-1, -HALF, HALF, 1, 2)
MAX_COLUMNS = 4000
# the last level (tried only when nothing before it is exact) may add this many more
EXTRA_COLUMNS = 2000


@dataclass(frozen=True)
class Term:
    expr: sympy.Expr
    column: np.ndarray     # (rows,)


def expression_size(expr: sympy.Expr) -> int:
    """Nodes of the expression tree (variables, numbers and operations)."""
    return sum(1 for _ in sympy.preorder_traversal(expr))


def _allowed(exponent, x: np.ndarray) -> bool:
    if exponent < 0 and np.min(np.abs(x)) < 1e-9:
        return False
    return not (not float(exponent).is_integer() and np.min(x) <= 0)


def _value(x: np.ndarray, exponent) -> np.ndarray:
    e = float(exponent)
    return x ** int(e) if e.is_integer() else x ** e


class _Columns:
    """Accumulates distinct, finite, non-constant columns up to a cap."""

    def __init__(self, cap: int) -> None:
        self.terms: list[Term] = []
        self.seen: set[bytes] = set()
        self.cap = cap

    def full(self) -> bool:
        return len(self.terms) >= self.cap

    def add(self, expr: sympy.Expr, column: np.ndarray) -> None:
        if self.full() or not np.all(np.isfinite(column)):
            return
        spread = float(np.ptp(column))
        if spread <= 1e-12 * (1.0 + float(np.max(np.abs(column)))):
            return
        normalized = (column - column.mean()) / spread
        key = np.round(normalized[:64], 9).tobytes()
        if key in self.seen:
            return
        self.seen.add(key)
        self.terms.append(Term(expr, column))


def monomials(X: np.ndarray, symbols, n_vars: int) -> Iterator[tuple[sympy.Expr, np.ndarray]]:
    """The monomials of exactly n_vars distinct variables with the EXPONENTS of that count
    (a generator: the dictionary stops asking once it is full)."""
    d = X.shape[1]
    if n_vars > d:
        return
    for subset in itertools.combinations(range(d), n_vars):
        for powers in itertools.product(EXPONENTS[n_vars], repeat=n_vars):
            if not all(_allowed(e, X[:, i]) for e, i in zip(powers, subset)):
                continue
            expr = sympy.Mul(*[symbols[i] ** e for e, i in zip(powers, subset)])
            column = np.prod([_value(X[:, i], e) for e, i in zip(powers, subset)], axis=0)
            yield expr, column


def unary_atoms(X: np.ndarray, symbols, of_pairs: bool) -> list[tuple[sympy.Expr, np.ndarray]]:
    """sin, cos, exp(+-), log and the squares of sin and cos: of each variable, or
    (of_pairs) of each product and ratio of two variables."""
    d = X.shape[1]
    args = [] if of_pairs else [(symbols[i], X[:, i]) for i in range(d)]
    for i, j in (itertools.combinations(range(d), 2) if of_pairs else ()):
        args.append((symbols[i] * symbols[j], X[:, i] * X[:, j]))
        if np.min(np.abs(X[:, j])) > 1e-9:
            args.append((symbols[i] / symbols[j], X[:, i] / X[:, j]))
        if np.min(np.abs(X[:, i])) > 1e-9:
            args.append((symbols[j] / symbols[i], X[:, j] / X[:, i]))
    out = []
    with np.errstate(all="ignore"):
        for expr, x in args:
            out += [(sympy.sin(expr), np.sin(x)), (sympy.cos(expr), np.cos(x)),
                    (sympy.sin(expr) ** 2, np.sin(x) ** 2), (sympy.cos(expr) ** 2, np.cos(x) ** 2)]
            if np.max(np.abs(x)) < 50:
                out += [(sympy.exp(expr), np.exp(x)), (sympy.exp(-expr), np.exp(-x))]
            if np.min(x) > 0 and not of_pairs:  # log of a product or ratio is a sum of logs
                out.append((sympy.log(expr), np.log(x)))
    return out


def dictionary(X: np.ndarray, symbols, max_columns: int = MAX_COLUMNS) -> tuple[list[Term], list[int]]:
    """The candidate terms for data X (rows, d), simplest first, at most max_columns
    (+ EXTRA_COLUMNS in the last level),
    and the level ends: terms[:ends[0]] are functions and powers of single variables,
    terms[:ends[1]] add products of two, terms[:ends[2]] products of three and four and
    functions of pairs, terms[:ends[3]] (all) a function times any product of two."""
    X = np.asarray(X, dtype=np.float64)
    columns = _Columns(max_columns)
    singles = list(monomials(X, symbols, 1))
    pairs = list(monomials(X, symbols, 2))
    plain_unary = unary_atoms(X, symbols, of_pairs=False)
    pair_unary = unary_atoms(X, symbols, of_pairs=True)
    small = [(s, c) for s, c in singles if s.as_base_exp()[1] in FACTOR_EXPONENTS]
    unit_pairs = [(m, c) for m, c in pairs
                  if all(b.as_base_exp()[1] in (-1, 1) for b in m.as_ordered_factors())]
    levels = [[singles, plain_unary], [pairs, ((u * m, uc * mc) for u, uc in plain_unary for m, mc in small
                                               if not (u.free_symbols & m.free_symbols))], [
        monomials(X, symbols, 3),
        pair_unary,
        ((u * m, uc * mc) for u, uc in plain_unary for m, mc in unit_pairs
         if not (u.free_symbols & m.free_symbols)),
        monomials(X, symbols, 4),
        ((u * m, uc * mc) for u, uc in pair_unary for m, mc in small
         if not (u.free_symbols & m.free_symbols)),
    ], [  # a function of one variable times any product of two others (2*sqrt(a*b)*cos(c))
        ((u * m, uc * mc) for u, uc in plain_unary for m, mc in pairs
         if not (u.free_symbols & m.free_symbols) and not any(m == p for p, _ in unit_pairs)),
    ]]
    ends = []
    with np.errstate(all="ignore"):
        for index, level in enumerate(levels):
            if index == len(levels) - 1:  # the last level has room of its own
                columns.cap += EXTRA_COLUMNS
            for stage in level:
                for expr, column in stage:
                    if columns.full():
                        break
                    columns.add(expr, np.asarray(column, dtype=np.float64))
            ends.append(len(columns.terms))
    return columns.terms, ends
