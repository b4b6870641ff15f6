"""Re-draw the README's screenshots (docs/img/) from a built index, so they follow the app.

    python scripts/screenshots.py data/index/demo.duckdb

Serves the index with uvicorn on a free port and drives Debian's chromium through Playwright.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the server at {url} did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("index", help="index file, e.g. data/index/demo.duckdb")
    p.add_argument("--out", default=str(ROOT / "docs" / "img"))
    p.add_argument("--feature", type=int, default=178, help="feature of the patch SAE for feature.png")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "precompute.cli", "serve", args.index, "--port", str(port)], cwd=ROOT)
    try:
        _wait(f"{base}/health")
        saes = {s["token_selection"]: s["sae_id"] for s in json.load(urllib.request.urlopen(f"{base}/index.json"))["data"]}
        patch = saes.get("patches") or next(iter(saes.values()))
        out = Path(args.out)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            for name, url, full in [("home.png", "/", False), ("explorer.png", f"/sae/{patch}", False),
                                    ("feature.png", f"/sae/{patch}/feature/{args.feature}", False),
                                    ("dashboard.png", f"/sae/{patch}/dashboard", False)]:
                page.goto(base + url)
                page.wait_for_load_state("networkidle")
                page.wait_for_timeout(800)  # the map draws after its data arrives
                page.screenshot(path=str(out / name), full_page=full)
                print(f"wrote {out / name}")
            browser.close()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
