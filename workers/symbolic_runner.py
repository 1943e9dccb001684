"""Formula extraction in a child process with a hard time limit.

Symbolic simplification can take minutes on an unlucky network, and nothing inside
it can be interrupted. Running it in a spawned child lets the job keep its promise:
past ``time_budget_seconds`` (or on cancel) the child is killed and the network is
registered without a formula, with a note saying why.
"""
from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


class SymbolicStopped(Exception):
    """The time budget ran out, the job was cancelled, or the child died; the message says which."""


@dataclass(frozen=True)
class ExtractedFormula:
    expr: object  # sympy expression over the input names
    text: str
    latex: str
    r2: float
    rmse: float


@dataclass(frozen=True)
class SymbolicRequest:
    model_blob: bytes  # kanmodel.to_bytes
    X_fit: np.ndarray  # (n_fit, n_in) rows the constants are refitted on
    y_fit: np.ndarray  # (n_fit, n_out)
    X_val: np.ndarray  # (n_val, n_in) held-out rows for r2/rmse
    y_val: np.ndarray  # (n_val, n_out)
    library: list[str] | None
    variables: list[str]
    time_budget: float


def _extract(request: SymbolicRequest) -> list[ExtractedFormula]:
    import torch

    import kanmodel

    torch.set_num_threads(1)
    model = kanmodel.from_bytes(request.model_blob)
    formulas = kanmodel.auto_symbolic(
        model, request.X_fit, request.y_fit, library=request.library, variables=request.variables,
        X_val=request.X_val, y_val=request.y_val, time_budget=request.time_budget / 2)
    return [ExtractedFormula(f.expr, f.text, f.latex, float(f.r2), float(f.rmse)) for f in formulas]


def _child(connection, request: SymbolicRequest) -> None:
    try:
        connection.send(("ok", _extract(request)))
    except Exception as exc:  # reported to the parent, which records it as a note
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        connection.close()


def extract_in_subprocess(request: SymbolicRequest, should_stop: Callable[[], bool]) -> list[ExtractedFormula]:
    context = multiprocessing.get_context("spawn")  # fork after torch started threads can deadlock
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sender, request), name="kanserve-symbolic", daemon=True)
    child.start()
    # The pid lets an operator (and the tests) check that a stopped search left no process behind.
    log.info("symbolic extraction: child process %d started", child.pid)
    sender.close()
    deadline = time.monotonic() + request.time_budget
    try:
        while not receiver.poll(0.2):
            if should_stop():
                raise SymbolicStopped("symbolic extraction stopped: the job is stopping")
            if time.monotonic() > deadline:
                raise SymbolicStopped(f"symbolic extraction did not finish within its time budget of "
                                      f"{request.time_budget:g} s (symbolic.time_budget_seconds); the model "
                                      "is registered without a formula")
            if not child.is_alive() and not receiver.poll():
                raise SymbolicStopped(f"symbolic extraction crashed (exit code {child.exitcode})")
        status, payload = receiver.recv()
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
