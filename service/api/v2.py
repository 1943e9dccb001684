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

from service.api.direct_route import DirectRoute, bearer_token, read_body
from service.api.v2_tensors import HEADER_LENGTH, V2Error, encode_infer_response, parse_infer_request
from service.inference.model_lookup import ModelNotFound, ServedModel, Unauthorized, list_versions
from service.inference.onnx_predictor import OnnxPredictor, PredictorInputError
from service.inference.runtime import InferenceRuntime

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])

PLATFORM = "onnx_onnxv1"


def _json(body, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


def _version(text: str | None) -> int | None:
    if text is None or text == "":
        return None  # Triton: an empty version means the latest
    if not text.isdigit() or int(text) < 1:
        raise V2Error(f"model version must be a positive integer, got {text!r}")
    return int(text)


async def _resolve(request: Request, name: str,
                   version: str | None) -> tuple[ServedModel, OnnxPredictor] | Response:
    runtime: InferenceRuntime = request.app.state.inference
    try:
        served, predictor, _ = await runtime.call(
            runtime.resolve, bearer_token(request), name, _version(version), "spline")
    except V2Error as exc:
        return _error(str(exc), 400)
    except Unauthorized as exc:
        return _error(str(exc), 401)
    except ModelNotFound as exc:
        return _error(str(exc), 404)
    return served, predictor


@router.get("", summary="Server metadata")
async def server_metadata() -> Response:
    return _json({"name": "kanserve", "version": "0.1.0", "extensions": ["binary_tensor_data"]})


@router.get("/health/live", summary="Server liveness")
async def live() -> Response:
    return _json({"live": True})


@router.get("/health/ready", summary="Server readiness (the database answers)")
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
    versions = await runtime.call(_versions, runtime, bearer_token(request), name)
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
    body = await read_body(request)
    try:
        parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH.lower()))
        engine = parsed.parameters.get("engine", "spline")
        if engine not in ("spline", "formula"):
            raise V2Error(f"parameters.engine must be 'spline' or 'formula', got {engine!r}")
        version_number = _version(version)
    except V2Error as exc:
        return _error(str(exc), 400)

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
            raise V2Error(f"input {predictor.input_name!r}: {x.shape[0]} rows is more than the limit "
                          f"of {max_rows} per request")
        return predictor.validate(x)

    try:
        n_rows = max((len(x) if x.ndim else 1) for x in parsed.inputs.values())
        result = await runtime.infer(bearer_token(request), name, version_number, engine, to_matrix, n_rows)
    except Unauthorized as exc:
        return _error(str(exc), 401)
    except ModelNotFound as exc:
        return _error(str(exc), 404)
    except (V2Error, PredictorInputError) as exc:
        return _error(str(exc), 400)

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


@router.get("/models/{name}", summary="Model metadata (latest version)")
async def model_metadata(request: Request, name: str) -> Response:
    return await _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}", summary="Model metadata")
async def model_version_metadata(request: Request, name: str, version: str) -> Response:
    return await _metadata(request, name, version)


@router.get("/models/{name}/ready", summary="Model readiness (latest version)")
async def model_ready(request: Request, name: str) -> Response:
    return await _ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="Model readiness")
async def model_version_ready(request: Request, name: str, version: str) -> Response:
    return await _ready(request, name, version)


async def infer(request: Request, name: str) -> Response:
    return await _infer(request, name, None)


async def infer_version(request: Request, name: str, version: str) -> Response:
    return await _infer(request, name, version)


# DirectRoutes (see direct_route.py): the body is parsed by parse_infer_request.
router.add_api_route("/models/{name}/infer", infer, methods=["POST"], summary="Inference (latest version)",
                     route_class_override=DirectRoute)
router.add_api_route("/models/{name}/versions/{version}/infer", infer_version, methods=["POST"],
                     summary="Inference", route_class_override=DirectRoute)
