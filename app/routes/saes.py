"""SAE explorer, dashboard, feature lists and the binary map points."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.db import DbDep
from app.deps import SaeDep
from app.models import DashboardView, ExplorerView, FeatureTable
from app.params import Cluster, Density
from app.render import page
from app.views.feature_table import SORTABLE, TableQuery, feature_table, feature_table_csv
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


def table_query(
    sort: Annotated[str, Query(max_length=40, description="column: " + ", ".join(SORTABLE))] = "feature_id",
    order: Annotated[str, Query(max_length=4, description="asc or desc")] = "asc",
    min_density: Density = None,
    max_density: Density = None,
    cluster: Cluster = None,
    label: Annotated[str | None, Query(max_length=200, description="top label, exactly")] = None,
    name: Annotated[str | None, Query(max_length=200, description="words in the name")] = None,
    ids: Annotated[str, Query(max_length=12000, description="selection as ids and ranges: 1,4,7-9")] = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**7)] = 0,
) -> TableQuery:
    return TableQuery(sort, order, min_density, max_density, cluster, label, name, ids, limit, offset)


TableDep = Annotated[TableQuery, Depends(table_query)]


@router.get("/sae/{sae_id}/features.json", response_model=FeatureTable)
def features_json(db: DbDep, sae: SaeDep, q: TableDep) -> FeatureTable:
    """The feature table (also the map's lasso list): sorted, filtered, one page."""
    return feature_table(db, sae, q)


@router.get("/sae/{sae_id}/features", response_class=HTMLResponse)
def features_page(request: Request, db: DbDep, sae: SaeDep, q: TableDep) -> HTMLResponse:
    return page(request, "features.html", feature_table(db, sae, q))


@router.get("/sae/{sae_id}/features.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
def features_csv(db: DbDep, sae: SaeDep, q: TableDep) -> Response:
    """Every row of the filtered, sorted table, without pagination."""
    return Response(feature_table_csv(db, sae, q), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{sae.sae_id}-features.csv"'})


def _cached_points(db: DbDep, key: tuple, build) -> Response:
    """Payloads are built once per SAE and index, in the index's own cache (a reloaded index starts afresh)."""
    body = db.cached(("points", *key), build)
    return Response(body, media_type="application/octet-stream", headers=BIN_HEADERS)


@router.get("/sae/{sae_id}/points/features.bin", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
def features_bin(request: Request, db: DbDep, sae: SaeDep) -> Response:
    """Feature map columns: x, y float32, cluster int16, density/max_act/entropy uint8."""
    return _cached_points(db, ("features", sae.sae_id), lambda: feature_points(db, sae.sae_id))


@router.get("/sae/{sae_id}/points/samples.bin", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
def samples_bin(request: Request, db: DbDep, sae: SaeDep) -> Response:
    """Dataset map columns: x, y float32, cluster int16 (+ id when ids are not 0..n-1)."""
    return _cached_points(db, ("samples", sae.sae_id), lambda: sample_points(db, sae.sae_id))
