"""POST /v1/models/{name}/predict: parity with the torch model for both engines,
named and positional inputs, bad inputs, ownership, and the cache across versions."""

import json
import time

import numpy as np
import pytest
import sympy
import torch
from fastapi.testclient import TestClient

import kanmodel
from kanmodel.export import formula_to_onnx, to_onnx
from onnx_graphs import affine_model
from serving_setup import serving_env

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def kan_models():
    """A [2,3,1] regression KAN and a [2,3,3] classifier with non-trivial random
    coefficients (parity needs no training), plus a formula graph."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(200, 2))
    reg = kanmodel.KAN(width=[2, 3, 1], grid=5, seed=1)
    reg.set_standardisation(torch.tensor(x), torch.tensor(np.sin(3 * x[:, :1]) + x[:, 1:] ** 2))
    clf = kanmodel.KAN(width=[2, 3, 3], grid=5, seed=2, task="classification")
    clf.set_standardisation(torch.tensor(x), torch.tensor(rng.integers(0, 3, 200)))
    with torch.no_grad():
        for model in (reg, clf):
            model.update_grid(torch.tensor(x))  # the grid spans the rows the tests send
            for layer in model.layers:
                layer.coef.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    x0, x1 = sympy.symbols("x0 x1")
    formula = sympy.sin(3 * x0) + x1 ** 2
    return {
        "reg": reg, "clf": clf, "formula": formula,
        "reg_onnx": to_onnx(reg, name="reg"),
        "clf_onnx": to_onnx(clf, name="clf", output_names=["cat", "dog", "eel"]),
        "formula_onnx": formula_to_onnx([formula], variables=["x0", "x1"], name="reg"),
    }


@pytest.fixture
def env(tmp_path, kan_models):
    env = serving_env(tmp_path)
    env.register("reg", 1, kan_models["reg_onnx"], formula_onnx=kan_models["formula_onnx"])
    env.register("clf", 1, kan_models["clf_onnx"], task="classification", output_names=("cat", "dog", "eel"))
    with TestClient(env.app) as client:
        client.headers["Authorization"] = f"Bearer {env.key}"
        env.client = client
        yield env


def torch_outputs(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(x, dtype=torch.float32)).double().numpy()


ROWS = np.random.default_rng(5).uniform(-0.9, 0.9, size=(17, 2))


def test_spline_engine_matches_torch(env, kan_models):
    r = env.client.post("/v1/models/reg/predict", json={"inputs": ROWS.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"], body["engine"]) == ("reg", 1, "spline")
    np.testing.assert_allclose(body["outputs"], torch_outputs(kan_models["reg"], ROWS), atol=1e-5, rtol=1e-5)
    assert "labels" not in body


def test_formula_engine_matches_the_formula(env, kan_models):
    r = env.client.post("/v1/models/reg/versions/1/predict", json={"inputs": ROWS.tolist(), "engine": "formula"})
    assert r.status_code == 200, r.text
    f = sympy.lambdify(sympy.symbols("x0 x1"), kan_models["formula"], "numpy")
    expected = f(ROWS[:, 0], ROWS[:, 1])[:, None]
    np.testing.assert_allclose(r.json()["outputs"], expected, atol=1e-5, rtol=1e-5)
    assert r.json()["engine"] == "formula"


def test_named_columns_equal_positional_rows(env):
    positional = env.client.post("/v1/models/reg/predict", json={"inputs": ROWS.tolist()}).json()
    # Columns given in the other order still map by name.
    named = env.client.post("/v1/models/reg/predict",
                            json={"inputs": {"x1": ROWS[:, 1].tolist(), "x0": ROWS[:, 0].tolist()}}).json()
    assert named["outputs"] == positional["outputs"]


def test_classification_returns_probabilities_and_labels(env, kan_models):
    r = env.client.post("/v1/models/clf/predict", json={"inputs": ROWS.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    logits = torch_outputs(kan_models["clf"], ROWS)
    np.testing.assert_allclose(body["outputs"], logits, atol=1e-5, rtol=1e-5)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    np.testing.assert_allclose(body["probabilities"], probabilities, atol=1e-5)
    assert body["labels"] == [["cat", "dog", "eel"][i] for i in logits.argmax(1)]


@pytest.mark.parametrize("payload, status, words", [
    ({"inputs": [[1.0, 2.0, 3.0]]}, 422, "expected 2 features"),
    ({"inputs": [[1.0]]}, 422, "expected 2 features"),
    ({"inputs": [["1.0", 2.0]]}, 422, "valid number"),
    ({"inputs": []}, 422, "empty"),
    ({"inputs": {"x0": [], "x1": []}}, 422, "empty"),
    ({"inputs": {"x0": [1.0]}}, 422, "missing column(s) ['x1']"),
    ({"inputs": {"x0": [1.0], "x1": [1.0], "zz": [1.0]}}, 422, "unknown column(s) ['zz']"),
    ({"inputs": {"x0": [1.0, 2.0], "x1": [1.0]}}, 422, "differ in length"),
    ({"inputs": [[1e39, 0.0]]}, 422, "float32"),
    ({"inputs": [[0.0, 0.0]], "engine": "magic"}, 422, "'spline' or 'formula'"),
    ({"inputs": [[0.0, 0.0]] * 11}, 413, "limit of 10"),
])
def test_bad_inputs_get_a_clear_4xx_and_the_service_keeps_serving(env, payload, status, words):
    env.app.state.inference.settings.predict_max_rows = 10
    r = env.client.post("/v1/models/reg/predict", json=payload)
    assert r.status_code == status, r.text
    assert words in r.text
    assert env.client.post("/v1/models/reg/predict", json={"inputs": [[0.1, 0.2]]}).status_code == 200


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(env, literal):
    r = env.client.post("/v1/models/reg/predict", content=f'{{"inputs": [[{literal}, 0.0]]}}',
                        headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert "finite" in r.text


def test_unknown_model_version_graph_and_keys(env, kan_models):
    client = env.client
    assert client.post("/v1/models/nope/predict", json={"inputs": [[0, 0]]}).status_code == 404
    r = client.post("/v1/models/reg/versions/9/predict", json={"inputs": [[0, 0]]})
    assert r.status_code == 404 and "no version 9" in r.text
    r = client.post("/v1/models/clf/predict", json={"inputs": [[0, 0]], "engine": "formula"})
    assert r.status_code == 404 and "no formula graph" in r.text
    # Another user's model is not found; a missing or bad key is a 401.
    r = client.post("/v1/models/reg/predict", json={"inputs": [[0, 0]]},
                    headers={"Authorization": f"Bearer {env.other_key}"})
    assert r.status_code == 404 and "not found" in r.text
    r = client.post("/v1/models/reg/predict", json={"inputs": [[0, 0]]}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = client.post("/v1/models/reg/predict", json={"inputs": [[0, 0]]}, headers={"Authorization": ""})
    assert r.status_code == 401 and "missing API key" in r.text


def test_new_version_is_served_without_restart_and_a_deleted_one_is_gone(env, kan_models):
    client, runtime = env.client, env.app.state.inference
    x = {"inputs": [[0.3, -0.4]]}
    first = client.post("/v1/models/reg/predict", json=x).json()
    # Registered by "another process" (straight into the database). Version 2 of "reg"
    # is the classifier's graph: clearly different answers.
    v2 = env.register("reg", 2, kan_models["clf_onnx"], task="classification", output_names=("cat", "dog", "eel"))
    assert client.post("/v1/models/reg/versions/2/predict", json=x).json()["version"] == 2
    time.sleep(runtime.settings.model_lookup_ttl_s)  # "latest" was looked up just before
    latest = client.post("/v1/models/reg/predict", json=x).json()
    assert latest["version"] == 2 and len(latest["outputs"][0]) == 3
    assert client.post("/v1/models/reg/versions/1/predict", json=x).json()["outputs"] == first["outputs"]
    assert v2 in {key.model_id for key in runtime.cache.keys()}

    assert client.delete("/v1/models/reg/versions/2").status_code == 204
    r = client.post("/v1/models/reg/versions/2/predict", json=x)
    assert r.status_code == 404 and "no version 2" in r.text
    back = client.post("/v1/models/reg/predict", json=x).json()
    assert back["version"] == 1 and back["outputs"] == first["outputs"]
    assert v2 not in {key.model_id for key in runtime.cache.keys()}  # its session was dropped


def test_a_version_deleted_by_another_process_is_gone_within_the_lookup_ttl(env, kan_models):
    client, runtime = env.client, env.app.state.inference
    v2 = env.register("reg", 2, kan_models["reg_onnx"])
    x = {"inputs": [[0.3, -0.4]]}
    assert client.post("/v1/models/reg/versions/2/predict", json=x).status_code == 200
    env.delete(v2)
    time.sleep(runtime.settings.model_lookup_ttl_s)
    assert client.post("/v1/models/reg/versions/2/predict", json=x).status_code == 404


def test_rows_outside_the_training_range_are_answered_and_flagged(tmp_path):
    env = serving_env(tmp_path)
    ranges = [[-1.0, 1.0], [0.0, 2.0]]
    env.register("ranged", 1, affine_model(np.ones((2, 1), np.float32), np.zeros(1, np.float32), "input",
                                           "output", metadata={"input_ranges": json.dumps(ranges)}))
    env.register("unranged", 1, affine_model(np.ones((2, 1), np.float32), np.zeros(1, np.float32),
                                             "input", "output"))
    env.register("misranged", 1, affine_model(np.ones((2, 1), np.float32), np.zeros(1, np.float32), "input",
                                              "output", metadata={"input_ranges": "[[0, 1]]"}))
    rows = [[0.0, 1.0], [-1.0, 2.0], [1.5, 1.0], [0.0, -0.1]]
    with TestClient(env.app) as client:
        client.headers["Authorization"] = f"Bearer {env.key}"
        body = client.post("/v1/models/ranged/predict", json={"inputs": rows}).json()
        assert body["extrapolated"] == [False, False, True, True]
        np.testing.assert_allclose(body["outputs"], np.sum(rows, axis=1, keepdims=True), rtol=1e-6)
        # A graph that does not record its training range cannot flag anything.
        assert client.post("/v1/models/unranged/predict", json={"inputs": rows}).json()["extrapolated"] is None
        # Nor can one whose recorded ranges do not fit its inputs; it still answers.
        r = client.post("/v1/models/misranged/predict", json={"inputs": rows})
        assert r.status_code == 200 and r.json()["extrapolated"] is None


def test_exported_models_flag_rows_beyond_their_training_range(env):
    # The fixture's grids were spread over inputs in [-1, 1].
    rows = [[0.0, 0.0], [0.9, -0.9], [5.0, 0.0], [0.0, -7.0]]
    body = env.client.post("/v1/models/reg/predict", json={"inputs": rows}).json()
    assert body["extrapolated"] == [False, False, True, True]
    # Formula graphs carry no ranges; the spline graph of the same version supplies them.
    body = env.client.post("/v1/models/reg/predict", json={"inputs": rows, "engine": "formula"}).json()
    assert body["extrapolated"] == [False, False, True, True]
