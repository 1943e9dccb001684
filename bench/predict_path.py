"""Where a single-row prediction's server CPU goes, measured in-process.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/predict_path.py [--write]

Complements bench/serving.py (which goes over HTTP): here the gateway app is called
directly as an ASGI application on one uvloop event loop, so no HTTP parsing, socket
or load generator is involved, and each figure is the minimum over repeated blocks of
calls of the process's CPU time per call (the minimum is the figure that other load
on this shared machine disturbs least). Rows:
- no-op route: the same no-op POST route as bench/serving.py (reads the body,
  answers a constant), the floor of the web stack in this app;
- predict: the real single-row predict route of the [2,5,1] and [14,64,32,2] models
  (default settings), and with every onnxruntime call on the pool (INLINE_MAX_US=0);
- graph run alone: OnnxPredictor.run on the same thread, one call between two
  requests (so with caches as cold as in the app), for the part of predict's cost
  that is onnxruntime itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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


async def measure(app, key: str, blocks: int, calls: int) -> dict[str, float]:
    """-> {row label: min CPU microseconds per call}"""
    targets = {"no-op route": _asgi_call(app, "/bench/noop", b'{"inputs": [[0.5, -0.25]]}', key)}
    for name in BODIES:
        targets[f"{name} predict"] = _asgi_call(app, f"/v1/models/{name}/predict",
                                                json.dumps(BODIES[name]).encode(), key)
    for call in targets.values():  # warm: sessions loaded, run costs measured
        for _ in range(50):
            await call()
    runtime = app.state.inference
    graphs = {}
    for name in BODIES:
        served, predictor, _ = runtime.recent(key, name, None, "spline")
        x = np.asarray(BODIES[name]["inputs"], dtype=np.float32)
        graphs[f"{name} graph run alone"] = (predictor, x)
    best: dict[str, float] = {}
    noop = targets["no-op route"]
    for _ in range(blocks):
        for label, call in targets.items():  # interleaved, so load hits them alike
            start = time.process_time()
            for _ in range(calls):
                await call()
            best[label] = min(best.get(label, 1e9), 1e6 * (time.process_time() - start) / calls)
        for label, (predictor, x) in graphs.items():
            spent = 0.0
            for _ in range(calls):
                await noop()  # the app's code runs between two graph calls, as it does when serving
                start = time.thread_time()
                predictor.run(x)
                spent += time.thread_time() - start
            best[label] = min(best.get(label, 1e9), 1e6 * spent / calls)
    return best


def run_app(inline_max_us: int, url: str, workdir: Path, key: str, blocks: int, calls: int) -> dict[str, float]:
    import uvloop

    os.environ.update(KANSERVE_DATABASE_URL=url, KANSERVE_DATA_DIR=str(workdir), KANSERVE_BATCHING="true",
                      KANSERVE_INLINE_MAX_US=str(inline_max_us))
    from service.config import get_settings
    get_settings.cache_clear()
    app = bench_app()

    async def main():
        async with app.router.lifespan_context(app):
            return await measure(app, key, blocks, calls)
    return uvloop.run(main())


def markdown(default: dict[str, float], pool: dict[str, float], command: str) -> str:
    noop = default["no-op route"]
    lines = [SECTION, "", f"Command: `{command}` (the app called in-process as an ASGI application on one "
             "uvloop loop: no HTTP, no sockets; minimum over interleaved blocks of the process CPU time "
             "per call).", "",
             "| row | CPU us per call | above the no-op route |", "|---|---:|---:|",
             f"| no-op route | {noop:.0f} | |"]
    for name, title in (("small", "[2,5,1]"), ("big", "[14,64,32,2]")):
        lines.append(f"| {title} predict, 1 row | {default[f'{name} predict']:.0f} | "
                     f"+{default[f'{name} predict'] - noop:.0f} |")
        lines.append(f"| {title} predict, 1 row, every call on the pool | {pool[f'{name} predict']:.0f} | "
                     f"+{pool[f'{name} predict'] - noop:.0f} |")
        lines.append(f"| {title} graph run alone (OnnxPredictor.run) | {default[f'{name} graph run alone']:.0f} | |")
    small_extra = default["small predict"] - noop
    lines += ["", f"- Over HTTP (section Serving), the 1-client p50 target of 1.5x the no-op route leaves "
              f"a prediction about half the no-op route's own latency; in-process the no-op route costs "
              f"{noop:.0f} us of CPU, while the [2,5,1] graph run alone costs "
              f"{default['small graph run alone']:.0f} us and a whole prediction {small_extra:.0f} us more "
              f"than the no-op route.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--write", action="store_true", help="write the section into docs/benchmarks.md")
    parser.add_argument("--inline-max-us", type=int, default=None, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--db", nargs=3, default=None, help=argparse.SUPPRESS)  # child mode: url workdir key
    args = parser.parse_args()
    if args.db:  # one app configuration per process: settings are read once per process
        url, workdir, key = args.db
        print(json.dumps(run_app(args.inline_max_us, url, Path(workdir), key, args.blocks, args.calls)))
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
                              str(inline), "--blocks", str(args.blocks), "--calls", str(args.calls)],
                             check=True, capture_output=True, text=True).stdout
        results[label] = json.loads(out.strip().splitlines()[-1])
        print(label, results[label], flush=True)
    command = "OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/predict_path.py " + " ".join(sys.argv[1:])
    text = markdown(results["default"], results["pool"], command.strip())
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
