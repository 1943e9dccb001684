"""The predict route's plain-Python paths for small requests agree with the general
ones: the parse of small positional-rows bodies accepts exactly what the PredictRequest
schema accepts, with the same values (everything else is left to the schema, which
words the errors), and the labels are numpy's argmax."""

import json

import pytest
from pydantic import ValidationError

from service.api.predict import (PLAIN_PARSE_MAX_BRACKETS, PLAIN_PARSE_MAX_BYTES, PLAIN_PARSE_MAX_VALUES,
                                 PredictRequest, _plain_rows)

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


@pytest.mark.parametrize("depth", [PLAIN_PARSE_MAX_BRACKETS, 201, 600])
def test_long_or_deeply_nested_bodies_are_left_to_the_schema(depth):
    # pydantic's JSON parser refuses nesting past 200 levels, orjson's only past 1024:
    # the schema decides such bodies, as before the plain parse existed.
    deep = b'{"inputs": [[1.0]], "x": ' + b"[" * depth + b"]" * depth + b"}"
    assert _plain_rows(deep) is None
    assert (_schema(deep) is None) == (depth > 200)
    padded = b'{"inputs": [[1.0, 2.0]]' + b" " * PLAIN_PARSE_MAX_BYTES + b"}"
    assert _plain_rows(padded) is None and _schema(padded) == ([[1.0, 2.0]], "spline")


def test_large_bodies_are_left_to_the_schema():
    width = 8
    rows = PLAIN_PARSE_MAX_VALUES // width
    small = ('{"inputs": [' + ", ".join(["[" + ", ".join(["0.5"] * width) + "]"] * rows) + "]}").encode()
    large = ('{"inputs": [' + ", ".join(["[" + ", ".join(["0.5"] * width) + "]"] * (rows + 1)) + "]}").encode()
    assert _plain_rows(small) is not None and _plain_rows(large) is None
    assert _schema(large) is not None  # still a valid request, validated by the schema


@pytest.mark.parametrize("rows", [1, 40])  # the plain-Python and the numpy path
def test_labels_are_the_argmax_of_each_row_first_on_ties(rows):
    import numpy as np

    from service.api.predict import _labels
    rng = np.random.default_rng(rows)
    probabilities = rng.dirichlet(np.ones(3), size=rows).astype(np.float32)
    probabilities[0] = [0.4, 0.4, 0.2]  # a tie: the first class, as argmax
    names = ("cat", "dog", "eel")
    expected = [names[i] for i in probabilities.argmax(axis=1)]
    assert _labels(probabilities, names) == expected and expected[0] == "cat"
    probabilities[-1] = [np.nan, 0.1, 0.2]  # NaN rows follow numpy's argmax on both paths
    assert _labels(probabilities, names) == [names[i] for i in probabilities.argmax(axis=1)]


def _large(inputs, **extra) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


_ROW = [0.5, -0.25]
LARGE = [
    _large([_ROW] * 3000),
    _large([_ROW] * 3000, engine="formula", extra={"ignored": True}),
    _large({"x0": [0.5] * 3000, "x1": [1] * 3000}),
    _large([_ROW] * 2500 + [[True, 1.0]] + [_ROW] * 10),      # an error past the first slice
    _large([_ROW] * 2500 + [["1.0", None]]),
    _large([_ROW] * 2500 + [1.0]),
    _large({"x0": [0.5] * 3000, "x1": [0.5] * 2100 + ["a"]}),
    _large({"x0": [0.5] * 3000, "x1": "column"}, padding=" " * 5000),
    _large([_ROW] * 3000, engine="magic"),
    _large({}) + b" " * 20_000,
    _large([_ROW] * 3000)[:-1],                                  # not JSON
    _large([_ROW] * 3000).replace(b"0.5", b"NaN", 1),            # orjson refuses, pydantic words it
    json.dumps({"engine": "spline", "rows": [_ROW] * 3000}).encode(),
    json.dumps([[_ROW] * 3000]).encode(),
]


def _outcome(parse, raw: bytes):
    from fastapi.exceptions import RequestValidationError

    try:
        return parse(raw)
    except RequestValidationError as exc:
        return [(tuple(e["loc"]), e["msg"], e["type"]) for e in exc.errors()]


@pytest.mark.parametrize("raw", LARGE, ids=range(len(LARGE)))
def test_large_bodies_parsed_in_slices_agree_with_the_schema(raw):
    from service.api.predict import OFF_LOOP_PARSE_BYTES, _parse, _parse_large

    assert len(raw) > OFF_LOOP_PARSE_BYTES
    assert _outcome(_parse_large, raw) == _outcome(_parse, raw)
