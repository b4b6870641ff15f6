"""Feature page, hover card and feature lists."""

from __future__ import annotations

import random

from app.db import Index
from app.errors import InvalidParamError
from app.models import FeatureCard, FeatureList, FeatureView, Histogram, LabelCount, Neighbor, QuantileBin
from app.views.common import FEATURE_COLS, SaeCtx, feature_summary, feature_title, get_feature_row, sample_refs, top_thumbs

N_TOP_SHOWN = 64
N_CARD_THUMBS = 4
MAX_LIST_IDS = 500


def feature_view(db: Index, ctx: SaeCtx, fid: int) -> FeatureView:
    row = get_feature_row(db, ctx, fid)
    sid = ctx.sae_id
    # top and quantile samples with their captions in one round trip (kind 0 = top, 1 = quantiles)
    rows = db.all(
        "WITH t AS (SELECT 0 AS kind, 0 AS bin, rank, sample_id, activation, heatmap, heatmap_scale "
        "FROM feature_top WHERE sae_id = ? AND feature_id = ? AND rank < ? UNION ALL "
        "SELECT 1, bin, rank, sample_id, activation, heatmap, heatmap_scale FROM feature_quantiles "
        "WHERE sae_id = ? AND feature_id = ?) "
        "SELECT t.*, s.caption, s.label FROM t LEFT JOIN samples s ON s.dataset_id = ? AND s.sample_id = t.sample_id "
        "ORDER BY kind, bin, rank", [sid, fid, N_TOP_SHOWN, sid, fid, ctx.dataset_id])
    refs = sample_refs(db, ctx, rows)
    top = [ref for r, ref in zip(rows, refs, strict=True) if r["kind"] == 0]
    bins: dict[int, list] = {}
    for r, ref in zip(rows, refs, strict=True):
        if r["kind"] == 1:
            bins.setdefault(int(r["bin"]), []).append(ref)
    hist_row = db.one("SELECT edges, counts FROM feature_hist WHERE sae_id = ? AND feature_id = ?",
                      [sid, fid])
    hist = Histogram(edges=list(hist_row["edges"] or []), counts=list(hist_row["counts"] or [])) \
        if hist_row else Histogram(edges=[], counts=[])
    labels = [LabelCount(**r) for r in db.all(
        "SELECT label, count, fraction FROM feature_labels WHERE sae_id = ? AND feature_id = ? "
        "ORDER BY count DESC, label", [sid, fid])]
    nrows = db.all(
        "SELECT n.neighbor_id, n.cosine, f.name FROM feature_neighbors n LEFT JOIN features f "
        "ON f.sae_id = n.sae_id AND f.feature_id = n.neighbor_id "
        "WHERE n.sae_id = ? AND n.feature_id = ? ORDER BY n.rank", [sid, fid])
    thumbs = top_thumbs(db, ctx, [int(r["neighbor_id"]) for r in nrows], 3)
    neighbors = [Neighbor(feature_id=r["neighbor_id"], title=feature_title(r["neighbor_id"], r["name"]),
                          cosine=r["cosine"], url=f"/sae/{sid}/feature/{r['neighbor_id']}",
                          thumbs=thumbs.get(int(r["neighbor_id"]), [])) for r in nrows]
    return FeatureView(
        sae=ctx.summary, feature=feature_summary(sid, row), top=top,
        quantiles=[QuantileBin(bin=b, samples=s) for b, s in sorted(bins.items())],
        hist=hist, labels=labels, neighbors=neighbors,
        prev_url=f"/sae/{sid}/feature/{fid - 1}" if fid > 0 else None,
        next_url=f"/sae/{sid}/feature/{fid + 1}" if fid + 1 < ctx.d_sae else None,
        random_url=f"/sae/{sid}/feature/random")


def feature_card(db: Index, ctx: SaeCtx, fid: int) -> FeatureCard:
    row = get_feature_row(db, ctx, fid)
    summary = feature_summary(ctx.sae_id, row)
    thumbs = top_thumbs(db, ctx, [fid], N_CARD_THUMBS)[fid]
    return FeatureCard(**summary.model_dump(), top=thumbs)


def random_feature_id(db: Index, ctx: SaeCtx, seed: int | None = None) -> int:
    """A random firing feature (dead ones make dull pages)."""
    n = db.scalar("SELECT count(*) FROM features WHERE sae_id = ? AND density > 0", [ctx.sae_id])
    if not n:
        return 0
    off = random.Random(seed).randrange(n)
    return int(db.scalar("SELECT feature_id FROM features WHERE sae_id = ? AND density > 0 "
                         "ORDER BY feature_id LIMIT 1 OFFSET ?", [ctx.sae_id, off]))


def parse_ids(ids: str) -> list[int]:
    """'1,2,5-9' -> [1, 2, 5, 6, 7, 8, 9]; the map sends selections this way."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in ids.split(","))):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise InvalidParamError(f"ids: {part!r} is not a feature id or range like 3-7")
        a, b = int(lo), int(hi) if hi else int(lo)
        if b < a or len(out) + (b - a + 1) > MAX_LIST_IDS:
            raise InvalidParamError(f"ids: at most {MAX_LIST_IDS} ids, ranges low-high")
        out.extend(range(a, b + 1))
    return out


def feature_list(db: Index, ctx: SaeCtx, ids: list[int], limit: int, offset: int) -> FeatureList:
    """Features by id (lasso selection) or all features in id order."""
    if ids:
        rows = db.all(f"SELECT {FEATURE_COLS} FROM features WHERE sae_id = ? AND feature_id IN "
                      "(SELECT unnest(?::INTEGER[])) ORDER BY feature_id LIMIT ? OFFSET ?",
                      [ctx.sae_id, ids, limit, offset])
        count = int(db.scalar("SELECT count(*) FROM features WHERE sae_id = ? AND feature_id IN "
                              "(SELECT unnest(?::INTEGER[]))", [ctx.sae_id, ids]))
    else:
        rows = db.all(f"SELECT {FEATURE_COLS} FROM features WHERE sae_id = ? ORDER BY feature_id "
                      "LIMIT ? OFFSET ?", [ctx.sae_id, limit, offset])
        count = int(db.scalar("SELECT count(*) FROM features WHERE sae_id = ?", [ctx.sae_id]))
    return FeatureList(data=[feature_summary(ctx.sae_id, r) for r in rows], count=count)
