"""Lookups shared by every view: SAEs, samples as gallery tiles, feature summaries."""

from __future__ import annotations

import json
from typing import Any

from app import urls
from app.db import Index
from app.errors import NotFoundError
from app.models import FeatureSummary, SaeSummary, SampleRef

SAE_SQL = """
SELECT s.*, d.modality, d.thumbs_dpath
FROM saes s LEFT JOIN datasets d USING (dataset_id)
"""


def _heldout(config_json: str | None) -> dict[str, Any]:
    """The checkpoint's held-out metrics (saes.config_json `heldout_metrics`), as SaeSummary fields."""
    try:
        m = json.loads(config_json or "{}").get("heldout_metrics") or {}
    except (ValueError, AttributeError):
        return {}
    if not isinstance(m, dict):
        return {}
    num = lambda k: m[k] if isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool) else None  # noqa: E731
    n = num("n_tokens")
    return {"heldout_explained_variance": num("explained_variance"), "heldout_fvu": num("fvu"), "heldout_l0": num("l0"),
            "heldout_never_fired": num("heldout_never_fired"), "heldout_n_tokens": int(n) if n is not None else None,
            "training_dead_fraction": num("dead_fraction")}


def sae_summary(row: dict[str, Any]) -> SaeSummary:
    dead = row.get("dead_fraction")
    return SaeSummary(**_heldout(row.get("config_json")),
        sae_id=row["sae_id"], title=row["title"] or row["sae_id"], dataset_id=row["dataset_id"],
        modality=row.get("modality") or "image", model=row["model"], layer=row["layer"],
        token_selection=row["token_selection"], arch=row["arch"], d_in=row["d_in"],
        d_sae=row["d_sae"], k=row["k"], grid_h=row["grid_h"], grid_w=row["grid_w"],
        n_samples=row["n_samples"], n_tokens=row["n_tokens"], l0=row["l0"],
        explained_variance=row["explained_variance"], fvu=row["fvu"], dead_fraction=dead,
        dead_pct=None if dead is None else 100.0 * dead,
        is_patch=row["grid_h"] is not None and row["grid_w"] is not None,
        url=urls.sae(row["sae_id"]))


class SaeCtx:
    """An SAE plus what views need to render its samples (modality, thumbnails)."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row
        self.summary = sae_summary(row)
        self.sae_id: str = row["sae_id"]
        self.dataset_id: str = row["dataset_id"]
        self.d_sae: int = row["d_sae"]
        self.has_thumbs = self.summary.modality != "text" and bool(row.get("thumbs_dpath"))

    def thumb_url(self, sample_id: int) -> str | None:
        return urls.thumb(self.dataset_id, sample_id) if self.has_thumbs else None


def list_saes(db: Index) -> list[SaeSummary]:
    return [sae_summary(r) for r in db.all(SAE_SQL + " ORDER BY s.title, s.sae_id")]


def get_sae(db: Index, sae_id: str) -> SaeCtx:
    """Cached per process: a miss raises and is not cached, so unknown ids cannot fill the cache."""
    return db.cached(("sae", sae_id), lambda: _load_sae(db, sae_id))


def _load_sae(db: Index, sae_id: str) -> SaeCtx:
    row = db.one(SAE_SQL + " WHERE s.sae_id = ?", [sae_id])
    if row is None:
        raise NotFoundError(f"No SAE named {sae_id!r} in this index.")
    return SaeCtx(row)


def decode_heatmap(blob: bytes | None, scale: float | None) -> list[float] | None:
    """uint8 patch map -> activations (value * scale / 255), per the contract."""
    if blob is None or scale is None:
        return None
    return [round(b * scale / 255.0, 5) for b in blob]


def sample_ref(ctx: SaeCtx, sample_id: int, activation: float | None = None, caption: str | None = None,
               label: str | None = None, heatmap: list[float] | None = None) -> SampleRef:
    """The one builder of gallery tiles (feature pages, cards, search, samples, neighbours)."""
    sid = int(sample_id)
    return SampleRef.model_construct(sample_id=sid, activation=activation, caption=caption, label=label,
                                     thumb_url=ctx.thumb_url(sid), url=urls.sample(ctx.sae_id, sid), heatmap=heatmap)


def sample_refs(db: Index, ctx: SaeCtx, rows: list[dict[str, Any]]) -> list[SampleRef]:
    """Tiles for rows carrying sample_id (+ activation, heatmap, heatmap_scale, and maybe caption/label)."""
    if not rows:
        return []
    if "caption" in rows[0]:
        info = {int(r["sample_id"]): r for r in rows}
    else:  # constants in the IN list let DuckDB skip row groups of a large samples table by their id range
        ids = sorted({int(r["sample_id"]) for r in rows})
        info = {r["sample_id"]: r for r in db.all(
            f"SELECT sample_id, caption, label FROM samples WHERE dataset_id = ? AND sample_id IN ({', '.join('?' * len(ids))})",
            [ctx.dataset_id, *ids])}
    out = []
    for r in rows:
        meta = info.get(int(r["sample_id"]), {})
        out.append(sample_ref(ctx, r["sample_id"], r.get("activation"), meta.get("caption"), meta.get("label"),
                              decode_heatmap(r.get("heatmap"), r.get("heatmap_scale"))))
    return out


FEATURE_COLS = ("feature_id, name, density, n_fired, mean_act, max_act, label_entropy, "
                "top_label, cluster_id, name_score, name_coverage")
WEAK_NAME_SCORE = 0.5
"""precompute.naming.WEAK_NAME_SCORE (the app never imports precompute): weaker names say 'maybe'."""


def feature_title(fid: int, name: str | None, score: float | None = None) -> str:
    if not name:
        return f"feature {fid}"
    return f"maybe {name}" if score is not None and score < WEAK_NAME_SCORE else name


def feature_summary(sae_id: str, row: dict[str, Any]) -> FeatureSummary:
    fid = int(row["feature_id"])
    score = row.get("name_score")
    return FeatureSummary(
        feature_id=fid, name=row["name"], title=feature_title(fid, row["name"], score),
        name_score=score, name_coverage=row.get("name_coverage"),
        name_weak=bool(row["name"]) and score is not None and score < WEAK_NAME_SCORE,
        density=row["density"], n_fired=row["n_fired"], mean_act=row["mean_act"],
        max_act=row["max_act"], label_entropy=row["label_entropy"], top_label=row["top_label"],
        cluster_id=row["cluster_id"], url=urls.feature(sae_id, fid))


def get_feature_row(db: Index, ctx: SaeCtx, fid: int) -> dict[str, Any]:
    row = db.one(f"SELECT {FEATURE_COLS} FROM features WHERE sae_id = ? AND feature_id = ?",
                 [ctx.sae_id, fid])
    if row is None:
        raise NotFoundError(f"SAE {ctx.sae_id!r} has no feature {fid}.")
    return row


def top_thumbs(db: Index, ctx: SaeCtx, fids: list[int], n: int) -> dict[int, list[SampleRef]]:
    """The first n top samples of several features, in one query on the narrow feature_top.

    Captions are looked up only for datasets without thumbnails (text), where they are the tile:
    a lookup of random ids in a CC3M-sized `samples` costs ~200 ms, and reading the features'
    `feature_page` documents instead reads every document of their row groups (~140 ms)."""
    if not fids:
        return {}
    ids = sorted({int(f) for f in fids})
    rows = db.all(
        f"SELECT feature_id, sample_id, activation FROM feature_top WHERE sae_id = ? AND rank < ? "
        f"AND feature_id IN ({', '.join('?' * len(ids))}) ORDER BY feature_id, rank", [ctx.sae_id, int(n), *ids])
    refs = sample_refs(db, ctx, rows) if not ctx.has_thumbs else [
        sample_ref(ctx, r["sample_id"], r["activation"]) for r in rows]
    out: dict[int, list[SampleRef]] = {f: [] for f in fids}
    for r, ref in zip(rows, refs, strict=True):
        out[int(r["feature_id"])].append(ref)
    return out
