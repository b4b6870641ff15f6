"""Feature search: an id (12, #12, f12, feature 12) opens that feature; words rank features.

Queries are answered from `search_terms`, built at index time (precompute.search_index): a few
range lookups on rows sorted by (sae_id, term), never a scan of the captions. Words are cut and
normalised by the same SQL at both ends (app.search_text), so case, possessives and plurals
match ("Cars" finds car and cars, never card or sidecar). A word that is nowhere a whole word
falls back to the words it begins ("anim" finds "animal"). "Quoted words" must occur together,
in that order (consecutive word pairs in one top sample, or in the name).

Rank: features matching every word come first; then the score, summed over words: 10 x the
name's strength (name_score) when the name holds the word, 5 x the concept's strength when a
concept the feature promotes holds it, plus the top samples holding it, each weighted by its
activation as a share of the feature's top activation and all of them by the share of the
feature's top samples they make up (precompute.search_index): a broad feature with a few
matches among many other samples does not outrank a feature that is about the word.

On CLIP/SigLIP SAEs (the index holds `joint` concepts) the first page also asks the live worker
for the features nearest the words by meaning (`meaning_results`); without a worker, or when it
fails, that section is simply absent.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from app.db import Index
from app.errors import InvalidParamError, NotFoundError
from app.live_client import LiveClient, LiveError
from app.models import MeaningResults, SearchHit, SearchView
from app.search_text import STOP_WORDS, prefix_upper, words
from app.urls import search_url
from app.views.common import FEATURE_COLS, SaeCtx, feature_summary, top_thumbs

MAX_TERMS = 6
MAX_WORD = 100
NAME_WEIGHT = 10.0  # a strong name hit outranks a few caption hits
CONCEPT_WEIGHT = 5.0
N_THUMBS = 4
N_MEANING = 12
"""Features listed by meaning (live worker) above the word matches."""
MEANING_TIMEOUT_S = 2.0
"""A page thread waits at most this long for the worker (it may be busy or still loading the text
tower); past it the page shows the word matches alone."""
ID_RE = re.compile(r"(?:#|f|feat|feature)?\s*#?\s*(\d+)", re.IGNORECASE | re.ASCII)
PHRASE_RE = re.compile(r"[\"“”]([^\"“”]*)[\"“”]?")
SORTS = {"relevance": "terms DESC, score DESC, feature_id", "density": "density DESC NULLS LAST, feature_id",
         "max_act": "max_act DESC NULLS LAST, feature_id", "id": "feature_id"}


class NoSuchFeatureError(NotFoundError):
    """An id-shaped query naming a feature the SAE does not have."""


@dataclass(frozen=True)
class Filters:
    """Narrow the results (all optional) and order them; they travel in the URL."""

    min_density: float | None = None
    max_density: float | None = None
    cluster: int | None = None
    label: str | None = None
    sort: str = "relevance"

    def sql(self, arg) -> str:
        out = []
        if self.min_density is not None:
            out.append(f"f.density >= {arg(self.min_density)}")
        if self.max_density is not None:
            out.append(f"f.density <= {arg(self.max_density)}")
        if self.cluster is not None:
            out.append(f"f.cluster_id = {arg(self.cluster)}")
        if self.label:
            out.append(f"lower(f.top_label) = lower({arg(self.label)})")
        return " AND ".join(out) or "true"

    @property
    def narrows(self) -> bool:
        return any(v not in (None, "") for v in (self.min_density, self.max_density, self.cluster, self.label))

    def params(self) -> dict[str, Any]:
        """The non-default filters, as URL query parameters."""
        return {k: v for k, v in self.__dict__.items() if v not in (None, "") and not (k == "sort" and v == "relevance")}


@dataclass(frozen=True)
class Term:
    """One thing the query asks for: a word (prefix fallback allowed) or a phrase (its word pairs)."""

    parts: tuple[str, ...]
    prefix: bool = False


def parse_feature_id(q: str) -> int | None:
    """The id in '257', '#257', 'f257' or 'feature 257' (as pages show ids), else None."""
    m = ID_RE.fullmatch(q.strip())
    return int(m.group(1)) if m else None


def query_terms(q: str) -> list[Term]:
    """Words and "phrases" of q, cut as the index cut its texts (app.search_text)."""
    phrases = [p for p in PHRASE_RE.findall(q) if p.strip()]
    row = [words(PHRASE_RE.sub(" ", q)), *(words(p) for p in phrases)]
    if any(len(w) > MAX_WORD for ws in row for w in ws):
        raise InvalidParamError(f"q: search words are at most {MAX_WORD} characters")
    distinct = list(dict.fromkeys(row[0]))
    meaningful = [w for w in distinct if w not in STOP_WORDS]
    terms = [Term((w,), prefix=True) for w in (meaningful or distinct)]
    for phrase in row[1:]:
        parts = tuple(dict.fromkeys(f"{a} {b}" for a, b in zip(phrase, phrase[1:], strict=False))) or tuple(phrase[:1])
        if parts and Term(parts) not in terms:
            terms.append(Term(parts))
    return terms[:MAX_TERMS]


def _whole_words(db: Index, sae_id: str, terms: list[Term]) -> list[Term]:
    """Words that are nowhere a whole term become prefixes; the rest match exactly."""
    words = [t.parts[0] for t in terms if t.prefix]
    if not words:
        return terms
    exists = db.cursor().execute("SELECT " + ", ".join(
        f"EXISTS (SELECT 1 FROM search_terms WHERE sae_id = $1 AND term = ${i + 2})" for i in range(len(words))),
        [sae_id, *words]).fetchone()
    whole = dict(zip(words, exists, strict=True))
    return [Term(t.parts, prefix=t.prefix and not whole[t.parts[0]]) for t in terms]


def _hits_sql(terms: list[Term], arg, sae: str) -> str:
    """Per matching feature: `terms` (query terms matched), `matches` (top samples) and `score`.

    Exact one-word terms hit one search_terms row per feature, so they aggregate once; prefixes
    (several words per feature) and phrases (several word pairs) are first folded per term."""
    lookups = []
    for qi, term in enumerate(terms):
        for part in term.parts:
            cond = (f"term >= {arg(part)} AND term < {arg(prefix_upper(part))} AND NOT contains(term, ' ')"
                    if term.prefix else f"term = {arg(part)}")
            lookups.append(f"SELECT {qi} AS qi, {arg(part)} AS part, {len(term.parts)} AS need, feature_id, "
                           f"name_weight AS nw, concept_weight AS cw, ranks AS r, sample_weight AS sw "
                           f"FROM search_terms WHERE sae_id = {sae} AND {cond}")
    m = " UNION ALL ".join(lookups)
    if any(t.prefix or len(t.parts) > 1 for t in terms):
        m = f"""SELECT qi, feature_id, min(nw) AS nw, min(cw) AS cw, bit_and(r) AS r, min(sw) AS sw FROM (
                  SELECT qi, part, any_value(need) AS need, feature_id, max(nw) AS nw, max(cw) AS cw, bit_or(r) AS r,
                         sum(sw) AS sw FROM ({m}) GROUP BY qi, part, feature_id)
                GROUP BY qi, feature_id HAVING count(*) = any_value(need)"""
    return f"""SELECT feature_id, count(*) AS terms, bit_count(bit_or(r)) AS matches,
                      round(sum({NAME_WEIGHT} * nw + {CONCEPT_WEIGHT} * cw + CASE WHEN r = 0 THEN 0 ELSE sw END), 6) AS score
               FROM ({m}) WHERE nw > 0 OR cw > 0 OR r <> 0 GROUP BY feature_id"""


def _ranked(db: Index, ctx: SaeCtx, terms: list[Term], filters: Filters, page: int, page_size: int
            ) -> tuple[list[dict[str, Any]], int, int]:
    """One page of matches, the number of matches, and how many match every term.

    The matches are materialised once; the page is taken from them before the features table
    is joined (24 rows), unless filters or the sort need feature columns for every match."""
    params: list[Any] = []

    def arg(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    sae = arg(ctx.sae_id)
    hits = _hits_sql(terms, arg, sae)
    cols = ", ".join("f." + c for c in FEATURE_COLS.split(", "))
    if filters.narrows or filters.sort in ("density", "max_act"):
        hits = (f"SELECT h.*, f.density, f.max_act FROM ({hits}) h JOIN features f ON f.sae_id = {sae} "
                f"AND f.feature_id = h.feature_id WHERE {filters.sql(arg)}")
    order = SORTS[filters.sort]
    n_terms, limit, offset = arg(len(terms)), arg(page_size), arg((page - 1) * page_size)
    rows = db.all(f"""
        WITH hits AS MATERIALIZED ({hits}),
        pg AS (SELECT feature_id, terms, matches, score FROM hits ORDER BY {order} LIMIT {limit} OFFSET {offset}),
        counts AS (SELECT count(*) AS total, coalesce(sum((terms = {n_terms})::INT), 0) AS n_all FROM hits)
        SELECT {cols}, pg.terms, pg.matches, pg.score, counts.total, counts.n_all
        FROM counts LEFT JOIN (pg JOIN features f ON f.sae_id = {sae} AND f.feature_id = pg.feature_id) ON true
        ORDER BY {order.replace("density", "f.density").replace("max_act", "f.max_act")}""", params)
    total, n_all = int(rows[0]["total"]), int(rows[0]["n_all"])
    return ([r for r in rows if r["feature_id"] is not None], total, n_all)


def _id_view(db: Index, ctx: SaeCtx, fid: int, base: dict[str, Any]) -> SearchView:
    row = None
    if fid < ctx.d_sae:
        row = db.one(f"SELECT {FEATURE_COLS} FROM features WHERE sae_id = ? AND feature_id = ?", [ctx.sae_id, fid])
    if row is None:
        ids = f"feature ids are 0–{ctx.d_sae - 1}" if ctx.d_sae > 0 else "this SAE has no features"
        raise NoSuchFeatureError(f"No feature {fid}; {ids}.")
    hit = SearchHit(**feature_summary(ctx.sae_id, row).model_dump(), score=1.0, matches=0)
    return SearchView(**base, count=1, n_pages=1, data=[hit], redirect=hit.url)


def search_view(db: Index, ctx: SaeCtx, q: str, page: int, page_size: int, filters: Filters | None = None) -> SearchView:
    """One page of results; `view.redirect` is set when the HTML page should go elsewhere.
    Cached per index like every derived view: the same search (often a shared link, or the
    next page's way back) is answered once."""
    filters = filters or Filters()
    q = q.strip()
    return db.cached(("search", ctx.sae_id, q, page, page_size, filters),
                     lambda: _search_view(db, ctx, q, page, page_size, filters))


def _search_view(db: Index, ctx: SaeCtx, q: str, page: int, page_size: int, filters: Filters) -> SearchView:
    base = dict(sae=ctx.summary, q=q, page=page, page_size=page_size, filters=filters.params())
    fid = parse_feature_id(q)
    if fid is not None:
        return _id_view(db, ctx, fid, base)
    terms = _whole_words(db, ctx.sae_id, query_terms(q)) if q else []
    rows, count, n_all = _ranked(db, ctx, terms, filters, page, page_size) if terms else ([], 0, 0)
    n_pages = math.ceil(count / page_size)
    last = max(n_pages, 1)
    tops = top_thumbs(db, ctx, [int(r["feature_id"]) for r in rows], N_THUMBS)
    hits = [SearchHit(**feature_summary(ctx.sae_id, r).model_dump(), score=float(r["score"]), matches=int(r["matches"]),
                      terms_matched=int(r["terms"]), top=tops.get(int(r["feature_id"]), [])) for r in rows]
    return SearchView(**base, count=count, n_pages=n_pages, data=hits, n_terms=len(terms), n_all=n_all,
                      redirect=search_url(ctx.sae_id, q, last, filters.params()) if page > last else None)


def not_found_view(ctx: SaeCtx, q: str, page_size: int) -> SearchView:
    """An empty result for the HTML page that explains a missing feature id."""
    return SearchView(sae=ctx.summary, q=q.strip(), page=1, page_size=page_size, count=0, n_pages=0, data=[])


def has_joint_concepts(db: Index, sae_id: str) -> bool:
    """Whether the index projected this SAE into a CLIP/SigLIP joint space (so the worker can search it by meaning)."""
    return db.cached(("joint", sae_id), lambda: db.one(
        "SELECT 1 AS x FROM feature_concepts WHERE sae_id = ? AND method = 'joint' LIMIT 1", [sae_id]) is not None)


def meaning_results(db: Index, ctx: SaeCtx, live: LiveClient, view: SearchView) -> MeaningResults | None:
    """The worker's features nearest the query by meaning, or None: not a first page of words, not a
    CLIP/SigLIP SAE, no worker, or the worker could not answer (the word matches stand alone)."""
    if not (view.q and view.n_terms and view.page == 1 and view.redirect is None and live.configured
            and has_joint_concepts(db, ctx.sae_id)):
        return None
    try:
        found = live.concept_search(ctx.sae_id, view.q, N_MEANING, MEANING_TIMEOUT_S)
    except LiveError:
        return None
    cosine = {int(h["feature_id"]): float(h["cosine"]) for h in found.get("features", [])}
    ids = [f for f in cosine if 0 <= f < ctx.d_sae]
    if not ids:
        return None
    rows = {int(r["feature_id"]): r for r in db.all(
        f"SELECT {FEATURE_COLS} FROM features WHERE sae_id = ? AND list_contains(?, feature_id)", [ctx.sae_id, ids])}
    tops = top_thumbs(db, ctx, ids, N_THUMBS)
    hits = [SearchHit(**feature_summary(ctx.sae_id, rows[f]).model_dump(), score=cosine[f], matches=0, top=tops.get(f, []))
            for f in ids if f in rows]
    return MeaningResults(space=str(found.get("space", "CLIP")), prompt=str(found.get("prompt", "")), data=hits)
