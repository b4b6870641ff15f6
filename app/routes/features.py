"""Feature pages, their JSON twins, hover cards and random navigation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.db import DbDep
from app.deps import FeatureId, SaeDep
from app.errors import NotFoundError
from app.models import FeatureCard, FeatureView
from app.render import page
from app.response_cache import cacheable
from app.views.feature_map import feature_activations
from app.views.features import feature_card, feature_view, random_feature_id

router = APIRouter(tags=["features"])
Seed = Annotated[int | None, Query(ge=0, le=2**32, description="fixes the random pick")]


@router.get("/sae/{sae_id}/feature/random", response_class=RedirectResponse, status_code=307)
def random_feature(db: DbDep, sae: SaeDep, seed: Seed = None) -> RedirectResponse:
    fid = random_feature_id(db, sae, seed)
    return RedirectResponse(f"/sae/{sae.sae_id}/feature/{fid}", status_code=307)


# The feature views are plain `def`: FastAPI runs them in the thread pool (bounded, see
# app.main.PAGE_THREADS; each thread has its own DuckDB cursor), so the event loop stays free for
# thumbnails and static files, which it serves itself. They return the serialised model directly
# (`response_model` stays for the OpenAPI schema) so FastAPI does not validate it a second time.
# Each is `cacheable` (app.response_cache): a function of the index and the URL, so a repeat is
# answered from the index's response cache, or with 304 to a matching If-None-Match.


@router.get("/sae/{sae_id}/feature/{fid}.json", response_model=FeatureView)
def feature_json(db: DbDep, sae: SaeDep, fid: FeatureId) -> Response:
    return cacheable(Response(feature_view(db, sae, fid).model_dump_json(), media_type="application/json"))


@router.get("/sae/{sae_id}/feature/{fid}/card.json", response_model=FeatureCard)
def feature_card_json(db: DbDep, sae: SaeDep, fid: FeatureId) -> Response:
    """Small payload for map hover: stats and a few top samples."""
    return cacheable(Response(feature_card(db, sae, fid).model_dump_json(), media_type="application/json"))


@router.get("/sae/{sae_id}/feature/{fid}/activations.bin", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
def feature_activations_bin(db: DbDep, sae: SaeDep, fid: FeatureId) -> Response:
    """The feature's activation on every dataset-map sample (the map's 'colour by feature')."""
    if fid >= sae.d_sae:
        raise NotFoundError(f"SAE {sae.sae_id!r} has no feature {fid}.")
    return Response(db.cached(("feature_activations", sae.sae_id, fid), lambda: feature_activations(db, sae.sae_id, fid)),
                    media_type="application/octet-stream", headers={"Cache-Control": "public, max-age=3600"})


@router.get("/sae/{sae_id}/feature/{fid}", response_class=HTMLResponse)
def feature(request: Request, db: DbDep, sae: SaeDep, fid: FeatureId) -> HTMLResponse:
    return cacheable(page(request, "feature.html", feature_view(db, sae, fid)))
