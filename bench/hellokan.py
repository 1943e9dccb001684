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
from docs_section import add_docs_arguments, run_command, write_section  # noqa: E402
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
    checking = {"wall": 0.0, "cpu": 0.0}

    def test_rmse():
        with torch.no_grad():
            return float(((model(x_test)[:, 0] - y_test) ** 2).mean().sqrt())

    def callback(progress):
        if progress.step % 10 or reached:
            return False
        begin, cpu_begin = time.perf_counter(), time.process_time()
        rmse = test_rmse()
        if rmse <= TARGET:
            reached.update(seconds_to_target=begin - start - checking["wall"],
                           cpu_seconds_to_target=cpu_begin - cpu_start - checking["cpu"],
                           grid=progress.grid, step=progress.step, rmse_at_target=rmse)
        checking["wall"] += time.perf_counter() - begin
        checking["cpu"] += time.process_time() - cpu_begin
        return stop_at_target and bool(reached)

    start, cpu_start = time.perf_counter(), time.process_time()
    kanmodel.fit(model, x_train, target_function(x_train), grid_schedule=GRIDS,
                 steps_per_grid=STEPS_PER_GRID, val_fraction=0.0, seed=seed, callback=callback)
    seconds = time.perf_counter() - start - checking["wall"]
    return {"n_train": n_train, "seed": seed, "seconds_total": None if stop_at_target and reached else seconds,
            "final_test_rmse": test_rmse(), **reached}


def pykan_at_target(theirs):
    """(wall seconds, CPU seconds) PyKAN took to TARGET, or None."""
    if "stages" not in theirs or theirs["stages"][-1]["test_rmse"] > TARGET:
        return None
    last = theirs["stages"][-1]
    return last["seconds"], last.get("cpu_seconds")


def format_pykan(theirs):
    if "stages" not in theirs:
        return f"failed: {theirs.get('error')}"
    return ", ".join(f"grid {s['grid']}: RMSE {s['test_rmse']:.2e} at {s['seconds']:.1f} s"
                     for s in theirs["stages"])


NOTES = """Notes: the first optimizer a process builds imports torch._dynamo (~1.5 s); both sides
build one before their timer starts. PyKAN is ahead per grid size (its 100 steps per grid
are up to 2000 LBFGS iterations; its grid-5 stage is already near 1e-3); kanmodel gets
there on the finer grids with many more, much cheaper iterations.
What fit() does for this (kanmodel/training.py, kanmodel/lbfgs.py, kanmodel/grid.py):
- the LBFGS objective is scaled to 1 at each optimizer start: LBFGS keeps a curvature
  pair only if y.s > 1e-10, which an MSE of ~1e-7 (standardised units) never passes, so
  the grid-20 stage fell back to steepest descent and froze (before: seeds 0-2 of the
  test's data ended at 5.9e-4, 4.4e-4, 3.6e-3 with 3000 rows);
- update_grid gives the grids of hidden layers a 3% margin around their inputs' range:
  test points whose hidden activations fell past the training activations were clamped
  (1000 rows, seeds 0-3: 0.7-6e-3 without it, 9.8e-4-1.4e-3 with 10%, <= 7.2e-4 with 3%;
  the same margin on the input layer made 3000 rows reach 1e-3 later, only at grid 20);
- one objective evaluation per LBFGS step instead of two (the step's opening call is
  answered from the line search's last evaluation), and the two-loop recursion as two
  small triangular solves (history 50 was ~400 vector operations per step).
grid_eps=1.0 (uniform knots) is the recipe's choice; measured with this code at 0.02:
3000 rows seeds 0-3 reached 1e-3 too but later (adaptive knots take the slower de Boor
path), 1000 rows seed 2 ended at 8.3e-3. The library default stays 0.02 (PyKAN's).
Failures with 1000 rows come from a few test points at the edges of the square. In the
run analysed here (session 2, before the compiled kernels, which round differently, so the
failing seeds move) seeds 3, 6 and 7 failed with train RMSE 1.5-4.3e-4. Seeds 3 and 6: the 2 and 6 test
rows whose inputs lie just past the training rows' range (where the input layer's spline
is clamped, the layer op's out-of-grid rule) have RMSE 2.2e-2 and 2.0e-2; the other rows
3.0e-4 and 3.7e-4. Seed 7: the worst points are near the corner (-1, 1), inside every
grid, where the outer spline is fitted from few rows (RMSE without the 10 worst rows:
6.9e-4). A margin of range / (n - 1) on the input grid (the unbiased estimate of a
uniform distribution's support) did not help: 7/10 again, other seeds failing."""


def format_section(pairs, robustness, pykan_small, command):
    lines = [f"Command: `{command}`", "",
             "exp(sin(pi x) + y^2) on [-1, 1]^2, width [2, 5, 1], grid schedule [3, 5, 10, 20], LBFGS, "
             "1 thread, OMP_WAIT_POLICY=" + os.environ.get("OMP_WAIT_POLICY", "unset") + ". kanmodel: "
             f"fit(grid_eps=1.0, steps_per_grid={STEPS_PER_GRID}, val_fraction=0), test RMSE checked every "
             "10 steps (checking time excluded). PyKAN 0.2.8: its own recipe (refine, then "
             f"fit {PYKAN_STEPS} LBFGS steps per grid), checked at the end of each stage. "
             "Training rows and 1000 test rows from one generator seeded with the seed; the seed "
             "also seeds the model. Wall time is what the issue asks for; CPU time (process, 1 "
             "thread) is shown too because other jobs share the 2 cores.", "",
             f"### Time to test RMSE <= 1e-3 (seed 0, {pairs[0]['ours']['n_train']} training rows; "
             "kanmodel and PyKAN alternate)", "",
             "| pair | kanmodel wall (CPU) | reached at | PyKAN 0.2.8 wall (CPU) | ratio wall (CPU) |",
             "|---|---|---|---|---|"]
    wall_ratios, cpu_ratios = [], []
    for index, pair in enumerate(pairs, 1):
        ours, theirs = pair["ours"], pair["theirs"]
        at_target = pykan_at_target(theirs)
        if "seconds_to_target" not in ours:
            lines.append(f"| {index} | not reached (final {ours['final_test_rmse']:.2e}) | | "
                         + (f"{at_target[0]:.1f} s" if at_target else "not reached") + " | n/a |")
            continue
        mine = f"{ours['seconds_to_target']:.2f} s ({ours['cpu_seconds_to_target']:.2f} s)"
        where = f"grid {ours['grid']}, step {ours['step']}"
        if at_target is None:
            lines.append(f"| {index} | {mine} | {where} | not reached | n/a |")
            continue
        wall_ratios.append(at_target[0] / ours["seconds_to_target"])
        cpu_ratios.append(at_target[1] / ours["cpu_seconds_to_target"])
        lines.append(f"| {index} | {mine} | {where} | {at_target[0]:.1f} s ({at_target[1]:.1f} s) | "
                     f"{wall_ratios[-1]:.1f}x ({cpu_ratios[-1]:.1f}x) |")
    lines += ["", "PyKAN per stage: " + "; ".join(f"pair {i}: {format_pykan(p['theirs'])}"
                                                  for i, p in enumerate(pairs, 1))]
    if wall_ratios:
        lines += ["", f"kanmodel is {statistics.median(wall_ratios):.1f}x faster to 1e-3 in wall time (median "
                  f"of {len(wall_ratios)} pairs, range {min(wall_ratios):.1f}x-{max(wall_ratios):.1f}x; "
                  f"CPU time: median {statistics.median(cpu_ratios):.1f}x, range {min(cpu_ratios):.1f}x-"
                  f"{max(cpu_ratios):.1f}x). Target >= 10x: "
                  f"{'met' if statistics.median(wall_ratios) >= 10 else 'missed'} (median wall)."]
    if pykan_small is not None:
        lines += ["", f"PyKAN with {pykan_small['n_train']} training rows, seed 0: {format_pykan(pykan_small['theirs'])}."]
    sizes = sorted({r["n_train"] for r in robustness})
    seeds = sorted({r["seed"] for r in robustness})
    lines += ["", "### Robustness: the recipe for every seed and training size (kanmodel, to the end)", "",
              "Cell: final test RMSE / wall seconds to 1e-3 (- = not reached) / wall seconds of the whole recipe.",
              "", "| seed | " + " | ".join(f"{n} rows" for n in sizes) + " |",
              "|---|" + "---|" * len(sizes)]
    by_key = {(r["n_train"], r["seed"]): r for r in robustness}
    for seed in seeds:
        cells = []
        for n in sizes:
            r = by_key[(n, seed)]
            to_target = f"{r['seconds_to_target']:.1f} s" if "seconds_to_target" in r else "-"
            cells.append(f"{r['final_test_rmse']:.2e} / {to_target} / {r['seconds_total']:.1f} s")
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    lines.append("")
    for n in sizes:
        runs = [by_key[(n, s)] for s in seeds]
        hits = sum(r["final_test_rmse"] <= TARGET for r in runs)
        worst = max(r["final_test_rmse"] for r in runs)
        to_target = [r["seconds_to_target"] for r in runs if "seconds_to_target" in r]
        median = f", median {statistics.median(to_target):.1f} s to 1e-3" if to_target else ""
        lines.append(f"- {n} rows: {hits}/{len(runs)} seeds end <= 1e-3 (worst {worst:.1e}{median}).")
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


def read_log(path):
    """(pairs, robustness, pykan_small) from the JSON lines a run printed."""
    pairs, robustness, pykan_small, ours = [], [], None, None
    for line in open(path):
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if "kanmodel" in record:
            ours = record["kanmodel"]
        elif "pykan" in record:
            pairs.append({"ours": ours, "theirs": record["pykan"]})
        elif "pykan_small" in record:
            # Runs before the n_train field used the default, 1000 rows.
            pykan_small = {"n_train": record.get("n_train", 1000), "theirs": record["pykan_small"]}
        elif "robustness" in record:
            robustness.append(record["robustness"])
    return pairs, robustness, pykan_small


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=3000,
                        help="training rows of the timed pairs (3000 as in tests/test_training.py)")
    parser.add_argument("--repeats", type=int, default=2, help="kanmodel/PyKAN pairs")
    parser.add_argument("--seeds", type=int, default=10, help="robustness: seeds 0 .. seeds - 1")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000], help="robustness: training rows")
    parser.add_argument("--pykan-small", type=int, default=1000,
                        help="also time PyKAN once with this many training rows (0: skip)")
    add_docs_arguments(parser, "section")
    args = parser.parse_args()
    command = run_command(args)
    if args.render:
        pairs, robustness, pykan_small = read_log(args.render)
        section = "## hellokan\n\n" + format_section(pairs, robustness, pykan_small, command)
        print(section)
        if args.write_docs:
            write_section(section)
        return
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
            print(json.dumps({"pykan_small": theirs, "n_train": args.pykan_small}), flush=True)
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
