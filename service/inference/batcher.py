"""Adaptive micro-batching: concurrent requests for one model run as one onnxruntime call.

How it adapts (the idea behind Triton's dynamic batcher and BentoML's adaptive
batching, written for one asyncio event loop):
- A graph with a free slot runs a request at once (plus at most `max_delay_us` of
  waiting, 0 by default), so a lone client pays no batching delay (with no delay
  window it runs in the caller's own task, without a queue).
- At most `max_concurrent` calls per graph are in flight (one per pool thread, so
  large requests still use every core). While they run, new requests queue up; the
  next free slot runs everything queued (up to `max_batch_rows` rows) as one batch.
  The batch size therefore grows with the load by itself.
- Results are split back by row offsets, so every caller gets exactly its own rows.

A batch that raises is retried request by request, so one bad request cannot fail
the others that happened to share its batch.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import Executor
from typing import Callable, Sequence

import numpy as np

# run_batch: (rows, n_in) array -> one (rows, ...) array per model output
RunBatch = Callable[[np.ndarray], Sequence[np.ndarray]]


class MicroBatcher:
    """Queues requests for one model on the current event loop and runs them in batches."""

    def __init__(
        self,
        run_batch: RunBatch,
        executor: Executor | None = None,
        max_batch_rows: int = 256,
        max_delay_us: int = 0,
        on_batch: Callable[[int, int], None] | None = None,
        max_concurrent: int = 1,
    ):
        if max_batch_rows < 1:
            raise ValueError("max_batch_rows must be >= 1")
        if max_delay_us < 0:
            raise ValueError("max_delay_us must be >= 0")
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        self._run_batch = run_batch
        self._executor = executor
        self.max_batch_rows = max_batch_rows
        self.max_delay_s = max_delay_us / 1e6
        self.max_concurrent = max_concurrent
        self._on_batch = on_batch  # on_batch(n_requests, n_rows), e.g. a histogram
        self._queue: deque[tuple[np.ndarray, asyncio.Future]] = deque()
        self._queued_rows = 0
        self._slots_used = 0  # calls in flight, plus drain tasks started and not yet done
        self._drain_starting = False  # a drain task has not taken its first batch yet
        self._drainers: set[asyncio.Task] = set()  # referenced while they run
        self._enough_rows: asyncio.Event | None = None

    async def submit(self, x: np.ndarray) -> list[np.ndarray]:
        """x: (rows, n_in) -> this request's (rows, ...) slice of every output."""
        loop = asyncio.get_running_loop()
        if self._slots_used < self.max_concurrent and not self._queue and self.max_delay_s == 0:
            return await self._run_alone(loop, x)
        future = loop.create_future()
        self._queue.append((x, future))
        self._queued_rows += x.shape[0]
        self._start_drain(loop)
        if self._enough_rows is not None and self._queued_rows >= self.max_batch_rows:
            self._enough_rows.set()
        return await future

    async def _run_alone(self, loop, x: np.ndarray) -> list[np.ndarray]:
        self._slots_used += 1
        try:
            if self._on_batch:
                self._on_batch(1, x.shape[0])
            return list(await loop.run_in_executor(self._executor, self._run_batch, x))
        finally:
            self._slots_used -= 1
            self._start_drain(loop)  # requests that queued meanwhile

    def _start_drain(self, loop) -> None:
        # One drain task at a time may be "starting" (waiting out the delay window or
        # not yet scheduled): the requests queued meanwhile belong to its batch.
        if self._queue and self._slots_used < self.max_concurrent and not self._drain_starting:
            self._slots_used += 1
            self._drain_starting = True
            task = loop.create_task(self._drain(loop))
            self._drainers.add(task)
            task.add_done_callback(self._drainers.discard)

    async def _drain(self, loop) -> None:
        try:
            if self.max_delay_s > 0 and self._queued_rows < self.max_batch_rows:
                self._enough_rows = asyncio.Event()
                try:
                    await asyncio.wait_for(self._enough_rows.wait(), self.max_delay_s)
                except asyncio.TimeoutError:
                    pass
                self._enough_rows = None
            while self._queue:
                batch = self._take_batch()
                self._drain_starting = False
                self._start_drain(loop)  # a free slot may take what queues up meanwhile
                await self._run(loop, batch)
        finally:
            self._drain_starting = False
            self._slots_used -= 1

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

    async def _run(self, loop: asyncio.AbstractEventLoop, batch) -> None:
        live = [(x, f) for x, f in batch if not f.done()]  # a caller may have gone away
        if not live:
            return
        if len(live) == 1:
            x, future = live[0]
            await self._run_one(loop, x, future)
            return
        inputs = np.concatenate([x for x, _ in live], axis=0)
        if self._on_batch:
            self._on_batch(len(live), inputs.shape[0])
        try:
            outputs = await loop.run_in_executor(self._executor, self._run_batch, inputs)
        except Exception:
            for x, future in live:
                await self._run_one(loop, x, future)
            return
        start = 0
        for x, future in live:
            stop = start + x.shape[0]
            if not future.done():
                future.set_result([out[start:stop] for out in outputs])
            start = stop

    async def _run_one(self, loop, x: np.ndarray, future: asyncio.Future) -> None:
        if self._on_batch:
            self._on_batch(1, x.shape[0])
        try:
            outputs = await loop.run_in_executor(self._executor, self._run_batch, x)
        except Exception as exc:  # handed to the caller, who turns it into a response
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(list(outputs))
