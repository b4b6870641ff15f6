"""Search: a number jumps to the feature (HTML redirect); words rank features, paginated."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.db import DbDep
from app.deps import SaeDep, SettingsDep
from app.models import SearchView
from app.render import page as render_page
from app.views.search import search_view

router = APIRouter(tags=["search"])
Q = Annotated[str, Query(max_length=200, description="feature id, or words to find in names and captions")]
Page = Annotated[int, Query(ge=1, le=10_000)]


@router.get("/sae/{sae_id}/search.json", response_model=SearchView)
def search_json(db: DbDep, sae: SaeDep, settings: SettingsDep, q: Q = "", page: Page = 1) -> SearchView:
    return search_view(db, sae, q, page, settings.page_size)


@router.get("/sae/{sae_id}/search", response_class=HTMLResponse)
def search(request: Request, db: DbDep, sae: SaeDep, settings: SettingsDep, q: Q = "",
           page: Page = 1) -> Response:
    view = search_view(db, sae, q, page, settings.page_size)
    if view.redirect:
        return RedirectResponse(view.redirect, status_code=303)
    return render_page(request, "search.html", view)
