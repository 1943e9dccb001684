"""The Open Inference Protocol (KServe/Triton V2) over HTTP, so existing clients
(tritonclient, KServe's) work unchanged.

GET  /v2, /v2/health/live, /v2/health/ready (200/503)
GET  /v2/models/{name}[/versions/{v}]           metadata (platform onnx_onnxv1)
GET  /v2/models/{name}[/versions/{v}]/ready
POST /v2/models/{name}[/versions/{v}]/infer     JSON tensors or the binary extension

Models belong to API keys, so the model routes need `Authorization: Bearer <key>`
(tritonclient: `headers={...}`). Errors are {"error": "..."} as the protocol says.
An infer request may pick the formula graph with `"parameters": {"engine": "formula"}`.
"""

from __future__ import annotations

import numpy as np
import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from service.api.body_limit import BodyTooLarge
from service.api.deps import bearer_scheme
from service.api.direct_route import OFF_LOOP_PARSE_BYTES, DirectRoute, bearer_token, read_body
from service.api.errors import error_responses
from service.api.inference_errors import TooManyRows, status_for
from service.api.openapi import json_body
from service.api.v2_tensors import HEADER_LENGTH, V2Error, encode_infer_response, parse_infer_request
from service.api.versions import VersionText, parse_version
from service.inference.model_lookup import ServedModel, list_versions
from service.inference.onnx_predictor import OnnxPredictor
from service.inference.runtime import DATABASE_DOWN, InferenceRuntime
from service.schemas.v2 import V2InferRequest

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])

_SECURED = {"security": [{bearer_scheme.scheme_name: []}]}

PLATFORM = "onnx_onnxv1"


def _json(body, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


def _failure(exc: Exception) -> Response:
    """The protocol's error object for an expected failure (malformed or unfit input: 400);
    re-raises anything else."""
    if isinstance(exc, BodyTooLarge):
        return _error(exc.detail, 413)
    if isinstance(exc, DATABASE_DOWN):  # as the app's handler answers the /v1 routes
        response = _error("the database is unavailable; try again shortly", 503)
        response.headers["Retry-After"] = "5"
        return response
    status = status_for(exc, invalid_input=400)
    if status is None:
        raise exc
    return _error(str(exc), status)


def _version(text: str | None) -> int | None:
    if text is None or text == "":
        return None  # Triton: an empty version means the latest
    return parse_version(text)


async def _resolve(request: Request, name: str,
                   version: str | None) -> tuple[ServedModel, OnnxPredictor] | Response:
    runtime: InferenceRuntime = request.app.state.inference
    api_key = bearer_token(request)
    try:
        await runtime.authenticate(api_key)
        served, predictor, _ = await runtime.call(runtime.resolve, api_key, name, _version(version), "spline")
    except Exception as exc:
        return _failure(exc)
    return served, predictor


@router.get("", summary="Server metadata")
async def server_metadata() -> Response:
    return _json({"name": "kanserve", "version": "0.1.0", "extensions": ["binary_tensor_data"]})


@router.get("/health/live", summary="Server liveness")
async def live() -> Response:
    return _json({"live": True})


@router.get("/health/ready", summary="Server readiness (the database answers)",
            responses={503: {"description": "the database does not answer"}})
async def ready(request: Request) -> Response:
    runtime: InferenceRuntime = request.app.state.inference

    def ping() -> None:
        with runtime.db.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    try:
        await runtime.call(ping)
    except Exception as exc:  # readiness reports failures, it does not raise them
        return _json({"ready": False, "error": f"database: {type(exc).__name__}"}, 503)
    return _json({"ready": True})


async def _metadata(request: Request, name: str, version: str | None) -> Response:
    resolved = await _resolve(request, name, version)
    if isinstance(resolved, Response):
        return resolved
    served, predictor = resolved
    runtime: InferenceRuntime = request.app.state.inference
    try:
        versions = await runtime.call(_versions, runtime, bearer_token(request), name)
    except Exception as exc:
        return _failure(exc)
    n_out = len(served.output_names)
    return _json({
        "name": served.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        # Exported graphs take and give float32 (batch, width) tensors; -1: any batch size.
        "inputs": [{"name": predictor.input_name, "datatype": "FP32", "shape": [-1, predictor.n_features]}],
        "outputs": [{"name": o, "datatype": "FP32", "shape": [-1, n_out]} for o in predictor.output_names],
        "parameters": {"task": served.task, "input_names": list(served.input_names),
                       "output_names": list(served.output_names)},
    })


def _versions(runtime: InferenceRuntime, api_key: str, name: str) -> list[int]:
    with runtime.db.connect() as conn:
        return list_versions(conn, api_key, name)


async def _ready(request: Request, name: str, version: str | None) -> Response:
    resolved = await _resolve(request, name, version)
    if isinstance(resolved, Response):
        return resolved
    return _json({"name": name, "ready": True})


async def _infer(request: Request, name: str, version: str | None) -> Response:
    runtime: InferenceRuntime = request.app.state.inference
    api_key = bearer_token(request)
    max_rows = runtime.settings.predict_max_rows

    def to_matrix(served: ServedModel, predictor: OnnxPredictor) -> np.ndarray:
        if predictor.input_name not in parsed.inputs or len(parsed.inputs) != 1:
            raise V2Error(f"expected exactly one input tensor named {predictor.input_name!r} "
                          f"(FP32, shape [-1, {predictor.n_features}]), got {list(parsed.inputs)}")
        x = parsed.inputs[predictor.input_name]
        if x.ndim != 2 or x.shape[1] != predictor.n_features:
            raise V2Error(f"input {predictor.input_name!r}: shape must be [-1, {predictor.n_features}], "
                          f"got {list(x.shape)}")
        if x.shape[0] > max_rows:
            raise TooManyRows(f"input {predictor.input_name!r}", x.shape[0], max_rows)
        return predictor.validate(x)

    try:
        # The key first, from the headers: an unauthenticated body is never read.
        await runtime.authenticate(api_key)
        version_number = _version(version)
        body = await read_body(request)
        header_length = request.headers.get(HEADER_LENGTH.lower())
        if len(body) <= OFF_LOOP_PARSE_BYTES:
            parsed = parse_infer_request(body, header_length)
        else:
            parsed = await run_in_threadpool(parse_infer_request, body, header_length)
        engine = parsed.parameters.get("engine", "spline")
        if engine not in ("spline", "formula"):
            raise V2Error(f"parameters.engine must be 'spline' or 'formula', got {engine!r}")
        n_rows = max((len(x) if x.ndim else 1) for x in parsed.inputs.values())
        result = await runtime.infer(api_key, name, version_number, engine, to_matrix, n_rows)
    except Exception as exc:
        return _failure(exc)

    outputs = result.outputs
    if parsed.requested is not None:
        unknown = [n for n in parsed.requested if n not in outputs]
        if unknown:
            return _error(f"unknown output(s) {unknown}; the model has {list(outputs)}", 400)
        outputs = {n: outputs[n] for n in parsed.requested}
    binary = set(outputs) if parsed.binary_all else parsed.binary_outputs
    payload, header_length = encode_infer_response(
        result.served.name, str(result.served.version), parsed.id, outputs, binary)
    if header_length is None:
        return Response(payload, media_type="application/json")
    return Response(payload, media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(header_length)})


_MODEL_ROUTE = {"responses": error_responses(400, 401, 404, 503, v2=True), "openapi_extra": _SECURED}


@router.get("/models/{name}", summary="Model metadata (latest version)", **_MODEL_ROUTE)
async def model_metadata(request: Request, name: str) -> Response:
    return await _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}", summary="Model metadata", **_MODEL_ROUTE)
async def model_version_metadata(request: Request, name: str, version: VersionText) -> Response:
    return await _metadata(request, name, version)


@router.get("/models/{name}/ready", summary="Model readiness (latest version)", **_MODEL_ROUTE)
async def model_ready(request: Request, name: str) -> Response:
    return await _ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="Model readiness", **_MODEL_ROUTE)
async def model_version_ready(request: Request, name: str, version: VersionText) -> Response:
    return await _ready(request, name, version)


async def infer(request: Request, name: str) -> Response:
    return await _infer(request, name, None)


async def infer_version(request: Request, name: str, version: VersionText) -> Response:
    return await _infer(request, name, version)


_INFER_ROUTE = {
    "methods": ["POST"], "route_class_override": DirectRoute,
    "responses": error_responses(400, 401, 404, 413, 503, v2=True),
    "openapi_extra": {**_SECURED, **json_body(V2InferRequest)},
}
# DirectRoutes (see direct_route.py): the body is parsed by parse_infer_request.
router.add_api_route("/models/{name}/infer", infer, summary="Inference (latest version)", **_INFER_ROUTE)
router.add_api_route("/models/{name}/versions/{version}/infer", infer_version, summary="Inference",
                     **_INFER_ROUTE)
