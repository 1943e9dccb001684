"""Tensors of the Open Inference Protocol (KServe/Triton V2) over HTTP: JSON tensors
`{name, shape, datatype, data}` with nested or flat `data`, and the binary tensor
extension that tritonclient uses by default (a JSON header of
`Inference-Header-Content-Length` bytes, then each binary tensor's raw little-endian
bytes in order, sized by `parameters.binary_data_size`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import orjson

DATATYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
HEADER_LENGTH = "Inference-Header-Content-Length"


class V2Error(ValueError):
    """A malformed or unsupported request; answered as {"error": message}."""


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    parameters: dict
    # Output names the client asked for (None: all), and which to return as binary.
    requested: list[str] | None = None
    binary_outputs: set[str] = field(default_factory=set)
    binary_all: bool = False


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    if header_length is not None:
        try:
            json_size = int(header_length)
        except ValueError:
            raise V2Error(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 < json_size <= len(body):
            raise V2Error(f"{HEADER_LENGTH} {json_size} does not fit a body of {len(body)} bytes")
        header, binary = body[:json_size], memoryview(body)[json_size:]
    else:
        header, binary = body, memoryview(b"")
    try:
        request = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise V2Error(f"request body is not valid JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise V2Error("request must be an object with an 'inputs' list")
    if not request["inputs"]:
        raise V2Error("'inputs' is empty")

    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, tensor in enumerate(request["inputs"]):
        array, used = _decode_tensor(tensor, f"inputs[{i}]", binary[offset:])
        offset += used
        inputs[tensor["name"]] = array
    if offset != len(binary):
        raise V2Error(f"{len(binary) - offset} trailing bytes after the binary tensors")

    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise V2Error("'parameters' must be an object")
    parsed = InferRequest(id=request.get("id"), inputs=inputs, parameters=parameters,
                          binary_all=bool(parameters.get("binary_data_output", False)))
    if request.get("outputs") is not None:
        parsed.requested = []
        for j, out in enumerate(request["outputs"]):
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise V2Error(f"outputs[{j}]: expected an object with a 'name'")
            parsed.requested.append(out["name"])
            if _parameters(out, f"outputs[{j}]").get("binary_data"):
                parsed.binary_outputs.add(out["name"])
    return parsed


def _parameters(item: dict, where: str) -> dict:
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise V2Error(f"{where}: 'parameters' must be an object")
    return parameters


def _decode_tensor(tensor, where: str, binary: memoryview) -> tuple[np.ndarray, int]:
    """-> (array of the given shape, bytes of `binary` it consumed)."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise V2Error(f"{where}: expected an object with a 'name'")
    name = tensor["name"]
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise V2Error(f"{where} ({name}): datatype {datatype!r} is not supported, use FP32 or FP64")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise V2Error(f"{where} ({name}): 'shape' must be a list of non-negative integers")
    count = int(np.prod(shape))
    dtype = DATATYPES[datatype]
    binary_size = _parameters(tensor, f"{where} ({name})").get("binary_data_size")
    if binary_size is not None:
        if type(binary_size) is not int or binary_size != count * dtype.itemsize or binary_size > len(binary):
            raise V2Error(f"{where} ({name}): binary_data_size {binary_size} does not match "
                          f"shape {shape} of {datatype} ({count * dtype.itemsize} bytes)")
        array = np.frombuffer(binary[:binary_size], dtype=dtype).reshape(shape)
        return array, binary_size
    if tensor.get("data") is None:
        raise V2Error(f"{where} ({name}): 'data' is missing")
    try:
        array = np.asarray(tensor["data"], dtype=dtype)
    except (TypeError, ValueError):
        raise V2Error(f"{where} ({name}): 'data' must hold only numbers, nested or flat") from None
    if array.size != count:
        raise V2Error(f"{where} ({name}): 'data' has {array.size} values, shape {shape} needs {count}")
    return array.reshape(shape), 0


def encode_infer_response(model_name: str, model_version: str, request_id: str | None,
                          outputs: dict[str, np.ndarray], binary: set[str]
                          ) -> tuple[bytes, int | None]:
    """-> (body, JSON header length or None when no output is binary)."""
    tensors, blobs = [], []
    for name, array in outputs.items():
        datatype = "FP64" if array.dtype == np.float64 else "FP32"
        array = np.ascontiguousarray(array, dtype=DATATYPES[datatype])
        tensor = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if name in binary:
            raw = array.tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = array.ravel()
        tensors.append(tensor)
    response = {"model_name": model_name, "model_version": model_version, "outputs": tensors}
    if request_id is not None:
        response["id"] = request_id
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
