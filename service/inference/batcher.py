"""Adaptive micro-batching: concurrent requests for one model run as one onnxruntime call.

How it adapts (the idea behind Triton's dynamic batcher and BentoML's adaptive
batching, written for one asyncio event loop):
- A lone request runs at once on the event loop: when nothing is queued or running
  on the pool for its graph, it is the first of its turn of the loop, and its call
  is predicted (RunCostModel, from the graph's measured runs) to take at most
  `inline_max_us`. Handing a call to a thread and back costs more CPU and latency
  than a small graph's whole run (bench/predict_path.py), so a lone client gets the
  shortest path: no thread hand-off, no queue future, no extra turn of the loop.
- Every other request joins the graph's queue, which is drained on the next turn of
  the loop (or after `max_delay_us`, 0 by default): the requests whose bytes arrived
  in the same turn are one batch (at most `max_batch_rows` rows, at least one
  request), so the batch size grows with the load by itself. Batches of several
  requests run on the thread pool, at most `max_concurrent` calls in flight (one per
  pool thread; what arrives meanwhile waits for a free slot and then goes as one
  batch), so under load the graph runs on the other cores while the loop thread
  parses and answers HTTP (bench/serving.py at 64 clients: 0.93x the no-op route's
  requests/s for [2,5,1], against 0.82x with those batches run on the loop too). A
  queued request that merges with no other (batching off, or alone in the queue)
  runs on the loop when quick, as a lone request does: there is nothing to amortise
  the hand-off over. Results are split back by row offsets, so every caller gets
  exactly its own rows.
- A graph not yet measured, or predicted slower than `inline_max_us`, always goes to
  the pool; inline_max_us = 0: always the pool.

A batch that raises is retried request by request, so one bad request cannot fail
the others that happened to share its batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import Executor
from typing import Callable, Sequence

import numpy as np

# run_batch: (rows, n_in) array -> one (rows, ...) array per model output
RunBatch = Callable[[np.ndarray], Sequence[np.ndarray]]
Outcome = list[np.ndarray] | BaseException  # one request's outputs, or its error


class RunCostModel:
    """Predicts one call's run time as fixed + per_row * rows, fitted by least squares
    over recent measurements (exponentially forgotten, so it follows the machine's load)."""

    def __init__(self, memory: float = 0.95):
        self.memory = memory
        self._w = self._r = self._rr = self._d = self._rd = 0.0

    def observe(self, rows: int, seconds: float) -> None:
        m = self.memory
        self._w = m * self._w + 1.0
        self._r = m * self._r + rows
        self._rr = m * self._rr + rows * rows
        self._d = m * self._d + seconds
        self._rd = m * self._rd + rows * seconds

    def predict(self, rows: int) -> float | None:
        """Seconds for a call of `rows` rows, or None before the first measurement."""
        if self._w == 0.0:
            return None
        mean_r, mean_d = self._r / self._w, self._d / self._w
        spread = self._rr / self._w - mean_r * mean_r
        if spread <= 1e-9 * max(1.0, mean_r * mean_r):
            # One batch size seen so far: assume the cost is proportional to the rows
            # (an over-estimate for bigger batches, which errs towards the pool).
            return mean_d * max(rows, 1) / max(mean_r, 1.0)
        slope = max((self._rd / self._w - mean_r * mean_d) / spread, 0.0)
        return max(mean_d + slope * (rows - mean_r), 0.0)


class MicroBatcher:
    """Queues requests for one model on the current event loop and runs them in batches."""

    def __init__(
        self,
        run_batch: RunBatch,
        executor: Executor | None = None,
        max_batch_rows: int = 256,
        max_delay_us: int = 0,
        on_batch: Callable[[int, int, str], None] | None = None,
        max_concurrent: int = 1,
        inline_max_us: int = 0,
    ):
        if max_batch_rows < 1:
            raise ValueError("max_batch_rows must be >= 1")
        if max_delay_us < 0:
            raise ValueError("max_delay_us must be >= 0")
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        if inline_max_us < 0:
            raise ValueError("inline_max_us must be >= 0")
        self._run_batch = run_batch
        self._executor = executor
        self.max_batch_rows = max_batch_rows
        self.max_delay_s = max_delay_us / 1e6
        self.max_concurrent = max_concurrent
        self.inline_max_s = inline_max_us / 1e6
        self.cost = RunCostModel()
        self._on_batch = on_batch  # on_batch(n_requests, n_rows, "loop" | "pool"), e.g. metrics
        self._queue: deque[tuple[np.ndarray, asyncio.Future]] = deque()
        self._queued_rows = 0
        self._in_flight = 0  # calls running on the pool
        self._drain_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._turn_open = False  # a request ran at once in this turn of the loop

    async def submit(self, x: np.ndarray) -> list[np.ndarray]:
        """x: (rows, n_in) -> this request's (rows, ...) slice of every output."""
        loop = asyncio.get_running_loop()
        if (not self._turn_open and not self._queue and self._in_flight == 0 and self.max_delay_s == 0
                and self._quick(x.shape[0])):
            self._turn_open = True
            loop.call_soon(self._close_turn)
            return self._run_on_loop(x)
        future = loop.create_future()
        self._queue.append((x, future))
        self._queued_rows += x.shape[0]
        self._schedule_drain(loop)
        return await future

    def _schedule_drain(self, loop: asyncio.AbstractEventLoop) -> None:
        full = self._queued_rows >= self.max_batch_rows
        if self._drain_handle is not None:
            if not (full and isinstance(self._drain_handle, asyncio.TimerHandle)):
                return
            self._drain_handle.cancel()  # a full batch does not wait out the delay window
        if self.max_delay_s > 0 and not full:
            self._drain_handle = loop.call_later(self.max_delay_s, self._drain, loop)
        else:
            self._drain_handle = loop.call_soon(self._drain, loop)

    def _close_turn(self) -> None:
        self._turn_open = False

    def _quick(self, rows: int) -> bool:
        """Is a call of `rows` rows predicted to take at most inline_max_us?"""
        predicted = self.cost.predict(rows)
        return predicted is not None and predicted <= self.inline_max_s

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        self._drain_handle = None
        while self._queue:
            rows = self._queue[0][0].shape[0]
            if not self._merges_with_next() and self._quick(rows):
                # One request alone: nothing to merge pays for the hand-off.
                x, future = self._queue.popleft()
                self._queued_rows -= rows
                try:
                    outcome = self._run_on_loop(x)
                except Exception as exc:  # handed to the caller, who turns it into a response
                    outcome = exc
                _deliver([(x, future)], [outcome])
            elif self._in_flight < self.max_concurrent:
                batch = self._take_batch()
                try:
                    pending = loop.run_in_executor(self._executor, self._timed_execute, batch)
                except RuntimeError as exc:  # the pool is shut down: answer, do not hang
                    _deliver(batch, [exc] * len(batch))
                    continue
                self._in_flight += 1
                pending.add_done_callback(lambda done, batch=batch: self._pool_done(loop, batch, done))
            else:
                return  # every slot busy: the next call to finish drains what is queued

    def _run_on_loop(self, x: np.ndarray) -> list[np.ndarray]:
        started = time.thread_time()
        try:
            return list(self._run_alone(x, "loop"))
        finally:
            self.cost.observe(x.shape[0], time.thread_time() - started)

    def _merges_with_next(self) -> bool:
        """Would the next batch hold more than one request?"""
        return (len(self._queue) > 1
                and self._queue[0][0].shape[0] + self._queue[1][0].shape[0] <= self.max_batch_rows)

    def _pool_done(self, loop, batch, done: asyncio.Future) -> None:
        self._in_flight -= 1
        if done.cancelled():  # the pool was shut down
            outcomes = [asyncio.CancelledError()] * len(batch)
        elif done.exception() is not None:
            outcomes = [done.exception()] * len(batch)
        else:
            outcomes, rows, seconds = done.result()
            self.cost.observe(rows, seconds)
        _deliver(batch, outcomes)
        if self._queue and self._drain_handle is None:
            self._schedule_drain(loop)

    def _take_batch(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        # Always take at least one request, even one larger than max_batch_rows
        # (the route limits rows per request; this only caps how many are merged).
        batch = [self._queue.popleft()]
        rows = batch[0][0].shape[0]
        while self._queue and rows + self._queue[0][0].shape[0] <= self.max_batch_rows:
            item = self._queue.popleft()
            rows += item[0].shape[0]
            batch.append(item)
        self._queued_rows -= rows
        return batch

    def _timed_execute(self, batch) -> tuple[list[Outcome], int, float]:
        started = time.thread_time()
        outcomes = self._execute(batch)
        return outcomes, sum(x.shape[0] for x, _ in batch), time.thread_time() - started

    def _execute(self, batch) -> list[Outcome]:
        """Runs on a pool thread: touches no future, only computes."""
        inputs = [x for x, future in batch]
        if len(inputs) > 1:
            merged = np.concatenate(inputs, axis=0)
            try:
                outputs = self._run_batch(merged)
            except Exception:
                pass  # retried one by one below, so the culprit alone gets the error
            else:
                if self._on_batch:
                    self._on_batch(len(inputs), merged.shape[0], "pool")
                offsets = np.cumsum([0] + [x.shape[0] for x in inputs])
                return [[out[start:stop] for out in outputs]
                        for start, stop in zip(offsets[:-1], offsets[1:])]
        outcomes: list[Outcome] = []
        for x in inputs:
            try:
                outcomes.append(list(self._run_alone(x, "pool")))
            except Exception as exc:  # handed to the caller, who turns it into a response
                outcomes.append(exc)
        return outcomes

    def _run_alone(self, x: np.ndarray, where: str) -> Sequence[np.ndarray]:
        if self._on_batch:
            self._on_batch(1, x.shape[0], where)
        return self._run_batch(x)


def _deliver(batch, outcomes: Sequence[Outcome]) -> None:
    for (_, future), outcome in zip(batch, outcomes):
        if future.done():  # the caller has gone away
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
