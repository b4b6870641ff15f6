"""Explorer settings, read from arguments or `SAESCOPE_*` environment variables (for workers)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the app needs to know; the index path is the only required value."""

    model_config = SettingsConfigDict(env_prefix="SAESCOPE_", frozen=True)

    index: Path = Field(description="the explorer index (.duckdb) to serve, opened read-only")
    thumbs_root: Path | None = Field(
        default=None, description="base folder for relative datasets.thumbs_dpath (default: the index's folder)")
    secret: str | None = Field(
        default=None, description="key that signs game tokens (`serve` makes a random one per server when unset)")
    page_size: int = Field(default=24, ge=1, le=500, description="search results per page")
    thumb_max_age: int = Field(default=7 * 86400, ge=0, description="Cache-Control max-age of thumbnails (s)")
    live_url: str | None = Field(
        default=None, description="live-inspection worker (`saescope worker`): http://HOST:PORT or unix:/path/to/socket; unset: live pages say it is off")
    live_timeout_s: float = Field(default=60.0, gt=0, description="how long the explorer waits for the worker per request (s)")
    live_connect_grace_s: float = Field(
        default=15.0, ge=0, description="how long a refused connection to the worker is retried (a worker `serve` just started is still loading)")
    max_upload_mb: float = Field(default=20.0, gt=0, description="largest image upload accepted by live inspection (MB)")
