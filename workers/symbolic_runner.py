"""Formula search in a child process with a hard time limit.

Symbolic simplification can take minutes on an unlucky network, and nothing inside
it can be interrupted. Running it in a spawned child lets the job keep its promise:
past its deadline (or on cancel) the child is killed and the network is registered
without a formula, with a note saying why.

Two searches run here. "network": `kanmodel.auto_symbolic` on the job's trained
network. "discover": `kanmodel.discover` on the job's data, which trains its own
networks (shapes and spaces) and returns the best formula it found within its
budget; its progress events travel to the parent through the same pipe as the result.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from workers.finite import rounded_or_none

log = logging.getLogger(__name__)

# A formula whose held-out RMSE is at most this fraction of the target's spread is exact.
EXACT_RELATIVE_RMSE = 1e-7
# discover returns its best formula when its budget runs out, but an attempt in progress
# finishes its current step first and the child needs seconds to import torch: the hard
# limit is the budget plus this grace.
DISCOVER_GRACE = (15.0, 0.25)  # seconds, fraction of the budget


class SymbolicStopped(Exception):
    """The time limit ran out, the job was cancelled, or the child died; the message says which."""


@dataclass(frozen=True)
class ExtractedFormula:
    expr: object  # sympy expression over the input names
    text: str
    latex: str
    r2: float
    rmse: float
    exact: bool | None = None  # held-out relative RMSE <= EXACT_RELATIVE_RMSE; None: not measured


@dataclass(frozen=True)
class SymbolicRequest:
    """network mode: the model and the job's own split. discover mode: all rows in
    X_fit/y_fit (discover holds out its own rows, seeded by ``seed``); X_val/y_val empty."""

    model_blob: bytes | None  # kanmodel.to_bytes; None in discover mode
    X_fit: np.ndarray  # (n_fit, n_in)
    y_fit: np.ndarray  # (n_fit, n_out)
    X_val: np.ndarray  # (n_val, n_in) held-out rows for r2/rmse (network mode)
    y_val: np.ndarray  # (n_val, n_out)
    library: list[str] | None
    variables: list[str]
    time_budget: float
    mode: str = "network"
    seed: int = 0
    val_fraction: float = 0.2  # discover: the share of rows it holds out (0: its own default)
    first_width: list[int] | None = None  # discover: the shape to try first

    @property
    def deadline_seconds(self) -> float:
        """When the parent kills the child."""
        if self.mode == "network":
            return self.time_budget
        grace, fraction = DISCOVER_GRACE
        return self.time_budget * (1 + fraction) + grace


@dataclass(frozen=True)
class SearchResult:
    formulas: list[ExtractedFormula]
    summary: dict = field(default_factory=dict)  # discover: space, width, method, attempts, stopped, seconds


def exact(r2: float) -> bool | None:
    """From the held-out R^2: relative RMSE (RMSE / std) is sqrt(1 - R^2)."""
    if r2 is None or not math.isfinite(r2):
        return None
    return math.sqrt(max(0.0, 1.0 - r2)) <= EXACT_RELATIVE_RMSE


def _extracted(formulas) -> list[ExtractedFormula]:
    return [ExtractedFormula(f.expr, f.text, f.latex, float(f.r2), float(f.rmse), exact(float(f.r2)))
            for f in formulas]


def _network_search(request: SymbolicRequest) -> SearchResult:
    import kanmodel

    model = kanmodel.from_bytes(request.model_blob)
    formulas = kanmodel.auto_symbolic(
        model, request.X_fit, request.y_fit, library=request.library, variables=request.variables,
        X_val=request.X_val, y_val=request.y_val, time_budget=request.time_budget / 2)
    return SearchResult(_extracted(formulas))


def discover_options(request: SymbolicRequest) -> dict:
    """The keyword arguments of the job's kanmodel.discover call (besides data and callbacks)."""
    from kanmodel.discover import default_widths

    options = dict(variables=request.variables, seed=request.seed, time_budget=request.time_budget)
    if request.val_fraction > 0:
        options["val_fraction"] = request.val_fraction
    if request.library is not None:
        options["library"] = request.library
    if request.first_width is not None:
        ladder = default_widths(request.X_fit.shape[1], request.y_fit.shape[1])
        options["widths"] = [request.first_width, *[w for w in ladder if w != request.first_width]]
    return options


def _discover_search(request: SymbolicRequest, send_progress: Callable[[dict], None]) -> SearchResult:
    import kanmodel

    found = kanmodel.discover(request.X_fit, request.y_fit, progress=send_progress, **discover_options(request))
    metrics = found.metrics
    # The space and width of the network the formula came from (not the served network).
    summary = {"space": found.space, "width": metrics.get("width"), "method": metrics.get("method"),
               "attempts": metrics.get("attempts"), "stopped": metrics.get("stopped"),
               "seconds": rounded_or_none(metrics.get("seconds"))}
    return SearchResult(_extracted(found.formulas), summary)


def _child(connection, request: SymbolicRequest) -> None:
    import torch

    torch.set_num_threads(1)
    try:
        if request.mode == "discover":
            result = _discover_search(request, lambda event: connection.send(("progress", event)))
        else:
            result = _network_search(request)
        connection.send(("ok", result))
    except Exception as exc:  # reported to the parent, which records it as a note
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        connection.close()


def search_in_subprocess(request: SymbolicRequest, should_stop: Callable[[], bool],
                         on_progress: Callable[[dict], None] | None = None) -> SearchResult:
    context = multiprocessing.get_context("spawn")  # fork after torch started threads can deadlock
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sender, request), name="kanserve-symbolic", daemon=True)
    child.start()
    # The pid lets an operator (and the tests) check that a stopped search left no process behind.
    log.info("symbolic extraction: child process %d started", child.pid)
    sender.close()
    deadline = time.monotonic() + request.deadline_seconds
    try:
        while True:
            if receiver.poll(0.2):
                status, payload = receiver.recv()
                if status != "progress":
                    break
                if on_progress is not None:
                    on_progress(payload)
                continue
            if should_stop():
                raise SymbolicStopped("symbolic extraction stopped: the job is stopping")
            if time.monotonic() > deadline:
                raise SymbolicStopped(_overtime_message(request))
            if not child.is_alive() and not receiver.poll():
                raise SymbolicStopped(f"symbolic extraction crashed (exit code {child.exitcode})")
    except EOFError:
        child.join(timeout=10)
        raise SymbolicStopped(f"symbolic extraction crashed (exit code {child.exitcode})") from None
    finally:
        if child.is_alive():
            child.kill()
        child.join(timeout=10)
        receiver.close()
        if child.exitcode is None:
            log.warning("symbolic extraction: child process %d did not exit within 10 s of being stopped", child.pid)
        else:
            log.info("symbolic extraction: child process %d ended with exit code %d", child.pid, child.exitcode)
    if status != "ok":
        raise SymbolicStopped(f"symbolic extraction failed: {payload}"[:500])
    return payload


def _overtime_message(request: SymbolicRequest) -> str:
    if request.mode == "network":
        return (f"symbolic extraction did not finish within its time budget of {request.time_budget:g} s "
                "(symbolic.time_budget_seconds); the model is registered without a formula")
    return (f"formula discovery did not return within {request.deadline_seconds:g} s (its time budget of "
            f"{request.time_budget:g} s, symbolic.time_budget_seconds, plus a grace period); the model is "
            "registered without a formula")
