"""Progress of a running job: kept in memory every step, written to the job row at most
every ``interval`` seconds (and at every phase change), with an ETA."""
from __future__ import annotations

import numbers
import time

from sqlalchemy.orm import Session, sessionmaker

from workers.claim import Claim, guarded_update
from workers.finite import finite_or_none, rounded_or_none
from workers.monitor import JobMonitor

MAX_STORED_HISTORY = 2_000


class ProgressReporter:
    def __init__(self, session_factory: sessionmaker[Session], claim: Claim, monitor: JobMonitor,
                 interval: float, progress: dict, history: list[dict]):
        self.session_factory, self.claim, self.monitor, self.interval = session_factory, claim, monitor, interval
        self.progress = dict(progress)
        self.history = list(history)  # [{stage, grid, step, train_loss, val_loss}], as kanmodel's FitResult
        self._last_write = 0.0
        self._run_started = time.monotonic()
        self._first_step: int | None = None

    def on_step(self, p) -> bool:
        """fit's callback(TrainProgress); True asks fit to stop (cancel, timeout, lease lost)."""
        self.history.append({"stage": p.stage, "grid": p.grid, "step": p.step,
                             "train_loss": p.train_loss, "val_loss": p.val_loss})
        if self._first_step is None:
            self._first_step, self._run_started = p.step - 1, time.monotonic()
        done = p.step - self._first_step
        eta = (time.monotonic() - self._run_started) / done * (p.total_steps - p.step) if done > 0 else None
        self.progress.update(phase="training", stage=p.stage, n_stages=p.n_stages, grid=p.grid, step=p.step,
                             total_steps=p.total_steps, train_loss=finite_or_none(p.train_loss),
                             val_loss=finite_or_none(p.val_loss), eta_seconds=None if eta is None else round(eta, 2))
        if time.monotonic() - self._last_write >= self.interval:
            self.write()
        return self.monitor.should_stop

    def on_discovery(self, event: dict, time_budget: float | None = None) -> None:
        """kanmodel.discover's progress(event): an attempt started ("attempt") or ended ("result").
        The ETA is what is left of discovery's ``time_budget`` (it stops sooner on an exact formula)."""
        best_formulas = event.get("best_formulas") or []
        shown = {"attempt": event.get("attempt"), "kind": event.get("kind"), "width": event.get("width"),
                 "space": event.get("space"), "best_error": finite_or_none(event.get("best_error")),
                 "best_formula": best_formulas[0] if len(best_formulas) == 1 else (best_formulas or None),
                 "elapsed_seconds": rounded_or_none(event.get("elapsed"))}
        if event.get("event") == "result":
            shown["last_error"] = finite_or_none(event.get("score"))
        elapsed = finite_or_none(event.get("elapsed"))
        eta = None if time_budget is None or elapsed is None else round(max(0.0, time_budget - elapsed), 2)
        self.progress.update(phase="discovery", discovery=shown, eta_seconds=eta)
        # Attempts take seconds to minutes: every start is worth a write.
        if event.get("event") == "attempt" or time.monotonic() - self._last_write >= self.interval:
            self.write()

    def on_candidate(self, event: dict) -> None:
        """kanmodel.auto_fit's progress(event): a candidate architecture finished a grid
        ("candidate", "rung", "config", "val_loss", "val_score"), a further member of the
        chosen architecture's average trained ("member", "fold", ...), or the search chose
        ("chosen")."""
        event = json_ready(event)
        search = dict(self.progress.get("architecture") or {})
        if "chosen" in event:
            search["chosen_candidate"] = event["chosen"]
        elif "member" in event:
            search["members_trained"] = int(event["member"]) + 1
        elif "candidate" in event:
            latest = {key: event.get(key) for key in ("candidate", "rung", "config", "val_loss", "val_score")}
            search["candidates_scored"] = int(search.get("candidates_scored", 0)) + 1
            search["latest"] = latest
            best = search.get("best")
            if latest["val_loss"] is not None and (best is None or latest["val_loss"] < best["val_loss"]):
                search["best"] = latest
        self.progress.update(phase="architecture", architecture=search)
        if time.monotonic() - self._last_write >= self.interval:
            self.write()

    def set_phase(self, phase: str, **fields) -> None:
        self.progress.update(phase=phase, **fields)
        self.write()

    def note(self, text: str) -> None:
        self.progress["notes"] = [*self.progress.get("notes", []), text]

    def write(self) -> None:
        with self.session_factory() as db:
            guarded_update(db, self.claim, progress=dict(self.progress))
            db.commit()
        self._last_write = time.monotonic()

    def stored_history(self) -> list[dict]:
        """The history thinned to at most MAX_STORED_HISTORY points (always keeping the last)."""
        stride = max(1, -(-len(self.history) // MAX_STORED_HISTORY))
        thinned = self.history[::stride]
        if self.history and thinned[-1] is not self.history[-1]:
            thinned.append(self.history[-1])
        return [{key: finite_or_none(value) if isinstance(value, float) else value for key, value in entry.items()}
                for entry in thinned]


def json_ready(value):
    """value with its numbers made JSON-safe (numpy scalars to Python, NaN/inf to None)."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    try:
        return finite_or_none(float(value))
    except (TypeError, ValueError):
        return str(value)
