"""Search across every SAE of the index, narrowed by architecture and model, results grouped by SAE.

Each SAE is ranked by the per-SAE search (app.views.search.search_view, with its cache), so a
feature scores the same here as on its SAE's own search page; this module only picks the SAEs,
asks each for its first results and orders the groups. The `arch` and `model` values must be
ones the index's `saes` table records (the form offers exactly those), so a mistyped filter is
an error naming the choices instead of an empty page.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from app.db import Index
from app.errors import InvalidParamError
from app.models import GlobalSearchView, SaeSummary, SearchGroup
from app.urls import search_url
from app.views.common import get_sae, list_saes
from app.views.search import Filters, NoSuchFeatureError, parse_feature_id, query_terms, search_view

PER_SAE = 6  # results shown per SAE; the group links to that SAE's own search for the rest


@dataclass(frozen=True)
class GlobalFilters:
    """Which SAEs to search (arch, model) and the per-SAE filters that mean the same in every SAE
    (cluster ids do not: each SAE numbers its own clusters, so there is no cluster filter here)."""

    arch: str | None = None
    model: str | None = None
    per_sae: Filters = Filters()

    def params(self) -> dict[str, str | float | int]:
        """The non-default filters, as URL query parameters (and the view's `filters`)."""
        out: dict[str, str | float | int] = {k: v for k, v in (("arch", self.arch), ("model", self.model)) if v}
        return {**out, **self.per_sae.params()}


def _choices(saes: list[SaeSummary], field: str) -> list[str]:
    return sorted({getattr(s, field) for s in saes if getattr(s, field)})


def _check(name: str, value: str | None, choices: list[str]) -> None:
    if value and value not in choices:
        known = ", ".join(choices[:20]) or "none"
        raise InvalidParamError(f"{name}: no SAE in this index has {name} {value[:100]!r}; choose one of: {known}")


def _group(db: Index, s: SaeSummary, q: str, filters: Filters) -> SearchGroup | None:
    """The SAE's first results, or None when nothing matches (or an id query names no feature of it)."""
    try:
        view = search_view(db, get_sae(db, s.sae_id), q, 1, PER_SAE, filters)
    except NoSuchFeatureError:
        return None
    if not view.count:
        return None
    return SearchGroup(sae=s, count=view.count, n_all=view.n_all, data=view.data,
                       more_url=search_url(s.sae_id, q, 1, filters.params()))


def global_search_view(db: Index, q: str, gf: GlobalFilters) -> GlobalSearchView:
    """Groups ordered by how well the SAE answers: results matching every word, then the best
    score, then the number of results; an id query lists that feature of each SAE that has it."""
    q = q.strip()
    saes = list_saes(db)
    archs, models = _choices(saes, "arch"), _choices(saes, "model")
    _check("arch", gf.arch, archs)
    _check("model", gf.model, models)
    chosen = [s for s in saes if (not gf.arch or s.arch == gf.arch) and (not gf.model or s.model == gf.model)]
    filters = replace(gf.per_sae, cluster=None)
    n_terms = len(query_terms(q)) if q and parse_feature_id(q) is None else 0
    groups = [g for g in (_group(db, s, q, filters) for s in chosen) if g is not None] if q else []
    groups.sort(key=lambda g: (-g.n_all, -(g.data[0].score if g.data else 0), -g.count, g.sae.title, g.sae.sae_id))
    return GlobalSearchView(q=q, filters=gf.params(), archs=archs, models=models, n_saes=len(chosen),
                            n_saes_all=len(saes), count=sum(g.count for g in groups), n_terms=n_terms,
                            groups=groups)


def empty_view(db: Index, q: str, gf: GlobalFilters) -> GlobalSearchView:
    """The page around an error message: the form with its choices, no results."""
    saes = list_saes(db)
    return GlobalSearchView(q=q.strip(), filters=gf.params(), archs=_choices(saes, "arch"),
                            models=_choices(saes, "model"), n_saes=0, n_saes_all=len(saes), count=0, groups=[])
