"""PyKAN 0.2.8 side of bench/kan_layer.py, run inside the benchmark venv (.bench-venv).

Reads one JSON command per line on stdin and answers one JSON line on stdout, so the
main benchmark can interleave PyKAN's timings with its own in another process:
  {"cmd": "setup", "width": [...], "grid": 5, "k": 3, "batch": 1000, "seed": 0}
  {"cmd": "time", "mode": "forward" | "forward_backward", "threads": 2}
  {"cmd": "memory", "mode": ...}
  {"cmd": "hellokan", "grids": [3, 5, 10, 20], "steps": 100, "target": 1e-3, "threads": 1,
   "n_train": 3000, "seed": 0}
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import forward_backward_call, forward_call, peak_memory, time_block  # noqa: E402

from kan import KAN  # noqa: E402

state = {}


def setup(command):
    torch.manual_seed(command["seed"])
    model = KAN(width=list(command["width"]), grid=command["grid"], k=command["k"], seed=command["seed"],
                auto_save=False, ckpt_path=tempfile.mkdtemp(prefix="pykan-"))
    state["model"] = model.speed()
    state["x"] = torch.rand(command["batch"], command["width"][0]) * 2 - 1
    return {"params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def call(mode):
    make = forward_call if mode == "forward" else forward_backward_call
    return make(state["model"], state["x"])


def hellokan(command):
    """Wall time of PyKAN's own grid-extension recipe until test RMSE <= target.
    The data (and bench/hellokan.py's) come from one generator seeded with seed:
    n_train training rows, then 1000 test rows."""
    torch.set_num_threads(command["threads"])
    seed = command.get("seed", 0)
    # The first optimizer a process builds imports torch._dynamo (~1.5 s); kanmodel's
    # side warms up the same way, so neither timing includes it.
    torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])
    generator = torch.Generator().manual_seed(seed)
    x_train = torch.rand(command.get("n_train", 1000), 2, generator=generator) * 2 - 1
    x_test = torch.rand(1000, 2, generator=generator) * 2 - 1

    def f(x):
        return torch.exp(torch.sin(math.pi * x[:, 0]) + x[:, 1] ** 2)[:, None]

    dataset = {"train_input": x_train, "train_label": f(x_train),
               "test_input": x_test, "test_label": f(x_test)}
    stages = []
    start, cpu_start = time.perf_counter(), time.process_time()
    model = KAN(width=[2, 5, 1], grid=command["grids"][0], k=3, seed=seed, auto_save=False,
                ckpt_path=tempfile.mkdtemp(prefix="pykan-"))
    for index, grid in enumerate(command["grids"]):
        if index:
            model = model.refine(grid)
        model.fit(dataset, opt="LBFGS", steps=command["steps"], log=10 ** 9)
        with torch.no_grad():
            rmse = float(((model(x_test) - f(x_test)) ** 2).mean().sqrt())
        stages.append({"grid": grid, "test_rmse": rmse, "seconds": time.perf_counter() - start,
                       "cpu_seconds": time.process_time() - cpu_start})
        if rmse <= command["target"]:
            break
    return {"stages": stages}


def main():
    # PyKAN prints progress (and rewrites the width list it is given in place);
    # keep the protocol channel clean.
    replies, sys.stdout = sys.stdout, sys.stderr
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["cmd"] == "setup":
                reply = setup(command)
            elif command["cmd"] == "time":
                torch.set_num_threads(command["threads"])
                reply = {"seconds": time_block(call(command["mode"]))}
            elif command["cmd"] == "memory":
                reply = {"bytes": peak_memory(call(command["mode"]))}
            elif command["cmd"] == "hellokan":
                reply = hellokan(command)
            else:
                reply = {"error": f"unknown command {command['cmd']!r}"}
        except Exception as error:  # report, keep serving: the caller records the failure
            reply = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(reply), file=replies, flush=True)


if __name__ == "__main__":
    main()
