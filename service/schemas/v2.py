"""The Open Inference Protocol's infer request, as the OpenAPI document states it.

The route parses bodies itself (service/api/v2_tensors.py, which also reads the binary
tensor extension); these models only describe the JSON form. Rules JSON Schema cannot
state are checked there and answered 400: a tensor's `data` holds as many values as its
`shape` says, and the one input is the model's input tensor with its width.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

Number = Annotated[float, Field(allow_inf_nan=False)]


class V2TensorParameters(BaseModel):
    binary_data_size: int | None = Field(None, ge=0, description="Binary tensor extension: the tensor's "
                                                                 "bytes follow the JSON header.")


class V2InputTensor(BaseModel):
    name: str
    shape: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, examples=[[1, 2]])
    datatype: Literal["FP32", "FP64"]
    data: list[Number] | list[list[Number]] | None = Field(
        None, description="The values, flat or nested by rows; omitted for a binary tensor.")
    parameters: V2TensorParameters | None = None


class V2OutputParameters(BaseModel):
    binary_data: bool = False


class V2RequestedOutput(BaseModel):
    name: str
    parameters: V2OutputParameters | None = None


class V2InferParameters(BaseModel):
    engine: Literal["spline", "formula"] = "spline"
    binary_data_output: bool = False


class V2InferRequest(BaseModel):
    id: str | None = None
    inputs: list[V2InputTensor] = Field(min_length=1, max_length=1)
    outputs: list[V2RequestedOutput] | None = None
    parameters: V2InferParameters | None = None
