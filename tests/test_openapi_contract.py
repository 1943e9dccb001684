"""The OpenAPI document says what the server does: schemathesis, with every check it has
(`--checks all`), a fixed seed and the document's own bearer auth holding a real key,
drives a live gateway on the embedded SQLite default and finds no failure.

The runs are bounded by their example count (about 25-40 s together on two shared
cores, all four phases). Schemathesis lets `--checks all` override a check switched off
per operation in its config, so the operations listed in EXCLUDED_FOR, where one check
cannot hold (the reasons are there), get a second run with that check alone excluded.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx
import numpy as np

from kanserve_harness import migrated_sqlite_settings
from live_server import live_server
from onnx_graphs import affine_model
from serving_setup import register_model
from service.app import create_app
from service.auth import create_key

SEED = 15
MAX_EXAMPLES = 20
KEY_VARIABLE = "KANSERVE_CONTRACT_KEY"

# Operations where one check is excluded, and why. Each of them states in its schema
# everything JSON Schema can say; positive_data_acceptance sends requests that satisfy
# the schema and expects them accepted, but these rules are beyond a schema, so the
# server rightly answers such requests 422 (400 on the V2 routes, as the protocol says).
EXCLUDED_CHECK = "positive_data_acceptance"
EXCLUDED_FOR = {
    ("POST", "/v1/jobs"): "a JobSpec's formula must parse in the formula grammar and use only the inputs its "
                          "ranges name, each range needs low < high, the widths must fit the data, and the "
                          "server's limits apply",
    ("POST", "/v1/datasets"): "an upload's CSV must be UTF-8 text with a header and numbers, and every row "
                              "as wide as the columns",
    ("POST", "/v1/models/{name}/predict"): "the model decides how many values a row holds and which "
                                           "columns it takes",
    ("POST", "/v1/models/{name}/versions/{version}/predict"): "as for the latest version",
    ("POST", "/v2/models/{name}/infer"): "a tensor's data must hold as many values as its shape says, and "
                                         "the model decides the tensor's name and width",
    ("POST", "/v2/models/{name}/versions/{version}/infer"): "as for the latest version",
}


def _schemathesis(base: str, config, key: str, *options: str) -> str:
    """Runs schemathesis on the live server's document; returns its output, asserting that it
    tested what it was given and found no failure."""
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{base}/openapi.json",
         "--checks", "all", "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
         "--no-shrink", "--request-timeout", "30", *options],
        env={**os.environ, KEY_VARIABLE: key}, cwd=config.parent,  # its .schemathesis/ cache goes there
        capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-12_000:]
    summary = output.split("SUMMARY")[-1]
    assert "Failures:" not in summary and "0 unique failures" not in summary, summary
    return summary


def _names(option: str) -> list[str]:
    """`option` with each operation of EXCLUDED_FOR, named as schemathesis names them."""
    return [part for method, path in EXCLUDED_FOR for part in (option, f"{method} {path}")]


def _tested(summary: str) -> int:
    return int(re.search(r"Tested: (\d+)", summary).group(1))


def test_schemathesis_finds_no_failure(tmp_path):
    settings = migrated_sqlite_settings(tmp_path)
    app = create_app(settings)
    with app.state.session_factory() as db:
        owner, key = create_key(db, "contract")
    # A served model, so that the model routes have something to find.
    register_model(app.state.engine, owner.id, "m", 1,
                   affine_model(np.ones((2, 1), np.float32), np.zeros(1, np.float32), "input", "output"))
    config = tmp_path / "schemathesis.toml"
    # The document's own security scheme (HTTPBearer), given the real key.
    config.write_text(f'[auth.openapi.HTTPBearer]\nbearer = "${{{KEY_VARIABLE}}}"\n')
    with live_server(app) as base:
        document = httpx.get(f"{base}/openapi.json").json()
        operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
        assert set(EXCLUDED_FOR) <= operations
        everything_else = _schemathesis(base, config, key, *_names("--exclude-name"))
        assert _tested(everything_else) == len(operations) - len(EXCLUDED_FOR), everything_else
        rest = _schemathesis(base, config, key, *_names("--include-name"), "--exclude-checks", EXCLUDED_CHECK)
        assert _tested(rest) == len(EXCLUDED_FOR), rest


def test_every_error_response_is_documented_with_the_one_error_schema(tmp_path):
    document = create_app(migrated_sqlite_settings(tmp_path)).openapi()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            schema = "#/components/schemas/" + ("V2Error" if path.startswith("/v2/") else "Error")
            errors = {status: response for status, response in operation["responses"].items()
                      if status.startswith("4")}
            for status, response in errors.items():
                assert response["content"]["application/json"]["schema"] == {"$ref": schema}, (where, status)
            if operation.get("security"):
                assert "401" in errors, where
            if "requestBody" in operation:
                assert operation["requestBody"]["required"] and "413" in errors, where
    # FastAPI's own 422 schema (detail always a list, no message) is not used anywhere.
    assert "HTTPValidationError" not in document["components"]["schemas"]
    error = document["components"]["schemas"]["Error"]["properties"]["detail"]
    assert {"type": "string"} in error["anyOf"] and any(s.get("type") == "array" for s in error["anyOf"])
