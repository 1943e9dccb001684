"""Request inputs -> the float32 matrix a graph takes: small requests are range-checked
in plain Python, large ones with numpy; both must refuse the same values, and say where."""

import numpy as np
import pytest

from service.inference.inputs import SMALL_REQUEST_VALUES, InputError, columns_matrix, rows_matrix

F32_MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize("n_rows", [1, SMALL_REQUEST_VALUES])  # 2 values a row: the small and the numpy path
@pytest.mark.parametrize("bad", [1e39, -1e39, F32_MAX * 1.01, float("nan"), float("inf")])
def test_values_beyond_float32_are_refused_on_both_paths(n_rows, bad):
    rows = [[0.5, -0.25] for _ in range(n_rows)]
    rows[-1][1] = bad
    with pytest.raises(InputError, match=f"row {n_rows - 1}, input 1 is not a finite float32"):
        rows_matrix(rows, 2)
    columns = {"a": [r[0] for r in rows], "b": [r[1] for r in rows]}
    with pytest.raises(InputError, match=f"row {n_rows - 1}, input 1 is not a finite float32"):
        columns_matrix(columns, ["a", "b"])


@pytest.mark.parametrize("n_rows", [1, SMALL_REQUEST_VALUES])
def test_in_range_values_convert_alike_on_both_paths(n_rows):
    rows = [[float(i), -F32_MAX, 3] for i in range(n_rows)]  # the largest float32 is in range; ints are numbers
    matrix = rows_matrix(rows, 3)
    assert matrix.dtype == np.float32 and matrix.flags.c_contiguous
    np.testing.assert_array_equal(matrix, np.array(rows, dtype=np.float32))
    by_name = columns_matrix({"c": [r[2] for r in rows], "a": [r[0] for r in rows], "b": [r[1] for r in rows]},
                             ["a", "b", "c"])
    assert by_name.flags.c_contiguous
    np.testing.assert_array_equal(by_name, matrix)
