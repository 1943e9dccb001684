"""hellokan: wall time of kanmodel and PyKAN 0.2.8 to test RMSE 1e-3, timed in the same run.

Usage (from the repository root):
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/hellokan.py --write-docs

f(x, y) = exp(sin(pi x) + y^2) on [-1, 1]^2, width [2, 5, 1], grid schedule [3, 5, 10, 20],
LBFGS, 1 thread. Each run draws n training rows and then 1000 test rows from one
generator seeded with the run's seed (which also seeds the model).
- Speed: kanmodel (seed 0) and PyKAN (seed 0, its own recipe) alternate --repeats times,
  so load on the shared machine hits both alike; each pair gives a ratio.
- Robustness: kanmodel's documented recipe for every seed x training size, to the end
  of the schedule: final test RMSE, time to 1e-3, time of the whole recipe.
PyKAN runs in the benchmark venv .bench-venv (bench/pykan_worker.py, driven over a pipe
by kan_layer.PyKANWorker).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from docs_section import DOCS, write_section  # noqa: E402
from kan_layer import PyKANWorker  # noqa: E402

import kanmodel  # noqa: E402

GRIDS = [3, 5, 10, 20]
STEPS_PER_GRID = 400
PYKAN_STEPS = 100
TARGET = 1e-3


def hellokan_data(n_train, seed):
    generator = torch.Generator().manual_seed(seed)
    x_train = torch.rand(n_train, 2, generator=generator) * 2 - 1
    x_test = torch.rand(1000, 2, generator=generator) * 2 - 1
    return x_train, x_test


def target_function(x):
    return torch.exp(torch.sin(math.pi * x[:, 0]) + x[:, 1] ** 2)


def hellokan_ours(n_train, seed, stop_at_target):
    """fit() with the documented recipe (tests/test_training.py). The test RMSE is checked
    every 10 steps; checking time is excluded. Returns seconds to TARGET (None if not
    reached), seconds of the whole recipe (unless stopped at the target), final RMSE."""
    x_train, x_test = hellokan_data(n_train, seed)
    y_test = target_function(x_test)
    model = kanmodel.KAN([2, 5, 1], grid=GRIDS[0], k=3, grid_eps=1.0, seed=seed)
    reached = {}
    checking = [0.0]

    def test_rmse():
        with torch.no_grad():
            return float(((model(x_test)[:, 0] - y_test) ** 2).mean().sqrt())

    def callback(progress):
        if progress.step % 10 or reached:
            return False
        begin = time.perf_counter()
        rmse = test_rmse()
        if rmse <= TARGET:
            reached.update(seconds_to_target=begin - start - checking[0], grid=progress.grid,
                           step=progress.step, rmse_at_target=rmse)
        checking[0] += time.perf_counter() - begin
        return stop_at_target and bool(reached)

    start = time.perf_counter()
    kanmodel.fit(model, x_train, target_function(x_train), grid_schedule=GRIDS,
                 steps_per_grid=STEPS_PER_GRID, val_fraction=0.0, seed=seed, callback=callback)
    seconds = time.perf_counter() - start - checking[0]
    return {"n_train": n_train, "seed": seed, "seconds_total": None if stop_at_target and reached else seconds,
            "final_test_rmse": test_rmse(), **reached}


def pykan_seconds(theirs):
    """Seconds PyKAN took to TARGET, or None."""
    if "stages" not in theirs:
        return None
    last = theirs["stages"][-1]
    return last["seconds"] if last["test_rmse"] <= TARGET else None


def format_pykan(theirs):
    if "stages" not in theirs:
        return f"failed: {theirs.get('error')}"
    return ", ".join(f"grid {s['grid']}: RMSE {s['test_rmse']:.2e} at {s['seconds']:.1f} s"
                     for s in theirs["stages"])


NOTES = """Notes: the first optimizer a process builds imports torch._dynamo (~1.5 s); both sides
build one before their timer starts. PyKAN is ahead per grid size (its 100 steps per grid
are up to 2000 LBFGS iterations; its grid-5 stage is already near 1e-3); kanmodel gets
there on the finer grids with cheaper iterations. grid_eps=1.0 (uniform knots) is the
recipe's choice: it generalised better here than the library default 0.02.
What made the recipe robust (3000 rows; before: seeds 0-2 of the test's data ended at
5.9e-4, 4.4e-4, 3.6e-3): fit() scales the LBFGS objective to 1 at each optimizer start,
because torch's LBFGS keeps a curvature pair only if y.s > 1e-10, which an MSE of ~1e-7
(standardised units) never passes, so the grid-20 stage fell back to steepest descent and
froze. With 1000 training rows the remaining failures come from test points whose hidden
activations land outside the training activations' range (corners of the square): the
spline of the next layer is clamped there (the layer op's out-of-grid rule) and errors of
1e-2 to 2e-1 on a handful of points dominate the RMSE."""


def format_section(pairs, robustness, pykan_small, command):
    lines = [f"Command: `{command}`", "",
             "exp(sin(pi x) + y^2) on [-1, 1]^2, width [2, 5, 1], grid schedule [3, 5, 10, 20], LBFGS, "
             "1 thread, OMP_WAIT_POLICY=" + os.environ.get("OMP_WAIT_POLICY", "unset") + ". kanmodel: "
             f"fit(grid_eps=1.0, steps_per_grid={STEPS_PER_GRID}, val_fraction=0), test RMSE checked every "
             "10 steps (checking time excluded). PyKAN 0.2.8: its own recipe (refine, then "
             f"fit {PYKAN_STEPS} LBFGS steps per grid), checked at the end of each stage. "
             "Training rows and 1000 test rows from one generator seeded with the seed; the seed "
             "also seeds the model.", "",
             f"### Time to test RMSE <= 1e-3 (seed 0, {pairs[0]['ours']['n_train']} training rows; "
             "kanmodel and PyKAN alternate)", "",
             "| pair | kanmodel | reached at | PyKAN 0.2.8 | PyKAN per stage | ratio |", "|---|---|---|---|---|---|"]
    ratios = []
    for index, pair in enumerate(pairs, 1):
        ours, theirs = pair["ours"], pair["theirs"]
        mine = ours.get("seconds_to_target")
        where = (f"grid {ours['grid']}, step {ours['step']}" if mine is not None
                 else f"not reached (final {ours['final_test_rmse']:.2e})")
        their_seconds = pykan_seconds(theirs)
        ratio = their_seconds / mine if mine and their_seconds else None
        if ratio:
            ratios.append(ratio)
        lines.append(f"| {index} | {mine:.2f} s | {where} | "
                     + (f"{their_seconds:.1f} s" if their_seconds else "not reached") + f" | {format_pykan(theirs)} | "
                     + (f"{ratio:.1f}x" if ratio else "n/a") + " |" if mine is not None else
                     f"| {index} | not reached | {where} | | {format_pykan(theirs)} | n/a |")
    if ratios:
        lines += ["", f"kanmodel is {statistics.median(ratios):.1f}x faster to 1e-3 (median of "
                  f"{len(ratios)} pairs; range {min(ratios):.1f}x-{max(ratios):.1f}x; target >= 10x: "
                  f"{'met' if min(ratios) >= 10 else 'missed'})."]
    if pykan_small is not None:
        lines += ["", f"PyKAN with {pykan_small['n_train']} training rows, seed 0: {format_pykan(pykan_small['theirs'])}."]
    sizes = sorted({r["n_train"] for r in robustness})
    seeds = sorted({r["seed"] for r in robustness})
    lines += ["", "### Robustness: the recipe for every seed and training size (kanmodel, to the end)", "",
              "Cell: final test RMSE / seconds to 1e-3 (- = not reached) / seconds of the whole recipe.", "",
              "| seed | " + " | ".join(f"{n} rows" for n in sizes) + " |",
              "|---|" + "---|" * len(sizes)]
    by_key = {(r["n_train"], r["seed"]): r for r in robustness}
    for seed in seeds:
        cells = []
        for n in sizes:
            r = by_key[(n, seed)]
            to_target = f"{r['seconds_to_target']:.1f} s" if "seconds_to_target" in r else "-"
            cells.append(f"{r['final_test_rmse']:.1e} / {to_target} / {r['seconds_total']:.1f} s")
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    lines.append("")
    for n in sizes:
        runs = [by_key[(n, s)] for s in seeds]
        hits = sum(r["final_test_rmse"] <= TARGET for r in runs)
        worst = max(r["final_test_rmse"] for r in runs)
        lines.append(f"- {n} rows: {hits}/{len(runs)} seeds end <= 1e-3 (worst {worst:.1e}).")
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=3000,
                        help="training rows of the timed pairs (3000 as in tests/test_training.py)")
    parser.add_argument("--repeats", type=int, default=2, help="kanmodel/PyKAN pairs")
    parser.add_argument("--seeds", type=int, default=10, help="robustness: seeds 0 .. seeds - 1")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000], help="robustness: training rows")
    parser.add_argument("--pykan-small", type=int, default=1000,
                        help="also time PyKAN once with this many training rows (0: skip)")
    parser.add_argument("--write-docs", action="store_true", help=f"write the section into {DOCS}")
    args = parser.parse_args()
    command = ("OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/hellokan.py " + " ".join(sys.argv[1:])).strip()
    torch.set_num_threads(1)
    torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])   # see NOTES: imports torch._dynamo
    pykan = PyKANWorker()
    pairs, robustness, pykan_small = [], [], None
    try:
        for _ in range(args.repeats):
            ours = hellokan_ours(args.train_rows, 0, stop_at_target=True)
            print(json.dumps({"kanmodel": ours}), flush=True)
            theirs = pykan.ask(cmd="hellokan", grids=GRIDS, steps=PYKAN_STEPS, target=TARGET, threads=1,
                               n_train=args.train_rows, seed=0)
            print(json.dumps({"pykan": theirs}), flush=True)
            pairs.append({"ours": ours, "theirs": theirs})
        if args.pykan_small:
            theirs = pykan.ask(cmd="hellokan", grids=GRIDS, steps=PYKAN_STEPS, target=TARGET, threads=1,
                               n_train=args.pykan_small, seed=0)
            print(json.dumps({"pykan_small": theirs}), flush=True)
            pykan_small = {"n_train": args.pykan_small, "theirs": theirs}
    finally:
        pykan.close()
    for n in args.sizes:
        for seed in range(args.seeds):
            run = hellokan_ours(n, seed, stop_at_target=False)
            print(json.dumps({"robustness": run}), flush=True)
            robustness.append(run)
    section = "## hellokan\n\n" + format_section(pairs, robustness, pykan_small, command)
    print(section)
    if args.write_docs:
        write_section(section)


if __name__ == "__main__":
    main()
