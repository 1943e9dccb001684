import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from service.inference.lookup_cache import LookupCache
from service.inference.session_cache import CacheKey, OnnxSessionCache
from onnx_graphs import affine_model
from serving_setup import serving_env


def ort_session(blob: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(blob, providers=["CPUExecutionProvider"])


def make_blob(scale: float) -> bytes:
    return affine_model(np.full((2, 1), scale, np.float32), np.zeros(1, np.float32))


def test_loads_on_first_use_then_hits():
    cache = OnnxSessionCache(ort_session)
    loads = []
    blob = make_blob(2.0)

    def load():
        loads.append(1)
        return blob

    key = CacheKey(1, "sha-a")
    first = cache.get(key, load)
    second = cache.get(key, load)
    assert first is second
    assert len(loads) == 1
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)
    y = first.run(None, {"x": np.array([[1.0, 3.0]], np.float32)})[0]
    np.testing.assert_allclose(y, [[8.0]])


def test_new_sha_of_same_model_is_a_separate_entry():
    cache = OnnxSessionCache(ort_session)
    old = cache.get(CacheKey(1, "sha-a"), lambda: make_blob(1.0))
    new = cache.get(CacheKey(1, "sha-b"), lambda: make_blob(3.0))
    x = {"x": np.array([[1.0, 1.0]], np.float32)}
    assert old.run(None, x)[0][0, 0] == pytest.approx(2.0)
    assert new.run(None, x)[0][0, 0] == pytest.approx(6.0)


def test_lru_evicts_by_count():
    cache = OnnxSessionCache(ort_session, max_sessions=2)
    for i in range(3):
        cache.get(CacheKey(i, f"s{i}"), lambda i=i: make_blob(float(i)))
    cache.get(CacheKey(1, "s1"), lambda: pytest.fail("s1 should still be cached"))
    cache.get(CacheKey(3, "s3"), lambda: make_blob(3.0))
    assert [k.model_id for k in cache.keys()] == [1, 3]  # 2 was least recently used
    assert cache.stats.evictions == 2


def test_lru_evicts_by_bytes_but_keeps_an_oversized_newcomer():
    blob = make_blob(1.0)
    cache = OnnxSessionCache(ort_session, max_sessions=100, max_bytes=2 * len(blob) + 1)
    for i in range(3):
        cache.get(CacheKey(i, "s"), lambda: blob)
    assert len(cache) == 2 and cache.total_bytes == 2 * len(blob)
    tiny = OnnxSessionCache(ort_session, max_bytes=10)
    tiny.get(CacheKey(0, "s"), lambda: blob)
    assert len(tiny) == 1


def test_invalidate_model_drops_all_its_entries():
    cache = OnnxSessionCache(ort_session)
    cache.get(CacheKey(7, "a", "spline"), lambda: make_blob(1.0))
    cache.get(CacheKey(7, "a", "formula"), lambda: make_blob(1.0))
    cache.get(CacheKey(8, "b"), lambda: make_blob(1.0))
    assert cache.invalidate_model(7) == 2
    assert [k.model_id for k in cache.keys()] == [8]
    assert cache.total_bytes == len(make_blob(1.0))


def test_concurrent_misses_load_once_and_threads_agree():
    cache = OnnxSessionCache(ort_session)
    loads = []
    blob = make_blob(5.0)

    def slow_load():
        loads.append(1)
        time.sleep(0.05)
        return blob

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(CacheKey(1, "s"), slow_load)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1
    assert len({id(r) for r in results}) == 1
    assert cache.stats.misses == 1 and cache.stats.hits == 7


def test_failed_load_is_not_cached_and_warm_skips_it():
    cache = OnnxSessionCache(ort_session)
    with pytest.raises(Exception):
        cache.get(CacheKey(1, "bad"), lambda: b"not an onnx graph")
    assert len(cache) == 0 and cache.stats.loads_failed == 1
    loaded = cache.warm([(CacheKey(1, "bad"), lambda: b"junk"),
                         (CacheKey(2, "good"), lambda: make_blob(1.0))])
    assert loaded == 1 and CacheKey(2, "good") in cache


@pytest.mark.parametrize("warm_models, expected", [(2, {"b", "c"}), (0, set())])
def test_app_start_warms_the_most_recently_registered_versions(tmp_path, monkeypatch, warm_models, expected):
    monkeypatch.setenv("KANSERVE_WARM_MODELS", str(warm_models))
    env = serving_env(tmp_path)
    ids = {}
    for name, scale in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
        blob = affine_model(np.full((2, 1), scale, np.float32), np.zeros(1, np.float32), "input", "output")
        ids[env.register(name, 1, blob)] = name
        time.sleep(0.01)  # distinct created_at
    runtime = env.app.state.inference
    with TestClient(env.app):
        deadline = time.monotonic() + 10
        while len(runtime.cache) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.05)
        assert {ids[key.model_id] for key in runtime.cache.keys()} == expected
        assert runtime.cache.stats.hits == 0


def test_lookup_cache_forgets_after_its_ttl_and_can_be_off():
    memo = LookupCache(ttl_s=0.05)
    memo.put("k", 1)
    assert memo.get("k") == 1
    time.sleep(0.06)
    assert memo.get("k") is None
    off = LookupCache(ttl_s=0)
    off.put("k", 1)
    assert off.get("k") is None
    small = LookupCache(ttl_s=10, max_entries=2)
    for i in range(3):
        small.put(i, i)
    assert small.get(2) == 2 and len([k for k in range(3) if small.get(k) is not None]) <= 2
