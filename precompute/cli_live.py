"""`saescope worker` and `saescope steer`, and starting a worker beside `saescope serve`."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

from sae_core.errors import ConfigError, SaescopeError


def add_live_commands(sub, port_type) -> None:
    p = sub.add_parser("worker", help="serve live inspection and steering for an index's models (imports torch)")
    p.add_argument("index", help="index file written by `saescope index`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; the worker has no authentication)")
    p.add_argument("--port", type=port_type, default=8001, help="port (default: 8001)")
    p.add_argument("--uds", default=None, help="listen on this Unix socket instead of host:port")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    p.add_argument("--max-batch", type=_positive, default=8, help="inputs per batched forward (default: 8)")
    p.add_argument("--queue", type=_positive, default=64, help="requests that may wait; more get 503 (default: 64)")
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)  # exit with the `serve` that started it
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("steer", help="edit an input's SAE features and report the model's prediction and nearest samples")
    p.add_argument("--sae", required=True, help="SAE checkpoint folder, or an SAE id of --index")
    p.add_argument("--index", default=None, help="index the SAE is in (needed for --sample-id and --units max)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="image file to steer")
    src.add_argument("--text", help="text to steer (text SAEs)")
    src.add_argument("--sample-id", type=int, help="dataset sample of the index to steer")
    p.add_argument("--edit", dest="edits", action="append", default=[], metavar="FEATURE=VALUE",
                   help="12=+3 adds, 12=-3 subtracts, 12=3 sets, 40=0 clamps, 12=*2 scales (repeat to compose)")
    p.add_argument("--units", choices=("max", "raw"), default="max", help="edit values in units of each feature's max activation, or raw")
    p.add_argument("--patches", default="", help="comma-separated grid cells (row-major) the edits apply to (default: all)")
    p.add_argument("--sweep", default="", help="comma-separated strengths that multiply every edit's value, e.g. 0,1,2,4")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--out", default="steer.json", help="JSON report; a PNG grid of retrieved images is written beside it")
    p.set_defaults(func=_cmd_steer)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def _cmd_worker(args: argparse.Namespace) -> None:
    from precompute.live.server import serve_worker

    if not Path(args.index).is_file():
        raise SaescopeError(f"{args.index}: no such index; build one with `saescope index` or `saescope demo`")
    if args.parent_pid:
        _exit_with_parent(args.parent_pid)
    serve_worker(args.index, host=args.host, port=args.port, uds=args.uds, device=args.device,
                 max_batch=args.max_batch, max_queue=args.queue)


def _exit_with_parent(parent_pid: int) -> None:
    """A worker started by `serve` must not outlive it (even when `serve` is killed with -9)."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _cmd_steer(args: argparse.Namespace) -> None:
    from precompute.live.steer_cli import run_steer

    out = run_steer(args)
    print(f"wrote {out}")


def live_problem(index: str) -> str | None:
    """Why no worker can run the index's models on this machine, or None when one can."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:  # found, not imported: `serve` stays quick to start
        return "torch is not installed"
    from precompute.live.specs import read_specs

    try:
        specs = read_specs(Path(index))
    except (SaescopeError, OSError) as e:
        return str(e)
    problems = [s.live_problem for s in specs.values()]
    if all(problems):
        return problems[0] if problems else "the index has no SAEs"
    return None


def start_worker(index: str, device: str = "auto") -> str:
    """Start `saescope worker` on a free localhost port for the life of this process; its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "precompute.cli", "worker", str(index), "--port", str(port), "--device", device,
                             "--parent-pid", str(os.getpid())],
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    atexit.register(stop_process, proc)
    return f"http://127.0.0.1:{port}"


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate, then kill after 10 s (a worker busy in a forward may not answer SIGTERM at once)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def resolve_live_url(index: str, live: bool, live_url: str | None) -> str | None:
    """The worker URL the explorer should use: given, started here, or None (live pages say why)."""
    if live_url:
        if not live_url.startswith(("http://", "https://", "unix:")):
            raise ConfigError(f"--live-url {live_url!r}: give http://HOST:PORT or unix:/path/to/socket")
        return live_url
    if not live:
        return None
    problem = live_problem(index)
    if problem:
        logging.getLogger(__name__).warning(f"live inspection is off: {problem}")
        return None
    return start_worker(index)
