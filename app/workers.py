"""Several uvicorn worker processes, each with its own listening socket on one port (SO_REUSEPORT).

Why not `uvicorn --workers`: its workers share one listening socket, and the first to wake
accepts a whole burst of connections: of 50 keep-alive connections opened at once, one worker
took 47, 43 and 34 of them in three tries, so it served most requests while the other idled. With
a socket per worker the kernel spreads connections over the workers by their address hash.

The parent only supervises: it restarts a worker that died and stops them all on SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import sys
import time

log = logging.getLogger("saescope.app")
RESTART_PAUSE_S = 1.0
"""Between restarts of a worker that keeps dying (a broken index fails at startup, every time)."""


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other workers' sockets may share the port with."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(host: str, port: int) -> None:
    """One worker process: the app from SAESCOPE_* (app.main.app_from_env) on its own socket.

    Ctrl+C reaches every process of the group: it is ignored (from `_start`) until uvicorn takes
    the signals over and shuts down gracefully, so a worker still starting is stopped by the
    parent's SIGTERM instead of printing a KeyboardInterrupt traceback."""
    import uvicorn

    from app.main import app_from_env

    sock = reuseport_socket(host, port)
    server = uvicorn.Server(uvicorn.Config(app_from_env(), host=host, port=port))
    server.run(sockets=[sock])


def _start(proc: multiprocessing.process.BaseProcess) -> None:
    """Start a worker with SIGINT ignored: an ignored signal stays ignored across exec, so the
    new interpreter is deaf to Ctrl+C from its first instruction (a handler set in the child
    would come after its imports)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc.start()
    finally:
        signal.signal(signal.SIGINT, previous)


def run_workers(host: str, port: int, n_workers: int) -> None:
    """Start n_workers, keep them running until SIGTERM/SIGINT, then stop them (blocks)."""
    ctx = multiprocessing.get_context("spawn")  # no forked DuckDB or event loop state
    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    procs = [ctx.Process(target=_worker, args=(host, port), daemon=False) for _ in range(n_workers)]
    for p in procs:
        _start(p)
    shown = f"[{host}]" if ":" in host else host
    print(f"saescope: serving http://{shown}:{port} with {n_workers} workers (Ctrl+C stops)", file=sys.stderr, flush=True)
    try:
        while not stopping:
            time.sleep(0.2)
            for i, p in enumerate(procs):
                if not p.is_alive() and not stopping:
                    log.warning("worker %s exited with %s; starting another", p.pid, p.exitcode)
                    time.sleep(RESTART_PAUSE_S)
                    procs[i] = ctx.Process(target=_worker, args=(host, port), daemon=False)
                    _start(procs[i])
    finally:
        for p in procs:
            p.terminate()  # uvicorn finishes the requests in flight, then exits
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
        for s, handler in old.items():
            signal.signal(s, handler)
