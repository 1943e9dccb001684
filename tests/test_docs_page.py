"""/docs and /redoc render in headless Chromium with every asset served by the app
itself: the browser is told that no host but 127.0.0.1 exists."""

import os
import re
import shutil
import subprocess

import httpx
import pytest

from live_server import live_server
from serving_setup import serving_env

CHROMIUM = shutil.which("chromium")


def render(url: str, tmp_path, screenshot: str) -> str:
    """The DOM after scripts ran; also saves a screenshot under tmp_path."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs the Debian package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           # Offline proof: every other host fails to resolve.
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
           "--virtual-time-budget=8000", "--window-size=1280,1400",
           f"--screenshot={tmp_path / screenshot}", "--dump-dom", url]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / screenshot).stat().st_size > 10_000  # a page, not a blank image
    return result.stdout


def test_docs_pages_render_offline(tmp_path):
    env = serving_env(tmp_path)
    with live_server(env.app) as url:
        for page in ("/docs", "/redoc"):
            html = httpx.get(url + page).text
            external = [u for u in re.findall(r'(?:src|href)="([^"]+)"', html) if not u.startswith("/")]
            assert external == [], f"{page} loads assets from elsewhere: {external}"

        dom = render(url + "/docs", tmp_path, "docs.png")
        # Swagger UI builds one "opblock" per operation, from /openapi.json.
        assert dom.count('class="opblock ') >= 10, dom[:2000]
        for path in ("/v1/models/{name}/predict", "/v2/models/{name}/infer", "/metrics"):
            assert f'data-path="{path}"' in dom, path

        dom = render(url + "/redoc", tmp_path, "redoc.png")
        assert "Predict with the latest version" in dom
        assert "Inference (latest version)" in dom
