"""One time limit (and cancellation) for everything a discovery runs.

Training, edge fitting, the expression search and every refit check the limit in
their loops. It is held in a context variable rather than passed down as a
parameter through every layer: `within(deadline, should_stop)` sets it for the code
inside, `expired()` asks, `check()` raises `OutOfTime`. Outside any `within`, there
is no limit.
"""
from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Callable, Iterator

# should_stop may be a database query: it is asked at most this often (seconds).
STOP_POLL_INTERVAL = 0.5


class OutOfTime(TimeoutError):
    """The time budget is spent or the caller asked to stop."""


class _Limit:
    def __init__(self, deadline: float, should_stop: Callable[[], bool] | None) -> None:
        self.deadline, self.should_stop = deadline, should_stop
        self.stopped, self.next_poll = False, 0.0

    def expired(self) -> bool:
        now = time.monotonic()
        if now > self.deadline:
            return True
        if self.should_stop is not None and not self.stopped and now >= self.next_poll:
            self.next_poll = now + STOP_POLL_INTERVAL
            self.stopped = bool(self.should_stop())
        return self.stopped


_LIMIT: contextvars.ContextVar[_Limit | None] = contextvars.ContextVar("kanmodel_time_limit", default=None)


@contextlib.contextmanager
def within(deadline: float, should_stop: Callable[[], bool] | None = None) -> Iterator[None]:
    """Run the block under a limit: time.monotonic() deadline, and an optional
    should_stop() that returns True to cancel. Inside another limit, the earlier
    deadline applies and the outer should_stop is still asked."""
    outer = _LIMIT.get()
    if outer is not None:
        deadline = min(deadline, outer.deadline)
        if should_stop is None:
            should_stop = outer.expired
    token = _LIMIT.set(_Limit(deadline, should_stop))
    try:
        yield
    finally:
        _LIMIT.reset(token)


def expired() -> bool:
    limit = _LIMIT.get()
    return limit is not None and limit.expired()


def cancelled() -> bool:
    """True when the caller's should_stop said so (as opposed to the clock)."""
    limit = _LIMIT.get()
    return limit is not None and limit.stopped


def remaining() -> float:
    limit = _LIMIT.get()
    return float("inf") if limit is None else limit.deadline - time.monotonic()


def check() -> None:
    if expired():
        raise OutOfTime("time budget spent" if not cancelled() else "stopped by the caller")
