"""The predict route's plain-Python parse of small positional-rows bodies must accept
exactly what the PredictRequest schema accepts, with the same values; everything it
does not take is left to the schema (which words the errors)."""

import pytest
from pydantic import ValidationError

from service.api.predict import PLAIN_PARSE_MAX_VALUES, PredictRequest, _plain_rows

TAKEN = [
    b'{"inputs": [[0.5, -0.25]]}',
    b'{"inputs": [[1, 2]], "engine": "formula"}',
    b'{"inputs": [[1e30, -2.5e-7], [3, 4]], "engine": "spline", "extra": {"ignored": true}}',
    b'{"inputs": [[18446744073709551616, 0]]}',  # beyond int64: orjson gives a float
    b'{"inputs": []}',                             # refused later, by the route (empty batch)
    b'{"inputs": [[]]}',                           # refused later, by the route (feature count)
    b'{"inputs": [[1, 2], [3]]}',                  # refused later, by the route (ragged)
]
LEFT_TO_THE_SCHEMA = [
    b'{"inputs": {"x0": [1.0], "x1": [2.0]}}',    # named columns
    b'{"inputs": [[true, 2.0]]}',
    b'{"inputs": [["1.0", 2.0]]}',
    b'{"inputs": [[null, 2.0]]}',
    b'{"inputs": [[[1.0], 2.0]]}',
    b'{"inputs": [1.0, 2.0]}',
    b'{"inputs": "rows"}',
    b'{"inputs": [[1e400, 0.0]]}',
    b'{"inputs": [[NaN, 0.0]]}',
    b'{"inputs": [[0.0, 0.0]], "engine": "magic"}',
    b'{"inputs": [[0.0, 0.0]], "engine": null}',
    b'{"engine": "spline"}',
    b'[[0.0, 0.0]]',
    b'{"inputs": [[0.0, 0.0]]',
    b'',
]


def _schema(raw: bytes):
    try:
        body = PredictRequest.model_validate_json(raw)
    except ValidationError:
        return None
    return body.inputs, body.engine


@pytest.mark.parametrize("raw", TAKEN)
def test_small_row_bodies_are_taken_with_the_schemas_values(raw):
    plain = _plain_rows(raw)
    assert plain is not None
    expected = _schema(raw)
    assert expected is not None and plain[1] == expected[1]
    assert [[float(v) for v in row] for row in plain[0]] == expected[0]


@pytest.mark.parametrize("raw", LEFT_TO_THE_SCHEMA)
def test_other_bodies_are_left_to_the_schema(raw):
    assert _plain_rows(raw) is None


def test_large_bodies_are_left_to_the_schema():
    width = 8
    rows = PLAIN_PARSE_MAX_VALUES // width
    small = ('{"inputs": [' + ", ".join(["[" + ", ".join(["0.5"] * width) + "]"] * rows) + "]}").encode()
    large = ('{"inputs": [' + ", ".join(["[" + ", ".join(["0.5"] * width) + "]"] * (rows + 1)) + "]}").encode()
    assert _plain_rows(small) is not None and _plain_rows(large) is None
    assert _schema(large) is not None  # still a valid request, validated by the schema
