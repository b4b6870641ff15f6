"""App assembly only: `create_app(settings)` wires the index, templates, errors and routers."""

from __future__ import annotations

import hashlib
import os
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from app.db import Index
from app.errors import install_error_handlers
from app.render import make_templates
from app.routes import features, files, game, home, saes, samples, search
from app.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """Open the index now, so a bad file fails at startup with a clear message."""
    index = Index(settings.index)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        index.close()

    app = FastAPI(title="saescope explorer", version="1", lifespan=lifespan,
                  description="Sparse-autoencoder features of vision models. Every page has a `.json` twin.")
    app.state.settings = settings
    app.state.index = index
    app.state.templates = make_templates()
    app.state.points_cache = {}
    app.state.game_secret = settings.secret or hashlib.sha256(
        f"saescope-game:{index.path.resolve()}:{index.created_at}".encode()).hexdigest()
    install_error_handlers(app)
    for module in (home, saes, features, samples, search, game, files):
        app.include_router(module.router)
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory app.main:app_from_env` (several workers): reads SAESCOPE_*."""
    return create_app(Settings())


def serve(index_path: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the explorer with uvicorn (`saescope serve INDEX.duckdb`)."""
    import uvicorn

    settings = Settings(index=Path(index_path))
    if workers <= 1:
        uvicorn.run(create_app(settings), host=host, port=port)
        return
    Index(settings.index).close()  # fail fast here, not in every worker
    os.environ["SAESCOPE_INDEX"] = str(Path(index_path).resolve())
    uvicorn.run("app.main:app_from_env", factory=True, host=host, port=port, workers=workers)
