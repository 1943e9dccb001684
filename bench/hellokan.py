"""hellokan: wall time of kanmodel and PyKAN 0.2.8 to test RMSE 1e-3, timed in the same run.

Usage (from the repository root):
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/hellokan.py --write-docs

f(x, y) = exp(sin(pi x) + y^2), width [2, 5, 1], grid schedule [3, 5, 10, 20], LBFGS,
1 thread. PyKAN runs in the benchmark venv .bench-venv (bench/pykan_worker.py, driven
over a pipe by kan_layer.PyKANWorker).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from docs_section import DOCS, write_section  # noqa: E402
from kan_layer import PyKANWorker  # noqa: E402

import kanmodel  # noqa: E402

GRIDS = [3, 5, 10, 20]


def hellokan_ours(grids, steps, target, threads, n_train):
    """Seconds of fit() until the test RMSE (checked every 10 steps) reaches target."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    x_train = torch.rand(n_train, 2, generator=generator) * 2 - 1
    x_test = torch.rand(1000, 2, generator=generator) * 2 - 1

    def f(x):
        return torch.exp(torch.sin(math.pi * x[:, 0]) + x[:, 1] ** 2)

    model = kanmodel.KAN([2, 5, 1], grid=grids[0], k=3, grid_eps=1.0, seed=0)
    reached = {}
    checking = [0.0]
    start = time.perf_counter()

    def callback(progress):
        if progress.step % 10:
            return False
        begin = time.perf_counter()
        with torch.no_grad():
            rmse = float(((model(x_test)[:, 0] - f(x_test)) ** 2).mean().sqrt())
        checking[0] += time.perf_counter() - begin
        if rmse <= target:
            reached.update(grid=progress.grid, step=progress.step, test_rmse=rmse)
            return True
        return False

    kanmodel.fit(model, x_train, f(x_train), grid_schedule=grids, steps_per_grid=steps,
                 val_fraction=0.0, callback=callback)
    seconds = time.perf_counter() - start - checking[0]
    if not reached:
        with torch.no_grad():
            reached["final_test_rmse"] = float(((model(x_test)[:, 0] - f(x_test)) ** 2).mean().sqrt())
    return {"seconds": seconds, "n_train": n_train, **reached}


HELLOKAN_NOTES = """Notes: PyKAN is ahead per grid size (its grid-5 stage is already near 1e-3); kanmodel
gets there on the finer grids because each of its LBFGS steps is cheaper. grid_eps=1.0
(uniform knots) because it generalised better here than the default 0.02. The result
depends on the training-set size and the seed: on the same code, with 1000 training
rows seed 0 ended at 1.80e-3 without reaching 1e-3 (PyKAN: 8.3e-4 at grid 5 in 22.5 s),
and with 3000 rows seeds 0, 1, 2 ended at 5.9e-4, 4.4e-4 and 3.6e-3 (tests/test_training.py
generator). The main cause found: the spline term clamps its input at the grid edge, so
hidden activations that drift past the next layer's grid get a kink and no gradient;
continuing the boundary polynomial instead fixed the worst seed but made off-grid
values grow as a power of k per layer, so it was not merged."""


def format_hellokan_section(ours, theirs, command):
    lines = [f"Command: `{command}`", "",
             f"exp(sin(pi x) + y^2), {ours.get('n_train', 1000)} train / 1000 test rows, width [2, 5, 1], grid schedule "
             "[3, 5, 10, 20], LBFGS, 1 thread. kanmodel: grid_eps=1.0, 400 steps per grid, test "
             "RMSE checked every 10 steps (checking time excluded). PyKAN 0.2.8: its own recipe (refine, then fit 100 LBFGS "
             "steps per grid), checked at the end of each stage.", "",
             "| implementation | wall time to test RMSE <= 1e-3 | reached at |", "|---|---|---|"]
    where = (f"grid {ours['grid']}, step {ours['step']}, RMSE {ours['test_rmse']:.2e}"
             if "grid" in ours else f"not reached (final RMSE {ours['final_test_rmse']:.2e})")
    lines.append(f"| kanmodel | {ours['seconds']:.1f} s | {where} |")
    if "stages" in theirs:
        last = theirs["stages"][-1]
        status = "reached" if last["test_rmse"] <= 1e-3 else "not reached"
        lines.append(f"| PyKAN 0.2.8 | {last['seconds']:.1f} s | {status}: grid {last['grid']}, "
                     f"RMSE {last['test_rmse']:.2e} |")
        lines += ["", "PyKAN per stage: " + ", ".join(
            f"grid {s['grid']}: RMSE {s['test_rmse']:.2e} at {s['seconds']:.1f} s" for s in theirs["stages"])]
        if last["test_rmse"] <= 1e-3 and "grid" in ours:
            lines.append(f"\nkanmodel is {last['seconds'] / ours['seconds']:.1f}x faster to 1e-3.")
    else:
        lines.append(f"| PyKAN 0.2.8 | failed: {theirs.get('error')} | |")
    lines += ["", HELLOKAN_NOTES]
    return "\n".join(lines) + "\n"


def run(train_rows, pykan):
    """Both sides in this process's run; returns the section body."""
    ours = hellokan_ours(GRIDS, steps=400, target=1e-3, threads=1, n_train=train_rows)
    print(json.dumps({"hellokan_kanmodel": ours}), flush=True)
    theirs = pykan.ask(cmd="hellokan", grids=GRIDS, steps=100, target=1e-3, threads=1, n_train=train_rows)
    print(json.dumps({"hellokan_pykan": theirs}), flush=True)
    return ours, theirs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=3000,
                        help="training rows (3000 as in tests/test_training.py)")
    parser.add_argument("--write-docs", action="store_true", help=f"write the section into {DOCS}")
    args = parser.parse_args()
    command = "OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/hellokan.py " + " ".join(sys.argv[1:])
    pykan = PyKANWorker()
    try:
        ours, theirs = run(args.train_rows, pykan)
    finally:
        pykan.close()
    section = "## hellokan\n\n" + format_hellokan_section(ours, theirs, command.strip())
    print(section)
    if args.write_docs:
        write_section(section)


if __name__ == "__main__":
    main()
