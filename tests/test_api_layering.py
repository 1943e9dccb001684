"""The gateway stays small: importing it (and the CLI, and the Celery app it enqueues
through) never loads torch or kanmodel, and no gateway module imports the workers."""
from __future__ import annotations

import ast
import subprocess
import sys

from kanserve_harness import REPO_ROOT


def test_gateway_cli_and_celery_app_do_not_import_torch_or_kanmodel():
    code = ("import sys, service.app, service.cli, service.jobs.queue; "
            "service.app.create_app(); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'kanmodel')); "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                            env={"KANSERVE_DATABASE_URL": "sqlite://", "KANSERVE_BROKER_URL": "memory://",
                                 "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr


def _imported_modules(tree: ast.Module, package: str) -> set[str]:
    """Every module a file names in an import statement, relative imports resolved against ``package``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
    return names


def test_no_gateway_module_imports_the_workers_package():
    offenders = {}
    for path in sorted((REPO_ROOT / "service").rglob("*.py")):
        relative = path.relative_to(REPO_ROOT).with_suffix("")
        package = ".".join(relative.parts[:-1])  # for __init__ too: its package is its folder
        imported = _imported_modules(ast.parse(path.read_text(), filename=str(path)), package)
        if bad := sorted(name for name in imported if name.split(".")[0] == "workers"):
            offenders[str(relative)] = bad
    assert offenders == {}


def test_the_import_walk_sees_absolute_relative_and_nested_imports():
    source = ("import workers.tasks\nfrom workers import pipeline\nfrom . import queue\n"
              "def late():\n    from ..db import models\n")
    assert _imported_modules(ast.parse(source), "service.jobs") == {
        "workers.tasks", "workers", "service.jobs", "service.db"}
