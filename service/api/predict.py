"""POST /v1/models/{name}/predict (latest version) and
/v1/models/{name}/versions/{version}/predict: predictions from the stored ONNX graphs.

Request: {"inputs": [[x0, x1, ...], ...]} (positional rows) or
{"inputs": {"x0": [...], "x1": [...]}} (named columns), "engine": "spline" | "formula".
Response: {"model", "version", "engine", "outputs": [[...]], "extrapolated": [bool per
row]} plus "probabilities" and "labels" for classification. A row is "extrapolated"
when any input lies outside the model's training range: the answer is still given
(the spline part is held at its edge value there) but is an extrapolation.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from service.api.deps import bearer_scheme
from service.api.direct_route import OFF_LOOP_PARSE_BYTES, DirectRoute, bearer_token, read_body
from service.api.errors import error_responses, invalid
from service.api.inference_errors import TooManyRows, status_for
from service.api.openapi import json_body
from service.api.versions import LATEST, BadVersion, VersionText, parse_version
from service.inference.inputs import (SMALL_REQUEST_VALUES, InputError, columns_matrix, extrapolated_rows,
                                      rows_matrix)
from service.inference.model_lookup import ServedModel
from service.inference.onnx_predictor import OnnxPredictor
from service.inference.runtime import Inference
from service.schemas.predict import ENGINES, ROW_LIST, VALUES, PredictRequest, PredictResponse

router = APIRouter(tags=["predict"], route_class=DirectRoute)


# Requests of at most this many values take the plain-Python parse below; a body
# longer than PLAIN_PARSE_MAX_BYTES, or with more than PLAIN_PARSE_MAX_BRACKETS
# brackets and braces, is left to pydantic before any parse (it would be parsed twice).
# The bracket limit also keeps the parse below the nesting depth (200) past which
# pydantic's JSON parser refuses a body that orjson's (1024) still reads.
PLAIN_PARSE_MAX_VALUES = 64
PLAIN_PARSE_MAX_BYTES = 4096
PLAIN_PARSE_MAX_BRACKETS = 128


def _plain_rows(raw: bytes) -> tuple[list, str] | None:
    """(rows, engine) of a small positional-rows body, {"inputs": [[numbers]], "engine": ...},
    checked in plain Python; None for anything else (named columns, large or doubtful
    bodies), which PredictRequest then validates and, when wrong, words the errors.

    Accepts exactly what PredictRequest accepts for such bodies (tests/test_predict_small_requests.py).
    Why it exists: for a single row just after the process was idle, pydantic's
    validation (a wrap validator around a TypeAdapter) measured 17 us, this 4 us."""
    if len(raw) > PLAIN_PARSE_MAX_BYTES or raw.count(b"[") + raw.count(b"{") > PLAIN_PARSE_MAX_BRACKETS:
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(body) is not dict:
        return None
    rows, engine = body.get("inputs"), body.get("engine", "spline")
    if type(rows) is not list or engine not in ENGINES:
        return None
    count = 0
    for row in rows:
        if type(row) is not list:
            return None
        count += len(row)
        if count > PLAIN_PARSE_MAX_VALUES:
            return None
        for value in row:
            # bool is not a number here (type() is not isinstance); JSON has no
            # NaN or infinity, and orjson refuses numbers that overflow a double.
            if type(value) is not float and type(value) is not int:
                return None
    return rows, engine


def _n_rows(inputs) -> int:
    return len(next(iter(inputs.values()), [])) if isinstance(inputs, dict) else len(inputs)


def _to_matrix(inputs, n_rows: int, max_rows: int):
    """A converter (served, predictor) -> (rows, n_in) float32, run where the runtime
    decides (on the loop for small requests, on the pool otherwise)."""
    def convert(served: ServedModel, predictor: OnnxPredictor) -> np.ndarray:
        if n_rows == 0:
            raise InputError("inputs", "empty batch, send at least one row")
        if n_rows > max_rows:
            raise TooManyRows("inputs", n_rows, max_rows)
        if isinstance(inputs, dict):
            return columns_matrix(inputs, served.input_names)
        return rows_matrix(inputs, predictor.n_features)
    return convert


def _labels(probabilities: np.ndarray, names: Sequence[str]) -> list[str]:
    """The most probable class of each row (the first one on ties, as argmax)."""
    if probabilities.size <= SMALL_REQUEST_VALUES:  # plain Python: numpy's fixed cost dominates here
        rows = probabilities.tolist()
        if all(value == value for row in rows for value in row):  # no NaN: max() agrees with argmax
            return [names[row.index(max(row))] for row in rows]
    return [names[i] for i in probabilities.argmax(axis=1).tolist()]


def _response(result: Inference) -> Response:
    served, outputs = result.served, result.outputs
    main = outputs[result.predictor.output_names[0]]
    body: dict[str, Any] = {
        "model": served.name, "version": served.version, "engine": served.engine,
        "outputs": main, "output_names": served.output_names,
        "extrapolated": extrapolated_rows(result.x, result.input_ranges),
    }
    if served.task == "classification":
        probabilities = outputs.get("probabilities")
        if probabilities is None:  # a formula graph gives logits only
            shifted = np.exp(main - main.max(axis=1, keepdims=True))
            probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        body["probabilities"] = probabilities
        body["labels"] = _labels(probabilities, served.output_names)
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")


def _parse(raw: bytes) -> tuple[Any, str]:
    """A predict body -> (inputs, engine); RequestValidationError naming the fields."""
    parsed = _plain_rows(raw)
    if parsed is None:
        try:
            body = PredictRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
        parsed = body.inputs, body.engine
    return parsed


def _parse_large(raw: bytes) -> tuple[Any, str]:
    """_parse for large bodies, run on a worker thread; the same answers and errors.

    A thread alone does not free the event loop: pydantic's JSON validation holds the
    GIL, and so the loop, for the whole body. orjson's parse holds it too, but is
    quicker, and the values are then validated in slices between which the loop runs:
    about half the loop's longest stall (docs/benchmarks.md, "Large predict bodies").
    A body of another shape, or with a bad value, is left to _parse, which words the
    errors as for any body."""
    try:
        body = orjson.loads(raw)
        if type(body) is not dict or "inputs" not in body or body.get("engine", "spline") not in ENGINES:
            return _parse(raw)
        inputs, engine = body["inputs"], body.get("engine", "spline")
        if type(inputs) is list:
            return _in_slices(ROW_LIST, inputs), engine
        if type(inputs) is dict and inputs:
            return {name: _in_slices(VALUES, values) for name, values in inputs.items()}, engine
    except (orjson.JSONDecodeError, ValidationError):
        pass
    return _parse(raw)


def _in_slices(adapter: TypeAdapter, items: Any, size: int = 2048) -> list:
    """adapter.validate_python(items), `size` items per call when items is a list."""
    if type(items) is not list:
        return adapter.validate_python(items)
    validated = []
    for start in range(0, len(items), size):
        validated += adapter.validate_python(items[start:start + size])
    return validated


def _http_error(exc: Exception, status: int) -> Exception:
    if isinstance(exc, BadVersion):
        return invalid(("path", "version"), str(exc), "version")
    if status == 401:
        return HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, InputError):
        return invalid(("body", exc.field), exc.problem, "inputs")
    return HTTPException(status, str(exc))


async def _predict(request: Request, name: str, version_text: str) -> Response:
    # These are DirectRoutes (see direct_route.py): the key is checked from the headers
    # before the body is read, and the body is parsed here (see _plain_rows; otherwise
    # pydantic's JSON parser, straight from bytes). The OpenAPI schema is declared below.
    runtime = request.app.state.inference
    api_key = bearer_token(request)
    try:
        await runtime.authenticate(api_key)
        version = parse_version(version_text)
        raw = await read_body(request)
        inputs, engine = (_parse(raw) if len(raw) <= OFF_LOOP_PARSE_BYTES
                          else await run_in_threadpool(_parse_large, raw))
        n_rows = _n_rows(inputs)
        result = await runtime.infer(api_key, name, version, engine,
                                     _to_matrix(inputs, n_rows, runtime.settings.predict_max_rows), n_rows)
    except Exception as exc:
        status = status_for(exc)
        if status is None:  # a bug, or a validation error already worded
            raise
        raise _http_error(exc, status) from None
    return _response(result)


_DOC = {
    "response_model": PredictResponse,
    "openapi_extra": {**json_body(PredictRequest), "security": [{bearer_scheme.scheme_name: []}]},
    "responses": error_responses(401, 404, 413, 422, 503),
}


@router.post("/v1/models/{name}/predict", summary="Predict with the latest version", **_DOC)
async def predict_latest(request: Request, name: str) -> Response:
    return await _predict(request, name, LATEST)


@router.post("/v1/models/{name}/versions/{version}/predict", summary="Predict with one version", **_DOC)
async def predict_version(request: Request, name: str, version: VersionText) -> Response:
    # DirectRoute passes the path parameter as it arrived (a string).
    return await _predict(request, name, version)
