"""SAE explorer page data and the quality dashboard."""

from __future__ import annotations

import math

from app.db import Index
from app.models import AlignmentView, Cluster, CurvePoint, DashboardView, ExplorerView, Histogram, LowDensityView, ScatterPoint
from app.views.common import SaeCtx

MAX_LABELED_CLUSTERS = 200
MAX_SCATTER = 4000
N_DENSITY_BINS = 40


def clusters(db: Index, sae_id: str, map_: str) -> list[Cluster]:
    rows = db.all("SELECT cluster_id, name, size, x, y FROM clusters WHERE sae_id = ? AND map = ? "
                  "AND cluster_id >= 0 AND x IS NOT NULL AND y IS NOT NULL "
                  "ORDER BY size DESC NULLS LAST, cluster_id LIMIT ?",
                  [sae_id, map_, MAX_LABELED_CLUSTERS])
    return [Cluster(**r) for r in rows]


def explorer_view(db: Index, ctx: SaeCtx) -> ExplorerView:
    sid = ctx.sae_id
    return ExplorerView(
        sae=ctx.summary, feature_clusters=clusters(db, sid, "features"),
        sample_clusters=clusters(db, sid, "samples"),
        features_bin=f"/sae/{sid}/points/features.bin", samples_bin=f"/sae/{sid}/points/samples.bin",
        n_features=int(db.scalar("SELECT count(*) FROM features WHERE sae_id = ?", [sid])),
        n_map_samples=int(db.scalar("SELECT count(*) FROM sample_map WHERE sae_id = ?", [sid])))


def dashboard_view(db: Index, ctx: SaeCtx) -> DashboardView:
    sid = ctx.sae_id
    n_dead = int(db.scalar("SELECT count(*) FROM features WHERE sae_id = ? AND "
                           "(density IS NULL OR density <= 0)", [sid]))
    lo_hi = db.cursor().execute(
        "SELECT min(log10(density)), max(log10(density)) FROM features WHERE sae_id = ? AND density > 0",
        [sid]).fetchone()
    hist = Histogram(edges=[], counts=[])
    if lo_hi and lo_hi[0] is not None:
        lo, hi = math.floor(lo_hi[0] * 4) / 4, math.ceil(lo_hi[1] * 4) / 4
        hi = max(hi, lo + 0.25)
        n = N_DENSITY_BINS
        width = (hi - lo) / n
        rows = db.all(
            "SELECT least(CAST(floor((log10(density) - ?) / ?) AS INTEGER), ?) AS b, count(*) AS c "
            "FROM features WHERE sae_id = ? AND density > 0 GROUP BY b", [lo, width, n - 1, sid])
        counts = [0] * n
        for r in rows:
            counts[max(0, int(r["b"]))] += int(r["c"])
        hist = Histogram(edges=[lo + i * width for i in range(n + 1)], counts=counts)
    n_live = int(db.scalar("SELECT count(*) FROM features WHERE sae_id = ? AND density > 0 "
                           "AND mean_act > 0", [sid]))
    step = max(1, math.ceil(n_live / MAX_SCATTER))
    scatter = [ScatterPoint(**r) for r in db.all(
        "SELECT feature_id, log10(density) AS log_density, log10(mean_act) AS log_mean_act, "
        "label_entropy FROM features WHERE sae_id = ? AND density > 0 AND mean_act > 0 "
        "AND feature_id % ? = 0 ORDER BY feature_id", [sid, step])]
    curve = [CurvePoint(**r) for r in db.all(
        "SELECT step, n_tokens, loss, fvu, l0, dead_fraction FROM training_curve WHERE sae_id = ? "
        "ORDER BY step", [sid])]
    return DashboardView(sae=ctx.summary, n_dead=n_dead, density_hist=hist, scatter=scatter,
                         curve=curve, alignment=alignment_view(db, sid), low_density=low_density_view(db, sid))


N_ALIGN_BINS = 20


def alignment_view(db: Index, sid: str) -> AlignmentView | None:
    """Histograms of the features' and the random directions' best cosine with any neuron, same bins."""
    base = db.one("SELECT n_neurons, threshold, random_max_cos FROM sae_alignment WHERE sae_id = ?", [sid])
    if base is None:
        return None
    feats = [r["max_cos"] for r in db.all("SELECT max_cos FROM feature_alignment WHERE sae_id = ?", [sid])]
    rand = list(base["random_max_cos"])
    lo, hi = min(feats + rand), max(feats + rand)
    width = (hi - lo) / N_ALIGN_BINS or 1.0
    count = lambda xs: [sum(1 for x in xs if min(int((x - lo) / width), N_ALIGN_BINS - 1) == b) for b in range(N_ALIGN_BINS)]  # noqa: E731
    return AlignmentView(n_neurons=base["n_neurons"], threshold=base["threshold"], edges=[lo + i * width for i in range(N_ALIGN_BINS + 1)],
                         features=count(feats), random=count(rand), n_aligned=sum(1 for x in feats if x > max(rand)),
                         random_max=max(rand))


def low_density_view(db: Index, sid: str) -> LowDensityView | None:
    row = db.one("SELECT feature_ids, gap_decades, mean_pairwise_cos FROM low_density_cluster WHERE sae_id = ?", [sid])
    if row is None:
        return None
    ids = list(row["feature_ids"])
    return LowDensityView(size=len(ids), gap_decades=row["gap_decades"], mean_pairwise_cos=row["mean_pairwise_cos"], feature_ids=ids[:50])
