"""Sample pages: which features fire on one dataset sample."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.db import DbDep
from app.deps import SaeDep, SampleId
from app.models import SampleView
from app.render import page
from app.views.samples import sample_view

router = APIRouter(tags=["samples"])


@router.get("/sae/{sae_id}/sample/{sample_id}.json", response_model=SampleView)
def sample_json(db: DbDep, sae: SaeDep, sample_id: SampleId) -> SampleView:
    return sample_view(db, sae, sample_id)


@router.get("/sae/{sae_id}/sample/{sample_id}", response_class=HTMLResponse)
def sample(request: Request, db: DbDep, sae: SaeDep, sample_id: SampleId) -> HTMLResponse:
    return page(request, "sample.html", sample_view(db, sae, sample_id))
