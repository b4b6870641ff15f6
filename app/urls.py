"""Every explorer address in one place, for views, templates (the `urls` global) and JS.

PATTERNS is the single list; the functions fill it in with path segments percent-encoded, and
base.html hands it to the browser (`<script type="application/json" id="url-patterns">`), where
static/app.js `url(name, params)` fills it the same way, so no address is formatted by hand.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlencode

PATTERNS: dict[str, str] = {
    "home": "/",
    "sae": "/sae/{sae_id}",
    "dashboard": "/sae/{sae_id}/dashboard",
    "game": "/sae/{sae_id}/game",
    "game_answer": "/sae/{sae_id}/game/answer",
    "search": "/sae/{sae_id}/search",
    "feature": "/sae/{sae_id}/feature/{feature_id}",
    "feature_json": "/sae/{sae_id}/feature/{feature_id}.json",
    "feature_card": "/sae/{sae_id}/feature/{feature_id}/card.json",
    "feature_random": "/sae/{sae_id}/feature/random",
    "features_json": "/sae/{sae_id}/features.json",
    "sample": "/sae/{sae_id}/sample/{sample_id}",
    "sample_json": "/sae/{sae_id}/sample/{sample_id}.json",
    "thumb": "/thumb/{dataset_id}/{sample_id}.webp",
    "points": "/sae/{sae_id}/points/{kind}.bin",
    "activations": "/sae/{sae_id}/feature/{feature_id}/activations.bin",
    "features": "/sae/{sae_id}/features",
    "inspect": "/sae/{sae_id}/inspect",
    "inspect_json": "/sae/{sae_id}/inspect.json",
    "steer_json": "/sae/{sae_id}/steer.json",
    "global_search": "/search",
}


@lru_cache(maxsize=1 << 14)  # a feature page builds ~500 addresses from a few hundred ids: quote() was 1/8 of it
def _segment(value: str) -> str:
    return quote(value, safe="")


def url(name: str, query: dict[str, Any] | None = None, **params: Any) -> str:
    """PATTERNS[name] with each {param} percent-encoded as one path segment, plus a query string."""
    path = PATTERNS[name].format(**{k: _segment(str(v)) for k, v in params.items()})
    return f"{path}?{urlencode(query)}" if query is not None else path


def sae(sae_id: str) -> str:
    return url("sae", sae_id=sae_id)


def feature(sae_id: str, feature_id: int) -> str:
    return url("feature", sae_id=sae_id, feature_id=feature_id)


def sample(sae_id: str, sample_id: int) -> str:
    return url("sample", sae_id=sae_id, sample_id=sample_id)


def thumb(dataset_id: str, sample_id: int) -> str:
    return url("thumb", dataset_id=dataset_id, sample_id=sample_id)


def search_url(sae_id: str, q: str, page: int = 1, filters: dict[str, Any] | None = None) -> str:
    """The search page; page 1 and default filters are left out, so equal searches share an address."""
    query: dict[str, Any] = {"q": q, **(filters or {})}
    if page != 1:
        query["page"] = page
    return url("search", query, sae_id=sae_id)


def global_search_url(q: str, filters: dict[str, Any] | None = None) -> str:
    """The search across SAEs; default filters are left out, as in search_url."""
    return url("global_search", {"q": q, **(filters or {})})


MAX_ECHOED_PARAMS = 10
MAX_ECHOED_VALUE = 200


def json_twin(path: str, query: list[tuple[str, str]]) -> str:
    """The JSON twin of a page (`/index.json` for `/`), with the page's query parameters, bounded:
    a page never echoes an unbounded query string (at most 10 parameters of up to 200 characters)."""
    twin = "/index.json" if path == "/" else f"{path}.json"
    kept = [(k, v) for k, v in query if len(k) <= 50 and len(v) <= MAX_ECHOED_VALUE][:MAX_ECHOED_PARAMS]
    return f"{twin}?{urlencode(kept)}" if kept else twin
