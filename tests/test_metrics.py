"""/metrics: request counts and latency per route template and model, batch sizes,
session cache hits/misses and jobs by status, in the Prometheus text format."""

import numpy as np
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from onnx_graphs import affine_model
from service.db.models import Job
from service.db.session import make_session_factory
from serving_setup import serving_env


def samples(text: str) -> dict:
    """{(sample name, frozenset(labels)): value}"""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_metrics_count_what_happened(tmp_path):
    env = serving_env(tmp_path)
    env.register("lin", 1, affine_model(np.ones((2, 1), np.float32), np.zeros(1, np.float32), "input", "output"))
    with make_session_factory(env.engine)() as db:
        for status in ("queued", "queued", "running", "failed"):
            db.add(Job(owner_key_id=env.key_id, name="j", status=status, spec={}, spec_sha256="0" * 64, queue="cpu"))
        db.commit()
    with TestClient(env.app) as client:
        client.headers["Authorization"] = f"Bearer {env.key}"
        for _ in range(3):
            assert client.post("/v1/models/lin/predict", json={"inputs": [[1, 2], [3, 4]]}).status_code == 200
        assert client.post("/v1/models/lin/predict", json={"inputs": [[1]]}).status_code == 422
        assert client.post("/v1/models/ghost/predict", json={"inputs": [[1, 2]]}).status_code == 404
        r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = samples(r.text)
    route = "/v1/models/{name}/predict"

    def requests(model, status):
        return m.get(("kanserve_http_requests_total", frozenset(
            {"method": "POST", "route": route, "model": model, "status": status}.items())), 0)

    assert requests("lin", "200") == 3
    assert requests("lin", "422") == 1
    assert requests("", "404") == 1  # made-up names do not become label values
    latency = m[("kanserve_http_request_duration_seconds_count",
                 frozenset({"method": "POST", "route": route, "model": "lin"}.items()))]
    assert latency == 4
    # Three successful runs of 2 rows each (the 422 never reached the graph).
    assert m[("kanserve_inference_batch_rows_count", frozenset())] == 3
    assert m[("kanserve_inference_batch_rows_sum", frozenset())] == 6
    calls = {where: m.get(("kanserve_inference_calls_total", frozenset({"where": where}.items())), 0)
             for where in ("loop", "pool")}
    # The first call of a graph, not yet measured, runs on the pool; later ones where they are cheaper.
    assert calls["pool"] >= 1 and calls["loop"] + calls["pool"] == 3
    assert m[("kanserve_session_cache_misses_total", frozenset())] == 1
    assert m[("kanserve_session_cache_hits_total", frozenset())] >= 2
    assert m[("kanserve_session_cache_entries", frozenset())] == 1
    assert m[("kanserve_jobs", frozenset({"status": "queued"}.items()))] == 2
    assert m[("kanserve_jobs", frozenset({"status": "failed"}.items()))] == 1


def test_unmatched_paths_share_one_label(tmp_path):
    env = serving_env(tmp_path)
    with TestClient(env.app) as client:
        for path in ("/nope/1", "/nope/2", "/nope/3"):
            assert client.get(path).status_code == 404
        m = samples(client.get("/metrics").text)
    key = ("kanserve_http_requests_total",
           frozenset({"method": "GET", "route": "unmatched", "model": "", "status": "404"}.items()))
    assert m[key] == 3


def test_batch_sizes_become_cumulative_histograms_when_scraped():
    from service.metrics import BATCH_BUCKETS, ServiceMetrics

    metrics = ServiceMetrics()
    for n_requests, n_rows, where in [(1, 1, "loop"), (1, 1, "loop"), (3, 5, "pool"), (1, 5000, "pool")]:
        metrics.observe_batch(n_requests, n_rows, where)
    m = samples(metrics.exposition().decode())

    def bucket(name, le):
        return m[(f"kanserve_inference_batch_{name}_bucket", frozenset({"le": le}.items()))]

    assert [bucket("rows", le) for le in ("1.0", "4.0", "8.0", "4096.0", "+Inf")] == [2, 2, 3, 3, 4]
    assert bucket("requests", "1.0") == 3 and bucket("requests", "4.0") == 4
    assert m[("kanserve_inference_batch_rows_sum", frozenset())] == 1 + 1 + 5 + 5000
    assert m[("kanserve_inference_batch_rows_count", frozenset())] == 4
    assert len([key for key in m if key[0] == "kanserve_inference_batch_rows_bucket"]) == len(BATCH_BUCKETS) + 1
    calls = {where: m[("kanserve_inference_calls_total", frozenset({"where": where}.items()))]
             for where in ("loop", "pool")}
    assert calls == {"loop": 2, "pool": 2}
