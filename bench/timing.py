"""Timing and memory helpers shared by bench/kan_layer.py and bench/pykan_worker.py.

Only torch and the standard library: the PyKAN worker runs in a separate venv.
"""
from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile


def time_block(fn, seconds: float = 0.03, max_calls: int = 200) -> float:
    """Seconds per call of fn, averaged over a block of calls lasting about `seconds`."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    calls = max(1, min(max_calls, int(seconds / max(first, 1e-6))))
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def peak_memory(fn) -> int:
    """Peak bytes of tensors allocated during one call of fn (live ones at the peak).

    From the profiler's allocation records in time order: each op's own allocations
    at its start, each free at its time. Transient peaks inside a single op are not
    seen, which is the same for every implementation.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = []
    for event in prof.events():
        usage = event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        if usage:
            records.append((event.time_range.start, usage))
    current = peak = 0
    for _, usage in sorted(records):
        current += usage
        peak = max(peak, current)
    return peak


def forward_call(model, x):
    def run():
        with torch.no_grad():
            model(x)
    return run


def forward_backward_call(model, x):
    def run():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
    return run
