"""Dependency aliases shared by routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from app.db import DbDep
from app.settings import Settings
from app.views.common import SaeCtx, get_sae


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]
SaeId = Annotated[str, Path(min_length=1, max_length=200, description="SAE id from the saes table")]
FeatureId = Annotated[int, Path(ge=0, le=2**31 - 1, description="feature index")]
SampleId = Annotated[int, Path(ge=0, le=2**62, description="dataset sample id")]


async def sae_ctx(db: DbDep, sae_id: SaeId) -> SaeCtx:
    """Async: after the first request per SAE this is a cache hit, not worth a threadpool hop."""
    return get_sae(db, sae_id)


SaeDep = Annotated[SaeCtx, Depends(sae_ctx)]
