"""The variable names a job's formulas are written in, one per input column.

An uploaded table's column names can be anything ("petal length (cm)", "class", "pi"),
but a formula variable must be an identifier that is not a Python keyword nor a name
formula text uses for a function or constant. Such a column gets a readable stand-in
in formulas; the model's input names (what predict requests use) stay as they are.
"""
from __future__ import annotations

import keyword
import re

from kanmodel.symbolic.formula import RESERVED_NAMES


def usable(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and name not in RESERVED_NAMES


def formula_variables(input_names: list[str]) -> list[str]:
    """input_names with every unusable name replaced by a distinct usable stand-in."""
    chosen: list[str] = []
    taken = {name for name in input_names if usable(name)}
    for index, name in enumerate(input_names):
        if usable(name):
            chosen.append(name)
            continue
        stem = re.sub(r"\W+", "_", name).strip("_")
        if not stem or not (stem[0].isalpha() or stem[0] == "_"):
            stem = f"x{index}_{stem}".rstrip("_")
        if not usable(stem):
            stem += "_"
        candidate, suffix = stem, 2
        while candidate in taken:
            candidate, suffix = f"{stem}_{suffix}", suffix + 1
        taken.add(candidate)
        chosen.append(candidate)
    return chosen


def renaming_note(input_names: list[str], variables: list[str]) -> str | None:
    renamed = [f"{variable} = column {name!r}" for name, variable in zip(input_names, variables) if name != variable]
    if not renamed:
        return None
    return "formula variables standing for columns whose names cannot be variables: " + "; ".join(renamed)
