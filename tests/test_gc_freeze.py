"""After start-up the gateway freezes the objects its imports made (gc.freeze), once per
process, unless KANSERVE_GC_FREEZE=false. Checked in fresh processes: freezing is
process-wide state."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import gc, json, sys, tempfile
from pathlib import Path
sys.path.insert(0, {tests!r})
from fastapi.testclient import TestClient
from serving_setup import serving_env

counts = [gc.get_freeze_count()]
for _ in range(2):  # a second app in the same process must not freeze again
    with TestClient(serving_env(Path(tempfile.mkdtemp())).app) as client:
        assert client.get("/healthz").status_code == 200
        counts.append(gc.get_freeze_count())
print(json.dumps(counts))
"""


@pytest.mark.parametrize("setting, freezes", [(None, True), ("false", False)])
def test_start_up_objects_are_frozen_once_per_process(setting, freezes):
    env = {k: v for k, v in os.environ.items() if k != "KANSERVE_GC_FREEZE"}
    if setting is not None:
        env["KANSERVE_GC_FREEZE"] = setting
    tests = str(Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=tests)], env=env, capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    before, first, second = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == 0
    if freezes:
        # Frozen objects that die by reference counting leave the count; a second freeze
        # would add the second app's objects to it.
        assert first > 10_000 and second <= first
    else:
        assert first == second == 0
