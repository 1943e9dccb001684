"""POST /v1/datasets: CSV (multipart or raw) and JSON uploads, and every rejection names
the line/row and column; a dataset can then feed a job."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from kanserve_harness import api_harness

GOOD_CSV = b"a,b,target\n0.1,0.2,0.3\n1,2,3\n-1e3,4.5,6\n\n"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with api_harness(tmp_path_factory.mktemp("datasets"), max_upload_bytes=2_000, max_rows=50) as harness:
        yield harness


def upload(api, raw: bytes, client=None):
    return (client or api.client).post("/v1/datasets", files={"file": ("data.csv", raw, "text/csv")},
                                       data={"name": "mine"})


def test_csv_upload_stores_columns_rows_and_sha256(api):
    response = upload(api, GOOD_CSV)
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["columns"] == ["a", "b", "target"] and dataset["n_rows"] == 3 and dataset["name"] == "mine"
    assert dataset["sha256"] == hashlib.sha256(GOOD_CSV).hexdigest() and dataset["size_bytes"] == len(GOOD_CSV)
    assert api.client.get(f"/v1/datasets/{dataset['id']}").json() == dataset
    assert api.other.get(f"/v1/datasets/{dataset['id']}").status_code == 404
    assert [d["id"] for d in api.other.get("/v1/datasets").json()] == []

    from service.datasets.tables import from_npy
    from service.db.models import Dataset

    with api.session_factory() as db:
        values = from_npy(db.get(Dataset, dataset["id"]).values_npy)
    np.testing.assert_array_equal(values, [[0.1, 0.2, 0.3], [1, 2, 3], [-1e3, 4.5, 6]])


def test_raw_csv_and_json_rows_uploads(api):
    raw = api.client.post("/v1/datasets?name=raw", content=GOOD_CSV, headers={"content-type": "text/csv"})
    assert raw.status_code == 201 and raw.json()["name"] == "raw"
    rows = api.client.post("/v1/datasets", json={"name": "j", "columns": ["u", "v"], "rows": [[1, 2], [3, 4.5]]})
    assert rows.status_code == 201 and rows.json()["columns"] == ["u", "v"] and rows.json()["n_rows"] == 2


CSV_CASES = [
    ("empty file", b"", 422, ["empty"]),
    ("header only", b"a,b\n", 422, ["no data rows"]),
    ("ragged row", b"a,b\n1,2\n3\n", 422, ["line 3", "1 values", "2 columns"]),
    ("non-numeric", b"a,b\n1,2\n3,abc\n", 422, ["line 3", "column 'b'", "'abc'"]),
    ("NaN", b"a,b\n1,nan\n", 422, ["line 2", "column 'b'", "not finite"]),
    ("infinity", b"a,b\n1,2\n-inf,3\n", 422, ["line 3", "column 'a'", "not finite"]),
    ("duplicate header", b"a,a\n1,2\n", 422, ["duplicate", "'a'"]),
    ("unnamed column", b"a,\n1,2\n", 422, ["column 2", "no name"]),
    ("not utf-8", b"a,b\n1,\xff\n", 422, ["UTF-8"]),
    ("too many rows", b"a\n" + b"1\n" * 51, 422, ["more than 50"]),
    ("over the size limit", b"a\n" + b"1.000000\n" * 300, 413, ["2000 bytes"]),
]


@pytest.mark.parametrize("case, raw, status, words", CSV_CASES, ids=[c[0] for c in CSV_CASES])
def test_bad_csv_uploads(api, case, raw, status, words):
    response = upload(api, raw)
    assert response.status_code == status, response.text
    payload = response.json()
    text = payload["message"] if status == 422 else payload["detail"]
    for word in words:
        assert word in text, payload


JSON_CASES = [
    ("malformed", b'{"columns": ["a"], "rows": [[1]', ["Invalid JSON"]),
    ("ragged", b'{"columns": ["a", "b"], "rows": [[1, 2], [3]]}', ["row 1 has 1 values"]),
    ("string cell", b'{"columns": ["a"], "rows": [[1], ["x"]]}', ["row 1", "column 'a'", "'x'"]),
    ("boolean cell", b'{"columns": ["a"], "rows": [[true]]}', ["row 0", "not a number"]),
    ("NaN", b'{"columns": ["a"], "rows": [[NaN]]}', ["row 0", "not finite"]),
    ("no rows", b'{"columns": ["a"], "rows": []}', ["rows"]),
    # json.loads raised UnicodeDecodeError, OverflowError (via float()) and RecursionError here: 500s.
    ("invalid UTF-8", b'{"columns": ["a"], "rows": [[1]], "name": "\xff"}', ["Invalid JSON", "unicode"]),
    ("1e400 written out", b'{"columns": ["a"], "rows": [[1' + b"0" * 400 + b"]]}",
     ["row 0", "column 'a'", "beyond the float64 range"]),
    ("deep nesting", b'{"columns": ["a"], "rows": ' + b"[" * 300 + b"]" * 300 + b"}", ["Invalid JSON", "recursion"]),
]


@pytest.mark.parametrize("case, raw, words", JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_bad_json_uploads(api, case, raw, words):
    response = api.client.post("/v1/datasets", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    for word in words:
        assert word in response.json()["message"], response.json()


def test_unsupported_content_type_and_missing_file(api):
    assert api.client.post("/v1/datasets", content=b"x", headers={"content-type": "image/png"}).status_code == 415
    missing = api.client.post("/v1/datasets", files={"other": ("x.csv", b"a\n1\n")})
    assert missing.status_code == 422 and "'file'" in missing.json()["message"]
    assert api.anonymous.post("/v1/datasets", content=GOOD_CSV, headers={"content-type": "text/csv"}).status_code == 401


def test_jobs_from_a_dataset_check_columns_and_widths(api):
    dataset_id = upload(api, GOOD_CSV).json()["id"]
    base = {"name": "from-csv", "model": {"width": [2, 3, 1]}, "train": {"grid_schedule": [3], "steps_per_grid": 2,
                                                                      "val_fraction": 0.0}}
    ok = api.client.post("/v1/jobs", json={**base, "data": {"dataset_id": dataset_id, "target": ["target"]}})
    assert ok.status_code == 202, ok.text
    cases = [
        ({"dataset_id": dataset_id, "target": ["nope"]}, "body.data.target.0", "not in dataset columns"),
        ({"dataset_id": dataset_id, "target": ["target"], "features": ["a"]}, "body.model.width.0", "1 input"),
        ({"dataset_id": dataset_id, "target": ["a"], "features": ["a", "b"]}, "body.data.features", "both"),
    ]
    for data, loc, words in cases:
        response = api.client.post("/v1/jobs", json={**base, "data": data})
        assert response.status_code == 422, response.text
        assert loc in [".".join(map(str, e["loc"])) for e in response.json()["detail"]]
        assert words in response.json()["message"]
    # Another key cannot train on this dataset: it is "not found" for them.
    theirs = api.other.post("/v1/jobs", json={**base, "data": {"dataset_id": dataset_id, "target": ["target"]}})
    assert theirs.status_code == 422 and "not found" in theirs.json()["message"]
