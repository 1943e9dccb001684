"""README.md: it starts with the two set-up commands, and its curl walkthrough runs
unchanged against a live embedded service (`kanserve up`: SQLite and the serverless
Celery transport), which makes it the embedded default's end-to-end test too: submit
hellokan, follow its events, read the model, its formula, download its ONNX file."""
from __future__ import annotations

import re
import subprocess

import pytest

from kanserve_harness import REPO_ROOT, free_port, kanserve, process_env, stop, wait_for_log, wait_until_ready

README = (REPO_ROOT / "README.md").read_text()


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def walkthrough_section(text: str) -> str:
    start = text.index("## Walkthrough")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_readme_starts_with_exactly_the_two_setup_commands():
    first_block = re.search(r"^```\w*\n(.*?)^```", README, flags=re.S | re.M).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["make serve", "make test"]
    assert README.index(first_block) < README.index("## ")  # before any section


@pytest.mark.integration
def test_readme_walkthrough_runs_against_a_live_service(tmp_path):
    script = "\n".join(code_blocks(walkthrough_section(README), "bash"))
    assert "curl" in script and "/events" in script and "formulas" in script
    port = free_port()
    env = process_env({"KANSERVE_DATA_DIR": str(tmp_path), "KANSERVE_PROGRESS_INTERVAL_SECONDS": "0.2",
                       "KANSERVE_WORKER_CORES": "1"})
    log = tmp_path / "up.log"
    up = kanserve("up", "--port", str(port), env=env, log=log)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", up, log)
        wait_for_log(log, r"ready\.", up, timeout=90)
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=420,
                                env={**env, "KANSERVE_URL": f"http://127.0.0.1:{port}", "TMPDIR": str(tmp_path)})
        output = result.stdout + result.stderr
        assert result.returncode == 0, output + log.read_text()[-3000:]
    finally:
        stop(up)
    assert re.search(r"^job [0-9a-f]{32}$", output, flags=re.M)
    assert "event: progress" in output and "event: end" in output
    assert "succeeded /v1/models/hellokan/versions/1" in output
    val_rmse = float(re.search(r"version 1 val RMSE (\S+)", output).group(1))
    assert 0 < val_rmse < 0.1, output
    formula = re.search(r"^y = (.+) R2 (\S+) RMSE (\S+)$", output, flags=re.M)
    assert formula and "x0" in formula.group(1) and float(formula.group(2)) > 0.9, output
    assert re.search(r"^artifact onnx \d+ bytes /v1/models/hellokan/versions/1/artifacts/onnx$", output, flags=re.M)
    import onnx

    graph = onnx.load_from_string((tmp_path / "hellokan.onnx").read_bytes()).graph
    assert graph.input[0].type.tensor_type.shape.dim[1].dim_value == 2  # x0, x1

    # The job with only data: a chosen architecture, the exact law, both engines answering 2 * 3.
    assert re.search(r"^chosen \[2, .*\] of \d+ candidates$", output, flags=re.M), output
    assert re.search(r"^y = (N\*mu|mu\*N)  exact True R2 ", output, flags=re.M), output
    for engine in ("formula", "spline"):
        answer = float(re.search(rf"^{engine} predicts (\S+)$", output, flags=re.M).group(1))
        assert answer == pytest.approx(6.0, rel=1e-4 if engine == "formula" else 5e-2), (engine, output)
