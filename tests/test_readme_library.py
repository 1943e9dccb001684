"""README.md's library example runs unchanged and finds the law it promises."""
from __future__ import annotations

import re
import subprocess
import sys

from kanserve_harness import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def library_example() -> str:
    start = README.index("## Use the library directly")
    section = README[start:README.index("\n## ", start + 1)]
    (block,) = re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    return block


def test_readme_library_example_recovers_the_formula(tmp_path):
    result = subprocess.run([sys.executable, "-c", library_example()], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={"OMP_WAIT_POLICY": "PASSIVE", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    text, error = re.search(r"^F = (.+) \| held-out RMSE (\S+)$", result.stdout, flags=re.M).groups()
    assert text.replace(" ", "") in ("N*mu", "mu*N") and float(error) < 1e-6, result.stdout
    assert (tmp_path / "friction.safetensors").stat().st_size > 0
