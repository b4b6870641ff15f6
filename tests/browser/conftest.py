"""A real uvicorn server (subprocess, free port) over the fixture index, and headless Debian Chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent / "app"))

from make_fixture_index import build_fixture_index  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: needs /usr/bin/chromium and a real server (slow)")


def webgl_pixels_drawn(page) -> int:
    """Pixels of the map's WebGL buffer (not only the compositor's copy) that are not white."""
    return page.evaluate(WEBGL_DRAWN_JS)


WEBGL_DRAWN_JS = """() => {
        const c = document.getElementById('map'); const gl = c.getContext('webgl');
        const px = new Uint8Array(c.width * c.height * 4);
        gl.readPixels(0, 0, c.width, c.height, gl.RGBA, gl.UNSIGNED_BYTE, px);
        let n = 0; for (let i = 0; i < px.length; i += 4) if (px[i] < 250 || px[i+1] < 250 || px[i+2] < 250) n++;
        return n; }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(base: str, proc: subprocess.Popen, timeout_s: float, message: str) -> None:
    """Poll /health until the server answers; kill it and fail with `message` if it dies or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(message)
        time.sleep(0.1)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    index = build_fixture_index(tmp_path_factory.mktemp("browser-index"))
    port = free_port()
    code = f"from app.main import serve; serve({str(index)!r}, port={port})"
    log = (tmp_path_factory.mktemp("log") / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    base = f"http://127.0.0.1:{port}"
    wait_for_health(base, proc, 30, f"server did not start; see {log.name}")
    yield base
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); browser tests need it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    # Playwright's string predicates (wait_for_function) run through eval, which the app's CSP
    # forbids; tests/browser/test_csp.py checks the policy itself with a context that keeps it.
    ctx = browser.new_context(viewport={"width": 1200, "height": 800}, bypass_csp=True)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors: {errors}"
