"""A chunk of feature (or sample) pages' data in a few queries, for publishing tens of thousands of pages.

The server looks a feature up when it is asked for (3-4 point queries, ~5 ms at 65k features, and
another ~5 ms for its map column). A publish asks for every feature in id order, so each chunk
of a few hundred contiguous ids is read with one range query per table, and the app's own
builders (app.views.features.build_feature_view, app.views.feature_map.encode_activations) turn the rows into
exactly what the server would send.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from app.db import Index
from app.models import FeatureView, SampleView
from app.views.common import SaeCtx, decode_heatmap, sample_refs, top_thumbs
from app.views.feature_map import encode_activations
from app.views.features import (
    ALIGNMENT_SELECT,
    N_TOP_SHOWN,
    Heat,
    alignment_of,
    build_feature_view,
    needs_heatmaps,
)
from app.views.samples import build_sample_view
from sae_core.errors import DataError

_RANGE = "sae_id = ? AND feature_id BETWEEN ? AND ?"


def _span(ctx: SaeCtx, fids: list[int]) -> list:
    return [ctx.sae_id, min(fids), max(fids)]


def feature_views(db: Index, ctx: SaeCtx, fids: list[int]) -> dict[int, FeatureView]:
    """Feature id -> its page's view, for ids that have a page (sorted or not; read as one id range)."""
    if not fids:
        return {}
    want = set(fids)
    cur = db.cursor()
    pages = {int(f): json.loads(p) for f, p in cur.execute(
        f"SELECT feature_id, page FROM feature_page WHERE {_RANGE}", _span(ctx, fids)).fetchall() if f in want}
    cur.execute(f"SELECT a.feature_id, {ALIGNMENT_SELECT} WHERE a.{_RANGE}", _span(ctx, fids))
    names = [d[0] for d in cur.description][1:]
    aligned = {int(r[0]): dict(zip(names, r[1:], strict=True)) for r in cur.fetchall() if r[0] in want}
    heat = _heatmaps(db, ctx, fids) if any(needs_heatmaps(ctx, p) for p in pages.values()) else {}
    if len(pages) < len(want):
        fid = min(want - set(pages))
        raise DataError(f"feature {fid} of SAE {ctx.sae_id!r} has no feature_page row; rebuild the index with `saescope index`")
    out = {}
    for fid, page in pages.items():
        row = aligned.get(fid)
        out[fid] = build_feature_view(db, ctx, fid, page, heat.get(fid, {}) if needs_heatmaps(ctx, page) else None,
                                      alignment_of(row) if row is not None else None)
    return out


def _heatmaps(db: Index, ctx: SaeCtx, fids: list[int]) -> dict[int, Heat]:
    """app.views.features._heatmaps for a range of features: fid -> {(kind, bin, sample_id): (map, scale)}."""
    rows = db.cursor().execute(
        "SELECT feature_id, 0 AS kind, 0 AS bin, sample_id, heatmap, heatmap_scale FROM feature_top "
        f"WHERE {_RANGE} AND rank < ? UNION ALL "
        f"SELECT feature_id, 1, bin, sample_id, heatmap, heatmap_scale FROM feature_quantiles WHERE {_RANGE}",
        [*_span(ctx, fids), N_TOP_SHOWN, *_span(ctx, fids)]).fetchall()
    out: dict[int, Heat] = {}
    for fid, k, b, sid, h, sc in rows:
        out.setdefault(int(fid), {})[(int(k), int(b), int(sid))] = (h, sc)
    return out


@dataclass(frozen=True)
class MapOrder:
    """The dataset map's sample ids in row order (samples.bin's), to place activations by sample id."""

    sample_ids: np.ndarray

    @classmethod
    def load(cls, db: Index, sae_id: str) -> MapOrder:
        res = db.cursor().execute("SELECT sample_id FROM sample_map WHERE sae_id = ? ORDER BY sample_id",
                                  [sae_id]).fetchnumpy()
        return cls(np.asarray(res["sample_id"], dtype=np.int64))


def feature_activations(db: Index, sae_id: str, order: MapOrder, fids: list[int]) -> dict[int, bytes]:
    """app.views.feature_map.feature_activations for many features: the best activation a sample has
    in the feature's top, bin and per-sample rows, one range query for the whole chunk."""
    span = [sae_id, min(fids), max(fids)]
    res = db.cursor().execute(
        f"""WITH acts AS (
              SELECT feature_id, sample_id, activation FROM feature_top WHERE {_RANGE}
              UNION ALL SELECT feature_id, sample_id, activation FROM feature_quantiles WHERE {_RANGE}
              UNION ALL SELECT feature_id, sample_id, activation FROM sample_top WHERE {_RANGE})
            SELECT feature_id, sample_id, coalesce(max(activation)::DOUBLE, 'NaN'::DOUBLE) AS activation
            FROM acts GROUP BY feature_id, sample_id ORDER BY feature_id""", span * 3).fetchnumpy()
    f_col = np.asarray(res["feature_id"], dtype=np.int64)
    s_col = np.asarray(res["sample_id"], dtype=np.int64)
    a_col = np.asarray(res["activation"], dtype=np.float64)
    ids = order.sample_ids
    pos = np.searchsorted(ids, s_col)
    on_map = pos < len(ids)
    on_map[on_map] = ids[pos[on_map]] == s_col[on_map]
    f_col, pos, a_col = f_col[on_map], pos[on_map], a_col[on_map]
    starts = np.searchsorted(f_col, fids, side="left")
    ends = np.searchsorted(f_col, fids, side="right")
    out = {}
    for fid, a, b in zip(fids, starts, ends, strict=True):
        act = np.full(len(ids), np.nan)
        act[pos[a:b]] = a_col[a:b]
        out[fid] = encode_activations(sae_id, fid, act)
    return out


def sample_views(db: Index, ctx: SaeCtx, ids: list[int]) -> dict[int, SampleView]:
    """Sample id -> its page's view (app.views.samples.sample_view), each table read once per chunk."""
    if not ids:
        return {}
    want, lo, hi = set(ids), min(ids), max(ids)
    meta = {int(r["sample_id"]): r for r in db.all(
        "SELECT sample_id, source, caption, label FROM samples WHERE dataset_id = ? AND sample_id BETWEEN ? AND ?",
        [ctx.dataset_id, lo, hi]) if r["sample_id"] in want}
    tops: dict[int, list[dict]] = {i: [] for i in ids}
    for r in db.all(
            "SELECT t.sample_id, t.rank, t.feature_id, t.activation, f.name, f.name_score FROM sample_top t "
            "LEFT JOIN features f ON f.sae_id = t.sae_id AND f.feature_id = t.feature_id "
            "WHERE t.sae_id = ? AND t.sample_id BETWEEN ? AND ? ORDER BY t.sample_id, t.rank", [ctx.sae_id, lo, hi]):
        if r["sample_id"] in want:
            tops[int(r.pop("sample_id"))].append(r)
    heat = _sample_heatmaps(db, ctx, lo, hi) if ctx.summary.is_patch else {}
    thumbs = top_thumbs(db, ctx, sorted({int(r["feature_id"]) for rows in tops.values() for r in rows}), 3)
    out = {}
    for i in ids:
        if i not in meta:
            raise DataError(f"sample {i} of SAE {ctx.sae_id!r} is not in dataset {ctx.dataset_id!r}; rebuild the index")
        m = meta[i]
        ref = sample_refs(db, ctx, [{"sample_id": i, "caption": m["caption"], "label": m["label"]}])[0]
        out[i] = build_sample_view(ctx, ref, m["source"], tops[i], heat.get(i, {}), thumbs)
    return out


def _sample_heatmaps(db: Index, ctx: SaeCtx, lo: int, hi: int) -> dict[int, dict[int, list[float] | None]]:
    """A sample's patch map of each of its top features, where stored: the feature's top rows first,
    then its bin rows (the server's order)."""
    rows = db.cursor().execute(
        "SELECT h.sample_id, h.feature_id, h.heatmap, h.heatmap_scale FROM ("
        "  SELECT 0 AS src, sample_id, feature_id, heatmap, heatmap_scale FROM feature_top "
        "  WHERE sae_id = ? AND sample_id BETWEEN ? AND ? UNION ALL "
        "  SELECT 1, sample_id, feature_id, heatmap, heatmap_scale FROM feature_quantiles "
        "  WHERE sae_id = ? AND sample_id BETWEEN ? AND ?) h "
        "JOIN sample_top t ON t.sae_id = ? AND t.sample_id = h.sample_id AND t.feature_id = h.feature_id "
        "ORDER BY h.sample_id, h.feature_id, h.src", [ctx.sae_id, lo, hi, ctx.sae_id, lo, hi, ctx.sae_id]).fetchall()
    out: dict[int, dict[int, list[float] | None]] = {}
    for sid, fid, h, sc in rows:
        out.setdefault(int(sid), {}).setdefault(int(fid), decode_heatmap(h, sc))
    return out
