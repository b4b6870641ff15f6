"""Live inspection and steering views: the worker's raw codes joined with what the index knows."""

from __future__ import annotations

from typing import Any

from app.db import Index
from app.errors import InvalidParamError
from app.live_models import InspectView, LiveFeature, LiveSaeResult, SteerView
from app.views.common import SaeCtx, feature_title, get_sae, sample_refs, top_thumbs

MAX_LISTED = 200


def parse_cells(text: str | None, ctx: SaeCtx, what: str = "region") -> list[int] | None:
    """`3,4,10` -> token indices of this SAE's grid, checked."""
    if not text:
        return None
    if not ctx.summary.is_patch:
        raise InvalidParamError(f"{what}: this SAE reads one pooled vector per input; it has no patches to choose")
    n = ctx.summary.grid_h * ctx.summary.grid_w
    try:
        cells = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise InvalidParamError(f"{what} must be comma-separated grid cells, e.g. 0,1,5") from None
    bad = [c for c in cells if not 0 <= c < n]
    if bad:
        raise InvalidParamError(f"{what}: cell {bad[0]} is outside this SAE's {ctx.summary.grid_h}x{ctx.summary.grid_w} grid (0..{n - 1})")
    return cells or None


def _ranked(raw: dict, region: list[int] | None) -> list[tuple[int, float, int]]:
    """(feature, score, peak token) by score; with a region, scored over its tokens only."""
    if region is None:
        return [(f["feature_id"], f["activation"], f["token"]) for f in raw["features"]]
    keep = set(region)
    best: dict[int, tuple[float, int]] = {}
    e = raw["entries"]
    for t, f, v in zip(e["token"], e["feature"], e["value"]):
        if t in keep and (f not in best or v > best[f][0]):
            best[f] = (v, t)
    return sorted(((f, v, t) for f, (v, t) in best.items()), key=lambda r: (-r[1], r[0]))


def _feature_rows(db: Index, sae_id: str, fids: list[int]) -> dict[int, dict[str, Any]]:
    rows = db.all("SELECT * FROM features WHERE sae_id = ? AND feature_id IN (SELECT unnest(?::INTEGER[]))", [sae_id, fids])
    return {int(r["feature_id"]): r for r in rows}


def sae_result(db: Index, ctx: SaeCtx, raw: dict, region: list[int] | None, limit: int) -> LiveSaeResult:
    ranked = _ranked(raw, region)[:limit]
    fids = [f for f, _, _ in ranked]
    rows = _feature_rows(db, ctx.sae_id, fids)
    thumbs = top_thumbs(db, ctx, fids, 3)
    maps = _heatmaps(raw, set(fids)) if raw.get("grid") else {}
    feats = []
    for f, v, t in ranked:
        row = rows.get(f, {})
        peak = row.get("max_act")
        feats.append(LiveFeature(
            feature_id=f, title=feature_title(f, row.get("name"), row.get("name_score")), name=row.get("name") or None,
            name_score=row.get("name_score"), activation=v, relative=(v / peak) if peak else None, max_act=peak, token=t,
            url=f"/sae/{ctx.sae_id}/feature/{f}", heatmap=maps.get(f), thumbs=thumbs.get(f, [])))
    return LiveSaeResult(sae=ctx.summary, grid=raw.get("grid"), n_tokens=raw["n_tokens"], n_firing=len(raw["features"]),
                         region=region, features=feats, entries=raw["entries"])


def _heatmaps(raw: dict, fids: set[int]) -> dict[int, list[float]]:
    n = raw["n_tokens"]
    out: dict[int, list[float]] = {}
    e = raw["entries"]
    for t, f, v in zip(e["token"], e["feature"], e["value"]):
        if f in fids:
            out.setdefault(f, [0.0] * n)[t] = v
    return out


def inspect_view(db: Index, ctx: SaeCtx, response: dict, region: list[int] | None, limit: int) -> InspectView:
    results = []
    for sae_id, raw in response["results"].items():
        other = ctx if sae_id == ctx.sae_id else get_sae(db, sae_id)
        results.append(sae_result(db, other, raw, region if sae_id == ctx.sae_id else None, limit))
    main = results[0]
    return InspectView(sae=ctx.summary, input=_input(db, ctx, response["input"]), grid=main.grid, features=main.features,
                       results=results)


def _input(db: Index, ctx: SaeCtx, described: dict) -> dict:
    """The worker's description of the input, with the sample's tile when it is a dataset sample."""
    out = dict(described)
    if described.get("sample_id") is not None:
        out["sample"] = sample_refs(db, ctx, [{"sample_id": described["sample_id"]}])[0].model_dump()
    return out


def steer_view(db: Index, ctx: SaeCtx, response: dict) -> SteerView:
    targets = response.get("targets", {})
    before, after = {}, {}
    for name, value in targets.items():
        b, a = value["before"], value["after"]
        if name == "neighbors":
            b, a = _neighbor_refs(db, ctx, b), _neighbor_refs(db, ctx, a)
        before[name], after[name] = b, a
    if "features" in before:
        rows = _feature_rows(db, ctx.sae_id, [f["feature_id"] for f in before["features"]])
        for side in (before, after):
            side["features"] = [{**f, "title": feature_title(f["feature_id"], rows.get(f["feature_id"], {}).get("name"),
                                                             rows.get(f["feature_id"], {}).get("name_score"))}
                                for f in side["features"]]
    compare = targets.get("classes", {}).get("compare")
    return SteerView(sae=ctx.summary, input=_input(db, ctx, response["input"]), units=response.get("units", "max"),
                     patches=response.get("patches") or [], edits=response.get("edits", []), before=before, after=after,
                     compare=compare)


def _neighbor_refs(db: Index, ctx: SaeCtx, rows: list[dict]) -> list[dict]:
    refs = sample_refs(db, ctx, [{"sample_id": r["sample_id"]} for r in rows])
    return [{**ref.model_dump(), "cosine": r["cosine"]} for ref, r in zip(refs, rows, strict=True)]
