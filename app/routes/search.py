"""Search: an id jumps to the feature, words rank features, paginated.

The HTML page follows `redirect` (a feature id, or a page past the end -> the last page) with a
303; the JSON twin returns the same view with `redirect` set, so both agree. A missing feature id
is a 404 in both: JSON gets the error body, HTML the search page with the message and the box.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.db import DbDep
from app.deps import SaeDep, SettingsDep
from app.models import SearchView
from app.render import page as render_page
from app.views.search import NoSuchFeatureError, not_found_view, search_view

router = APIRouter(tags=["search"])
Q = Annotated[str, Query(max_length=200, description="feature id (12, #12, f12, feature 12), or words to find "
                                                      "in names, top-sample captions and labels")]
Page = Annotated[int, Query(ge=1, le=10_000)]


@router.get("/sae/{sae_id}/search.json", response_model=SearchView,
            responses={404: {"description": "q names a feature id the SAE does not have"}})
def search_json(db: DbDep, sae: SaeDep, settings: SettingsDep, q: Q = "", page: Page = 1) -> SearchView:
    return search_view(db, sae, q, page, settings.page_size)


@router.get("/sae/{sae_id}/search", response_class=HTMLResponse)
def search_page(request: Request, db: DbDep, sae: SaeDep, settings: SettingsDep, q: Q = "",
                page: Page = 1) -> Response:
    try:
        view = search_view(db, sae, q, page, settings.page_size)
    except NoSuchFeatureError as exc:
        resp = render_page(request, "search.html", not_found_view(sae, q, settings.page_size), notice=exc.message)
        resp.status_code = 404
        return resp
    if view.redirect:
        return RedirectResponse(view.redirect, status_code=303)
    return render_page(request, "search.html", view, notice=None)
