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

from typing import Annotated, Any, Literal, Sequence

import numpy as np
import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from service.api.deps import bearer_scheme
from service.api.direct_route import DirectRoute, bearer_token, read_body
from service.inference.inputs import (SMALL_REQUEST_VALUES, InputError, columns_matrix, extrapolated_rows,
                                      rows_matrix)
from service.inference.model_lookup import ModelNotFound, ServedModel, Unauthorized
from service.inference.onnx_predictor import OnnxPredictor
from service.inference.runtime import Inference

router = APIRouter(tags=["predict"], route_class=DirectRoute)

Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Rows = list[list[Finite]]
Columns = dict[str, list[Finite]]
_ROWS, _COLUMNS = TypeAdapter(Rows), TypeAdapter(Columns)


class PredictRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"inputs": [[0.5, -0.25]], "engine": "spline"},
        {"inputs": {"x0": [0.5, 0.1], "x1": [-0.25, 0.3]}, "engine": "formula"}]})

    inputs: Rows | Columns = Field(description="Positional rows, or named columns.")
    engine: Literal["spline", "formula"] = Field(
        "spline", description="'spline': the trained network's graph; 'formula': the extracted "
                              "closed-form formulas' graph.")

    @field_validator("inputs", mode="wrap")
    @classmethod
    def _rows_or_columns(cls, value: Any, _handler):
        # Validate against the one shape the client chose, so errors speak of that shape
        # (a plain union reports failures against both).
        adapter = _COLUMNS if isinstance(value, dict) else _ROWS
        return adapter.validate_python(value)


# Requests of at most this many values take the plain-Python parse below; a body
# longer than PLAIN_PARSE_MAX_BYTES, or with more than PLAIN_PARSE_MAX_BRACKETS
# brackets and braces, is left to pydantic before any parse (it would be parsed twice).
# The bracket limit also keeps the parse below the nesting depth (200) past which
# pydantic's JSON parser refuses a body that orjson's (1024) still reads.
PLAIN_PARSE_MAX_VALUES = 64
PLAIN_PARSE_MAX_BYTES = 4096
PLAIN_PARSE_MAX_BRACKETS = 128
_ENGINES = ("spline", "formula")


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
    if type(rows) is not list or engine not in _ENGINES:
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


class PredictResponse(BaseModel):
    model: str
    version: int
    engine: str
    outputs: list[list[float]] = Field(description="(rows, n_outputs): regression values, or "
                                                   "class logits for classification.")
    output_names: list[str]
    extrapolated: list[bool] | None = Field(None, description="Per row: any input outside the "
                                                              "training range.")
    probabilities: list[list[float]] | None = None
    labels: list[str] | None = None


class TooManyRows(ValueError):
    """More rows than KANSERVE_PREDICT_MAX_ROWS (answered 413)."""


def _n_rows(inputs) -> int:
    return len(next(iter(inputs.values()), [])) if isinstance(inputs, dict) else len(inputs)


def _to_matrix(inputs, n_rows: int, max_rows: int):
    """A converter (served, predictor) -> (rows, n_in) float32, run where the runtime
    decides (on the loop for small requests, on the pool otherwise)."""
    def convert(served: ServedModel, predictor: OnnxPredictor) -> np.ndarray:
        if n_rows == 0:
            raise InputError("inputs: empty batch, send at least one row")
        if n_rows > max_rows:
            raise TooManyRows(f"inputs: {n_rows} rows is more than the limit of {max_rows} per request")
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


async def _predict(request: Request, name: str, version: int | None) -> Response:
    # The body is parsed here (see _plain_rows; otherwise pydantic's JSON parser, straight
    # from bytes): these are DirectRoutes (see direct_route.py). The OpenAPI schema is
    # declared below.
    raw = await read_body(request)
    parsed = _plain_rows(raw)
    if parsed is None:
        try:
            body = PredictRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
        parsed = body.inputs, body.engine
    inputs, engine = parsed
    n_rows = _n_rows(inputs)
    runtime = request.app.state.inference
    try:
        result = await runtime.infer(bearer_token(request), name, version, engine,
                                     _to_matrix(inputs, n_rows, runtime.settings.predict_max_rows), n_rows)
    except Unauthorized as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    except ModelNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except TooManyRows as exc:
        raise HTTPException(413, str(exc)) from None
    except InputError as exc:
        raise HTTPException(422, str(exc).replace("input:", "inputs:", 1)) from None
    return _response(result)


_DOC = {
    "response_model": PredictResponse,
    "openapi_extra": {
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": PredictRequest.model_json_schema()}}},
        "security": [{bearer_scheme.scheme_name: []}],
    },
    "responses": {
        401: {"description": "missing or invalid API key"},
        404: {"description": "no such model or version among the caller's models"},
        413: {"description": "more rows than KANSERVE_PREDICT_MAX_ROWS"},
        422: {"description": "inputs do not fit the model (count, names, non-finite values)"}},
}


@router.post("/v1/models/{name}/predict", summary="Predict with the latest version", **_DOC)
async def predict_latest(request: Request, name: str) -> Response:
    return await _predict(request, name, None)


@router.post("/v1/models/{name}/versions/{version}/predict", summary="Predict with one version", **_DOC)
async def predict_version(request: Request, name: str, version: int) -> Response:
    # DirectRoute passes the path parameter as it arrived (a string).
    if not str(version).isdigit() or int(version) < 1:
        raise HTTPException(422, f"version must be an integer >= 1, got {version!r}")
    return await _predict(request, name, int(version))
