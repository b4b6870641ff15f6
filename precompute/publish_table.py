"""The columns a published feature table sorts and filters in the browser (static/publish-table.js).

`sae/<id>/search/table.json`, parallel to `features.json`'s `ids` (same features, same order):
`{labels: [distinct top labels], columns: {name_score, name_coverage, density, n_fired, mean_act,
max_act, label_entropy, cluster_id, top_label}}`, where `top_label` holds an index into `labels`
(-1: none) so 65,536 features repeat no strings, and floats keep 10 significant digits: the shortest
form of a 32-bit float (23.6895) would round differently for display than the server's double
(23.6895008 -> 23.690), and 10 digits keep every 3-decimal rounding the server shows. The search page loads it only when a
filter or a sort asks for these columns. Size at 65,536 features: see docs/benchmarks.md.
"""

from __future__ import annotations

import json

from app.db import Index
from app.views.common import SaeCtx

FLOAT_COLS = ("name_score", "name_coverage", "density", "mean_act", "max_act", "label_entropy")
INT_COLS = ("n_fired", "cluster_id")


def _f(v) -> float | int | None:
    if v is None or v != v:
        return None
    r = float(f"{float(v):.10g}")
    return int(r) if r.is_integer() and abs(r) < 2**53 else r


def table_file(db: Index, ctx: SaeCtx, fids: list[int]) -> dict[str, bytes]:
    """Site-relative path -> bytes of the SAE's table columns, for the published features `fids`."""
    keep = set(fids)
    cols = ("feature_id", *FLOAT_COLS, *INT_COLS, "top_label")
    rows = [r for r in db.cursor().execute(
        f"SELECT {', '.join(cols)} FROM features WHERE sae_id = ? ORDER BY feature_id", [ctx.sae_id]).fetchall()
        if r[0] in keep]
    labels = sorted({r[-1] for r in rows if r[-1] is not None})
    pos = {lab: i for i, lab in enumerate(labels)}
    out: dict[str, list] = {c: [] for c in (*FLOAT_COLS, *INT_COLS, "top_label")}
    for r in rows:
        for c, v in zip(cols[1:-1], r[1:-1], strict=True):
            out[c].append(_f(v) if c in FLOAT_COLS else (None if v is None else int(v)))
        out["top_label"].append(pos.get(r[-1], -1))
    doc = {"labels": labels, "columns": out}
    return {f"sae/{ctx.sae_id}/search/table.json": json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()}
