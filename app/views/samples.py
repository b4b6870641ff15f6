"""Sample page: which features fire on one dataset sample (with patch heatmaps when known)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from app.db import Index
from app.errors import NotFoundError
from app.models import SampleFeature, SampleRef, SampleView
from app.views.common import SaeCtx, decode_heatmap, feature_title, sample_refs, top_thumbs


def sample_view(db: Index, ctx: SaeCtx, sample_id: int) -> SampleView:
    meta = db.one("SELECT sample_id, source FROM samples WHERE dataset_id = ? AND sample_id = ?",
                  [ctx.dataset_id, sample_id])
    if meta is None:
        raise NotFoundError(f"Dataset {ctx.dataset_id!r} has no sample {sample_id}.")
    sample = sample_refs(db, ctx, [{"sample_id": sample_id}])[0]
    rows = db.all(
        "SELECT t.rank, t.feature_id, t.activation, f.name, f.name_score FROM sample_top t LEFT JOIN features f "
        "ON f.sae_id = t.sae_id AND f.feature_id = t.feature_id "
        "WHERE t.sae_id = ? AND t.sample_id = ? ORDER BY t.rank", [ctx.sae_id, sample_id])
    fids = [int(r["feature_id"]) for r in rows]
    heat: dict[int, list[float] | None] = {}
    if ctx.summary.is_patch and fids:
        # a sample's patch map is stored where it is a top or quantile sample of the feature
        for h in db.all(
                "SELECT feature_id, heatmap, heatmap_scale FROM feature_top WHERE sae_id = ? AND sample_id = ? "
                "AND feature_id IN (SELECT unnest(?::INTEGER[])) UNION ALL "
                "SELECT feature_id, heatmap, heatmap_scale FROM feature_quantiles WHERE sae_id = ? "
                "AND sample_id = ? AND feature_id IN (SELECT unnest(?::INTEGER[]))",
                [ctx.sae_id, sample_id, fids, ctx.sae_id, sample_id, fids]):
            heat.setdefault(int(h["feature_id"]), decode_heatmap(h["heatmap"], h["heatmap_scale"]))
    return build_sample_view(ctx, sample, meta["source"], rows, heat, top_thumbs(db, ctx, fids, 3))


def build_sample_view(ctx: SaeCtx, sample: SampleRef, source: str | None, rows: list[dict[str, Any]],
                      heat: dict[int, list[float] | None], thumbs: dict[int, list[SampleRef]]) -> SampleView:
    """The page from its fetched parts: separate from the lookups so a static-site publish can
    fetch them for a few hundred samples in one query each."""
    feats = [SampleFeature(rank=r["rank"], feature_id=r["feature_id"],
                           title=feature_title(r["feature_id"], r["name"], r["name_score"]), activation=r["activation"],
                           url=f"/sae/{ctx.sae_id}/feature/{r['feature_id']}",
                           heatmap=heat.get(int(r["feature_id"])), thumbs=thumbs.get(int(r["feature_id"]), []))
             for r in rows]
    return SampleView(sae=ctx.summary, sample=sample, source=public_source(source), features=feats)


def public_source(source: str | None) -> str | None:
    """Where the sample came from, without revealing the server's folders: an absolute path
    shows its file name only; relative paths (inside the data root) and URLs stay as they are."""
    if not source:
        return source
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source) and not source.lower().startswith("file:"):
        return source
    path = source.split("://", 1)[-1]
    if path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", path) or path.startswith("~"):
        return PurePosixPath(path.replace("\\", "/")).name
    return source
