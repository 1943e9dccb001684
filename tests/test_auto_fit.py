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
    ranked = sorted(result.candidates, key=lambda c: c["val_loss"])
    chosen = result.candidates[events[-1]["chosen"]]
    assert len(result.candidates) >= 3 and chosen in ranked[:2]       # a finalist
    assert len(chosen["fold_val_losses"]) == 5
    assert result.metrics["val_loss"] == result.metrics["val_rmse"]
    assert result.metrics["train_loss"] == result.metrics["train_rmse"]
    assert any(e.get("rung") is not None for e in events) and "chosen" in events[-1]
    assert all(e["phase"] == "auto_fit" for e in events)


def test_split_rows_is_the_seeded_split_fit_uses():
    train, val = kanmodel.split_rows(10, 0.2, seed=3)
    assert len(val) == 2 and sorted(np.concatenate([train, val]).tolist()) == list(range(10))
    again = kanmodel.split_rows(10, 0.2, seed=3)
    assert (again[0] == train).all() and (again[1] == val).all()


def overlapping_classes(n=300, seed=0):
    """Three classes from a noisy function of two of four columns (not separable)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    score = X[:, 0] + np.sin(2 * X[:, 1]) + 0.3 * rng.normal(size=n)
    return X, np.digitize(score, [-0.5, 0.5])


def onnx_outputs(model, X):
    ort = pytest.importorskip("onnxruntime")
    from kanmodel.export import to_onnx
    session = ort.InferenceSession(to_onnx(model), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": X.astype(np.float32)})))


def test_classification_model_exports_with_predict_parity():
    X, y = overlapping_classes()
    result = kanmodel.auto_fit(X, y, task="classification", time_budget=60)
    model = result.model
    assert model.task == "classification" and model.width[-1] == 3
    assert result.metrics["val_accuracy"] > 0.8 and "val_log_loss" in result.metrics
    X_new, y_new = overlapping_classes(200, seed=1)
    with torch.no_grad():
        logits = model(torch.as_tensor(X_new, dtype=torch.float32)).numpy()
    assert (logits.argmax(1) == y_new).mean() > 0.8
    exported = onnx_outputs(model, X_new)
    # float32 on both sides: within 1e-5, relative where logits are large.
    np.testing.assert_allclose(exported["output"], logits, rtol=1e-5, atol=1e-5)
    probabilities = torch.softmax(torch.from_numpy(logits), 1).numpy()
    np.testing.assert_allclose(exported["probabilities"], probabilities, rtol=0, atol=1e-5)


def test_regression_model_exports_with_predict_parity():
    X, y = regression_table(200)
    y = 100 + 30 * y                       # raw units far from standardised ones
    result = kanmodel.auto_fit(X, y, task="regression", time_budget=60)
    X_new, _ = regression_table(100, seed=1)
    with torch.no_grad():
        expected = result.model(torch.as_tensor(X_new, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(onnx_outputs(result.model, X_new)["output"], expected, rtol=1e-5, atol=1e-5)


def test_separable_table_trains():
    rng = np.random.default_rng(0)
    labels = np.arange(150) % 3
    X = np.stack([4.0 * labels, -3.0 * labels], 1) + 0.3 * rng.normal(size=(150, 2))
    result = kanmodel.auto_fit(X, labels, task="classification", time_budget=60)
    assert result.metrics["val_accuracy"] == 1.0
    assert (result.model.predict_proba(torch.as_tensor(X, dtype=torch.float32)).argmax(1).numpy() == labels).all()


def test_should_stop_ends_the_search_with_a_usable_model():
    X, y = regression_table()
    calls = []
    result = kanmodel.auto_fit(X, y, should_stop=lambda: calls.append(1) or len(calls) > 20)
    assert result.stopped and result.config["members"] == 1
    assert sum(c["grids_trained"] for c in result.candidates) <= 1
    with torch.no_grad():
        assert np.isfinite(result.model(torch.as_tensor(X, dtype=torch.float32)).numpy()).all()


def test_bad_input_names_the_problem():
    X, y = regression_table(50)
    with pytest.raises(ValueError, match="task"):
        kanmodel.auto_fit(X, y, task="ranking")
    with pytest.raises(ValueError, match="NaN"):
        kanmodel.auto_fit(np.where(X > 1, np.nan, X), y)
    with pytest.raises(ValueError, match="labels"):
        kanmodel.auto_fit(X, y, task="classification")
    with pytest.raises(ValueError, match="time_budget"):
        kanmodel.auto_fit(X, y, time_budget=0)
