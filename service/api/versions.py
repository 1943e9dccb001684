"""The `{version}` path parameter of every model route: a version number written in
ASCII digits, from 1 to 2**31-1 (the database's INTEGER), or `latest`.

`str.isdigit()` is not the test: it accepts '²' and Arabic-Indic digits, which `int()`
then refuses or reads as another number.
"""
from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

MAX_VERSION = 2**31 - 1
LATEST = "latest"

SCHEMA = {
    "anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_VERSION}, {"type": "string", "enum": [LATEST]}],
    "description": f"A version number (1 to {MAX_VERSION}) or 'latest'.",
}


class BadVersion(ValueError):
    def __init__(self, text: str):
        self.text = text
        super().__init__(f"version must be an integer from 1 to {MAX_VERSION} or '{LATEST}', got {text[:40]!r}")


def parse_version(text: str) -> int | None:
    """'7' -> 7, 'latest' -> None; raises BadVersion for anything else."""
    if text == LATEST:
        return None
    digits = text.lstrip("0")
    # The length check comes first: int() of a long string is slow, and past
    # 4300 digits it raises.
    if not digits or len(digits) > 10 or not (text.isascii() and text.isdigit()) or int(digits) > MAX_VERSION:
        raise BadVersion(text)
    return int(digits)


def _validate(value: object) -> int | None:
    try:
        return parse_version(value if isinstance(value, str) else str(value))
    except BadVersion as exc:
        raise PydanticCustomError("version", str(exc)) from None


# A route parameter `version: Version` is the number, or None for the latest.
Version = Annotated[int | None, BeforeValidator(_validate), WithJsonSchema(SCHEMA)]
# The same parameter left as the text it arrived as, for routes that parse it themselves
# (parse_version) to answer in their own error format.
VersionText = Annotated[str, WithJsonSchema(SCHEMA)]
