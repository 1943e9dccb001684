"""Suite-wide pytest set-up: the ``cuda`` marker.

A test marked ``cuda`` runs on a CUDA device and is skipped, with the one reason
"CUDA not available", where torch sees none (scripts/gpu_check.sh runs them on a
machine with one). torch is imported only when such a test was collected: the gateway's
tests run without it.
"""
from __future__ import annotations

import pytest

CUDA_MISSING = "CUDA not available"


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: runs on a CUDA device; skipped where torch sees none")


def pytest_collection_modifyitems(config, items):
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=CUDA_MISSING)
    for item in marked:
        item.add_marker(skip)
