"""Bodies of POST /v1/models/{name}[/versions/{version}]/predict."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

FLOAT32_MAX = 3.4028234663852886e38

# The documented bounds (float32, and at least one row and column) are checked by the
# route where the model is known (service/inference/inputs.py), with messages that name
# the row and input; the schema states them without validating them twice.
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False,
                                json_schema_extra={"minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX})]
Rows = Annotated[list[Annotated[list[Finite], Field(json_schema_extra={"minItems": 1})]],
                 Field(json_schema_extra={"minItems": 1})]
Columns = Annotated[dict[str, Annotated[list[Finite], Field(json_schema_extra={"minItems": 1})]],
                    Field(json_schema_extra={"minProperties": 1})]
ROWS, COLUMNS = TypeAdapter(Rows), TypeAdapter(Columns)
# The same checks, for validating a long body in slices: a list of rows, one column's values.
ROW_LIST, VALUES = TypeAdapter(list[list[Finite]]), TypeAdapter(list[Finite])
ENGINES = ("spline", "formula")


class PredictRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"inputs": [[0.5, -0.25]], "engine": "spline"},
        {"inputs": {"x0": [0.5, 0.1], "x1": [-0.25, 0.3]}, "engine": "formula"}]})

    inputs: Rows | Columns = Field(description="Positional rows (rows, n_inputs), or named columns "
                                               "{input name: values}, of the same length.")
    engine: Literal["spline", "formula"] = Field(
        "spline", description="'spline': the trained network's graph; 'formula': the extracted "
                              "closed-form formulas' graph.")

    @field_validator("inputs", mode="wrap")
    @classmethod
    def _rows_or_columns(cls, value: Any, _handler):
        # Validate against the one shape the client chose, so errors speak of that shape
        # (a plain union reports failures against both).
        adapter = COLUMNS if isinstance(value, dict) else ROWS
        return adapter.validate_python(value)


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
