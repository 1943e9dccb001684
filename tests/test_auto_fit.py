"""auto_fit: a KAN chosen by validation error from data and task alone."""
import json

import numpy as np
import pytest
import torch

import kanmodel

torch.set_num_threads(1)


def regression_table(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, size=(n, 3))
    return X, np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] ** 2 + 0.05 * rng.normal(size=n)


def test_regression_returns_a_trained_model_and_a_json_report():
    X, y = regression_table()
    events = []
    result = kanmodel.auto_fit(X, y, task="regression", time_budget=60, progress=events.append)
    assert isinstance(result.model, kanmodel.KAN) and result.model.width[0] == 3
    json.dumps({"config": result.config, "candidates": result.candidates, "metrics": result.metrics})
    assert result.metrics["val_r2"] > 0.9
    assert result.config["served_width"] == result.model.width and result.config["grid"] == result.model.grid_size
    assert result.config["members"] == 5 and result.config["width"][0] == 3
    scored = [c["val_loss"] for c in result.candidates if c["val_loss"] is not None]
    assert len(result.candidates) >= 3 and result.metrics["val_loss"] == pytest.approx(min(scored))
    assert any(e.get("candidate") is not None for e in events) and "chosen" in events[-1]
    assert all(e["phase"] == "auto_fit" for e in events)


def test_split_rows_is_the_seeded_split_fit_uses():
    train, val = kanmodel.split_rows(10, 0.2, seed=3)
    assert len(val) == 2 and sorted(np.concatenate([train, val]).tolist()) == list(range(10))
    again = kanmodel.split_rows(10, 0.2, seed=3)
    assert (again[0] == train).all() and (again[1] == val).all()
