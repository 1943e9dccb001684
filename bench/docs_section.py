"""Writes one benchmark's section into docs/benchmarks.md and leaves the others alone.

Each benchmark owns the sections whose '## heading' it writes; several benchmarks
share the file, so a run replaces only its own sections.
"""
from __future__ import annotations

import re
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
