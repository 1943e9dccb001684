"""Tabular: kanmodel.auto_fit with only data and task against the scikit-learn models a
user would otherwise fit, on tables that ship inside scikit-learn.

Usage (from the repository root):
    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/python bench/tabular.py --write-docs

5-fold cross-validation, the same shuffled folds (seed 0; stratified for classification)
for every model. Score: R^2 on the held-out fold (regression), accuracy (classification);
fit seconds: wall time of one fit, 1 thread. Baselines, scikit-learn defaults except:
Ridge / LogisticRegression(max_iter=5000) and the MLP on standardised inputs (the MLP with
early_stopping=True, max_iter=1000), RandomForest with 300 trees.
Every fold prints one JSON line; --render rebuilds the tables from them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from sklearn import datasets
from sklearn.ensemble import (HistGradientBoostingClassifier, HistGradientBoostingRegressor,
                              RandomForestClassifier, RandomForestRegressor)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from docs_section import add_docs_arguments, run_command, write_section  # noqa: E402

import kanmodel  # noqa: E402

TABLES = {
    "diabetes": ("regression", lambda: datasets.load_diabetes(return_X_y=True)),
    "friedman1": ("regression", lambda: datasets.make_friedman1(n_samples=1000, noise=1.0, random_state=0)),
    "breast_cancer": ("classification", lambda: datasets.load_breast_cancer(return_X_y=True)),
    "wine": ("classification", lambda: datasets.load_wine(return_X_y=True)),
    "digits": ("classification", lambda: datasets.load_digits(return_X_y=True)),
}
KAN = "KAN auto_fit"
BASELINES = ("Ridge / LogisticRegression", "HistGradientBoosting", "RandomForest", "MLP")
N_FOLDS = 5


def baseline(name: str, task: str):
    regression = task == "regression"
    if name == BASELINES[0]:
        return make_pipeline(StandardScaler(), Ridge() if regression else LogisticRegression(max_iter=5000))
    if name == BASELINES[1]:
        return (HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier)(random_state=0)
    if name == BASELINES[2]:
        return (RandomForestRegressor if regression else RandomForestClassifier)(n_estimators=300, random_state=0)
    mlp = MLPRegressor if regression else MLPClassifier
    return make_pipeline(StandardScaler(), mlp(early_stopping=True, max_iter=1000, random_state=0))


class KANModel:
    """auto_fit behind fit/predict, as the job path runs it: only data and task."""

    def __init__(self, task: str, time_budget: float | None):
        self.task, self.time_budget = task, time_budget

    def fit(self, X, y):
        self.result = kanmodel.auto_fit(X, y, task=self.task, time_budget=self.time_budget)
        return self

    def predict(self, X):
        with torch.no_grad():
            output = self.result.model(torch.as_tensor(X, dtype=torch.float32))
        return output.argmax(1).numpy() if self.task == "classification" else output[:, 0].numpy()


def folds(task: str, X, y):
    splitter = (StratifiedKFold if task == "classification" else KFold)(N_FOLDS, shuffle=True, random_state=0)
    return list(splitter.split(X, y))


def run_fold(table: str, fold: int, models: list[str], time_budget: float | None):
    task, load = TABLES[table]
    X, y = load()
    train, test = folds(task, X, y)[fold]
    for name in models:
        model = KANModel(task, time_budget) if name == KAN else baseline(name, task)
        started = time.perf_counter()
        model.fit(X[train], y[train])
        seconds = time.perf_counter() - started
        predicted = model.predict(X[test])
        score = accuracy_score(y[test], predicted) if task == "classification" else r2_score(y[test], predicted)
        line = {"table": table, "fold": fold, "model": name, "score": float(score), "seconds": seconds}
        if name == KAN:
            line["config"] = {key: model.result.config[key] for key in ("width", "grid", "lamb")}
        print(json.dumps(line), flush=True)
        yield line


def render(lines: list[dict], command: str) -> str:
    tables = [t for t in TABLES if any(line["table"] == t for line in lines)]
    models = [KAN, *BASELINES]
    out = ["## Tabular: auto_fit against scikit-learn", "",
           "Score: R^2 (regression) or accuracy (classification) on the held-out fold, mean over "
           "the folds run (same shuffled folds for every model); seconds: mean fit time, 1 thread. "
           "The KAN is `kanmodel.auto_fit(X, y, task)` with nothing else (the default time budget); "
           "its seconds include the whole search and the averaged members. Seconds were measured "
           "on a 2-core machine. The JSON lines of the run are in "
           "`bench/results/tabular.jsonl` (`--render` rebuilds this section from them).",
           "", f"Command: `{command}`", "",
           "| table | task | folds | " + " | ".join(models) + " | KAN - best baseline |",
           "|---|---|---|" + "---|" * len(models) + "---|"]
    gaps = []
    for table in tables:
        cells, means = [], {}
        for name in models:
            rows = [line for line in lines if line["table"] == table and line["model"] == name]
            if not rows:
                cells.append("")
                continue
            means[name] = statistics.mean(r["score"] for r in rows)
            cells.append(f"{means[name]:.3f} ({statistics.mean(r['seconds'] for r in rows):.1f} s)")
        n_folds = len({line["fold"] for line in lines if line["table"] == table})
        best = max((means[name] for name in BASELINES if name in means), default=None)
        gap = means[KAN] - best if KAN in means and best is not None else None
        if gap is not None:
            gaps.append(gap)
        out.append(f"| {table} | {TABLES[table][0]} | {n_folds} | " + " | ".join(cells)
                   + f" | {'' if gap is None else f'{gap:+.3f}'} |")
    if gaps:
        out += ["", f"Mean of (KAN - best baseline) over the tables: {statistics.mean(gaps):+.3f}; "
                f"worst table: {min(gaps):+.3f}."]
    chosen = [(table, [line["config"] for line in sorted(lines, key=lambda line: line["fold"])
                       if line["table"] == table and line["model"] == KAN and "config" in line])
              for table in tables]
    if any(configs for _, configs in chosen):
        out += ["", "Chosen per fold (member width, grid, lamb; the served model averages the members):"]
        out += [f"- {table}: " + "; ".join(f"{c['width']} grid {c['grid']} lamb {c['lamb']}" for c in configs)
                for table, configs in chosen if configs]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", nargs="*", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("--folds", type=int, nargs="*", default=list(range(N_FOLDS)),
                        help="which of the 5 folds to run (all by default)")
    parser.add_argument("--models", nargs="*", default=[KAN, *BASELINES], choices=[KAN, *BASELINES])
    parser.add_argument("--time-budget", type=float, default=None,
                        help="auto_fit's time budget in seconds (default: the library default)")
    add_docs_arguments(parser, "tabular table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.render:
        with open(args.render) as log:
            lines = [json.loads(line) for line in log if line.startswith("{")]
        command = args.command or run_command(args)
    else:
        np.random.seed(0)
        lines = [line for table in args.tables for fold in args.folds
                 for line in run_fold(table, fold, args.models, args.time_budget)]
        command = run_command(args)
    section = render(lines, command)
    print(section)
    if args.write_docs:
        write_section(section)


if __name__ == "__main__":
    main()
