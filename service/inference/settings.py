"""Serving settings (environment prefix ``KANSERVE_``, like service.config.Settings).

Kept apart from the gateway's Settings so the inference path can be configured and
tested on its own; every field has a default, so nothing needs setting.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KANSERVE_", extra="ignore")

    predict_max_rows: int = Field(10_000, ge=1, description="Rows one predict/infer request may send.")
    session_cache_max_sessions: int = Field(64, ge=1, description="ONNX sessions kept per process.")
    session_cache_max_bytes: int = Field(512 * 1024 * 1024, ge=1,
                                         description="ONNX bytes kept per process.")
    warm_models: int = Field(8, ge=0, description="Most recently registered model versions "
                                                  "loaded at start-up (0: none).")
    model_lookup_ttl_s: float = Field(1.0, ge=0, description="How long the version a request names "
                                      "is remembered; a version registered or deleted by another "
                                      "process is seen within this time (0: look up every request).")
    inference_threads: int = Field(2, ge=1, description="Threads running onnxruntime calls.")
    # On by default: with 64 clients it cut the server's CPU per request by a third and
    # raised the [14,64,32,2] model's throughput 1.6x; a lone client runs at once either
    # way (docs/benchmarks.md, "Serving").
    batching: bool = Field(True, description="Merge concurrent requests to one model into one "
                                             "onnxruntime call.")
    batch_max_rows: int = Field(256, ge=1, description="Most rows merged into one call.")
    # 200 us: within the 100-250 us of CPU a thread hand-off costs (bench/predict_path.py):
    # a lone call predicted to be quicker than that is cheaper run than handed off.
    inline_max_us: int = Field(200, ge=0, description="A lone request (nothing queued or running "
                               "for its model) whose call is predicted, from the model's measured "
                               "run times, to take at most this long runs on the event loop, "
                               "as does a queued one that merges with no other; batches of "
                               "several requests run on the inference pool (0: every call on "
                               "the pool).")
    batch_max_delay_us: int = Field(0, ge=0, description="How long an idle model waits for "
                                                         "company before running a request.")
    # On by default: at 64 clients the p99 of single-row predictions fell from 58-95 ms
    # to 15-20 ms (the full collections walked every object the imports had made).
    gc_freeze: bool = Field(True, description="After start-up, move every object made so far "
                            "out of the garbage collector's reach (gc.freeze), once per process, so "
                            "that full collections only walk what serving allocates.")
