"""JSON columns hold no NaN or infinity (PostgreSQL rejects them): numbers are stored as
finite floats or None."""
from __future__ import annotations

import math


def finite_or_none(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def rounded_or_none(value, digits: int = 2) -> float | None:
    value = finite_or_none(value)
    return None if value is None else round(value, digits)
