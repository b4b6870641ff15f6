"""Search: an id jumps to the feature, words rank features, paginated.

The HTML page follows `redirect` (a feature id, or a page past the end -> the last page) with a
303; the JSON twin returns the same view with `redirect` set, so both agree. A missing feature id
is a 404 in both: JSON gets the error body, HTML the search page with the message and the box.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.db import DbDep
from app.deps import SaeDep, SettingsDep
from app.errors import InvalidParamError
from app.models import GlobalSearchView, SearchView
from app.params import Cluster, Density
from app.render import page as render_page
from app.response_cache import cacheable
from app.views.global_search import GlobalFilters, empty_view, global_search_view
from app.views.search import Filters, NoSuchFeatureError, meaning_results, not_found_view, search_view

MAX_QUERY = 200

router = APIRouter(tags=["search"])
Q = Annotated[str, Query(max_length=MAX_QUERY, description="feature id (12, #12, f12, feature 12), or words to find "
                                                            "in names, concepts, top-sample captions and labels; "
                                                            "\"quoted words\" as a phrase")]
Page = Annotated[int, Query(ge=1, le=10_000)]
Label = Annotated[str | None, Query(max_length=200, description="the features' most common top-sample label")]
Sort = Annotated[Literal["relevance", "density", "max_act", "id"], Query(description="result order")]


def search_filters(min_density: Density = None, max_density: Density = None, cluster: Cluster = None,
                   label: Label = None, sort: Sort = "relevance") -> Filters:
    return Filters(min_density, max_density, cluster, label or None, sort)


FiltersDep = Annotated[Filters, Depends(search_filters)]
Arch = Annotated[str | None, Query(max_length=100, description="only SAEs of this architecture, as the index's saes "
                                   "table records it (topk, batchtopk, relu, jumprelu, gated, ...)")]
Model = Annotated[str | None, Query(max_length=200, description="only SAEs trained on this model's activations")]


def global_filters(arch: Arch = None, model: Model = None, min_density: Density = None, max_density: Density = None,
                   label: Label = None, sort: Sort = "relevance") -> GlobalFilters:
    return GlobalFilters(arch or None, model or None, Filters(min_density, max_density, None, label or None, sort))


GlobalFiltersDep = Annotated[GlobalFilters, Depends(global_filters)]


@router.get("/sae/{sae_id}/search.json", response_model=SearchView,
            responses={404: {"description": "q names a feature id the SAE does not have"}})
def search_json(request: Request, response: Response, db: DbDep, sae: SaeDep, settings: SettingsDep, filters: FiltersDep,
                q: Q = "", page: Page = 1) -> SearchView:
    view = _with_meaning(request, db, sae, search_view(db, sae, q, page, settings.page_size, filters))
    _cacheable_unless_live(request, response)  # FastAPI copies this response's headers onto the JSON
    return view


@router.get("/sae/{sae_id}/search", response_class=HTMLResponse)
def search_page(request: Request, db: DbDep, sae: SaeDep, settings: SettingsDep, filters: FiltersDep, q: Q = "",
                page: Page = 1) -> Response:
    try:
        view = search_view(db, sae, q, page, settings.page_size, filters)
    except NoSuchFeatureError as exc:
        resp = render_page(request, "search.html", not_found_view(sae, q, settings.page_size), notice=exc.message)
        resp.status_code = 404
        return resp
    if view.redirect:
        return RedirectResponse(view.redirect, status_code=303)
    return _cacheable_unless_live(request, render_page(request, "search.html", _with_meaning(request, db, sae, view), notice=None))


def _cacheable_unless_live(request: Request, response: Response) -> Response:
    """Without a live worker the results are a function of the index and URL (app.response_cache)."""
    return response if request.app.state.live.configured else cacheable(response)


def _with_meaning(request: Request, db, sae, view: SearchView) -> SearchView:
    """The cached word results plus, when the live worker answers, the features nearest by meaning
    (asked per request: the worker comes and goes, the index does not)."""
    meaning = meaning_results(db, sae, request.app.state.live, view)
    return view.model_copy(update={"meaning": meaning}) if meaning else view


@router.get("/search.json", response_model=GlobalSearchView,
            responses={422: {"description": "arch or model names no SAE of the index, or a bad filter value"}})
def global_search_json(db: DbDep, filters: GlobalFiltersDep, q: Q = "") -> GlobalSearchView:
    """Every SAE's first results for q, grouped by SAE; each group links to its SAE's full search."""
    return global_search_view(db, q, filters)


@router.get("/search", response_class=HTMLResponse)
def global_search_page(request: Request, db: DbDep, filters: GlobalFiltersDep, q: Q = "") -> Response:
    """A filter value no SAE has is answered on the search page itself (the form, the message, 422)."""
    try:
        view = global_search_view(db, q, filters)
    except InvalidParamError as exc:
        resp = render_page(request, "global_search.html", empty_view(db, q, filters), notice=exc.message)
        resp.status_code = exc.status_code
        return resp
    return render_page(request, "global_search.html", view, notice=None)
