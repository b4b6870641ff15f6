"""SAE explorer, dashboard, feature lists and the binary map points."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.db import DbDep
from app.deps import SaeDep
from app.models import DashboardView, ExplorerView, FeatureList
from app.render import page
from app.views.features import feature_list, parse_ids
from app.views.points import feature_points, sample_points
from app.views.saes import dashboard_view, explorer_view

router = APIRouter(tags=["saes"])

BIN_HEADERS = {"Cache-Control": "public, max-age=3600"}


@router.get("/sae/{sae_id}.json", response_model=ExplorerView)
def explorer_json(db: DbDep, sae: SaeDep) -> ExplorerView:
    return explorer_view(db, sae)


@router.get("/sae/{sae_id}", response_class=HTMLResponse)
def explorer(request: Request, db: DbDep, sae: SaeDep) -> HTMLResponse:
    return page(request, "explorer.html", explorer_view(db, sae))


@router.get("/sae/{sae_id}/dashboard.json", response_model=DashboardView)
def dashboard_json(db: DbDep, sae: SaeDep) -> DashboardView:
    return dashboard_view(db, sae)


@router.get("/sae/{sae_id}/dashboard", response_class=HTMLResponse)
def dashboard(request: Request, db: DbDep, sae: SaeDep) -> HTMLResponse:
    return page(request, "dashboard.html", dashboard_view(db, sae))


@router.get("/sae/{sae_id}/features.json", response_model=FeatureList)
def features_json(
    db: DbDep, sae: SaeDep,
    ids: Annotated[str, Query(max_length=4000, description="comma list of ids or ranges: 1,4,7-9")] = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**7)] = 0,
) -> FeatureList:
    return feature_list(db, sae, parse_ids(ids), limit, offset)


def _cached_points(request: Request, key: tuple, build) -> Response:
    """Payloads are built once per SAE and process (the index is read-only)."""
    cache: dict = request.app.state.points_cache
    body = cache.get(key)
    if body is None:
        body = cache[key] = build()
    return Response(body, media_type="application/octet-stream", headers=BIN_HEADERS)


@router.get("/sae/{sae_id}/points/features.bin", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
def features_bin(request: Request, db: DbDep, sae: SaeDep) -> Response:
    """Feature map columns: x, y float32, cluster int16, density/max_act/entropy uint8."""
    return _cached_points(request, ("features", sae.sae_id), lambda: feature_points(db, sae.sae_id))


@router.get("/sae/{sae_id}/points/samples.bin", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
def samples_bin(request: Request, db: DbDep, sae: SaeDep) -> Response:
    """Dataset map columns: x, y float32, cluster int16 (+ id when ids are not 0..n-1)."""
    return _cached_points(request, ("samples", sae.sae_id), lambda: sample_points(db, sae.sae_id))
