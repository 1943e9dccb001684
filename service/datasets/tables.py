"""Parse uploaded tables (CSV text or JSON rows) into a float64 array with column names.

Every rejection names the line (CSV: 1-based line in the file, header = line 1)
or the row index (JSON: 0-based) and the column.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np


class TableError(ValueError):
    """The upload is not a usable numeric table."""


@dataclass(frozen=True)
class Table:
    columns: list[str]
    values: np.ndarray  # (n_rows, n_columns) float64, all finite


def _check_columns(columns: list[str], max_columns: int) -> list[str]:
    names = [str(name).strip() for name in columns]
    if not names or all(not name for name in names):
        raise TableError("the header has no column names")
    if len(names) > max_columns:
        raise TableError(f"the table has {len(names)} columns, more than the limit of {max_columns}")
    for index, name in enumerate(names):
        if not name:
            raise TableError(f"column {index + 1} of the header has no name")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TableError(f"duplicate column names in the header: {duplicates}")
    return names


def _number(cell: object, where: str, column: str) -> float:
    if isinstance(cell, bool) or cell is None:
        raise TableError(f"{where}, column '{column}': {cell!r} is not a number")
    try:
        value = float(cell.strip() if isinstance(cell, str) else cell)
    except (TypeError, ValueError):
        raise TableError(f"{where}, column '{column}': {cell!r} is not a number") from None
    except OverflowError:  # a JSON integer literal beyond the float range
        raise TableError(f"{where}, column '{column}': the integer is beyond the float64 range") from None
    if not math.isfinite(value):
        raise TableError(f"{where}, column '{column}': {cell!r} is not finite (NaN and infinity are rejected)")
    return value


def parse_csv(raw: bytes, max_rows: int, max_columns: int) -> Table:
    if not raw.strip():
        raise TableError("the file is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TableError(f"the file is not UTF-8 text (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except csv.Error as exc:
        raise TableError(f"line 1: {exc}") from None
    columns = _check_columns(header, max_columns)
    rows: list[list[float]] = []
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue  # blank lines (e.g. a trailing newline) carry no data
            if len(row) != len(columns):
                raise TableError(f"line {line} has {len(row)} values but the header has {len(columns)} columns")
            if len(rows) >= max_rows:
                raise TableError(f"the file has more than {max_rows} data rows (the limit)")
            rows.append([_number(cell, f"line {line}", columns[i]) for i, cell in enumerate(row)])
    except csv.Error as exc:
        raise TableError(f"line {reader.line_num}: {exc}") from None
    if not rows:
        raise TableError("the file has a header but no data rows")
    return Table(columns=columns, values=np.asarray(rows, dtype=np.float64))


def parse_rows(columns: list[str], rows: list[list[object]], max_rows: int, max_columns: int) -> Table:
    names = _check_columns(columns, max_columns)
    if not rows:
        raise TableError("rows is empty")
    if len(rows) > max_rows:
        raise TableError(f"rows has {len(rows)} entries, more than the limit of {max_rows}")
    values = []
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(names):
            size = len(row) if isinstance(row, list) else "not a list of"
            raise TableError(f"row {index} has {size} values but there are {len(names)} columns")
        values.append([_number(cell, f"row {index}", names[i]) for i, cell in enumerate(row)])
    return Table(columns=names, values=np.asarray(values, dtype=np.float64))


def to_npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(values, dtype=np.float64), allow_pickle=False)
    return buffer.getvalue()


def from_npy(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)
