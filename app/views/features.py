"""Feature page, hover card and feature lists."""

from __future__ import annotations

import json
import random
from array import array
from typing import Any

from app.db import Index
from app.errors import NotFoundError
from app.models import (
    Concept,
    CoNeighbor,
    FeatureAlignment,
    FeatureCard,
    FeatureView,
    Histogram,
    LabelCount,
    Neighbor,
    QuantileBin,
    SampleRef,
)
from app.views.common import SaeCtx, decode_heatmap, feature_summary, feature_title, sample_ref

N_TOP_SHOWN = 64
N_CARD_THUMBS = 4


def _page(db: Index, ctx: SaeCtx, fid: int) -> dict[str, Any]:
    """The feature's precomputed `feature_page` document: one point lookup on sorted rows."""
    raw = db.scalar("SELECT page FROM feature_page WHERE sae_id = ? AND feature_id = ?", [ctx.sae_id, fid])
    if raw is None:
        raise NotFoundError(f"SAE {ctx.sae_id!r} has no feature {fid}.")
    return json.loads(raw)


Heat = dict[tuple[int, int, int], tuple[bytes | None, float | None]]


def _refs(ctx: SaeCtx, items: list[dict[str, Any]], heat: Heat | None = None, kind: int = 0) -> list[SampleRef]:
    """Gallery tiles; patch maps are joined by key (kind, bin, sample_id), never by position."""
    def hm(it: dict[str, Any]):
        got = heat.get((kind, int(it.get("bin", 0)), int(it["sample_id"]))) if heat else None
        return decode_heatmap(*got) if got else None
    return [sample_ref(ctx, it["sample_id"], it["activation"], it["caption"], it["label"], hm(it)) for it in items]


def _heatmaps(db: Index, ctx: SaeCtx, fid: int, n_top: int) -> Heat:
    """Patch maps of the shown top rows (kind 0, bin 0) and of the quantile rows (kind 1), keyed by
    (kind, bin, sample_id): a sample is in a feature's top list once and in one bin (patch SAEs only)."""
    rows = db.cursor().execute(
        "SELECT 0 AS kind, 0 AS bin, sample_id, heatmap, heatmap_scale FROM feature_top "
        "WHERE sae_id = ? AND feature_id = ? AND rank < ? UNION ALL "
        "SELECT 1, bin, sample_id, heatmap, heatmap_scale FROM feature_quantiles WHERE sae_id = ? AND feature_id = ?",
        [ctx.sae_id, fid, n_top, ctx.sae_id, fid]).fetchall()
    return {(int(k), int(b), int(sid)): (h, sc) for k, b, sid, h, sc in rows}


def feature_view(db: Index, ctx: SaeCtx, fid: int) -> FeatureView:
    """Everything on a feature page; cached per (index, sae, feature): the index never changes."""
    return db.cached(("feature_view", ctx.sae_id, fid), lambda: _feature_view(db, ctx, fid))


def _feature_view(db: Index, ctx: SaeCtx, fid: int) -> FeatureView:
    page = _page(db, ctx, fid)
    heat = _heatmaps(db, ctx, fid, N_TOP_SHOWN) if needs_heatmaps(ctx, page) else None
    return build_feature_view(db, ctx, fid, page, heat, _alignment(db, ctx, fid))


def needs_heatmaps(ctx: SaeCtx, page: dict[str, Any]) -> bool:
    return ctx.summary.is_patch and bool(page["top"] or page["quantiles"])


def build_feature_view(db: Index, ctx: SaeCtx, fid: int, page: dict[str, Any], heat: Heat | None,
                       alignment: FeatureAlignment | None) -> FeatureView:
    """The page from its fetched parts (document, patch maps, alignment): separate from the lookups
    so a static-site publish can fetch them for a few hundred features in one query each."""
    sid = ctx.sae_id
    top_items, q_items = page["top"][:N_TOP_SHOWN], page["quantiles"]
    bins: dict[int, list[SampleRef]] = {}
    for it, ref in zip(q_items, _refs(ctx, q_items, heat, kind=1), strict=True):
        bins.setdefault(int(it["bin"]), []).append(ref)
    n_bins = _quantile_bins(db)
    max_act = page["feature"].get("max_act") or 0.0
    if n_bins and bins:  # every bin, empty ones too, so gaps in the activation range show
        bins = {b: bins.get(b, []) for b in range(n_bins)}
    neighbors = [Neighbor.model_construct(
        feature_id=n["feature_id"], title=feature_title(n["feature_id"], n["name"], n.get("name_score")), cosine=n["cosine"],
        url=f"/sae/{sid}/feature/{n['feature_id']}", thumbs=_refs(ctx, n["thumbs"])) for n in page["neighbors"]]
    coactivation = [CoNeighbor.model_construct(
        feature_id=n["feature_id"], title=feature_title(n["feature_id"], n["name"], n.get("name_score")), jaccard=n["jaccard"],
        n_both=n["n_both"], url=f"/sae/{sid}/feature/{n['feature_id']}", thumbs=_refs(ctx, n["thumbs"]))
        for n in page.get("coactivation", [])]
    return FeatureView.model_construct(
        sae=ctx.summary, feature=feature_summary(sid, page["feature"]), top=_refs(ctx, top_items, heat),
        quantiles=[QuantileBin.model_construct(bin=b, samples=s, lo=max_act * b / n_bins if n_bins else None,
                                               hi=max_act * (b + 1) / n_bins if n_bins else None)
                   for b, s in sorted(bins.items())],
        hist=_trimmed_hist(page["hist"]["edges"], page["hist"]["counts"]),
        labels=[LabelCount.model_construct(**r) for r in page["labels"]], neighbors=neighbors, coactivation=coactivation,
        coactivation_undercount=_coactivation_undercount(db, sid),
        concepts=[Concept.model_construct(**c) for c in page.get("concepts", [])],
        alignment=alignment,
        prev_url=f"/sae/{sid}/feature/{fid - 1}" if fid > 0 else None,
        next_url=f"/sae/{sid}/feature/{fid + 1}" if fid + 1 < ctx.d_sae else None,
        random_url=f"/sae/{sid}/feature/random")


ALIGNMENT_SELECT = ("a.max_cos, a.best_neuron, a.n_above, a.cosines, s.threshold, s.n_neurons "
                    "FROM feature_alignment a JOIN sae_alignment s USING (sae_id)")
"""What `alignment_of` reads, for one feature here and for a chunk of them when publishing."""


def _alignment(db: Index, ctx: SaeCtx, fid: int) -> FeatureAlignment | None:
    """Most SAEs have no alignment (only layers whose neurons are known): known per SAE, that skips
    a query costing ~0.7 ms of CPU on every feature page."""
    if not db.cached(("has_alignment", ctx.sae_id),
                     lambda: bool(db.scalar("SELECT count(*) FROM sae_alignment WHERE sae_id = ?", [ctx.sae_id]))):
        return None
    row = db.one(f"SELECT {ALIGNMENT_SELECT} WHERE a.sae_id = ? AND a.feature_id = ?", [ctx.sae_id, fid])
    return alignment_of(row) if row is not None else None


def alignment_of(row: dict[str, Any]) -> FeatureAlignment:
    """A feature_alignment row (joined with its sae_alignment threshold and n_neurons)."""
    raw = row.pop("cosines")
    cosines = [b / 127 for b in array("b", bytes(raw))] if raw is not None else None
    return FeatureAlignment.model_construct(**row, cosines=cosines)


def _quantile_bins(db: Index) -> int | None:
    """The index's number of equal activation bins (index_meta `quantile_bins`)."""
    def read() -> int | None:
        raw = db.scalar("SELECT value FROM index_meta WHERE key = 'quantile_bins'")
        return int(raw) if raw and str(raw).isdigit() and int(raw) > 0 else None
    return db.cached(("quantile_bins",), read)


def _coactivation_undercount(db: Index, sae_id: str) -> int:
    """How many shared samples an SAE's co-activation counts may miss (index_meta
    `coactivation_undercount`, JSON {sae_id: bound}; 0: exact, also for indexes without the key)."""
    def read() -> dict:
        raw = db.scalar("SELECT value FROM index_meta WHERE key = 'coactivation_undercount'")
        try:
            bounds = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return bounds if isinstance(bounds, dict) else {}
    bound = db.cached(("coactivation_undercount",), read).get(sae_id, 0)
    return int(bound) if isinstance(bound, int) and bound > 0 else 0


def _trimmed_hist(edges: list[float], counts: list[int]) -> Histogram:
    """Drop the empty bins below the lowest activation: the fixed log range spans 4 decades under
    the maximum, and most features use only the top of it."""
    first = next((i for i, c in enumerate(counts) if c), 0)
    return Histogram.model_construct(edges=edges[first:], counts=counts[first:])


def feature_card(db: Index, ctx: SaeCtx, fid: int) -> FeatureCard:
    page = _page(db, ctx, fid)
    summary = feature_summary(ctx.sae_id, page["feature"])
    return FeatureCard.model_construct(**dict(summary), top=_refs(ctx, page["top"][:N_CARD_THUMBS]))


N_EXAMPLES = 6
MIN_PURITY = 0.5
"""A first-look feature's most common label covers at least half of its PURITY_TOP top samples."""
PURITY_TOP = 16
"""Purity is measured on the samples a name describes (precompute.naming.NAME_TOP), not on all top-N."""


def example_features(db: Index, ctx: SaeCtx) -> list[FeatureCard]:
    """A first look at an SAE, by a stated purity rule: firing features whose most common label
    covers at least MIN_PURITY of their PURITY_TOP most activating samples, purest first (then
    best name score, strongest), at most one per feature-map cluster and per label so the examples
    differ. Without labels: the best-scored names, then the strongest."""
    rank = "purity DESC NULLS LAST, name_score DESC NULLS LAST, max_act DESC, feature_id"

    def pick() -> list[FeatureCard]:
        # A feature pure on 4 samples is luck, not meaning: ask for ~20 where the dataset allows.
        min_fired = max(N_CARD_THUMBS, min(20, (ctx.summary.n_samples or 0) // 50))
        rows = db.all(
            f"""WITH lab AS (SELECT t.feature_id, s.label, count(*) AS c FROM feature_top t
                             JOIN samples s ON s.dataset_id = ? AND s.sample_id = t.sample_id
                             WHERE t.sae_id = ? AND t.rank < ? AND s.label IS NOT NULL GROUP BY t.feature_id, s.label),
                p AS (SELECT feature_id, arg_max(label, c) AS lab, max(c) / sum(c) AS purity FROM lab GROUP BY feature_id),
                cand AS (SELECT f.*, p.purity, p.lab FROM features f LEFT JOIN p USING (feature_id)
                         WHERE f.sae_id = ? AND f.n_fired >= ? AND (p.purity IS NULL OR p.purity >= ?))
                SELECT feature_id, purity, lab FROM (
                  SELECT * FROM cand
                  QUALIFY row_number() OVER (PARTITION BY CASE WHEN cluster_id >= 0 THEN cluster_id ELSE -1 - feature_id END
                                             ORDER BY {rank}) = 1)
                QUALIFY row_number() OVER (PARTITION BY coalesce(lab, feature_id::VARCHAR) ORDER BY {rank}) = 1
                ORDER BY {rank} LIMIT ?""",
            [ctx.dataset_id, ctx.sae_id, PURITY_TOP, ctx.sae_id, min_fired, MIN_PURITY, N_EXAMPLES])
        cards = []
        for r in rows:
            card = feature_card(db, ctx, r["feature_id"])
            if r["purity"] is not None:
                card.top_label, card.top_label_fraction = r["lab"], r["purity"]
            cards.append(card)
        return cards
    return db.cached(("examples", ctx.sae_id), pick)


def random_feature_id(db: Index, ctx: SaeCtx, seed: int | None = None) -> int:
    """A random firing feature (dead ones make dull pages)."""
    n = db.scalar("SELECT count(*) FROM features WHERE sae_id = ? AND density > 0", [ctx.sae_id])
    if not n:
        return 0
    off = random.Random(seed).randrange(n)
    return int(db.scalar("SELECT feature_id FROM features WHERE sae_id = ? AND density > 0 "
                         "ORDER BY feature_id LIMIT 1 OFFSET ?", [ctx.sae_id, off]))
