"""The HTTP status of each way an inference request can fail, for the predict (v1) and
infer (v2) routes alike."""
from __future__ import annotations

from service.api.v2_tensors import V2Error
from service.api.versions import BadVersion
from service.inference.inputs import InputError
from service.inference.model_lookup import ModelNotFound, Unauthorized
from service.inference.onnx_predictor import PredictorInputError


class TooManyRows(ValueError):
    """More rows than KANSERVE_PREDICT_MAX_ROWS."""

    def __init__(self, field: str, n_rows: int, max_rows: int):
        super().__init__(f"{field}: {n_rows} rows is more than the limit of {max_rows} per request")
        self.field, self.n_rows, self.max_rows = field, n_rows, max_rows


_STATUSES = ((Unauthorized, 401), (ModelNotFound, 404), (TooManyRows, 413), (BadVersion, 422),
             (InputError, 422), (PredictorInputError, 422), (V2Error, 422))


def status_for(exc: Exception, invalid_input: int = 422) -> int | None:
    """401, 404, 413, or `invalid_input` for inputs that do not fit the model (the Open
    Inference Protocol answers 400 there); None for an exception that is a bug."""
    for kind, status in _STATUSES:
        if isinstance(exc, kind):
            return invalid_input if status == 422 else status
    return None
