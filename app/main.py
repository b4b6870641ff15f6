"""App assembly only: `create_app(settings)` wires the index, templates, errors and routers."""

from __future__ import annotations

import gc
import hashlib
import os
import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI

from app.db import Index
from app.errors import install_error_handlers
from app.index_watch import IndexWatch
from app.live_client import LiveClient
from app.render import make_templates
from app.response_cache import CachedResponses
from app.routes import features, files, game, home, live, saes, samples, search
from app.security import SecurityHeaders
from app.settings import Settings
from app.workers import run_workers

PAGE_THREADS = 2
"""Threads per worker for sync handlers (pages, JSON, search). More threads only time-slice the
GIL, stretching every request and starving the event loop that serves thumbnails; a few keep one
request on a CPU while another waits on DuckDB (which releases the GIL)."""


class ServerTiming:
    """Pure ASGI middleware: `Server-Timing: app;dur=<ms>` on every HTTP response.

    The time runs from the app receiving the request to the response head (for these
    non-streamed responses the body is ready by then); the load benchmark reads it to report
    server-side latency apart from the client's own queueing.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def timed_send(message) -> None:
            if message["type"] == "http.response.start":
                dur = f"app;dur={(time.perf_counter() - t0) * 1000:.2f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing", dur)]}
            await send(message)

        await self.app(scope, receive, timed_send)


class HeadAsGet:
    """Pure ASGI middleware: answer HEAD like GET without the body (FastAPI routes are GET-only,
    so link checkers and link previews got 405)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body"):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def freeze_startup_objects() -> None:
    """Move everything alive after startup (modules, routes, schemas, templates: ~80k objects) out of
    the garbage collector's sight: a full collection of them stops a worker for tens of ms at a random
    request (hundreds on a loaded machine), while they live as long as the process anyway. Servers
    only (`serve`, `app_from_env`): apps made by tests come and go."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings) -> FastAPI:
    """Open the index now, so a bad file fails at startup with a clear message."""
    watch = IndexWatch(settings.index, on_swap=lambda new: setattr(app.state, "index", new))
    index = watch.current

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        anyio.to_thread.current_default_thread_limiter().total_tokens = PAGE_THREADS
        yield
        watch.close()

    # No /docs: Swagger UI loads its scripts from a CDN, and the explorer must work offline.
    app = FastAPI(title="saescope explorer", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Sparse-autoencoder features of vision models. Every page has a `.json` twin.")
    app.state.settings = settings
    app.state.index = index  # the current one: IndexWatch replaces it when the file changes
    app.state.watch = watch
    app.state.templates = make_templates()
    app.state.game_secret = settings.secret or hashlib.sha256(
        f"saescope-game:{index.path.resolve()}:{index.created_at}".encode()).hexdigest()
    install_error_handlers(app)
    app.add_middleware(CachedResponses)  # innermost: Server-Timing and security headers cover its answers too
    app.add_middleware(ServerTiming)
    app.add_middleware(HeadAsGet)
    app.add_middleware(SecurityHeaders)
    app.state.live = LiveClient(settings.live_url, settings.live_timeout_s, settings.live_connect_grace_s)
    for module in (home, saes, features, samples, search, game, files, live):
        app.include_router(module.router)
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory app.main:app_from_env` (several workers): reads SAESCOPE_*."""
    app = create_app(Settings())
    freeze_startup_objects()
    return app


def check_port_free(host: str, port: int) -> None:
    """uvicorn reports a taken port in several log lines and exits 3: fail first, in one line."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise OSError(e.errno, f"cannot listen on {host}:{port} ({e.strerror}); pass another --port or stop what uses it") from None


def serve(index_path: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, live_url: str | None = None) -> None:
    """Run the explorer with uvicorn (`saescope serve INDEX.duckdb`); `live_url`: the live worker."""
    import uvicorn

    # Game tokens are signed; without a configured key, make a random one for this server's
    # lifetime and share it with every worker through the environment.
    os.environ.setdefault("SAESCOPE_SECRET", secrets.token_hex(32))
    if live_url:
        os.environ["SAESCOPE_LIVE_URL"] = live_url  # every uvicorn worker reads it through Settings
    settings = Settings(index=Path(index_path), secret=os.environ["SAESCOPE_SECRET"], live_url=live_url)
    if workers <= 1:
        app = create_app(settings)
        check_port_free(host, port)
        freeze_startup_objects()
        uvicorn.run(app, host=host, port=port)
        return
    Index(settings.index).close()  # fail fast here, not in every worker
    check_port_free(host, port)
    os.environ["SAESCOPE_INDEX"] = str(Path(index_path).resolve())
    run_workers(host, port, workers)  # a socket per worker: uvicorn's shared one let one worker take most connections
