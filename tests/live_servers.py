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


def wait_for(cond, message: str, timeout_s: float = 30.0):
    """Poll `cond` until it returns something truthy (returned) or fail with `message`; an upper
    bound for waiting on a server, never a timing assertion."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(message)


def start_serve(index: Path, port: int, workers: int = 2, **popen) -> subprocess.Popen:
    """`app.main.serve` on `index` in a subprocess (no CLI around it), output dropped unless `popen`
    says otherwise; the caller stops it."""
    code = f"from app.main import serve; serve({str(index)!r}, port={port}, workers={workers})"
    popen = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen}
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), "SAESCOPE_SECRET": "t"}, **popen)


def health_hashes(base: str, n: int) -> set[str | None]:
    """The index hashes `n` fresh connections' /health report (both workers answer), empty while down."""
    try:
        return {httpx.get(f"{base}/health", timeout=10).json()["inputs_hash"] for _ in range(n)}
    except httpx.TransportError:
        return set()


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
