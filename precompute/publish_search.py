"""The compact search index a static site searches in the browser (static/publish-search.js).

Built from the index's own `search_terms` (precompute.search_index: the rows the server ranks with),
so the browser ranks as the server does. Per SAE, under `sae/<id>/search/`:
- `features.json`: `{d_sae, ids, names, titles, density}`, parallel arrays of the published features
  (titles as the server shows them: 'maybe <name>' when weak, 'feature N' when unnamed; for an id
  query, the lasso's selection list, random features);
- `words-<k>.json`: one shard per first character `k` of a term (`a`-`z`, `0`-`9`, `_` for the
  rest): `{term: [feature_id, name_weight, concept_weight, ranks_hi, ranks_lo, sample_weight, ...]}`
  (the 64-bit rank set split in two 32-bit halves for JavaScript). A query loads only its words'
  shards, and a word's prefixes live in its own shard.

Only single words are published (bigrams would double the size): a quoted phrase matches its words.
Weights keep 6 decimals. Sized for 65,536 features: see docs/benchmarks.md.
"""

from __future__ import annotations

import json
from collections import defaultdict

from app.db import Index
from app.views.common import SaeCtx, feature_title

SHARD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def shard_key(word: str) -> str:
    return word[0] if word[0] in SHARD_CHARS else "_"


def _dump(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def search_files(db: Index, ctx: SaeCtx, fids: list[int]) -> dict[str, bytes]:
    """Site-relative path -> bytes of every search file of one SAE."""
    keep = set(fids)
    feats = db.cursor().execute("SELECT feature_id, name, density, name_score FROM features WHERE sae_id = ? ORDER BY feature_id",
                                [ctx.sae_id]).fetchall()
    feats = [r for r in feats if r[0] in keep]
    base = f"sae/{ctx.sae_id}/search/"
    out = {base + "features.json": _dump({
        "d_sae": ctx.d_sae, "ids": [r[0] for r in feats], "names": [r[1] for r in feats],
        "titles": [feature_title(r[0], r[1], r[3]) for r in feats],
        "density": [None if r[2] is None else round(float(r[2]), 6) for r in feats]})}
    rows = db.cursor().execute(
        "SELECT term, feature_id, name_weight, concept_weight, ranks, sample_weight FROM search_terms "
        "WHERE sae_id = ? AND NOT contains(term, ' ') ORDER BY term, feature_id", [ctx.sae_id]).fetchall()
    shards: dict[str, dict[str, list]] = defaultdict(dict)
    for term, fid, nw, cw, ranks, sw in rows:
        if fid not in keep:
            continue
        ranks = int(ranks or 0)
        shards[shard_key(term)].setdefault(term, []).extend(
            (fid, _num(nw), _num(cw), ranks >> 32, ranks & 0xFFFFFFFF, _num(sw)))
    for key, shard in sorted(shards.items()):
        out[f"{base}words-{key}.json"] = _dump(shard)
    return out


def _num(v: float | None) -> float | int:
    """6 decimals, and integers without '.0': the shards are mostly numbers."""
    r = round(float(v or 0.0), 6)
    return int(r) if r == int(r) else r
