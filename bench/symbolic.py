"""Symbolic formula recovery benchmark: kanmodel.discover's default recipe on the
public suites, ../shared/benchmarks/formulas.json ("formulas") and
../shared/benchmarks/feynman_public.json ("feynman", the public half of the AI
Feynman database), optionally PyKAN 0.2.8 beside it on "formulas".

A case is recovered when the formula, evaluated in float64 on 2000 fresh points from
the case's ranges, has RMSE / std(y) <= 1e-5 (the rule stated in those files).

    .venv/bin/python bench/symbolic.py                          # both suites, 2 cases at a time
    .venv/bin/python bench/symbolic.py --suite feynman --cases I.12.1 I.15.1 --jobs 1 --no-docs
    .venv/bin/python bench/symbolic.py --time-budget 60        # discover's time_budget per case
    .venv/bin/python bench/symbolic.py --pykan                  # PyKAN only, in .bench-venv
    .venv/bin/python bench/symbolic.py --report                 # rewrite the table only

Each case runs in its own process with one torch thread (--jobs at a time). Results
are merged case by case into bench/results/symbolic.json ("formulas") and
bench/results/symbolic_feynman.json, so a rerun of some cases keeps the rest; the
tables in docs/benchmarks.md are written from those files. The PyKAN side runs this
same file under .bench-venv/bin/python with --pykan-worker (it imports `kan`, never
`kanmodel`) and hands back JSON on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from docs_section import write_section

ROOT = Path(__file__).resolve().parents[1]
SUITES = {"formulas": ROOT.parent / "shared" / "benchmarks" / "formulas.json",
          "feynman": ROOT.parent / "shared" / "benchmarks" / "feynman_public.json"}
CASES_FILE = SUITES["formulas"]
RESULTS = ROOT / "bench" / "results"
RESULT_FILES = {"formulas": RESULTS / "symbolic.json", "feynman": RESULTS / "symbolic_feynman.json"}
ANCHOR = ("SRBench (La Cava et al. 2021), Feynman set, noiseless, exact symbolic recovery: "
          "AI Feynman 55.8%, AFP_FE 27%, GP-GOMEA 26.8%, DSR 19.7%")
SECTION = "## Symbolic formula recovery"
N_TRAIN = 2000
N_TEST = 2000
RECOVERED = 1e-5


def load_cases(ids: list[str] | None, suite: str = "formulas") -> list[dict]:
    cases = json.loads(SUITES[suite].read_text())["cases"]
    if ids:
        unknown = set(ids) - {c["id"] for c in cases}
        if unknown:
            raise SystemExit(f"unknown case id(s): {sorted(unknown)}")
        cases = [c for c in cases if c["id"] in ids]
    return cases


def truth(case: dict):
    """(variable names, numpy function of the columns) for a case's formula."""
    import sympy
    names = list(case["ranges"])
    symbols = [sympy.Symbol(n) for n in names]
    expr = sympy.sympify(case["formula"], locals=dict(zip(names, symbols)))
    return names, sympy.lambdify(symbols, expr, modules="numpy")


def sample(case: dict, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    names, f = truth(case)
    rng = np.random.default_rng(seed)
    X = np.stack([rng.uniform(*case["ranges"][n_], size=n) for n_ in names], axis=1)
    return X, np.asarray(f(*X.T), dtype=np.float64) * np.ones(n)


def relative_error(pred: np.ndarray, y: np.ndarray) -> float:
    pred = np.asarray(pred, dtype=np.float64)
    if pred.shape != y.shape or not np.isfinite(pred).all():
        return float("inf")
    return float(np.sqrt(np.mean((pred - y) ** 2)) / np.std(y))


def truth_size(case: dict) -> int:
    import sympy
    from kanmodel.search.terms import expression_size
    names = list(case["ranges"])
    return expression_size(sympy.sympify(case["formula"], locals={n: sympy.Symbol(n) for n in names}))


def run_ours(case: dict, time_budget: float | None = None) -> dict:
    import torch
    import kanmodel
    from kanmodel.search.terms import expression_size
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    names = list(case["ranges"])
    X, y = sample(case, N_TRAIN, seed=1)
    X_test, y_test = sample(case, N_TEST, seed=2)
    options = {} if time_budget is None else {"time_budget": time_budget}
    started = time.monotonic()
    found = kanmodel.discover(X, y, variables=names, **options)
    seconds = time.monotonic() - started
    formula = found.formulas[0]
    error = relative_error(formula.func(X_test), y_test)
    return {"id": case["id"], "truth": case["formula"], "formula": formula.text,
            "size": expression_size(formula.expr), "truth_size": truth_size(case),
            "error": error, "recovered": error <= RECOVERED, "seconds": seconds,
            "method": found.metrics["method"], "stopped": found.stopped,
            "space": found.space, "width": found.metrics["width"], "attempts": found.metrics["attempts"]}


def _run_case(args: tuple[dict, float | None]) -> dict:
    case, time_budget = args
    try:
        return run_ours(case, time_budget)
    except Exception as exc:  # a crash is that case's result, not the end of the run
        return {"id": case["id"], "truth": case["formula"], "formula": f"error: {type(exc).__name__}: {exc}"[:200],
                "size": 0, "truth_size": truth_size(case), "error": float("inf"), "recovered": False,
                "seconds": 0.0, "method": "-", "stopped": "-", "space": "-", "width": [], "attempts": 0}


def run_suite(cases: list[dict], jobs: int, time_budget: float | None):
    """Yields each case's result as it finishes; `jobs` processes, one case each at a time."""
    import concurrent.futures
    import multiprocessing
    if jobs <= 1:
        for case in cases:
            yield _run_case((case, time_budget))
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                                                max_tasks_per_child=1) as pool:
        futures = [pool.submit(_run_case, (case, time_budget)) for case in cases]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


# ---------------------------------------------------------------- PyKAN (benchmark venv)
PYKAN_STEPS = 30
PYKAN_GRIDS = [3, 10]
PYKAN_TIMEOUT = int(os.environ.get("PYKAN_TIMEOUT", "150"))  # seconds per case; longer = not recovered


def run_pykan(case: dict) -> dict:
    """PyKAN 0.2.8's documented flow: fit with a grid schedule, prune, auto_symbolic,
    fit the affine parameters, symbolic_formula. Width [n, 2n+1, 1] (its examples)."""
    import shutil
    import tempfile

    import torch
    from kan import KAN as PyKAN
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    torch.set_default_dtype(torch.float64)
    names = list(case["ranges"])
    X, y = sample(case, N_TRAIN, seed=1)
    X_test, y_test = sample(case, N_TEST, seed=2)
    n = len(names)
    dataset = {"train_input": torch.tensor(X[:1600]), "train_label": torch.tensor(y[:1600, None]),
               "test_input": torch.tensor(X[1600:]), "test_label": torch.tensor(y[1600:, None])}
    started = time.monotonic()
    model = None
    checkpoints = tempfile.mkdtemp(prefix="pykan-")  # PyKAN's prune writes a history file
    try:
        for index, grid in enumerate(PYKAN_GRIDS):
            if model is None:
                model = PyKAN(width=[n, 2 * n + 1, 1], grid=grid, k=3, seed=0, auto_save=False,
                              ckpt_path=checkpoints)
                model.fit(dataset, opt="LBFGS", steps=PYKAN_STEPS, lamb=1e-3, log=10 ** 9)
                model(dataset["train_input"])  # its fit leaves the test set cached; prune on train
                model = model.prune()
            else:
                model = model.refine(grid)
            model.fit(dataset, opt="LBFGS", steps=PYKAN_STEPS, log=10 ** 9)
        model(dataset["train_input"])
        model.auto_symbolic(verbose=0)
        model.fit(dataset, opt="LBFGS", steps=PYKAN_STEPS, log=10 ** 9)
        import sympy
        expr = model.symbolic_formula(var=names)[0][0]
        symbols = [sympy.Symbol(v) for v in names]
        f = sympy.lambdify(symbols, expr, modules="numpy")
        with np.errstate(all="ignore"):
            pred = np.asarray(f(*X_test.T), dtype=np.float64) * np.ones(len(X_test))
        error = relative_error(pred, y_test)
        text = str(expr)
    except Exception as exc:  # report PyKAN's failure as the case's result
        error, text = float("inf"), f"error: {type(exc).__name__}: {exc}"[:200]
    finally:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return {"id": case["id"], "formula": text, "error": error, "recovered": error <= RECOVERED,
            "seconds": time.monotonic() - started}


def pykan_in_bench_venv(cases: list[dict]) -> list[dict] | str:
    python = ROOT / ".bench-venv" / "bin" / "python"
    if not python.exists():
        return f"not run: {python.relative_to(ROOT)} does not exist"
    results = []
    for case in cases:
        try:
            proc = subprocess.run([str(python), __file__, "--pykan-worker", "--cases", case["id"]],
                                  capture_output=True, text=True, cwd=ROOT, timeout=PYKAN_TIMEOUT,
                                  env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
        except subprocess.TimeoutExpired:
            results.append({"id": case["id"], "formula": f"timed out after {PYKAN_TIMEOUT} s",
                            "error": float("inf"), "recovered": False, "seconds": float(PYKAN_TIMEOUT)})
            print(f"  pykan {case['id']}: timed out", flush=True)
            continue
        line = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
        try:
            results.append(json.loads(line[0]))
        except (IndexError, json.JSONDecodeError):
            results.append({"id": case["id"], "formula": "error: " + proc.stderr.strip()[-200:],
                            "error": float("inf"), "recovered": False, "seconds": 0.0})
        print(f"  pykan {case['id']}: {results[-1]['recovered']} ({results[-1]['seconds']:.0f} s)", flush=True)
    return results


# ---------------------------------------------------------------- report
def _cell(text: str, limit: int = 90) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return "`" + (text if len(text) <= limit else text[: limit - 3] + "...") + "`"


RECIPE = ("One recipe for every case, `kanmodel.discover` with its defaults (see `kanmodel/discover.py` "
          "and `kanmodel/search/recipe.py`): first a direct search on the data: the target y, and y "
          "divided by its power-law part, under each transform the data allow (identity, log, 1/y, y^2, "
          "1/y^2, sqrt, sin, cos, exp); for each, a full polynomial pruned while exact, a sparse sum of "
          "dictionary terms (monomials with small integer and half powers, sin/cos/exp/log of a variable "
          "or of a product or ratio of two, times small monomials) by a beam search with orthogonal least "
          "squares, and a ratio of two sparse polynomials from the null space of [N, -T(y) D]; constants "
          "snapped to simple rationals times pi or sqrt(2) where the data agree; the smallest exact "
          "formula on the Pareto front of size against held-out error. Then (when nothing is exact) "
          "network shapes [n,1], [n,1,1], [n,2,1], [n,2,1,1], each first in log space then raw, edges "
          "fitted with the function library, composed and refitted in float64, a separability step "
          "on the best network as the oracle, and after log-space networks with hidden layers a dimension "
          "reduction (their log-gradients tell when y is a power law times a function of one monomial, "
          "which is then fitted in 1-D); one network is always trained, to be served.")


def table(results: dict[str, list[dict]], pykan: list[dict] | str | None, commands: dict[str, str],
          pykan_command: str | None, note: str | None = None) -> str:
    lines = [SECTION, "",
             "Measured with " + " and ".join(f"`{c}`" for c in dict.fromkeys(commands.values())) +
             (f" and `{pykan_command}`" if pykan_command else "") +
             " (2 CPU cores shared with other work, one torch thread per case)" + (f"; {note}." if note else "."),
             f"Rule: formula RMSE / std(y) <= {RECOVERED:g} on {N_TEST} fresh float64 points; "
             f"{N_TRAIN} training points per case (`discover` holds out 20% of them). "
             "Size: nodes of the expression tree (variables, numbers, operations), the found "
             "formula's beside the truth's: a much larger formula that passes is a numeric "
             "approximation, not a recovery of the structure.", "", RECIPE, "",
             f"Anchor: {ANCHOR}.", ""]
    for suite, ours in results.items():
        if not ours:
            continue
        by_id = {r["id"]: r for r in pykan} if (suite == "formulas" and isinstance(pykan, list)) else {}
        total = sum(r["recovered"] for r in ours)
        lines += [f"### {SUITES[suite].name}: {total} of {len(ours)} recovered ({100 * total / len(ours):.0f}%)", ""]
        header = "| case | truth (size) | recovered | formula found (size) | error | time (s) | method |"
        rule = "|---|---|---|---|---|---|---|"
        if by_id:
            header += " PyKAN 0.2.8 | PyKAN error | PyKAN time (s) |"
            rule += "---|---|---|"
        lines += [header, rule]
        for r in ours:
            row = (f"| {r['id']} | {_cell(r['truth'], 60)} ({r.get('truth_size', '-')}) | "
                   f"{'yes' if r['recovered'] else 'no'} | {_cell(r['formula'])} ({r.get('size', '-')}) | "
                   f"{r['error']:.1e} | {r['seconds']:.0f} | {r.get('method', '-')} |")
            if by_id:
                p = by_id.get(r["id"])
                row += (f" {_pykan_outcome(p)} | {p['error']:.1e} | {p['seconds']:.0f} |" if p else " - | - | - |")
            lines.append(row)
        seconds = [r["seconds"] for r in ours]
        lines += ["", f"**kanmodel.discover on {SUITES[suite].name}: {total} of {len(ours)} recovered**, "
                      f"median {float(np.median(seconds)):.0f} s a case, slowest {max(seconds):.0f} s, "
                      f"total {sum(seconds):.0f} s.", ""]
        if by_id:
            limits = sorted({p.get("timeout_s", PYKAN_TIMEOUT) for p in by_id.values()})
            lines.append(f"**PyKAN 0.2.8 (width [n, 2n+1, 1], grids {PYKAN_GRIDS}, {PYKAN_STEPS} LBFGS steps "
                         f"each, sparsity 1e-3 then prune, auto_symbolic, fit; at most "
                         f"{' or '.join(map(str, limits))} s per case): "
                         f"{sum(p['recovered'] for p in by_id.values())} of {len(by_id)} recovered.**")
            crashes = sorted({p["formula"] for p in by_id.values() if p["formula"].startswith("error")})
            if crashes:
                lines.append("PyKAN crashes: " + "; ".join(f"`{c[7:]}`" for c in crashes) + ".")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _pykan_outcome(p: dict) -> str:
    if p["formula"].startswith("timed out"):
        return f"no (timed out, {p.get('timeout_s', PYKAN_TIMEOUT)} s)"
    if p["formula"].startswith("error"):
        return "no (crashed)"
    return "yes" if p["recovered"] else "no"


def _merge(file: Path, command: str, new: list[dict], order: list[str]) -> None:
    saved = json.loads(file.read_text()) if file.exists() else {"results": []}
    by_id = {r["id"]: r for r in saved["results"]}
    by_id.update({r["id"]: r for r in new})
    file.write_text(json.dumps({"command": command, "results": sorted(by_id.values(), key=lambda r:
                                order.index(r["id"]) if r["id"] in order else len(order))}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=["formulas", "feynman", "both"], default="both")
    parser.add_argument("--cases", nargs="*", help="case ids (default: all of the suite)")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at a time, one process each (default 2)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="discover's time_budget per case in seconds (default: discover's default)")
    parser.add_argument("--pykan", action="store_true", help="run PyKAN 0.2.8 (in .bench-venv) instead of ours")
    parser.add_argument("--pykan-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument("--report", action="store_true",
                        help="only rewrite the table from the saved results (no runs)")
    parser.add_argument("--note", help="a sentence printed under the command (e.g. which commit ran which cases)")
    args = parser.parse_args()
    suites = ["formulas", "feynman"] if args.suite == "both" else [args.suite]
    if args.pykan_worker:
        print(json.dumps(run_pykan(load_cases(args.cases)[0])))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    pykan_file = RESULTS / "pykan_symbolic.json"
    if args.report:
        pass
    elif args.pykan:
        cases = load_cases(args.cases)
        order = [c["id"] for c in load_cases(None)]
        for case in cases:
            result = pykan_in_bench_venv([case])[0]
            result["timeout_s"] = PYKAN_TIMEOUT
            _merge(pykan_file, "PYKAN_TIMEOUT=... python bench/symbolic.py --pykan", [result], order)
    else:
        for suite in suites:
            every = load_cases(None, suite)
            ids = [i for i in args.cases if i in {c["id"] for c in every}] if args.cases else None
            if args.cases and not ids:
                continue
            cases = load_cases(ids, suite)
            command = "python bench/symbolic.py" + (f" --time-budget {args.time_budget:g}" if args.time_budget else "")
            for r in run_suite(cases, args.jobs, args.time_budget):
                print(f"{suite} {r['id']}: recovered={r['recovered']} error={r['error']:.1e} {r['seconds']:.0f} s "
                      f"[{r['method']} {r['space']} {r['width']}] size {r['size']} (truth {r['truth_size']}) "
                      f"{r['formula'][:150]}", flush=True)
                _merge(RESULT_FILES[suite], command, [r], [c["id"] for c in every])
    results, commands = {}, {}
    for suite in ("formulas", "feynman"):
        if RESULT_FILES[suite].exists():
            run = json.loads(RESULT_FILES[suite].read_text())
            results[suite], commands[suite] = run["results"], run["command"]
    if not results:
        return
    pykan_run = json.loads(pykan_file.read_text()) if pykan_file.exists() else None
    text = table(results, pykan_run["results"] if pykan_run else
                 "not run (`python bench/symbolic.py --pykan` writes its results)",
                 commands, pykan_run["command"] if pykan_run else None, args.note)
    print(text)
    if not args.no_docs:
        write_section(text)


if __name__ == "__main__":
    main()
