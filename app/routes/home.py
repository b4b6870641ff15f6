"""Home page (the SAEs in the index) and the health check."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.db import DbDep
from app.models import Health, SaeList
from app.render import page
from app.views.common import get_sae, list_saes
from app.views.features import example_features

router = APIRouter(tags=["home"])


def _home(db: DbDep) -> SaeList:
    data = list_saes(db)
    examples = {s.sae_id: example_features(db, get_sae(db, s.sae_id)) for s in data}
    return SaeList(data=data, count=len(data), examples=examples)


@router.get("/index.json", response_model=SaeList)
def home_json(db: DbDep) -> SaeList:
    return _home(db)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, db: DbDep) -> HTMLResponse:
    return page(request, "home.html", _home(db))


@router.get("/health", response_model=Health, responses={503: {"model": Health, "description": "the index file is bad"}})
async def health(request: Request, db: DbDep) -> Response:
    """What is served (hash, build time) and whether the file on disk is fine. Async: it must
    answer on the event loop even while every page thread is busy (one tiny query)."""
    problem = request.app.state.watch.health_problem()
    n = int(db.scalar("SELECT count(*) FROM saes")) if db.damaged is None else 0
    body = Health(status="unhealthy" if problem else "ok", schema_version=db.version, n_saes=n,
                  inputs_hash=db.inputs_hash, built_at=db.created_at, problem=problem)
    return Response(body.model_dump_json(), status_code=503 if problem else 200, media_type="application/json")
