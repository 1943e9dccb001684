"""The OpenAPI document: FastAPI's, with the request bodies that routes declare
themselves (routes that read their body after checking the key) given their
component schemas.

Such a route states its body with `json_body(Model)` in `openapi_extra`; the schema
refers to `#/components/schemas/<Name>` for its nested models, and `install_openapi`
moves those definitions into the document's components.

FastAPI also gives every route with parameters a 422 of its own schema
(HTTPValidationError) unless the route lists a 422. The routes here list theirs (with
the one error schema), so such an entry is left only on routes that never answer 422
(the V2 routes parse their own parameters and answer 400): it is removed.
"""
from __future__ import annotations

import copy

from fastapi import FastAPI
from pydantic import BaseModel

REF_TEMPLATE = "#/components/schemas/{model}"
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"


def json_body(model: type[BaseModel], required: bool = True) -> dict:
    """openapi_extra for a JSON request body of `model`."""
    return {"requestBody": {"required": required, "content": {"application/json": {
        "schema": model.model_json_schema(ref_template=REF_TEMPLATE)}}}}


def install_openapi(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            # A copy: FastAPI puts the routes' openapi_extra objects in the document as
            # they are, and every app made from the same routers shares them.
            document = copy.deepcopy(generate())
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for path in document.get("paths", {}).values():
                for operation in path.values():
                    _lift_body_definitions(operation, components)
                    _drop_fastapi_422(operation)
            if _FASTAPI_422 not in str(document):
                components.pop("HTTPValidationError", None)
                components.pop("ValidationError", None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi


def _lift_body_definitions(operation: dict, components: dict) -> None:
    for media in operation.get("requestBody", {}).get("content", {}).values():
        for name, definition in media.get("schema", {}).pop("$defs", {}).items():
            components.setdefault(name, definition)


def _drop_fastapi_422(operation: dict) -> None:
    responses = operation.get("responses", {})
    content = responses.get("422", {}).get("content", {}).get("application/json", {})
    if content.get("schema", {}).get("$ref") == _FASTAPI_422:
        del responses["422"]
