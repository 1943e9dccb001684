"""From a trained KAN to one formula per output.

1. Every live edge's learned curve is sampled over the range its input takes on the
   data and fitted with every library function (`edge_fit`), ranked by R^2 with
   complexity breaking near-ties. Pruned (masked) edges are exactly zero and stay out.
2. The best candidates are composed into one expression per output, in the user's
   raw variables (standardisation and the training space undone).
3. All constants of each output's expression are refitted in float64 against the
   data. While the formula is not exact, the least certain edges try their next
   candidates, each followed by a refit, and a swap is kept when it lowers the error.
   The result is refitted once more in expanded form (`refit.polish`).
4. The result is tidied (expanded, nice constants, simplified; each step checked on
   the data) and scored on held-out data.
"""
from __future__ import annotations

import keyword
import time

import numpy as np
import sympy
import torch

from . import deadline as time_limit
from .compose import SymbolicLayer, compose, substitute
from .edge_fit import EdgeFit, fit_edge
from .formula import RESERVED_NAMES, Formula, rmse
from .refit import polish, refit_constants
from .rounding import tidy
from .spaces import Space

N_EDGE_POINTS = 201
# relative RMSE (to std(y)) below which a formula counts as exact and the search stops
EXACT = 1e-9
# Alternatives are searched only when the spline model itself is this accurate
# (relative RMSE on the fit data): a poor model has no exact formula to find.
ALTERNATIVES_WHEN_SPLINE_BELOW = 2e-3
# Seconds one output's alternative search may take at most.
MAX_SEARCH_SECONDS = 20.0
MAX_REFIT_ROWS = 2000


def make_symbols(variables: list[str] | None, X: np.ndarray) -> list[sympy.Symbol]:
    """One sympy symbol per column of X (batch, n); positive when the column is."""
    n = X.shape[1]
    names = [f"x{i}" for i in range(n)] if variables is None else list(variables)
    if len(names) != n:
        raise ValueError(f"variables: {len(names)} names for {n} input columns")
    for name in names:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"variables: {name!r} is not a valid variable name (letters, digits, _)")
        if name in RESERVED_NAMES:
            raise ValueError(f"variables: {name!r} is the name of a function or constant in formula text; "
                             f"rename it (reserved: {sorted(RESERVED_NAMES)})")
    if len(set(names)) != len(names):
        raise ValueError(f"variables: names must be distinct, got {names}")
    return [sympy.Symbol(name, positive=True) if (X[:, i] > 0).all() else sympy.Symbol(name, real=True)
            for i, name in enumerate(names)]


@torch.no_grad()
def _edge_samples(layer, low: torch.Tensor, high: torch.Tensor, n_points: int):
    """Inputs (n_points, in) spread over [low, high] per input, and phi there (n_points, out, in)."""
    steps = torch.linspace(0, 1, n_points, dtype=low.dtype).unsqueeze(1)
    grid = low + (high - low) * steps
    return grid.double().numpy(), layer.edge_activations(grid).double().numpy()


def _input_ranges(model, X_model: np.ndarray | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the (low, high) of each input on the data (or the spline domain)."""
    if X_model is None:
        return [(layer.knots[:, layer.k], layer.knots[:, layer.grid_size + layer.k]) for layer in model.layers]
    x = torch.as_tensor(np.asarray(X_model), dtype=model.in_shift.dtype)
    with torch.no_grad():
        return [(z.min(0).values, z.max(0).values) for z, _ in model.activations(x)]


def edge_curves(model, X_model: np.ndarray | None = None,
                n_points: int = N_EDGE_POINTS) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every edge's learned curve, per layer: (inputs (n_points, in), phi (n_points, out, in)).

    The inputs span the range each layer input takes on X_model (inputs as the model
    sees them, (batch, width[0])); None uses the spline domains.
    """
    return [_edge_samples(layer, low, high, n_points)
            for layer, (low, high) in zip(model.layers, _input_ranges(model, X_model))]


def edge_candidates(model, X_model: np.ndarray | None = None, library: list[str] | None = None,
                    n_points: int = N_EDGE_POINTS) -> list[dict[tuple[int, int], list[EdgeFit]]]:
    """Ranked candidates for every live edge: [{(j, i): [EdgeFit, ...]}] per layer.

    X_model: see `edge_curves`. Masked (pruned) edges have no entry.
    Raises OutOfTime when the time limit runs out (see `deadline.within`).
    """
    result = []
    for layer, (xs, acts) in zip(model.layers, edge_curves(model, X_model, n_points)):
        mask = layer.mask.detach().cpu().numpy()
        fits = {}
        for j in range(layer.out_features):
            for i in range(layer.in_features):
                if mask[j, i] != 0:
                    time_limit.check()
                    fits[(j, i)] = fit_edge(xs[:, i], acts[:, j, i], library)
        result.append(fits)
    return result


def suggest(model, layer: int, i: int, j: int, top: int = 5, X=None,
            library: list[str] | None = None) -> list[EdgeFit]:
    """The `top` best library functions for the edge from input i to output j of `layer`.

    X: raw model inputs to take the edge's input range from (default: its spline domain).
    """
    if not 0 <= layer < len(model.layers):
        raise ValueError(f"layer must be in [0, {len(model.layers) - 1}], got {layer}")
    kan_layer = model.layers[layer]
    if not (0 <= i < kan_layer.in_features and 0 <= j < kan_layer.out_features):
        raise ValueError(f"edge ({i} -> {j}) outside layer {layer} "
                         f"({kan_layer.in_features} inputs, {kan_layer.out_features} outputs)")
    low, high = _input_ranges(model, None if X is None else np.asarray(X))[layer]
    xs, acts = _edge_samples(kan_layer, low, high, N_EDGE_POINTS)
    return fit_edge(xs[:, i], acts[:, j, i], library)[:top]


def _symbolic_layers(model, choice: list[dict]) -> list[SymbolicLayer]:
    return [SymbolicLayer(layer.in_features, layer.out_features, dict(edges),
                          layer.bias.detach().double().cpu().numpy())
            for layer, edges in zip(model.layers, choice)]


def _output_exprs(model, choice, symbols, space: Space) -> tuple[list[sympy.Expr], dict]:
    """Compose in the model's space, then undo standardisation and the space."""
    in_shift = model.in_shift.double().cpu().numpy()
    in_scale = model.in_scale.double().cpu().numpy()
    out_shift = model.out_shift.double().cpu().numpy()
    out_scale = model.out_scale.double().cpu().numpy()
    inputs = [(e - float(s)) / float(k) for e, s, k in zip(space.input_exprs(symbols), in_shift, in_scale)]
    exprs, values = compose(_symbolic_layers(model, choice), inputs)
    return [space.output_expr(e * float(k) + float(s)) for e, s, k in zip(exprs, out_shift, out_scale)], values


class _Search:
    """Refit one output's formula, swapping in edge alternatives while it is not exact."""

    def __init__(self, model, candidates, symbols, space, X, y, output, deadline):
        self.model, self.candidates, self.symbols, self.space = model, candidates, symbols, space
        self.X, self.y, self.output = X, y, output
        self.deadline = min(deadline, time.monotonic() + MAX_SEARCH_SECONDS)
        self.scale = float(np.std(y)) or 1.0
        spline = _spline_predictions(model, space, X)[:, output]
        self.spline_error = rmse(spline, y) / self.scale

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline or time_limit.expired()

    def evaluate(self, choice):
        exprs, values = _output_exprs(self.model, choice, self.symbols, self.space)
        expr = exprs[self.output]
        values, err = refit_constants(expr, values, self.symbols, self.X, self.y)
        return expr, values, err

    def run(self, alternatives: int):
        choice = [{key: fits[0] for key, fits in layer.items()} for layer in self.candidates]
        best = self.evaluate(choice)
        if self.spline_error > ALTERNATIVES_WHEN_SPLINE_BELOW:
            alternatives = 0
        last = len(self.candidates) - 1
        # least certain edges first: their best candidate is the most likely to be wrong
        edges = sorted(((fits[0].r2, index, key) for index, layer in enumerate(self.candidates)
                        for key, fits in layer.items()
                        if len(fits) > 1 and not (index == last and key[0] != self.output)),
                       key=lambda t: t[0])
        for _, index, key in edges:
            if best[2] <= EXACT * self.scale or self.out_of_time():
                break
            for alt in self.candidates[index][key][1:1 + alternatives]:
                if self.out_of_time():
                    break
                trial = [dict(layer) for layer in choice]
                trial[index][key] = alt
                result = self.evaluate(trial)
                if result[2] < best[2]:
                    best, choice = result, trial
        expr, values, _ = best
        names = [{key: fit.name for key, fit in layer.items()} for layer in choice]
        return substitute([expr], values)[0], names


def auto_symbolic(model, X, y, library: list[str] | None = None, variables: list[str] | None = None,
                  *, space: str = "raw", X_val=None, y_val=None, alternatives: int = 2,
                  time_budget: float | None = None, candidates=None) -> list[Formula]:
    """One `Formula` per model output, in the user's raw variables.

    X (batch, n_in), y (batch,) or (batch, n_out): raw data the constants are refitted
    on (use training data). space: "raw" or "log", the space the model was trained in.
    X_val, y_val: held-out data for the reported r2 / rmse (default: X, y).
    alternatives: how many next-best candidates each edge may try while the formula
    is not exact. time_budget: seconds for the alternative search (None: no limit).
    candidates: precomputed `edge_candidates` (they depend only on the model).
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    y = y.reshape(len(y), -1)
    n_out = model.width[-1]
    if X.ndim != 2 or X.shape[1] != model.width[0]:
        raise ValueError(f"X must have shape (batch, {model.width[0]}), got {X.shape}")
    if y.shape != (len(X), n_out):
        raise ValueError(f"y must have {len(X)} rows and {n_out} column(s), got {y.shape}")
    space_ = Space(space)
    if not space_.allows(space, X, None):
        raise ValueError("space='log' needs strictly positive X")
    X_val = X if X_val is None else np.asarray(X_val, dtype=np.float64)
    y_val = y if y_val is None else np.asarray(y_val, dtype=np.float64).reshape(len(X_val), -1)
    symbols = make_symbols(variables, X)
    names = [s.name for s in symbols]
    if candidates is None:
        candidates = edge_candidates(model, space_.inputs(X), library)
    rows = np.random.default_rng(0).permutation(len(X))[:MAX_REFIT_ROWS]
    deadline = time.monotonic() + (time_budget if time_budget is not None else float("inf"))
    Xf = X[rows]
    spline = _spline_predictions(model, space_, X_val)
    formulas = []
    for o in range(n_out):
        yf = y[rows, o]
        expr, edge_functions = _Search(model, candidates, symbols, space_, Xf, yf, o, deadline).run(alternatives)
        expr, _ = polish(expr, symbols, Xf, yf)
        expr = tidy(expr, symbols, Xf, yf)
        formula = Formula(expr, names, symbols=symbols, output=f"y{o}" if n_out > 1 else "y",
                          edge_functions=edge_functions)
        formula.score(X_val, y_val[:, o])
        formula.spline_rmse = rmse(spline[:, o], y_val[:, o])
        formulas.append(formula)
    return formulas


@torch.no_grad()
def _spline_predictions(model, space: Space, X: np.ndarray) -> np.ndarray:
    x = torch.as_tensor(space.inputs(X), dtype=model.in_shift.dtype)
    out = model(x).double().cpu().numpy()
    return np.exp(out) if space.name == "log" else out
