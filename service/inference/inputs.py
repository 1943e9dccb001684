"""Turn a request's inputs (positional rows or named columns, already parsed as
finite JSON numbers) into the (rows, n_in) float32 matrix a graph takes, and flag
rows outside the training range. Errors name the field and the problem."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


# Up to this many values, the range checks and extrapolation flags are computed in
# plain Python: a numpy call's fixed cost dominates there (one row, just after the
# process was idle: conversion and np.isfinite(m).all() 11.4 us, conversion and the
# loop 8.5 us).
SMALL_REQUEST_VALUES = 64
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class InputError(ValueError):
    """A request's inputs do not fit the model: `field` names the request's field,
    `problem` says what is wrong (both shown to the client)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def columns_matrix(columns: Mapping[str, Sequence[float]], input_names: Sequence[str],
                   field: str = "inputs") -> np.ndarray:
    """Named columns {"x0": [...], "x1": [...]} -> (rows, n_in) float32, in the
    model's input order."""
    missing = [n for n in input_names if n not in columns]
    unknown = [n for n in columns if n not in input_names]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if unknown:
            parts.append(f"unknown column(s) {unknown}")
        raise InputError(field, f"{'; '.join(parts)}; the model takes {list(input_names)}")
    lengths = {n: len(columns[n]) for n in input_names}
    if len(set(lengths.values())) != 1:
        raise InputError(field, f"columns differ in length {lengths}")
    if next(iter(lengths.values())) == 0:
        raise InputError(field, "empty batch, send at least one row")
    ordered = [columns[n] for n in input_names]
    matrix = np.ascontiguousarray(np.asarray(ordered, dtype=np.float32).T)
    return matrix if _small_and_in_range(matrix, ordered) else _finite(matrix, field)


def rows_matrix(rows: Sequence[Sequence[float]], n_features: int, field: str = "inputs") -> np.ndarray:
    """Positional rows [[x0, x1, ...], ...] -> (rows, n_in) float32."""
    try:
        matrix = np.array(rows, dtype=np.float32)
    except ValueError:  # ragged: numpy refuses an inhomogeneous shape
        widths = sorted({len(row) for row in rows})
        raise InputError(field, f"rows must all have {n_features} values, got rows of {widths} values") from None
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise InputError(field, "empty batch, send at least one row")
    if matrix.shape[1] != n_features:
        raise InputError(field, f"expected {n_features} features per row, got {matrix.shape[1]}")
    return matrix if _small_and_in_range(matrix, rows) else _finite(matrix, field)


def _small_and_in_range(matrix: np.ndarray, values: Sequence[Sequence[float]]) -> bool:
    """True when the request is small and all its values (the lists it was converted
    from) are finite float32 numbers; False sends it to _finite, which also says where."""
    if matrix.size > SMALL_REQUEST_VALUES:
        return False
    limit = _FLOAT32_MAX
    return all(-limit <= value <= limit for line in values for value in line)  # NaN compares False


def _finite(matrix: np.ndarray, field: str) -> np.ndarray:
    # float32 overflow (|x| > 3.4e38) turns a finite JSON number into inf.
    finite = np.isfinite(matrix)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise InputError(field, f"row {row}, input {col} is not a finite float32 number")
    return matrix


def extrapolated_rows(x: np.ndarray, ranges: np.ndarray | None) -> list[bool] | None:
    """x: (rows, n_in); ranges: (n_in, 2), per input [low, high] of the training range.
    True for a row with any input outside its range, where the spline part of the
    model is held constant (see the out-of-grid rule) and answers are extrapolations."""
    if ranges is None:
        return None
    if x.size <= SMALL_REQUEST_VALUES:  # numpy's per-call overhead dominates on a few values
        bounds = ranges.tolist()
        return [any(not low <= value <= high for value, (low, high) in zip(row, bounds)) for row in x.tolist()]
    outside = (x < ranges[:, 0]) | (x > ranges[:, 1])
    return outside.any(axis=1).tolist()
