"""Writes one benchmark's section into docs/benchmarks.md and leaves the others alone.

Each benchmark owns the sections whose '## heading' it writes; several benchmarks
share the file, so a run replaces only its own sections.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(section: str, docs: Path = DOCS) -> None:
    """section: markdown that starts with its '## heading' line. Replaces the section
    with that heading (up to the next '## ' heading) or appends it."""
    heading = section.split("\n", 1)[0]
    if not heading.startswith("## "):
        raise ValueError(f"a section starts with its '## ' heading, got {heading!r}")
    old = docs.read_text() if docs.exists() else "# Benchmarks\n"
    body = section.strip("\n") + "\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _: body + "\n", old)
    else:
        new = old.rstrip("\n") + "\n\n" + body
    docs.write_text(new.rstrip("\n") + "\n")


def add_docs_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--write-docs, and --render/--command to rebuild `what` from an earlier run's JSON lines."""
    parser.add_argument("--write-docs", action="store_true", help=f"write the {what} into {DOCS}")
    parser.add_argument("--render", metavar="LOG", help=f"write the {what} from the JSON lines an "
                        "earlier run printed (with its --command) instead of measuring")
    parser.add_argument("--command", help="with --render: the command that produced LOG")


def run_command(args: argparse.Namespace) -> str:
    """The command shown in the docs: --command, or how this process was started."""
    script = Path(sys.argv[0]).name
    return args.command or " ".join(
        ["OMP_WAIT_POLICY=PASSIVE .venv/bin/python", f"bench/{script}", *sys.argv[1:]])
