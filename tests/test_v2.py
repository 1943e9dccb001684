"""The Open Inference Protocol (V2) driven by the real tritonclient.http client against
a real uvicorn server, plus the JSON forms and error answers a hand-written client sees."""

import numpy as np
import pytest
import sympy
import torch
import tritonclient.http as triton_http
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

import kanmodel
from kanmodel.export import formula_to_onnx, to_onnx
from live_server import live_server
from serving_setup import serving_env

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def kan():
    x = torch.tensor(np.random.default_rng(0).uniform(-1, 1, size=(100, 2)))
    model = kanmodel.KAN(width=[2, 3, 1], grid=5, seed=4)
    model.set_standardisation(x, x[:, :1] * 2 + 1)
    model.update_grid(x)
    return model, to_onnx(model, name="hello")


@pytest.fixture
def env(tmp_path, kan):
    env = serving_env(tmp_path)
    env.register("hello", 1, kan[1])
    env.register("hello", 2, kan[1])
    return env


def expected(model, x):
    with torch.no_grad():
        return model(torch.tensor(x, dtype=torch.float32)).numpy()


def test_tritonclient_against_a_real_server(env, kan):
    model, _ = kan
    def auth():
        # A fresh dict per call: tritonclient adds its Inference-Header-Content-Length to it.
        return {"Authorization": f"Bearer {env.key}"}

    x = np.random.default_rng(1).uniform(-0.9, 0.9, size=(5, 2)).astype(np.float32)
    with live_server(env.app) as url:
        client = triton_http.InferenceServerClient(url.removeprefix("http://"))
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("hello", headers=auth())
        assert not client.is_model_ready("hello", "7", headers=auth())
        meta = client.get_model_metadata("hello", headers=auth())
        assert meta["platform"] == "onnx_onnxv1"
        assert meta["versions"] == ["1", "2"]
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 2]}]
        assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 1]}]

        for binary in (True, False):  # the binary tensor extension (the default) and JSON
            tensor = triton_http.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            wanted = [triton_http.InferRequestedOutput("output", binary_data=binary)]
            result = client.infer("hello", [tensor], model_version="1", outputs=wanted, headers=auth())
            np.testing.assert_allclose(result.as_numpy("output"), expected(model, x), atol=1e-5)
        # No outputs named: the client asks for all of them in binary.
        tensor = triton_http.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer("hello", [tensor], headers=auth())
        assert result.get_response()["model_version"] == "2"
        np.testing.assert_allclose(result.as_numpy("output"), expected(model, x), atol=1e-5)

        with pytest.raises(InferenceServerException, match="no version 9"):
            client.get_model_metadata("hello", "9", headers=auth())
        with pytest.raises(InferenceServerException, match="not found"):
            client.get_model_metadata("hello", headers={"Authorization": f"Bearer {env.other_key}"})
        bad = triton_http.InferInput("input", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
        with pytest.raises(InferenceServerException, match=r"shape must be \[-1, 2\]"):
            client.infer("hello", [bad], headers=auth())
        assert client.is_server_live()  # still serving after the errors
        client.close()


@pytest.fixture
def client(env):
    with TestClient(env.app) as client:
        client.headers["Authorization"] = f"Bearer {env.key}"
        yield client


def test_json_tensors_nested_and_flat_fp32_and_fp64(client, kan):
    model, _ = kan
    x = np.array([[0.1, 0.2], [-0.3, 0.4], [0.5, -0.6]])
    want = expected(model, x)
    for data, datatype in ((x.tolist(), "FP64"), (x.ravel().tolist(), "FP32")):
        r = client.post("/v2/models/hello/versions/1/infer", json={
            "id": "req-1", "inputs": [{"name": "input", "shape": [3, 2], "datatype": datatype, "data": data}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_name"] == "hello" and body["model_version"] == "1" and body["id"] == "req-1"
        (out,) = body["outputs"]
        assert out["name"] == "output" and out["shape"] == [3, 1] and out["datatype"] == "FP32"
        np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), want, atol=1e-5)


def test_server_routes(client):
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]


def test_ready_is_503_when_the_database_is_gone(env, client):
    env.app.state.inference.db = __import__("sqlalchemy").create_engine("sqlite:////nonexistent/dir/x.db")
    r = client.get("/v2/health/ready")
    assert r.status_code == 503 and r.json()["ready"] is False


@pytest.mark.parametrize("request_body, words", [
    ({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "INT8", "data": [1, 2]}]}, "FP32 or FP64"),
    ({"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [1, 2]}]}, "needs 4"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}, "named 'input'"),
    ({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": ["a", 2]}]}, "only numbers"),
    ({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [None, 2]}]}, "NaN"),
    ({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [1e300, 2]}]}, "float32"),
    ({"inputs": []}, "'inputs' is empty"),
    ({"nothing": 1}, "'inputs' list"),
    ({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],
      "outputs": [{"name": "nope"}]}, "unknown output"),
])
def test_bad_requests_answer_an_error_object(client, request_body, words):
    r = client.post("/v2/models/hello/infer", json=request_body)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and words in r.json()["error"]


def test_errors_for_models_and_keys_are_error_objects(client, env):
    r = client.get("/v2/models/missing")
    assert r.status_code == 404 and "not found" in r.json()["error"]
    r = client.get("/v2/models/hello", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "error" in r.json()
    r = client.post("/v2/models/hello/infer", content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = client.get("/v2/models/hello/versions/x1")
    assert r.status_code == 400 and "integer from 1" in r.json()["error"]


def test_infer_can_pick_the_formula_graph(tmp_path, kan):
    x0, x1 = sympy.symbols("x0 x1")
    env = serving_env(tmp_path)
    env.register("f", 1, kan[1], formula_onnx=formula_to_onnx([x0 * x1 + 1], variables=["x0", "x1"]))
    tensor = {"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, -1]]}
    with TestClient(env.app) as client:
        client.headers["Authorization"] = f"Bearer {env.key}"
        r = client.post("/v2/models/f/infer", json={"inputs": [tensor], "parameters": {"engine": "formula"}})
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [3.0, -2.0]
        r = client.post("/v2/models/f/infer", json={"inputs": [tensor], "parameters": {"engine": "magic"}})
        assert r.status_code == 400 and "'spline' or 'formula'" in r.json()["error"]
