"""discover(): data in, formulas out. The one default recipe.

The recipe (every option below has this default; nothing is tuned per data set):
1. Hold out `val_fraction` of the rows (seeded, a `Split`). Everything is chosen on
   them and every reported metric is measured on them.
1'. Regression: a direct search on the data (`kanmodel.search`, at most 40% of the
   budget and 60 s): target transforms, pruned polynomials, sparse sums of
   dictionary terms, ratios of polynomials; the smallest exact formula on the Pareto
   front of size against held-out error. When it is exact, one network (the first
   shape below) is still trained, to be served beside the formula, and nothing else.
2. Try network shapes from simple to less simple (`widths`, default
   [n,1] -> [n,1,1] -> [n,2,1] -> [n,2,1,1]), each in the raw space and,
   when all inputs and outputs are strictly positive, first in log space (log y as
   a function of log x: products and powers become sums). For each:
   a. train: Adam on the first grid of the schedule (LBFGS from a random start
      stalls in poor minima on some shapes, e.g. [2,1,1]), prune (shapes with hidden
      layers), then LBFGS through the remaining grids;
   a'. after the first pass over all shapes, a shape with hidden layers whose
      training got stuck is trained again, one `retry_seeds` seed per pass. Stuck
      means: held-out relative RMSE above 1e-3 and no better than (0.9x) a smaller
      shape tried before it in the same space (the default shapes are nested, each
      can represent the ones before it, so a larger one doing worse did not converge);
   b. fit every edge with the function library, compose, refit all constants of
      the formula in float64 on the training rows, tidy (see `auto_symbolic`).
   c. after the first three shapes (single-output regression with several inputs):
      a separability step. The most accurate model so far is the oracle for
      AI-Feynman-style tests: is f a sum or a product (up to an additive constant)
      of a function of one variable and a function of the rest? Split recursively
      down to 1-D slices of the model, fit each slice with the library, refit all
      constants of the resulting formula on the training rows (`symbolic.separable`).
   d. after a log-space network with hidden layers that fits to REDUCE_BELOW: dimension
      reduction (`search.reduction`): when the network's gradients say y depends on
      one monomial of the inputs only, the 1-D function is fitted with the library.
3. Stop at the first attempt whose formula is exact on the held-out rows (RMSE /
   std(y) <= `exact_tolerance`), or when the time budget is spent: every loop
   (training steps, edge fits, searches, refits) checks it, and the best formula
   found so far is returned. An attempt is only started while one as long as the
   longest so far still fits. Among exact formulas the smallest is kept, otherwise
   the one with the lowest held-out error.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from kanmodel.model import KAN
from kanmodel.pruning import DEFAULT_THRESHOLD, prune
from kanmodel.symbolic import deadline as time_limit
from kanmodel.symbolic.auto import auto_symbolic, make_symbols
from kanmodel.symbolic.formula import Formula, r2_score, rmse
from kanmodel.symbolic.rounding import tidy
from kanmodel.search import choose, search
from kanmodel.search.reduction import monomial_exponents, one_dimensional
from kanmodel.search.terms import expression_size
from kanmodel.symbolic.separable import separable_formula
from kanmodel.symbolic.spaces import Space
from kanmodel.training import TrainingDiverged, fit

DEFAULTS = {
    "widths": None,                 # None: the ladder of `default_widths`
    "spaces": ("log", "raw"),       # log only where the data are strictly positive
    "seed": 0,                      # the held-out split and the first network seed
    "retry_seeds": (1, 2, 3, 4),    # seeds tried when a network with hidden layers did not converge
    "grid_schedule": (3, 5, 10, 20),
    "warmup_steps": 300,            # Adam steps on the first grid
    "steps_per_grid": 150,          # then this many optimizer steps on every later grid
    "optimizer": "lbfgs",
    "lamb": 0.0,                    # sparsity penalty in the warm-up (hidden layers only)
    "prune_threshold": DEFAULT_THRESHOLD,
    "library": None,                # the whole function library
    "val_fraction": 0.2,
    "exact_tolerance": 1e-7,
    "time_budget": 165.0,
    "max_train_rows": 5000,
    "float64": True,                # train in double precision (LBFGS stalls less)
    "grid_eps": 0.02,               # knots mostly at the data's quantiles (KAN's default is uniform)
}


def default_widths(n_in: int, n_out: int) -> list[list[int]]:
    return [[n_in, n_out], [n_in, 1, n_out], [n_in, 2, n_out], [n_in, 2, 1, n_out]]


# In the plan, the separability step comes after this many shapes (it needs a good model).
SEPARABLE_AFTER = 3
NETWORK, SEPARABLE, SEARCH, REDUCTION = "network", "separable", "search", "reduction"
# The direct search (`kanmodel.search`) may take this share of the budget, at most
# SEARCH_SECONDS: an exact formula there is usually found in 2-15 s.
SEARCH_SHARE, SEARCH_SECONDS = 0.4, 60.0
# A network whose held-out relative RMSE is above this did not converge (or cannot fit
# the data); the same shape is then tried with the next seed of `retry_seeds`.
CONVERGED = 1e-3
# What a numeric search step may raise on unlucky data; the discovery goes on without it.
NUMERIC_FAILURES = (np.linalg.LinAlgError, ValueError, ArithmeticError, RecursionError, TypeError)
# Dimension reduction uses a log-space network as its oracle when it fits this well
# (held-out relative RMSE), and again only with a network twice as accurate (each
# try costs 10-40 s).
REDUCE_BELOW = 5e-3
# Why a discovery ended (Discovery.stopped).
EXACT, BUDGET, CANCELLED, FINISHED = "exact", "budget", "cancelled", "finished"


@dataclass
class Split:
    """The seeded split of the rows: X_train (n_train, n_in), y_train (n_train, n_out),
    X_val, y_val the held-out rows everything is chosen and reported on."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray

    @classmethod
    def of(cls, X: np.ndarray, y: np.ndarray, val_fraction: float, seed: int, max_train_rows: int) -> "Split":
        order = np.random.default_rng(seed).permutation(len(X))
        n_val = max(1, int(round(len(X) * val_fraction)))
        val_rows, train_rows = order[:n_val], order[n_val:][:max_train_rows]
        return cls(X[train_rows], y[train_rows], X[val_rows], y[val_rows])


@dataclass
class Attempt:
    """One network trained (kind "network"), one formula search on a network (kind
    "separable" or "reduction", with the network it used as the oracle) or the direct
    search on the data (kind "search": no network of its own)."""

    kind: str
    width: list[int]                 # after pruning
    trained_width: list[int]
    space: str
    seed: int
    model: KAN | None
    history: list[dict]
    formulas: list[Formula]
    seconds: float
    spline_error: float | None       # worst held-out relative RMSE of the model (regression)
    score: float = float("inf")      # held-out formula error (see `_score`)

    @property
    def size(self) -> int:
        return sum(expression_size(f.expr) for f in self.formulas)

    def summary(self) -> dict:
        return {"kind": self.kind, "width": self.width, "trained_width": self.trained_width,
                "space": self.space, "seed": self.seed, "score": float(self.score),
                "seconds": round(self.seconds, 2), "formulas": [f.text for f in self.formulas]}


@dataclass
class Discovery:
    """The result of `discover`: the kept model, one formula per output, metrics
    (held-out, for the model and the formulas), the model's training history and a
    summary of every attempt.

    The model maps input_transform(X) to target_transform(y): with space "log" both
    are "log" (the model sees log X and predicts log y, so a raw prediction is
    exp(model(log X))); with space "raw" both are None. The formulas are always in the
    raw variables. stopped: "exact" (an exact formula ended the search), "budget"
    (time_budget spent), "cancelled" (should_stop said so) or "finished" (plan done).
    """

    model: KAN
    formulas: list[Formula]
    metrics: dict
    history: list[dict]
    space: str = "raw"
    attempts: list[dict] = field(default_factory=list)
    stopped: str = FINISHED
    seconds: float = 0.0
    time_budget: float = float("inf")

    @property
    def input_transform(self) -> str | None:
        return "log" if self.space == "log" else None

    @property
    def target_transform(self) -> str | None:
        return "log" if self.space == "log" else None


def _check_inputs(X, y, task):
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] < 10:
        raise ValueError(f"X must be (rows, features) with at least 10 rows, got shape {X.shape}")
    y = np.asarray(y, dtype=np.float64)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y has {y.shape[0]} rows but X has {X.shape[0]}")
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise ValueError("X and y must be finite (no NaN or infinity)")
    if task not in ("regression", "classification"):
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
    if task == "classification":
        y = y.reshape(-1)
        if not (y == np.round(y)).all() or y.min() < 0:
            raise ValueError("classification: y must hold integer class labels 0, 1, ...")
    else:
        y = y.reshape(len(y), -1)
    return X, y


def _stop_when_out_of_time(progress) -> bool:
    return time_limit.expired()


def _train(width, X, y, task, opts, seed: int) -> tuple[KAN, list[dict]]:
    """Adam on the first grid (robust from a random start), prune (networks with hidden
    layers), then the optimizer of the recipe (LBFGS) on the finer grids.
    X, y in the model's space. Training stops early (keeping the model as it is) when
    the time limit runs out."""
    schedule = list(opts["grid_schedule"])
    common = dict(val_fraction=0.15, seed=seed, callback=_stop_when_out_of_time)
    hidden = len(width) > 2
    model = KAN(width, grid=schedule[0], seed=seed, task=task, grid_eps=opts["grid_eps"])
    if opts["float64"]:
        model = model.double()
    target = y if task == "regression" else y.astype(np.int64)
    warm = fit(model, X, target, optimizer="adam", grid_schedule=schedule[:1],
               steps_per_grid=opts["warmup_steps"], lamb=opts["lamb"] if hidden else 0.0, **common)
    if hidden and not warm.stopped:
        model = prune(model, X, opts["prune_threshold"])
    if len(schedule) == 1 or warm.stopped:
        return model, warm.history
    rest = fit(model, X, target, optimizer=opts["optimizer"], grid_schedule=schedule[1:],
               steps_per_grid=opts["steps_per_grid"], **common)
    return model, warm.history + [dict(h, stage=h["stage"] + 1) for h in rest.history]


def _network_attempt(width, space_name: str, data: Split, task: str, opts: dict, seed: int,
                     extract: bool = True) -> Attempt:
    """Train one network; with extract, also its formulas (`auto_symbolic`)."""
    space = Space(space_name)
    started = time.monotonic()
    torch.manual_seed(seed)
    y_model = space.targets(data.y_train) if task == "regression" else data.y_train
    model, history = _train(width, space.inputs(data.X_train), y_model, task, opts, seed)
    attempt = Attempt(NETWORK, list(model.width), list(width), space_name, seed, model, history, [], 0.0,
                      _spline_error(model, space, data.X_val, data.y_val) if task == "regression" else None)
    if task == "regression":
        fit_targets, val_targets = data.y_train, data.y_val
    else:  # a formula per logit: distil the model's logits
        fit_targets, val_targets = _logits(model, data.X_train), _logits(model, data.X_val)
    if not extract:
        attempt.seconds = time.monotonic() - started
        return attempt
    try:
        attempt.formulas = auto_symbolic(model, data.X_train, fit_targets, opts["library"], opts["variables"],
                                         space=space_name, X_val=data.X_val, y_val=val_targets,
                                         time_budget=max(0.0, time_limit.remaining()),
                                         # logits have no exact formula to search for
                                         alternatives=2 if task == "regression" else 0)
    except time_limit.OutOfTime:
        pass  # the trained model is kept (it may be the only one); it has no formula
    attempt.seconds = time.monotonic() - started
    return attempt


def _spline_error(model: KAN, space: Space, X_val, y_val) -> float:
    """Worst relative held-out RMSE of the model over its outputs."""
    pred = _logits(model, space.inputs(X_val))
    if space.name == "log":
        pred = np.exp(pred)
    return max(rmse(pred[:, o], y_val[:, o]) / max(float(y_val[:, o].std()), 1e-300)
               for o in range(y_val.shape[1]))


def _separable_attempt(oracle: Attempt, data: Split, opts: dict) -> Attempt | None:
    """Split the function into sums and products of 1-D functions, with the most
    accurate model so far as the oracle (`symbolic.separable`)."""
    started = time.monotonic()
    model, space = oracle.model, Space(oracle.space)

    @torch.no_grad()
    def predict(X: np.ndarray) -> np.ndarray:
        out = _logits(model, space.inputs(X))[:, 0]
        return np.exp(out) if space.name == "log" else out

    # a split passes when it holds to well within the oracle's own error
    tolerance = float(np.clip(20 * oracle.spline_error, 1e-3, 5e-2))
    symbols = make_symbols(opts["variables"], data.X_train)
    y_train = data.y_train[:, 0]
    found = separable_formula(predict, data.X_train, y_train, symbols, tolerance, opts["library"])
    if found is None:
        return None
    expr = tidy(found[0], symbols, data.X_train, y_train)
    formula = Formula(expr, [s.name for s in symbols], symbols=symbols, output="y")
    formula.score(data.X_val, data.y_val[:, 0])
    if oracle.formulas:
        formula.spline_rmse = oracle.formulas[0].spline_rmse
    return Attempt(SEPARABLE, oracle.width, oracle.trained_width, oracle.space, oracle.seed, model,
                   oracle.history, [formula], time.monotonic() - started, oracle.spline_error)


def _search_attempt(data: Split, opts: dict) -> Attempt | None:
    """The direct search on the data, one formula per output (`kanmodel.search`)."""
    started = time.monotonic()
    symbols = make_symbols(opts["variables"], data.X_train)
    n_out = data.y_train.shape[1]
    seconds = min(SEARCH_SHARE * opts["time_budget"], SEARCH_SECONDS) / n_out
    formulas = []
    for o in range(n_out):
        best = choose(search(data.X_train, data.y_train[:, o], symbols, data.X_val, data.y_val[:, o],
                             time_budget=seconds), opts["exact_tolerance"])
        if best is None:
            return None
        formula = Formula(best.expr, [s.name for s in symbols], symbols=symbols,
                          output=f"y{o}" if n_out > 1 else "y")
        formulas.append(formula.score(data.X_val, data.y_val[:, o]))
    return Attempt(SEARCH, [], [], "raw", opts["seed"], None, [], formulas, time.monotonic() - started, None)


def _reduction_attempt(network: Attempt, data: Split, opts: dict) -> Attempt | None:
    """y as a function of one monomial of the inputs, with a log-space network's
    gradients as the oracle (`search.reduction`)."""
    started = time.monotonic()
    symbols = make_symbols(opts["variables"], data.X_train)
    best = None
    for power, exponents in monomial_exponents(network.model, data.X_train):
        best = choose(one_dimensional(data.X_train, data.y_train[:, 0], symbols, exponents, data.X_val,
                                      data.y_val[:, 0], opts["library"], power=power), opts["exact_tolerance"])
        if best is not None:
            break
    if best is None:
        return None
    formula = Formula(best.expr, [s.name for s in symbols], symbols=symbols, output="y")
    formula.score(data.X_val, data.y_val[:, 0])
    return Attempt(REDUCTION, network.width, network.trained_width, network.space, network.seed, network.model,
                   network.history, [formula], time.monotonic() - started, network.spline_error)


@torch.no_grad()
def _logits(model: KAN, X: np.ndarray) -> np.ndarray:
    return model(torch.as_tensor(X, dtype=model.in_shift.dtype)).double().numpy()


def _score(attempt: Attempt, data: Split, task: str) -> float:
    """Held-out formula error (relative RMSE, worst output; classification: 1 - accuracy)."""
    if not attempt.formulas:
        return float("inf")
    preds = np.stack([f.func(data.X_val) for f in attempt.formulas], axis=1)
    if task == "classification":
        if not np.isfinite(preds).all():
            return float("inf")
        return float(np.mean(preds.argmax(1) != data.y_val))
    scales = np.maximum(data.y_val.std(0), 1e-300)
    return max(rmse(preds[:, o], data.y_val[:, o]) / scales[o] for o in range(data.y_val.shape[1]))


def _metrics(attempt: Attempt, data: Split, task: str) -> dict:
    model, space = attempt.model, Space(attempt.space)
    X_val, y_val = data.X_val, data.y_val
    spline = _logits(model, space.inputs(X_val))
    if task == "regression":
        if space.name == "log":
            spline = np.exp(spline)
        out = {"spline_rmse": [rmse(spline[:, o], y_val[:, o]) for o in range(y_val.shape[1])],
               "spline_r2": [r2_score(spline[:, o], y_val[:, o]) for o in range(y_val.shape[1])],
               "formula_rmse": [f.rmse for f in attempt.formulas],
               "formula_r2": [f.r2 for f in attempt.formulas]}
    else:
        preds = np.stack([f.func(X_val) for f in attempt.formulas], axis=1)
        out = {"spline_accuracy": float(np.mean(spline.argmax(1) == y_val)),
               "formula_accuracy": float(np.mean(np.nan_to_num(preds, nan=-np.inf).argmax(1) == y_val))}
    out.update({"space": space.name, "width": attempt.width, "n_validation_rows": len(X_val)})
    return out


class _AttemptLog:
    """The attempts of one discover() call: runs them within the time limit, keeps the
    best formula and reports progress."""

    def __init__(self, data: Split, task: str, opts: dict, progress: Callable[[dict], object] | None,
                 started: float):
        self.data, self.task, self.opts = data, task, opts
        self.progress, self.started = progress, started
        self.best: Attempt | None = None
        self.summaries: list[dict] = []
        self.trained: list[Attempt] = []
        self.reduced_with = float("inf")  # spline error of the last network reduced with
        self.longest = 0.0

    def exact(self) -> bool:
        return self.task == "regression" and self.best is not None \
            and self.best.score <= self.opts["exact_tolerance"]

    def done(self) -> bool:
        if self.exact() or time_limit.expired():
            return True
        # an attempt is only started when one as long as the longest so far still fits
        return bool(self.trained) and time_limit.remaining() < self.longest

    def _error(self, width, space_name) -> float:
        errors = [a.spline_error for a in self.trained if a.trained_width == width and a.space == space_name]
        return min(errors) if errors else float("inf")

    def stuck(self, width, space_name, smaller) -> bool:
        """Did training of this shape get stuck? Yes when it fits the held-out rows no
        better than a smaller shape tried before it (the default shapes are nested: each
        can represent the ones before it), and not to CONVERGED either."""
        if self.task != "regression":
            return False
        error = self._error(width, space_name)
        if error <= CONVERGED:
            return False
        return any(s == space_name and error >= 0.9 * self._error(w, s) for w, s in smaller)

    def _report(self, event: str, **fields) -> None:
        if self.progress is None:
            return
        best = self.best
        self.progress({"event": event, "attempt": len(self.summaries) + (event == "attempt"), **fields,
                       "best_error": float(best.score) if best is not None else None,
                       "best_formulas": [f.text for f in best.formulas] if best is not None else [],
                       "elapsed": time.monotonic() - self.started})

    def run(self, width, space_name: str, seed: int) -> None:
        # the first network is trained whatever the time: the result needs a model
        if self.done() and self.trained:
            return
        self._report("attempt", kind=NETWORK if space_name != SEPARABLE else SEPARABLE,
                     width=width, space=space_name, seed=seed)
        if space_name == SEPARABLE:
            if not self.trained:
                return
            oracle = min(self.trained, key=lambda a: a.spline_error)
            try:
                attempt = _separable_attempt(oracle, self.data, self.opts)
            except time_limit.OutOfTime:
                attempt = None
            if attempt is None:
                self.summaries.append({"kind": SEPARABLE, "space": oracle.space, "width": oracle.width,
                                       "result": "no split within tolerance or out of time"})
                self._report("result", kind=SEPARABLE, score=None)
                return
        else:
            try:
                # once an exact formula is known, a network is only trained to be served
                attempt = _network_attempt(width, space_name, self.data, self.task, self.opts, seed,
                                           extract=not self.exact())
            except TrainingDiverged as error:
                self.summaries.append({"kind": NETWORK, "width": width, "space": space_name, "seed": seed,
                                       "error": str(error)})
                self._report("result", kind=NETWORK, score=None)
                return
            self.trained.append(attempt)
            self._reduce(attempt)
        self.longest = max(self.longest, attempt.seconds)
        attempt.score = _score(attempt, self.data, self.task)
        self.summaries.append(attempt.summary())
        if self._better(attempt):
            self.best = attempt
        self._report("result", kind=attempt.kind, width=attempt.width, space=attempt.space,
                     score=float(attempt.score))

    def _better(self, attempt: Attempt) -> bool:
        """Lower held-out error wins; among exact formulas, the smaller one."""
        if self.best is None:
            return True
        tolerance = self.opts["exact_tolerance"] if self.task == "regression" else -1.0
        if attempt.score <= tolerance and self.best.score <= tolerance:
            return attempt.size < self.best.size
        return attempt.score < self.best.score

    def run_search(self) -> None:
        self._report("attempt", kind=SEARCH, width=None, space="raw", seed=None)
        try:
            attempt = _search_attempt(self.data, self.opts)
        except time_limit.OutOfTime:
            attempt = None
        except NUMERIC_FAILURES as error:  # the networks still run: a search failure costs only time
            self.summaries.append({"kind": SEARCH, "error": f"{type(error).__name__}: {error}"})
            return
        if attempt is None:
            self.summaries.append({"kind": SEARCH, "result": "no formula"})
            self._report("result", kind=SEARCH, score=None)
            return
        attempt.score = _score(attempt, self.data, self.task)
        self.summaries.append(attempt.summary())
        if self._better(attempt):
            self.best = attempt
        self._report("result", kind=SEARCH, width=None, space="raw", score=float(attempt.score))

    def _reduce(self, network: Attempt) -> None:
        """After a log-space network with hidden layers that fits well: dimension reduction."""
        if (self.task != "regression" or self.data.y_train.shape[1] != 1 or network.space != "log"
                or len(network.trained_width) < 3 or self.exact()
                or network.spline_error > min(REDUCE_BELOW, 0.5 * self.reduced_with)):
            return
        self.reduced_with = network.spline_error
        try:
            attempt = _reduction_attempt(network, self.data, self.opts)
        except (time_limit.OutOfTime, *NUMERIC_FAILURES):
            attempt = None
        if attempt is None:
            return
        attempt.score = _score(attempt, self.data, self.task)
        self.summaries.append(attempt.summary())
        if self._better(attempt):
            self.best = attempt

    def stop_reason(self) -> str:
        if self.exact():
            return EXACT
        if time_limit.cancelled():
            return CANCELLED
        return BUDGET if time_limit.expired() or self.done() else FINISHED


def discover(X, y, variables: list[str] | None = None, task: str = "regression", *,
             progress: Callable[[dict], object] | None = None,
             should_stop: Callable[[], bool] | None = None, **options) -> Discovery:
    """Train, prune, extract and refit formulas with the default recipe (module docstring).

    X: (rows, features); y: (rows,) or (rows, outputs) for regression, class labels
    for classification. variables: names of the features (default x0, x1, ...).
    progress(dict): called when an attempt starts ({"event": "attempt", "attempt": k,
    "kind", "width", "space", "seed", ...}) and ends ({"event": "result", "score", ...});
    both carry "best_error" (held-out relative RMSE of the best formula so far, None
    before one exists), "best_formulas" (their text) and "elapsed" seconds.
    should_stop(): polled about every 0.5 s; True ends the discovery like a spent
    budget (the best formula so far is returned, `stopped` = "cancelled").
    options: any key of DEFAULTS. Raises ValueError on bad input or unknown options.
    """
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"discover: unknown option(s) {unknown}; known: {sorted(DEFAULTS)}")
    opts = {**DEFAULTS, **options, "variables": variables}
    X, y = _check_inputs(X, y, task)
    make_symbols(variables, X)  # bad names fail now, not after training
    budget = float(opts["time_budget"])
    if not budget > 0:
        raise ValueError(f"time_budget must be a positive number of seconds, got {opts['time_budget']!r}")
    started = time.monotonic()
    data = Split.of(X, y, opts["val_fraction"], opts["seed"], opts["max_train_rows"])
    n_out = y.shape[1] if task == "regression" else int(y.max()) + 1

    widths = opts["widths"] or default_widths(X.shape[1], n_out)
    spaces = [s for s in opts["spaces"] if task == "regression" or s == "raw"]
    plan = [(list(w), s) for w in widths for s in spaces
            if Space.allows(s, X, y if task == "regression" else None)]
    if not plan:
        raise ValueError(f"discover: no (width, space) to try with spaces={opts['spaces']}")
    if task == "regression" and n_out == 1 and X.shape[1] > 1 and opts["widths"] is None:
        position = sum(1 for w, _ in plan if widths.index(w) < SEPARABLE_AFTER)
        plan.insert(position, (None, SEPARABLE))

    log = _AttemptLog(data, task, opts, progress, started)
    with time_limit.within(started + budget, should_stop):
        if task == "regression":
            log.run_search()
        # first pass: every shape once; then, one retry seed at a time, again every shape
        # with hidden layers that did not converge (one-layer KANs are sums of splines: a
        # poor fit there is the shape, not the seed)
        for width, space_name in plan:
            log.run(width, space_name, opts["seed"])
        networks = [(w, s) for w, s in plan if s != SEPARABLE]
        for seed in opts["retry_seeds"]:
            for index, (width, space_name) in enumerate(networks):
                if len(width) > 2 and log.stuck(width, space_name, networks[:index]):
                    log.run(width, space_name, seed)
        stopped = log.stop_reason()
    best, summaries = log.best, log.summaries
    if best is None or not log.trained:
        raise TrainingDiverged("discover: every attempt diverged: " +
                               "; ".join(s.get("error", "") for s in summaries))
    if best.model is None:  # the search's formula, served beside the most accurate network
        network = min(log.trained, key=lambda a: a.spline_error if a.spline_error is not None else np.inf)
        best.model, best.history, best.space = network.model, network.history, network.space
        best.width, best.trained_width = network.width, network.trained_width
        for formula, spline_rmse in zip(best.formulas, _metrics(network, data, task)["spline_rmse"]):
            formula.spline_rmse = spline_rmse
    if not best.formulas:  # out of time before any formula: the model's own edges, unrefined
        regression = task == "regression"
        best.formulas = auto_symbolic(
            best.model, data.X_train, data.y_train if regression else _logits(best.model, data.X_train),
            opts["library"], variables, space=best.space, X_val=data.X_val,
            y_val=data.y_val if regression else _logits(best.model, data.X_val), alternatives=0, time_budget=0.0)
    seconds = time.monotonic() - started
    metrics = _metrics(best, data, task)
    metrics.update({"method": best.kind, "seconds": seconds, "attempts": len(summaries),
                    "stopped": stopped, "time_budget": budget})
    return Discovery(best.model, best.formulas, metrics, best.history, best.space, summaries,
                     stopped, seconds, budget)
