"""bench/kan_layer.py --device cuda, its code run on the CPU (what --cpu-smoke does): the
GPU benchmark that scripts/gpu_check.sh runs on a CUDA machine keeps working between GPU
runs, and its section is rebuilt from the JSON lines it prints."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import kan_layer  # noqa: E402
import kan_layer_cuda  # noqa: E402

IMPLEMENTATIONS = ("kanmodel", "full-basis", "floor", "mlp")


def test_cuda_benchmark_code_runs_on_the_cpu_and_renders_its_section(tmp_path):
    torch.set_num_threads(1)
    printed = []
    results = kan_layer_cuda.run(kan_layer.SHAPES[:2], [32], 1, torch.device("cpu"),
                                 emit=lambda result: printed.append(json.dumps(result)))
    assert [(r["width"], r["batch"], r["device"]) for r in results] == [([2, 5, 1], 32, "cpu"),
                                                                        ([6, 8, 4, 1], 32, "cpu")]
    for result in results:
        assert result["errors"] == {}
        assert set(result["times"]) == {f"{name}/{mode}" for name in IMPLEMENTATIONS
                                        for mode in ("forward", "forward_backward")}
        assert all(seconds > 0 for seconds in result["times"].values())
        assert set(result["memory"]) == set(IMPLEMENTATIONS)
    section = kan_layer_cuda.format_section(results, "x")
    assert "| [6, 8, 4, 1] (10) | 32 | forward+backward |" in section
    assert "- [6, 8, 4, 1]: " in section and "target >= 2x" in section

    # The docs path: --render rebuilds the same section from the printed JSON lines.
    log = tmp_path / "bench_cuda.txt"
    log.write_text("\n".join(printed) + "\n## KAN layer on CUDA\n")
    assert kan_layer.render_log(log, 1, "x") == {"KAN layer on CUDA": section}
