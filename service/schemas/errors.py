"""Error bodies, as the OpenAPI document declares them.

The /v1 routes answer every error with `Error`; the /v2 routes answer `V2Error`,
the shape the Open Inference Protocol prescribes.
"""
from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorIssue(BaseModel):
    loc: list[str | int] = Field(description="Where the problem is: 'body', 'path', 'query' or 'header', "
                                             "then field names and list indices.")
    msg: str = Field(description="What is wrong there.")
    type: str = Field(description="A short machine-readable name of the problem.")


class Error(BaseModel):
    detail: str | list[ErrorIssue] = Field(
        description="A sentence for 401, 404, 409, 413, 415 and 503; for 422 always the list of issues.")
    message: str | None = Field(None, description="422 only: the first issues in one line.")


class V2Error(BaseModel):
    error: str
