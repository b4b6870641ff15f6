"""Real `saescope worker` and explorer processes for the live-inspection tests (HTTP and browser)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from precompute.cli_live import stop_process

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


@contextmanager
def process(args: list[str], health: str, log: Path, env: dict | None = None):
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "precompute.cli", *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
        try:
            wait_up(health, proc)
            yield proc
        finally:
            stop_process(proc)


@contextmanager
def worker(index: Path, log_dir: Path, *extra: str):
    port = free_port()
    with process(["worker", str(index), "--port", str(port), *extra], f"http://127.0.0.1:{port}/health", log_dir / f"worker-{port}.log") as p:
        yield f"http://127.0.0.1:{port}", p


@contextmanager
def explorer(index: Path, log_dir: Path, live_url: str | None, env: dict | None = None):
    port = free_port()
    args = ["serve", str(index), "--port", str(port)] + (["--live-url", live_url] if live_url else ["--no-live"])
    with process(args, f"http://127.0.0.1:{port}/health", log_dir / f"app-{port}.log", env) as p:
        yield f"http://127.0.0.1:{port}", p
