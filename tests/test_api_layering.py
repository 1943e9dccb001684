"""The gateway stays small: importing it (and the CLI, and the Celery app it enqueues
through) never loads torch or kanmodel."""
from __future__ import annotations

import subprocess
import sys

from kanserve_harness import REPO_ROOT


def test_gateway_cli_and_celery_app_do_not_import_torch_or_kanmodel():
    code = ("import sys, service.app, service.cli, workers.celery_app; "
            "service.app.create_app(); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'kanmodel')); "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                            env={"KANSERVE_DATABASE_URL": "sqlite://", "KANSERVE_BROKER_URL": "memory://",
                                 "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
