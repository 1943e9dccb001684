"""Bad input never gets a 500: each case names its expected status and what the message says."""
from __future__ import annotations

import copy
import json

import pytest

from kanserve_harness import HELLOKAN_SPEC, api_harness


def spec_with(path: str, value):
    """HELLOKAN_SPEC with the value at a dotted path replaced (None deletes it)."""
    spec = copy.deepcopy(HELLOKAN_SPEC)
    *parents, leaf = path.split(".")
    node = spec
    for part in parents:
        node = node[part]
    if value is None:
        del node[leaf]
    else:
        node[leaf] = value
    return spec


INLINE = {"inline": {"X": [[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [3.0, 5.0]], "y": [[1.0], [2.0], [3.0], [4.0]]}}

# (case id, raw body or spec, expected status, expected loc (joined) or None, words the message must contain)
JOB_CASES = [
    ("malformed json", b'{"name": "x", ', 422, "body", ["Invalid JSON", "line 1 column 14"]),
    ("body not an object", b"[1, 2]", 422, "body", ["object"]),
    ("missing data", spec_with("data", None), 422, "body.data", ["required"]),
    ("width not ints", spec_with("model.width", ["two", 5, 1]), 422, "body.model.width.0", ["integer"]),
    ("width one layer", spec_with("model.width", [2]), 422, "body.model.width", ["at least 2"]),
    ("width neither list nor auto", spec_with("model.width", "big"), 422, "body.model.width", ["valid array"]),
    ("discover for classification", {**spec_with("data", {"inline": {"X": [[0.0, 1.0]] * 4, "y": [[0.0], [1.0]] * 2}}),
                                     "task": "classification", "model": {"width": [2, 3, 2]},
                                     "symbolic": {"mode": "discover"}}, 422, "body.symbolic", ["for regression"]),
    ("auto width without validation rows", {**spec_with("model", None), "train": {"val_fraction": 0}}, 422,
     "body.train", ["val_fraction must be above 0"]),
    ("auto classification one class", {**spec_with("data", {"inline": {"X": [[0.0, 1.0]] * 4, "y": [[0.0]] * 4}}),
                                       "task": "classification", "model": {"width": "auto"}}, 422, "body.data",
     ["at least 2 classes"]),
    ("unknown field", spec_with("train.stepz", 3), 422, "body.train.stepz", ["Extra inputs"]),
    ("bad optimizer", spec_with("train.optimizer", "sgd"), 422, "body.train.optimizer", ["lbfgs", "adam"]),
    ("decreasing grids", spec_with("train.grid_schedule", [5, 3]), 422, "body.train.grid_schedule",
     ["strictly increasing"]),
    ("width vs inputs", spec_with("model.width", [3, 5, 1]), 422, "body.model.width.0",
     ["width[0] is 3", "2 input"]),
    ("width vs outputs", spec_with("model.width", [2, 5, 2]), 422, "body.model.width.2", ["width[-1] is 2"]),
    ("grid disagrees", spec_with("model.grid", 7), 422, "body.model.grid", ["grid_schedule starts at 3"]),
    ("import in formula", spec_with("data.formula", "__import__('os').system('true')"), 422, "body.data.formula",
     ["not allowed"]),
    ("attribute in formula", spec_with("data.formula", "x0.__class__"), 422, "body.data.formula",
     ["not allowed"]),
    ("lambda in formula", spec_with("data.formula", "(lambda: 1)()"), 422, "body.data.formula", ["not allowed"]),
    ("formula without range", spec_with("data.formula", "x0 + x7"), 422, "body.data.ranges", ["x7"]),
    ("formula not finite", spec_with("data.formula", "log(x0 - 5)"), 422, "body.data.formula", ["non-finite"]),
    ("empty range", spec_with("data.ranges", {"x0": [1, 1], "x1": [-1, 1]}), 422, "body.data.ranges",
     ["low < high"]),
    ("too many samples", spec_with("data.n_samples", 5_000_000), 422, "body.data.n_samples", ["limit"]),
    ("too many steps", spec_with("train.steps_per_grid", 10**6), 422, "body.train.steps_per_grid", ["limit"]),
    ("two data sources", spec_with("data", {**INLINE, "dataset_id": "x"}), 422, "body.data", ["exactly one"]),
    ("unknown dataset", spec_with("data", {"dataset_id": "nope", "target": ["y"]}), 422, "body.data.dataset_id",
     ["not found"]),
    ("NaN in inline X", b"", 422, "body.data.inline.X.1.0", ["finite"]),
    ("ragged inline X", spec_with("data", {"inline": {"X": [[0.0, 1.0], [1.0]], "y": [[1.0], [2.0]]}}), 422,
     "body.data.inline", ["row 1 has 1 values"]),
    ("string numbers", spec_with("data", {"inline": {"X": [["1", 2.0], [1.0, 2.0]], "y": [[1.0], [2.0]]}}), 422,
     "body.data.inline.X.0.0", ["number"]),
    ("rows differ", spec_with("data", {"inline": {"X": [[0.0, 1.0]] * 3, "y": [[1.0]] * 2}}), 422,
     "body.data.inline", ["3 rows", "2"]),
    ("bad name", spec_with("name", "../etc"), 422, "body.name", ["pattern"]),
    ("seed beyond 32 bits", spec_with("train.seed", 10**30), 422, "body.train.seed", ["less than"]),
    ("empty inline X", spec_with("data", {"inline": {"X": [], "y": []}}), 422, "body.data.inline.X", ["at least 1"]),
    ("class names count", {**spec_with("data", {"inline": {"X": [[0.0, 1.0]] * 4, "y": [[0.0], [1.0]] * 2}}),
                           "task": "classification", "model": {"width": [2, 3, 2]}, "class_names": ["a"]},
     422, "body.class_names", ["1 class_names"]),
    ("unknown symbolic function", spec_with("symbolic.library", ["sin", "sinh"]), 422, "body.symbolic.library",
     ["unknown function(s) ['sinh']", "gaussian"]),
    ("empty symbolic library", spec_with("symbolic.library", []), 422, "body.symbolic.library", ["at least 1"]),
    ("classification bad labels", {**spec_with("data", INLINE), "task": "classification",
                                   "model": {"width": [2, 3, 2]}}, 422, "body.data", ["class labels"]),
]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with api_harness(tmp_path_factory.mktemp("bad-inputs")) as harness:
        yield harness


@pytest.mark.parametrize("case, body, status, loc, words", JOB_CASES, ids=[case[0] for case in JOB_CASES])
def test_bad_job_submissions(api, case, body, status, loc, words):
    if case == "NaN in inline X":
        # Python's json accepts the NaN literal, so the server sees a real NaN.
        body = json.dumps(spec_with("data", {"inline": {"X": [[0.0, 1.0], [float("nan"), 2.0]],
                                                        "y": [[1.0], [2.0]]}})).encode()
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = api.client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    payload = response.json()
    text = payload["message"] if "message" in payload else payload["detail"]
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"
    if loc is not None:
        locs = [".".join(str(part) for part in error["loc"]) for error in payload["detail"]]
        assert loc in locs, locs
    assert len(response.content) < 10_000  # errors never echo a big input back
    assert api.queue.sent == []


def test_huge_payload_is_413_before_parsing(tmp_path):
    with api_harness(tmp_path, max_request_bytes=50_000) as small:
        rows = [[0.5, 0.25]] * 10_000
        spec = spec_with("data", {"inline": {"X": rows, "y": [[1.0]] * 10_000}})
        response = small.client.post("/v1/jobs", json=spec)
        assert response.status_code == 413 and "50000 bytes" in response.json()["detail"]

        def chunks():  # no Content-Length: the limit counts what arrives
            body = json.dumps(spec).encode()
            for start in range(0, len(body), 8192):
                yield body[start:start + 8192]

        streamed = small.client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413


@pytest.mark.parametrize("path, status, words", [
    ("/v1/models/x/versions/99999999999999999999999", 422, "integer from 1"),
    ("/v1/models/x/versions/-1", 422, "integer from 1"),
    ("/v1/models/x/versions/1/artifacts/onnx", 404, "not found"),
    ("/v1/jobs?limit=100000", 422, "less than or equal"),
    ("/v1/jobs?offset=487176479689894447284224", 422, "less than or equal"),  # was an OverflowError
    ("/v1/jobs/no-such-job", 404, "not found"),
])
def test_bad_read_requests(api, path, status, words):
    response = api.client.get(path)
    assert response.status_code == status and words in str(response.json()), response.text


def test_other_keys_resources_are_404_and_no_key_is_401(api):
    job = api.client.post("/v1/jobs", json=HELLOKAN_SPEC)
    assert job.status_code == 202
    job_id = job.json()["id"]
    api.queue.sent.clear()
    for method, path in (("get", f"/v1/jobs/{job_id}"), ("post", f"/v1/jobs/{job_id}/cancel"),
                         ("get", f"/v1/jobs/{job_id}/events")):
        response = getattr(api.other, method)(path)
        assert response.status_code == 404 and job_id in response.json()["detail"]
        unauthenticated = getattr(api.anonymous, method)(path)
        assert unauthenticated.status_code == 401 and unauthenticated.headers["www-authenticate"] == "Bearer"
    assert api.other.get("/v1/jobs").json()["total"] == 0
    bad = api.anonymous.get("/v1/jobs", headers={"Authorization": "Bearer ks_not-a-key"})
    assert bad.status_code == 401 and "invalid" in bad.json()["detail"]
    assert api.anonymous.get("/v1/jobs", headers={"Authorization": "Basic abc"}).status_code == 401
