"""/docs (Swagger UI) and /redoc served from assets shipped in a Python package, so the
pages work with no internet access. FastAPI's own /docs would load them from a CDN.

The assets come from the `fastapi-standalone-docs` wheel (MIT; it bundles Swagger UI
5 — OpenAPI 3.1, which FastAPI emits, needs Swagger UI >= 5 — and the ReDoc
standalone bundle). Only its static files are used, not its monkey-patching.
The app must be created with `docs_url=None, redoc_url=None`.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_standalone_docs
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_DIR = Path(fastapi_standalone_docs.__file__).parent / "static"
ASSETS_URL = "/static/docs"


def install_docs(app: FastAPI, title: str = "kanserve") -> None:
    """Add /docs, /redoc and the static assets they load to `app`."""
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("create the app with docs_url=None, redoc_url=None: "
                         "FastAPI's default pages load their assets from a CDN")
    openapi_url = app.openapi_url or "/openapi.json"
    for name in ("swagger", "redoc", "fastapi"):
        app.mount(f"{ASSETS_URL}/{name}", StaticFiles(directory=ASSETS_DIR / name),
                  name=f"docs-assets-{name}")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} — API",
            swagger_js_url=f"{ASSETS_URL}/swagger/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/fastapi/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} — API reference",
            redoc_js_url=f"{ASSETS_URL}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/fastapi/favicon.png",
            with_google_fonts=False,
        )
