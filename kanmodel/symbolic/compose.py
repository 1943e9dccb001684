"""Compose per-edge symbolic functions into one sympy expression per output.

The network is described without torch (`SymbolicLayer`), so that a hand-built
network can be composed in a test and so that the composition is exactly the
forward pass: node_j = sum_i edge_ji(node_i) + bias_j, layer after layer.

`compose` returns the expressions with every fitted constant as a named parameter
symbol plus the parameter values, which is what the float64 refit needs;
`substitute` turns that into a plain numeric expression. Integer-valued constants
become sympy Integers so that a network of exact constants composes into the
exact formula (1*sin(1*x + 0) -> sin(x)).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy

from .edge_fit import EdgeFit
from .library import LIBRARY


@dataclass
class SymbolicLayer:
    """One layer: edges[(j, i)] is the function from input i to output j.

    Missing edges are pruned (exactly zero). bias: (out_features,).
    """

    in_features: int
    out_features: int
    edges: dict[tuple[int, int], EdgeFit]
    bias: np.ndarray = field(default=None)

    def __post_init__(self) -> None:
        self.bias = np.zeros(self.out_features) if self.bias is None else np.asarray(self.bias, float)
        if self.bias.shape != (self.out_features,):
            raise ValueError(f"SymbolicLayer.bias: expected shape ({self.out_features},), got {self.bias.shape}")
        for (j, i) in self.edges:
            if not (0 <= j < self.out_features and 0 <= i < self.in_features):
                raise ValueError(f"SymbolicLayer.edges: edge ({j}, {i}) outside a "
                                 f"{self.out_features}x{self.in_features} layer")


def number(v: float) -> sympy.Expr:
    """A float as a sympy number, exact when it is an integer."""
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"constant {v} is not finite")
    return sympy.Integer(int(v)) if v.is_integer() and abs(v) < 2 ** 53 else sympy.Float(v)


class _Parameters:
    """Hands out fresh parameter symbols (Dummies: no variable name can equal one)
    and remembers their values."""

    def __init__(self) -> None:
        self.values: dict[sympy.Symbol, float] = {}

    def new(self, value: float) -> sympy.Symbol:
        sym = sympy.Dummy(f"p{len(self.values)}", real=True)
        self.values[sym] = float(value)
        return sym


def _edge_expr(fit: EdgeFit, x: sympy.Expr, params: _Parameters) -> sympy.Expr:
    """c*f(a*x + b) without d: the layer collects all d's of a node into one constant."""
    if fit.name == "zero":
        return sympy.Integer(0)
    if fit.name == "x":
        return params.new(fit.c) * x
    fn = LIBRARY[fit.name]
    inner = params.new(fit.a) * x + params.new(fit.b)
    return params.new(fit.c) * fn.sympy(inner)


def compose(layers: list[SymbolicLayer], inputs: list[sympy.Expr]) -> tuple[list[sympy.Expr], dict]:
    """Compose the layers applied to `inputs` (one expression per network input).

    Returns one expression per network output, written with parameter symbols, and
    {symbol: value}. Each node gets one constant (its bias plus the d of its edges).
    """
    if not layers:
        raise ValueError("compose: needs at least one layer")
    if len(inputs) != layers[0].in_features:
        raise ValueError(f"compose: {len(inputs)} input expressions for a network with "
                         f"{layers[0].in_features} inputs")
    params = _Parameters()
    nodes = list(inputs)
    for depth, layer in enumerate(layers):
        if layer.in_features != len(nodes):
            raise ValueError(f"compose: layer {depth} expects {layer.in_features} inputs, "
                             f"the previous layer gives {len(nodes)}")
        out = []
        for j in range(layer.out_features):
            constant = float(layer.bias[j])
            terms = []
            for i in range(layer.in_features):
                fit = layer.edges.get((j, i))
                if fit is None:
                    continue
                constant += fit.d
                terms.append(_edge_expr(fit, nodes[i], params))
            out.append(sympy.Add(*terms, params.new(constant)))
        nodes = out
    return nodes, params.values


def substitute(exprs: list[sympy.Expr], values: dict) -> list[sympy.Expr]:
    """Put the parameter values into the expressions (integers exactly)."""
    table = {sym: number(v) for sym, v in values.items()}
    return [e.xreplace(table) for e in exprs]
