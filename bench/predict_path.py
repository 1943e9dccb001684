"""Where a single-row prediction's server time goes, measured in-process.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/predict_path.py [--write]

Complements bench/serving.py (which goes over HTTP): here the gateway app is called
directly as an ASGI application on one uvloop event loop, so no HTTP parsing, socket
or load generator is involved. Two figures per row:
- warm: the minimum over repeated blocks of back-to-back calls of the process's CPU
  time per call (the figure that other load on this shared machine disturbs least);
- after idle: the median wall time of a call made after the process slept (200 us
  by default), as the server sleeps in epoll between one client's requests. On this
  machine's virtual CPUs a call just after a sleep runs several times slower, the
  more so the more code and data it touches, so this is the column that the 1-client
  latency target of bench/serving.py depends on.
Rows:
- no-op route: the same no-op POST route as bench/serving.py (reads the body,
  answers a constant), the floor of the web stack in this app;
- predict: the real single-row predict route of the [2,5,1] and [14,64,32,2] models
  (default settings), and with every onnxruntime call on the pool (INLINE_MAX_US=0);
- graph run alone: OnnxPredictor.run on the same thread, one call after a no-op
  request (so with caches as cold as in the app; after idle: the process slept, then
  answered the no-op request, then ran the graph), timed alone (its thread CPU time
  in the warm column, its wall time after idle), for the part of predict's cost
  that is onnxruntime itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import write_section  # noqa: E402
from serving import bench_app, prepare_database  # noqa: E402

SECTION = "## Serving: where a prediction's CPU goes"
BODIES = {"small": {"inputs": [[0.5, -0.25]]}, "big": {"inputs": [[0.1] * 14]}}


def _asgi_call(app, path: str, body: bytes, key: str):
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {},
             "headers": [(b"content-type", b"application/json"), (b"authorization", f"Bearer {key}".encode()),
                         (b"content-length", str(len(body)).encode())]}
    status = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    async def call():
        await app(scope, receive, send)
        if status.pop() != 200:
            raise RuntimeError(f"{path} did not answer 200")
    return call


async def measure(app, key: str, blocks: int, calls: int, idle_us: int) -> dict[str, dict[str, float]]:
    """-> {"warm": {row label: min CPU us per call}, "idle": {row label: median wall us
    of a call made after the loop slept idle_us}}.

    Every call is followed by one turn of the loop (as between two HTTP requests; the
    batcher's turn bookkeeping runs there). "idle" is the case of one client over
    HTTP: the server sleeps in epoll between requests, and on this machine's virtual
    CPUs everything runs several times slower just after such a sleep (caches,
    clocks), more so the more code and data a call touches."""
    targets = {"no-op route": _asgi_call(app, "/bench/noop", b'{"inputs": [[0.5, -0.25]]}', key)}
    for name in BODIES:
        targets[f"{name} predict"] = _asgi_call(app, f"/v1/models/{name}/predict",
                                                json.dumps(BODIES[name]).encode(), key)
    for call in targets.values():  # warm: sessions loaded, run costs measured
        for _ in range(50):
            await call()
            await asyncio.sleep(0)
    runtime = app.state.inference
    noop = targets["no-op route"]
    for name in BODIES:
        served, predictor, _ = runtime.recent(key, name, None, "spline")
        x = np.asarray(BODIES[name]["inputs"], dtype=np.float32)

        async def graph_alone(predictor=predictor, x=x):
            # The app's code runs before the graph call, as it does when serving; only
            # the graph call is timed: -> (thread CPU ns, wall ns).
            await noop()
            cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
            predictor.run(x)
            return time.thread_time_ns() - cpu, time.perf_counter_ns() - wall
        targets[f"{name} graph run alone"] = graph_alone
    warm: dict[str, float] = {}
    idle: dict[str, list[float]] = {label: [] for label in targets}
    for _ in range(blocks):
        for label, call in targets.items():  # interleaved, so load hits them alike
            alone = label.endswith("graph run alone")
            spent, start = 0, time.process_time_ns()
            for _ in range(calls):
                ran = await call()
                spent += ran[0] if alone else 0
                await asyncio.sleep(0)
            per_call = (spent if alone else time.process_time_ns() - start) / calls / 1e3
            warm[label] = min(warm.get(label, 1e9), per_call)
            for _ in range(calls // 4):
                time.sleep(idle_us / 1e6)
                start = time.perf_counter_ns()
                ran = await call()
                idle[label].append((ran[1] if alone else time.perf_counter_ns() - start) / 1e3)
                await asyncio.sleep(0)
    return {"warm": warm, "idle": {label: statistics.median(values) for label, values in idle.items()}}


def run_app(inline_max_us: int, url: str, workdir: Path, key: str, blocks: int, calls: int,
            idle_us: int) -> dict[str, dict[str, float]]:
    import uvloop

    os.environ.update(KANSERVE_DATABASE_URL=url, KANSERVE_DATA_DIR=str(workdir), KANSERVE_BATCHING="true",
                      KANSERVE_INLINE_MAX_US=str(inline_max_us))
    from service.config import get_settings
    get_settings.cache_clear()
    app = bench_app()

    async def main():
        async with app.router.lifespan_context(app):
            return await measure(app, key, blocks, calls, idle_us)
    return uvloop.run(main())


def markdown(default: dict, pool: dict, command: str, idle_us: int) -> str:
    warm, idle = default["warm"], default["idle"]
    lines = [SECTION, "", f"Command: `{command}` (the app called in-process as an ASGI application on one "
             "uvloop loop: no HTTP, no sockets; one turn of the loop after each call. Warm: minimum over "
             "interleaved blocks of back-to-back calls of the process CPU time per call. After idle: "
             f"median wall time of a call made after the process slept {idle_us} us, as a server does "
             "between one client's requests).", "",
             "| row | warm: CPU us per call | above the no-op route | after idle: us per call | above the no-op route |",
             "|---|---:|---:|---:|---:|",
             f"| no-op route | {warm['no-op route']:.0f} | | {idle['no-op route']:.0f} | |"]

    def row(title: str, result: dict, label: str) -> str:
        w, i = result["warm"][label], result["idle"][label]
        return (f"| {title} | {w:.0f} | +{w - warm['no-op route']:.0f} | {i:.0f} | "
                f"+{i - idle['no-op route']:.0f} |")
    for name, title in (("small", "[2,5,1]"), ("big", "[14,64,32,2]")):
        lines.append(row(f"{title} predict, 1 row", default, f"{name} predict"))
        lines.append(row(f"{title} predict, 1 row, every call on the pool", pool, f"{name} predict"))
        w, i = warm[f"{name} graph run alone"], idle[f"{name} graph run alone"]
        lines.append(f"| {title} graph run alone (OnnxPredictor.run) | {w:.0f} | | {i:.0f} | |")
    lines += ["", f"- Over HTTP (section Serving) one client's requests meet a server that was idle, so the "
              f"after-idle column is the one the 1-client p50 target depends on: there the [2,5,1] "
              f"prediction costs {idle['small predict'] - idle['no-op route']:.0f} us more than the no-op "
              f"route, of which the graph run is {idle['small graph run alone']:.0f} us.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--idle-us", type=int, default=200, help="sleep before each after-idle call")
    parser.add_argument("--write", action="store_true", help="write the section into docs/benchmarks.md")
    parser.add_argument("--inline-max-us", type=int, default=None, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--db", nargs=3, default=None, help=argparse.SUPPRESS)  # child mode: url workdir key
    args = parser.parse_args()
    if args.db:  # one app configuration per process: settings are read once per process
        url, workdir, key = args.db
        print(json.dumps(run_app(args.inline_max_us, url, Path(workdir), key, args.blocks, args.calls,
                                 args.idle_us)))
        return
    import subprocess
    workdir = Path(tempfile.mkdtemp(prefix="kanserve-path-"))
    url, key = prepare_database(workdir)
    results = {}
    for label, inline in (("default", None), ("pool", 0)):
        if inline is None:
            from service.inference.settings import ServingSettings
            inline = ServingSettings().inline_max_us
        out = subprocess.run([sys.executable, __file__, "--db", url, str(workdir), key, "--inline-max-us",
                              str(inline), "--blocks", str(args.blocks), "--calls", str(args.calls),
                              "--idle-us", str(args.idle_us)],
                             check=True, capture_output=True, text=True).stdout
        results[label] = json.loads(out.strip().splitlines()[-1])
        print(label, results[label], flush=True)
    command = "OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/predict_path.py " + " ".join(sys.argv[1:])
    text = markdown(results["default"], results["pool"], command.strip(), args.idle_us)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
