import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest

from service.inference.batcher import MicroBatcher, RunCostModel
from onnx_graphs import affine_model

WEIGHT = np.array([[1.0, -2.0], [0.5, 3.0], [4.0, 0.25]], np.float32)
BIAS = np.array([0.1, -0.2], np.float32)


@pytest.fixture(scope="module")
def session():
    return ort.InferenceSession(affine_model(WEIGHT, BIAS), providers=["CPUExecutionProvider"])


class RecordingRunner:
    """Runs the affine graph and records the batch sizes it was called with."""

    def __init__(self, session, delay_s=0.0):
        self.session = session
        self.delay_s = delay_s
        self.batch_rows: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, x):
        with self.lock:
            self.batch_rows.append(x.shape[0])
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        if np.isnan(x).any():
            raise ValueError("poisoned batch")
        return self.session.run(None, {"x": x})


def expected(x):
    return x @ WEIGHT + BIAS


def test_concurrent_requests_each_get_their_own_rows(session):
    runner = RecordingRunner(session, delay_s=0.01)
    rng = np.random.default_rng(0)
    requests = [rng.normal(size=(int(rng.integers(1, 6)), 3)).astype(np.float32) for _ in range(60)]

    async def main():
        with ThreadPoolExecutor(2) as pool:
            batcher = MicroBatcher(runner, pool, max_batch_rows=32)
            return await asyncio.gather(*(batcher.submit(x) for x in requests))

    results = asyncio.run(main())
    for x, (y,) in zip(requests, results):
        assert y.shape == (x.shape[0], 2)
        np.testing.assert_allclose(y, expected(x), rtol=1e-5, atol=1e-5)
    assert sum(runner.batch_rows) == sum(x.shape[0] for x in requests)
    assert max(runner.batch_rows) > 5, "concurrent requests were never merged"
    assert max(runner.batch_rows) <= 32


def test_lone_request_runs_without_waiting_for_company(session):
    runner = RecordingRunner(session)

    async def main():
        batcher = MicroBatcher(runner, max_batch_rows=64, max_delay_us=0)
        out = []
        for i in range(3):
            out.append(await batcher.submit(np.full((1, 3), i, np.float32)))
        return out

    results = asyncio.run(main())
    assert runner.batch_rows == [1, 1, 1]
    np.testing.assert_allclose(results[2][0], expected(np.full((1, 3), 2, np.float32)), rtol=1e-6)


def test_delay_window_collects_staggered_requests(session):
    runner = RecordingRunner(session)

    async def main():
        batcher = MicroBatcher(runner, max_batch_rows=64, max_delay_us=200_000)

        async def late(i):
            await asyncio.sleep(0.01 * i)
            return await batcher.submit(np.full((1, 3), i, np.float32))

        return await asyncio.gather(*(late(i) for i in range(4)))

    results = asyncio.run(main())
    assert runner.batch_rows == [4]
    for i, (y,) in enumerate(results):
        np.testing.assert_allclose(y, expected(np.full((1, 3), i, np.float32)), rtol=1e-6)


def test_full_batch_does_not_wait_for_the_delay(session):
    runner = RecordingRunner(session)

    async def main():
        # A delay window of an hour: the requests can only come back if filling the
        # batch ends the window. The 60 s timeout is a hang guard, not a speed limit.
        batcher = MicroBatcher(runner, max_batch_rows=4, max_delay_us=3_600_000_000)
        requests = asyncio.gather(*(batcher.submit(np.ones((2, 3), np.float32)) for _ in range(2)))
        return await asyncio.wait_for(requests, timeout=60)

    results = asyncio.run(main())
    assert runner.batch_rows == [4]
    for (y,) in results:
        np.testing.assert_allclose(y, expected(np.ones((2, 3), np.float32)), rtol=1e-6)


def test_failing_request_does_not_fail_its_batch_mates(session):
    runner = RecordingRunner(session, delay_s=0.02)
    good = np.ones((2, 3), np.float32)
    bad = np.full((1, 3), np.nan, np.float32)

    async def main():
        batcher = MicroBatcher(runner, max_batch_rows=64)
        first = asyncio.ensure_future(batcher.submit(good))  # occupies the runner
        await asyncio.sleep(0.005)
        rest = [batcher.submit(good), batcher.submit(bad), batcher.submit(good)]
        return await asyncio.gather(first, *rest, return_exceptions=True)

    results = asyncio.run(main())
    assert isinstance(results[2], ValueError)
    for r in (results[0], results[1], results[3]):
        np.testing.assert_allclose(r[0], expected(good), rtol=1e-6)
    assert 5 in runner.batch_rows  # the merged batch was tried first


def test_rejects_bad_configuration(session):
    with pytest.raises(ValueError, match="max_batch_rows"):
        MicroBatcher(RecordingRunner(session), max_batch_rows=0)
    with pytest.raises(ValueError, match="max_delay_us"):
        MicroBatcher(RecordingRunner(session), max_delay_us=-1)
    with pytest.raises(ValueError, match="max_concurrent"):
        MicroBatcher(RecordingRunner(session), max_concurrent=0)


def test_one_drain_task_even_when_callers_arrive_before_it_starts(session):
    runner = RecordingRunner(session)

    async def main():
        batcher = MicroBatcher(runner, max_batch_rows=64, max_delay_us=50_000)
        # All submitted in the same loop iteration: the first one's drain task has
        # not started yet when the others arrive.
        xs = [np.full((1, 3), i, np.float32) for i in range(5)]
        return xs, await asyncio.gather(*(batcher.submit(x) for x in xs))

    xs, results = asyncio.run(main())
    assert runner.batch_rows == [5]
    for x, (y,) in zip(xs, results):
        np.testing.assert_allclose(y, expected(x), rtol=1e-6)


def test_calls_in_flight_are_bounded_by_max_concurrent(session):
    in_flight, peak = [0], [0]
    lock = threading.Lock()
    runner = RecordingRunner(session, delay_s=0.02)

    def counting_run(x):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            return runner(x)
        finally:
            with lock:
                in_flight[0] -= 1

    rng = np.random.default_rng(1)
    requests = [rng.normal(size=(2, 3)).astype(np.float32) for _ in range(40)]

    async def main():
        with ThreadPoolExecutor(4) as pool:
            batcher = MicroBatcher(counting_run, pool, max_batch_rows=16, max_concurrent=2)
            return await asyncio.gather(*(batcher.submit(x) for x in requests))

    results = asyncio.run(main())
    for x, (y,) in zip(requests, results):
        np.testing.assert_allclose(y, expected(x), rtol=1e-5, atol=1e-5)
    assert peak[0] == 2  # both slots were used, never more
    assert max(runner.batch_rows) <= 16 and len(runner.batch_rows) < len(requests)


def test_run_cost_model_fits_fixed_plus_per_row_cost():
    cost = RunCostModel()
    assert cost.predict(10) is None
    cost.observe(4, 40e-6)
    assert cost.predict(8) == pytest.approx(80e-6)  # one batch size seen: proportional
    for rows in (1, 16, 64, 1, 16, 64):
        cost.observe(rows, 30e-6 + 2e-6 * rows)
    for _ in range(200):  # older measurements fade out
        cost.observe(1, 32e-6)
        cost.observe(64, 158e-6)
    assert cost.predict(1) == pytest.approx(32e-6, rel=0.02)
    assert cost.predict(32) == pytest.approx(30e-6 + 2e-6 * 32, rel=0.02)


class ThreadRecordingRunner(RecordingRunner):
    """Also records which thread ran each call, and can burn CPU (the cost model
    measures the calling thread's CPU time, so sleeping would look free)."""

    def __init__(self, session, busy_s=0.0):
        super().__init__(session)
        self.busy_s = busy_s
        self.started: list[tuple[int, int]] = []  # (thread, rows) of each call, in start order

    @property
    def threads(self) -> list[int]:
        return [thread for thread, _ in self.started]

    def __call__(self, x):
        self.started.append((threading.get_ident(), x.shape[0]))
        end = time.thread_time() + self.busy_s
        while time.thread_time() < end:
            pass
        return super().__call__(x)


def _sequential_calls(batcher, n):
    async def main():
        results = []
        for i in range(n):
            await asyncio.sleep(0)  # each call in a turn of its own, as separate requests are
            results.append(await batcher.submit(np.full((1, 3), i, np.float32)))
        return results
    return asyncio.run(main())


def test_quick_graphs_run_on_the_event_loop_once_measured(session):
    runner = ThreadRecordingRunner(session)
    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(runner, pool, inline_max_us=1_000_000)
        results = _sequential_calls(batcher, 4)
    loop_thread = threading.get_ident()  # asyncio.run runs the loop in this thread
    assert runner.threads[0] != loop_thread, "an unmeasured graph must start on the pool"
    assert runner.threads[1:] == [loop_thread] * 3
    for i, (y,) in enumerate(results):
        np.testing.assert_allclose(y, expected(np.full((1, 3), i, np.float32)), rtol=1e-6)


@pytest.mark.parametrize("inline_max_us, busy_s", [(0, 0.0), (500, 0.005)])
def test_slow_graphs_and_inline_off_stay_on_the_pool(session, inline_max_us, busy_s):
    runner = ThreadRecordingRunner(session, busy_s=busy_s)
    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(runner, pool, inline_max_us=inline_max_us)
        _sequential_calls(batcher, 4)
    assert threading.get_ident() not in runner.threads
    assert batcher.cost.predict(1) is not None


def test_a_batch_of_one_request_per_call_when_merging_is_off(session):
    runner = RecordingRunner(session, delay_s=0.005)

    async def main():
        with ThreadPoolExecutor(2) as pool:
            batcher = MicroBatcher(runner, pool, max_batch_rows=1, max_concurrent=2)
            xs = [np.full((2, 3), i, np.float32) for i in range(6)]
            return xs, await asyncio.gather(*(batcher.submit(x) for x in xs))

    xs, results = asyncio.run(main())
    assert runner.batch_rows == [2] * 6
    for x, (y,) in zip(xs, results):
        np.testing.assert_allclose(y, expected(x), rtol=1e-6)


async def measured_quick_batcher(runner, pool) -> MicroBatcher:
    """A batcher whose graph has run once (on the pool) and so is measured as quick."""
    batcher = MicroBatcher(runner, pool, inline_max_us=1_000_000)
    await batcher.submit(np.zeros((1, 3), np.float32))
    return batcher


def test_first_request_of_a_turn_runs_at_once_and_the_rest_of_the_turn_is_one_batch_on_the_pool(session):
    runner = ThreadRecordingRunner(session)

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = await measured_quick_batcher(runner, pool)
            runner.batch_rows.clear()
            runner.started.clear()
            loop = asyncio.get_running_loop()
            xs = [np.full((1, 3), i, np.float32) for i in range(5)]
            ran_at_once = []

            async def first():
                y = await batcher.submit(xs[0])
                ran_at_once.append(len(runner.batch_rows) == 1)  # before the others' batch
                return y
            # Five tasks started in the same turn of the loop, as uvicorn starts the
            # requests whose bytes arrived together.
            tasks = [loop.create_task(first())] + [loop.create_task(batcher.submit(x)) for x in xs[1:]]
            return xs, await asyncio.gather(*tasks), ran_at_once

    xs, results, ran_at_once = asyncio.run(main())
    assert runner.batch_rows == [1, 4]
    assert ran_at_once == [True]
    loop_thread = threading.get_ident()
    assert runner.threads[0] == loop_thread and runner.threads[1] != loop_thread
    for x, (y,) in zip(xs, results):
        np.testing.assert_allclose(y, expected(x), rtol=1e-6)


def test_an_error_in_a_request_run_at_once_reaches_only_its_caller(session):
    runner = RecordingRunner(session)

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = await measured_quick_batcher(runner, pool)
            with pytest.raises(ValueError, match="poisoned"):
                await batcher.submit(np.full((1, 3), np.nan, np.float32))
            return await batcher.submit(np.ones((1, 3), np.float32))

    (y,) = asyncio.run(main())
    np.testing.assert_allclose(y, expected(np.ones((1, 3), np.float32)), rtol=1e-6)


def test_requests_after_the_pool_is_shut_down_fail_instead_of_hanging(session):
    runner = RecordingRunner(session)

    async def main():
        pool = ThreadPoolExecutor(1)
        batcher = MicroBatcher(runner, pool)  # inline off: every call goes to the pool
        pool.shutdown()
        return await asyncio.wait_for(batcher.submit(np.zeros((1, 3), np.float32)), timeout=30)

    with pytest.raises(RuntimeError, match="shutdown"):
        asyncio.run(main())


def test_merged_batches_go_to_the_pool_and_a_request_alone_in_the_queue_runs_on_the_loop(session):
    runner = ThreadRecordingRunner(session, busy_s=0.02)

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(runner, pool, inline_max_us=1_000_000, max_concurrent=1)
            batcher.cost.observe(1, 1e-6)  # measured as quick
            loop = asyncio.get_running_loop()
            first = [loop.create_task(batcher.submit(np.full((1, 3), i, np.float32))) for i in range(3)]
            while len(runner.threads) < 2:  # the lone request ran at once; the other two start on the pool
                await asyncio.sleep(0.001)
            # Arrives while the pool is busy (its call burns 20 ms of CPU): queued (it could merge with what comes in
            # its turn), then run on the loop, as nothing did.
            late = await batcher.submit(np.full((1, 3), 9, np.float32))
            return await asyncio.gather(*first), late

    _, (late,) = asyncio.run(main())
    loop_thread = threading.get_ident()
    # In start order (batch_rows is in finishing order, which the shared cores decide).
    (first_thread, first_rows), (pool_thread, pool_rows), (late_thread, late_rows) = runner.started
    assert (first_thread, first_rows) == (loop_thread, 1)
    assert pool_thread != loop_thread and pool_rows == 2
    assert (late_thread, late_rows) == (loop_thread, 1)
    np.testing.assert_allclose(late, expected(np.full((1, 3), 9, np.float32)), rtol=1e-6)
