"""The {version} path parameter, the same on every model route: ASCII digits from 1 to
2**31-1, or 'latest'. Anything else is a 422 naming the parameter (400 on the V2 routes,
as the protocol answers bad requests), never a 500 and never another version."""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from onnx_graphs import affine_model
from serving_setup import serving_env
from service.api.versions import MAX_VERSION, BadVersion, parse_version

# '²' passes str.isdigit() and int() refuses it; '١' (Arabic-Indic one) int() reads as 1.
BAD_VERSIONS = ["%C2%B2", "%D9%A1", "9999999999999999999999999", str(MAX_VERSION + 1), "0", "-1", "1.0", "x1",
                "%EF%BC%91"]  # the last: a fullwidth one

V1_ROUTES = [("get", "/v1/models/m/versions/{v}"), ("get", "/v1/models/m/versions/{v}/artifacts/onnx"),
             ("delete", "/v1/models/m/versions/{v}"), ("post", "/v1/models/m/versions/{v}/predict")]
V2_ROUTES = [("get", "/v2/models/m/versions/{v}"), ("get", "/v2/models/m/versions/{v}/ready"),
             ("post", "/v2/models/m/versions/{v}/infer")]
PREDICT = {"inputs": [[1.0, 2.0]]}
INFER = {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    env = serving_env(tmp_path_factory.mktemp("versions"))
    for version in (1, 2):  # y = version * (x0 + x1)
        env.register("m", version, affine_model(np.full((2, 1), version, np.float32), np.zeros(1, np.float32),
                                                "input", "output"))
    with TestClient(env.app, headers={"Authorization": f"Bearer {env.key}"}) as client:
        yield client


def _call(client, method: str, path: str):
    body = INFER if path.startswith("/v2") else PREDICT
    return client.request(method.upper(), path, json=body if method == "post" else None)


@pytest.mark.parametrize("version", BAD_VERSIONS)
@pytest.mark.parametrize("method, route", V1_ROUTES)
def test_v1_routes_answer_422_naming_the_version(client, method, route, version):
    response = _call(client, method, route.format(v=version))
    assert response.status_code == 422, response.text
    issue, = response.json()["detail"]
    assert issue["loc"] == ["path", "version"] and "integer from 1" in issue["msg"]


@pytest.mark.parametrize("version", BAD_VERSIONS)
@pytest.mark.parametrize("method, route", V2_ROUTES)
def test_v2_routes_answer_400_naming_the_version(client, method, route, version):
    response = _call(client, method, route.format(v=version))
    assert response.status_code == 400, response.text
    assert "version must be an integer from 1" in response.json()["error"]


def test_good_versions_resolve_to_the_number_they_write(client):
    for written, number in (("1", 1), ("02", 2), ("latest", 2)):
        assert client.get(f"/v1/models/m/versions/{written}").json()["version"] == number
        assert client.post(f"/v1/models/m/versions/{written}/predict", json=PREDICT).json()["outputs"] == [
            [3.0 * number]]
    assert client.post("/v2/models/m/versions/1/infer", json=INFER).json()["outputs"][0]["data"] == [3.0]
    # In range but not registered: not found.
    assert client.get(f"/v1/models/m/versions/{MAX_VERSION}").status_code == 404
    assert client.post(f"/v1/models/m/versions/{MAX_VERSION}/predict", json=PREDICT).status_code == 404
    assert client.get(f"/v2/models/m/versions/{MAX_VERSION}").status_code == 404


def test_parse_version():
    assert parse_version("7") == 7 and parse_version("latest") is None
    assert parse_version(str(MAX_VERSION)) == MAX_VERSION
    for text in ("", "²", "١", "+1", " 1", "1 ", "0", "00", str(MAX_VERSION + 1), "1" * 5000, "LATEST"):
        with pytest.raises(BadVersion):
            parse_version(text)
