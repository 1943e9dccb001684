"""Progress of a running job: kept in memory every step, written to the job row at most
every ``interval`` seconds (and at every phase change), with an ETA."""
from __future__ import annotations

import time

from sqlalchemy.orm import Session, sessionmaker

from workers.claim import Claim, guarded_update
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
                             total_steps=p.total_steps, train_loss=_finite(p.train_loss),
                             val_loss=_finite(p.val_loss), eta_seconds=None if eta is None else round(eta, 2))
        if time.monotonic() - self._last_write >= self.interval:
            self.write()
        return self.monitor.should_stop

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
        return [{key: _finite(value) if isinstance(value, float) else value for key, value in entry.items()}
                for entry in thinned]


def _finite(value: float | None) -> float | None:
    # JSON columns cannot hold NaN/inf on PostgreSQL.
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)
