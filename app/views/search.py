"""Feature search: a number jumps to that feature; words rank features by name and top samples."""

from __future__ import annotations

import math
import re

from app.db import Index
from app.errors import InvalidParamError
from app.models import SearchHit, SearchView
from app.views.common import SaeCtx, feature_summary

MAX_TERMS = 6
NAME_WEIGHT = 10.0  # a name hit outranks a few caption hits


def like_pattern(term: str) -> str:
    """Substring ILIKE pattern with %, _ and the escape char taken literally."""
    return "%" + re.sub(r"([\\%_])", r"\\\1", term) + "%"


def _terms(q: str) -> list[str]:
    terms = [t for t in re.split(r"\s+", q.strip()) if t][:MAX_TERMS]
    if any(len(t) > 100 for t in terms):
        raise InvalidParamError("q: search words are at most 100 characters")
    return terms


def search_view(db: Index, ctx: SaeCtx, q: str, page: int, page_size: int) -> SearchView:
    q = q.strip()
    base = dict(sae=ctx.summary, q=q, page=page, page_size=page_size)
    if q.isascii() and q.isdecimal() and int(q) < 2**31:  # isdigit() alone accepts '²', which int() refuses
        fid = int(q)
        row = db.one("SELECT feature_id, name, density, n_fired, mean_act, max_act, label_entropy, "
                     "top_label, cluster_id FROM features WHERE sae_id = ? AND feature_id = ?",
                     [ctx.sae_id, fid])
        if row is not None:
            hit = SearchHit(**feature_summary(ctx.sae_id, row).model_dump(), score=1.0, matches=0)
            return SearchView(**base, count=1, n_pages=1, data=[hit], redirect=hit.url)
    terms = _terms(q)
    if not terms:
        return SearchView(**base, count=0, n_pages=0, data=[])
    pats = [like_pattern(t) for t in terms]
    esc = " ESCAPE '\\'"
    name_score = " + ".join(f"(CASE WHEN f.name ILIKE ?{esc} THEN {NAME_WEIGHT} ELSE 0 END)" for _ in pats)
    sample_cond = " OR ".join(f"s.caption ILIKE ?{esc} OR s.label ILIKE ?{esc}" for _ in pats)
    sql = f"""
    WITH m AS (
        SELECT t.feature_id, count(*) AS hits FROM feature_top t
        JOIN samples s ON s.dataset_id = ? AND s.sample_id = t.sample_id
        WHERE t.sae_id = ? AND ({sample_cond}) GROUP BY t.feature_id),
    scored AS (
        SELECT f.*, coalesce(m.hits, 0) AS matches, ({name_score}) + coalesce(m.hits, 0) AS score
        FROM features f LEFT JOIN m USING (feature_id) WHERE f.sae_id = ?)
    SELECT *, count(*) OVER () AS total FROM scored WHERE score > 0
    ORDER BY score DESC, feature_id LIMIT ? OFFSET ?"""
    params: list = [ctx.dataset_id, ctx.sae_id]
    for p in pats:
        params += [p, p]
    params += pats + [ctx.sae_id, page_size, (page - 1) * page_size]
    rows = db.all(sql, params)
    count = int(rows[0]["total"]) if rows else 0
    if not rows and page > 1:
        count = int(db.scalar(f"SELECT count(*) FROM ({sql.rsplit('ORDER BY', 1)[0]})", params[:-2]))
    hits = [SearchHit(**feature_summary(ctx.sae_id, r).model_dump(), score=float(r["score"]),
                      matches=int(r["matches"])) for r in rows]
    return SearchView(**base, count=count, n_pages=math.ceil(count / page_size), data=hits)
