"""Feature search: an id (12, #12, f12, feature 12) opens that feature; words rank features.

Words match whole words, not substrings, so short queries stay precise ("car" finds "car" and
"cars", never "card" or "sidecar"). A word that is nowhere a whole word falls back to matching
word beginnings, so a half-typed "anim" still finds "animal". Features matching every word come
before those matching some. Matching runs in DuckDB (one query), never per feature in Python.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlencode

from app.db import Index
from app.errors import InvalidParamError, NotFoundError
from app.models import SampleRef, SearchHit, SearchView
from app.views.common import FEATURE_COLS, SaeCtx, feature_summary, sample_refs

MAX_TERMS = 6
NAME_WEIGHT = 10.0  # a name hit outranks a few caption hits
ID_RE = re.compile(r"(?:#|f|feat|feature)?\s*#?\s*(\d+)", re.IGNORECASE | re.ASCII)
TERM_RE = re.compile(r"\w+(?:['’]\w+)*")  # words; "don't" stays one word
APOS = "['’]"
START = r"(?:^|[^\pL\pN_])"  # RE2 `\b` is ASCII-only; these classes also bound non-ASCII words
WORD_END = r"(?:s|es)?(?:[^\pL\pN_]|$)"  # whole word or its plural (car's: ' ends the word)


class NoSuchFeatureError(NotFoundError):
    """An id-shaped query naming a feature the SAE does not have."""


STOP_WORDS = frozenset(
    "a an and are as at be by for from has in is it its of on or that the this to was were with".split())
"""Dropped from queries of several words: they match nearly every caption (so every sample would
run the word regexes) and 'all of the words' should mean the words that carry meaning."""


def search_terms(q: str) -> list[str]:
    """Distinct words of q (possessive 's dropped; punctuation only separates words), as typed:
    matching is case-insensitive already, and case folding would turn 'Straße' into 'strasse',
    which DuckDB's case-insensitive match does not equate with the stored text."""
    words = [re.sub(r"['’]s$", "", t) for t in TERM_RE.findall(q)]
    first: dict[str, str] = {}
    for w in words:
        first.setdefault(w.casefold(), w)  # each word once, in its first spelling
    distinct = list(first.values())
    meaningful = [w for w in distinct if w.casefold() not in STOP_WORDS]
    terms = (meaningful or distinct)[:MAX_TERMS]
    if any(len(t) > 100 for t in terms):
        raise InvalidParamError("q: search words are at most 100 characters")
    return terms


def term_patterns(term: str) -> tuple[str, str, str]:
    """(whole-word regex, word-prefix regex, ILIKE prefilter) for one word of `\w` characters.

    Apostrophes match ' or ’; the prefilter holds the longest apostrophe-free piece (no % or \\).
    """
    pieces = re.split(APOS, term)
    core = APOS.join(re.escape(p) for p in pieces)
    return START + core + WORD_END, START + core, "%" + max(pieces, key=len) + "%"


def parse_feature_id(q: str) -> int | None:
    """The id in '257', '#257', 'f257' or 'feature 257' (as pages show ids), else None."""
    m = ID_RE.fullmatch(q.strip())
    return int(m.group(1)) if m else None


def search_url(ctx: SaeCtx, q: str, page: int) -> str:
    query = {"q": q} if page == 1 else {"q": q, "page": page}
    return f"/sae/{ctx.sae_id}/search?{urlencode(query)}"


def _match_sql(ctx: SaeCtx, terms: list[str]) -> tuple[str, list[Any]]:
    """Features with `matches` (top samples hit), `terms` (words matched) and `score`.

    Each word gets flags w (whole word) and p (word prefix) on feature names and on the caption
    plus label of each sample of the dataset (a cheap ILIKE prefilter first); `mode` says per
    word whether it occurs as a whole word at all. Flags are settled per sample before the join
    with feature_top, so the big join only carries booleans.
    """
    params: list[Any] = []

    def arg(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    ds, sae = arg(ctx.dataset_id), arg(ctx.sae_id)
    pats = [tuple(arg(p) for p in term_patterns(t)) for t in terms]
    idx = range(len(terms))

    def flags(col: str) -> str:  # w only where p holds: the whole-word regex runs on few rows
        return ", ".join(f"regexp_matches({col}, {p}, 'i') AS p{i}, "
                         f"(CASE WHEN p{i} THEN regexp_matches({col}, {w}, 'i') ELSE false END) AS w{i}"
                         for i, (w, p, _) in enumerate(pats))

    def prefilter(*cols: str) -> str:  # plain ILIKE: its `_` wildcard only widens a prefilter
        return " OR ".join(f"{c} ILIKE {like}" for _, _, like in pats for c in cols)

    cols = ", ".join(f"w{i}, p{i}" for i in idx)
    picked = [f"(CASE WHEN m{i} THEN w{i} ELSE p{i} END)" for i in idx]
    sql = f"""
    WITH sm AS (SELECT sample_id, {flags('txt')} FROM (
                    SELECT sample_id, concat_ws(' ', caption, label) AS txt FROM samples
                    WHERE dataset_id = {ds} AND ({prefilter('caption', 'label')}))),
    nm AS (SELECT feature_id, {flags('name')} FROM features WHERE sae_id = {sae} AND ({prefilter('name')})),
    mode AS (SELECT {", ".join(f"coalesce(bool_or(w{i}), false) AS m{i}" for i in idx)}
             FROM (SELECT {cols} FROM sm UNION ALL SELECT {cols} FROM nm)),
    sp AS (SELECT * FROM (SELECT sample_id, {", ".join(f"{c} AS h{i}" for i, c in enumerate(picked))} FROM sm, mode)
           WHERE {" OR ".join(f"h{i}" for i in idx)}),
    hits AS (SELECT t.feature_id, count(*) AS matches, {", ".join(f"sum(h{i}::INT) AS h{i}" for i in idx)}
             FROM feature_top t JOIN sp USING (sample_id) WHERE t.sae_id = {sae} GROUP BY t.feature_id),
    names AS (SELECT feature_id, {", ".join(f"{c} AS n{i}" for i, c in enumerate(picked))} FROM nm, mode),
    scored AS (
        SELECT {", ".join("f." + c for c in FEATURE_COLS.split(", "))}, coalesce(hits.matches, 0) AS matches,
               {" + ".join(f"(coalesce(n{i}, false) OR coalesce(h{i}, 0) > 0)::INT" for i in idx)} AS terms,
               {" + ".join(f"(CASE WHEN n{i} THEN {NAME_WEIGHT}::DOUBLE ELSE 0 END) + coalesce(h{i}, 0)" for i in idx)} AS score
        FROM features f LEFT JOIN hits USING (feature_id) LEFT JOIN names USING (feature_id)
        WHERE f.sae_id = {sae})
    SELECT * FROM scored WHERE terms > 0"""
    return sql, params


N_THUMBS = 4


def _top_samples(db: Index, ctx: SaeCtx, fids: list[int]) -> dict[int, list[SampleRef]]:
    """Each hit's first top samples, in one query: results are judged by their images."""
    if not fids:
        return {}
    rows = db.all("SELECT feature_id, sample_id, activation FROM feature_top WHERE sae_id = ? AND rank < ? "
                  "AND feature_id IN (SELECT unnest(?::INTEGER[])) ORDER BY feature_id, rank", [ctx.sae_id, N_THUMBS, fids])
    refs = sample_refs(db, ctx, rows)
    out: dict[int, list[SampleRef]] = {}
    for r, ref in zip(rows, refs, strict=True):
        out.setdefault(int(r["feature_id"]), []).append(ref)
    return out


def search_view(db: Index, ctx: SaeCtx, q: str, page: int, page_size: int) -> SearchView:
    """One page of results; `view.redirect` is set when the HTML page should go elsewhere."""
    q = q.strip()
    base = dict(sae=ctx.summary, q=q, page=page, page_size=page_size)
    fid = parse_feature_id(q)
    if fid is not None:
        row = None
        if fid < ctx.d_sae:
            row = db.one(f"SELECT {FEATURE_COLS} FROM features WHERE sae_id = ? AND feature_id = ?",
                         [ctx.sae_id, fid])
        if row is None:
            ids = f"feature ids are 0–{ctx.d_sae - 1}" if ctx.d_sae > 0 else "this SAE has no features"
            raise NoSuchFeatureError(f"No feature {fid}; {ids}.")
        hit = SearchHit(**feature_summary(ctx.sae_id, row).model_dump(), score=1.0, matches=0)
        return SearchView(**base, count=1, n_pages=1, data=[hit], redirect=hit.url)
    terms = search_terms(q)
    rows: list[dict[str, Any]] = []
    count = n_all = 0
    if terms:
        sql, params = _match_sql(ctx, terms)
        k = len(params)  # then $k+1: number of words, $k+2: limit, $k+3: offset
        n_all_sql = f"sum((terms = ${k + 1})::INT)"  # a FILTER clause makes the window ~10x slower
        rows = db.all(f"SELECT *, count(*) OVER () AS total, {n_all_sql} OVER () AS n_all FROM ({sql}) "
                      f"ORDER BY terms DESC, score DESC, feature_id LIMIT ${k + 2} OFFSET ${k + 3}",
                      [*params, len(terms), page_size, (page - 1) * page_size])
        if rows:
            count, n_all = int(rows[0]["total"]), int(rows[0]["n_all"])
        elif page > 1:  # past the end: the counts say where the last page is
            tot = db.one(f"SELECT count(*) AS total, {n_all_sql} AS n_all FROM ({sql})", [*params, len(terms)])
            count, n_all = int(tot["total"]), int(tot["n_all"] or 0)
    n_pages = math.ceil(count / page_size)
    last = max(n_pages, 1)
    tops = _top_samples(db, ctx, [int(r["feature_id"]) for r in rows])
    hits = [SearchHit(**feature_summary(ctx.sae_id, r).model_dump(), score=float(r["score"]), matches=int(r["matches"]),
                      terms_matched=int(r["terms"]), top=tops.get(int(r["feature_id"]), [])) for r in rows]
    return SearchView(**base, count=count, n_pages=n_pages, data=hits, n_terms=len(terms), n_all=n_all,
                      redirect=search_url(ctx, q, last) if page > last else None)


def not_found_view(ctx: SaeCtx, q: str, page_size: int) -> SearchView:
    """An empty result for the HTML page that explains a missing feature id."""
    return SearchView(sae=ctx.summary, q=q.strip(), page=1, page_size=page_size, count=0, n_pages=0, data=[])
