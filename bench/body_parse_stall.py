"""How long a large predict body's parse, run on a worker thread, keeps the event loop
from running: the longest gap between the ticks of a 1 ms sleep loop on the main thread
while the worker parses.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/body_parse_stall.py [--rows N] [--write]

A thread alone does not free the loop: a parser that holds the GIL for the whole body
stalls it as if it ran on it. Compared: pydantic's JSON validation of the whole body
(PredictRequest.model_validate_json) and the route's large-body parse (orjson, then the
values validated in slices: service/api/predict.py `_parse_large`).
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import threading
import time
from pathlib import Path

import orjson

from service.api.predict import _parse_large
from service.schemas.predict import PredictRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import write_section  # noqa: E402


def longest_gap_ms(parse, raw: bytes) -> tuple[float, float]:
    """-> (longest gap between main-thread ticks, the parse's wall time), in ms."""
    done = threading.Event()
    took = []

    def work():
        start = time.perf_counter()
        parse(raw)
        took.append(time.perf_counter() - start)
        done.set()

    worker = threading.Thread(target=work)
    last, longest = time.perf_counter(), 0.0
    worker.start()
    while not done.is_set():
        time.sleep(0.001)
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    worker.join()
    return longest * 1e3, took[0] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write the section into docs/benchmarks.md")
    args = parser.parse_args()
    # As the gateway does after start-up (KANSERVE_GC_FREEZE): full collections then walk
    # only what the parse allocates, not every object the imports made.
    gc.collect()
    gc.freeze()
    raw = orjson.dumps({"inputs": [[0.123456, -0.5]] * args.rows})
    parsers = {"pydantic, whole body (model_validate_json)": PredictRequest.model_validate_json,
               "orjson, then slices of values (_parse_large)": _parse_large}
    results = {name: [longest_gap_ms(parse, raw) for _ in range(args.repeats)] for name, parse in parsers.items()}
    lines = [
        "## Large predict bodies: how long the parse holds the event loop",
        "",
        f"Command: `OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/body_parse_stall.py --rows {args.rows} --write` "
        f"(a {len(raw) / 1e6:.0f} MB body of {args.rows} two-value rows parsed on a worker thread while the main "
        "thread ticks a 1 ms sleep loop; gc frozen first, as the gateway does; median of "
        f"{args.repeats} runs). Any parse of the whole document holds the GIL while orjson reads it; "
        "validating the values in slices afterwards lets the loop run between slices.",
        "",
        "| parse | longest gap of the main thread, ms | parse wall time, ms |",
        "|---|---:|---:|",
    ]
    for name, runs in results.items():
        gap = statistics.median(run[0] for run in runs)
        wall = statistics.median(run[1] for run in runs)
        lines.append(f"| {name} | {gap:.0f} | {wall:.0f} |")
    section = "\n".join(lines)
    print(section)
    if args.write:
        write_section(section)


if __name__ == "__main__":
    main()
