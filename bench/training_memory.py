"""Peak memory of kanmodel.fit, per spline-basis value of a row and per parameter: the
figures service/jobs/checks.py sizes jobs with (KANSERVE_MAX_TRAINING_MEMORY_GIB).

Each case runs in a fresh process; its peak RSS (ru_maxrss) after fit, less the RSS once
the model and data exist, is divided by the case's basis values (rows x sum over layers
of inputs x (G + k + 1)) or, for the parameter-heavy cases, by the parameter count after
taking off the basis part at the first case's rate.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/training_memory.py [--write-docs]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from docs_section import DOCS, run_command, write_section

K = 3
# (width, grid, rows, optimizer, lamb, steps): row-heavy cases, then parameter-heavy ones
# run past the 50-pair L-BFGS history.
CASES = [
    ([8, 64, 1], 50, 20_000, "lbfgs", 0.0, 3),
    ([8, 64, 1], 50, 20_000, "adam", 0.0, 3),
    ([8, 64, 1], 50, 20_000, "lbfgs", 0.1, 3),
    ([64, 512, 1], 50, 200, "lbfgs", 0.0, 60),
    ([64, 512, 1], 50, 200, "adam", 0.0, 10),
]

CHILD = """
import json, resource, sys
import numpy as np, kanmodel
width, grid, rows, optimizer, lamb, steps = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
X = rng.uniform(-1, 1, (rows, width[0])).astype(np.float32)
y = np.sin(X.sum(1, keepdims=True)).repeat(width[-1], 1)
model = kanmodel.KAN(width=width, grid=grid, k=3, seed=0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kanmodel.fit(model, X, y, optimizer=optimizer, grid_schedule=[grid], steps_per_grid=steps, lamb=lamb,
             patience=0, val_fraction=0.2)
print(json.dumps({"peak_bytes": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024}))
"""


def basis_values(width, grid, rows) -> int:
    return rows * sum(n_in * (grid + K + 1) for n_in in width[:-1])


def edge_values(width, rows) -> int:
    return rows * sum(a * b for a, b in zip(width, width[1:]))


def parameters(width, grid) -> int:
    return sum(b * a * (grid + K + 2) + b for a, b in zip(width, width[1:]))


def measure(case) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(case)], check=True, capture_output=True,
                         text=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-docs", action="store_true", help=f"write the section into {DOCS}")
    parser.set_defaults(command=None)
    args = parser.parse_args()
    rows_out, per_basis = [], None
    for case in CASES:
        width, grid, rows, optimizer, lamb, steps = case
        peak = measure(case)
        basis = basis_values(width, grid, rows)
        if per_basis is None:
            per_basis = peak / basis
        if rows >= 1000:
            figure = f"{peak / basis:.1f} B per basis value" if not lamb else \
                f"{(peak - per_basis * basis) / edge_values(width, rows):.1f} B per edge value (beyond the basis)"
        else:
            figure = f"{(peak - per_basis * basis) / parameters(width, grid):.0f} B per parameter"
        line = (f"| {width} | {grid} | {rows} | {optimizer} | {lamb:g} | {steps} | {parameters(width, grid):,} | "
                f"{peak / 2 ** 20:.0f} | {figure} |")
        print(line, flush=True)
        rows_out.append(line)
    section = "\n".join([
        "## Training memory",
        "",
        f"`{run_command(args)}` (float32, k=3, one process per case, peak RSS above the loaded model and data). "
        "service/jobs/checks.py estimates a given-width job's training memory from these rates "
        "(8 B per basis value of a row, 25 B per edge value with lamb > 0, 480 B per parameter for L-BFGS, "
        "48 for Adam) and refuses jobs above KANSERVE_MAX_TRAINING_MEMORY_GIB.",
        "",
        "| width | grid | rows | optimizer | lamb | steps | parameters | peak MiB | rate |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows_out,
    ])
    if args.write_docs:
        write_section(section)
    print(section)


if __name__ == "__main__":
    main()
