"""The compact search index a static site searches in the browser (static/publish-search.js).

Per SAE, under `sae/<id>/search/`:
- `features.json`: `{d_sae, ids, names, density}`, parallel arrays of the published features (an id
  query, names for titles, the lasso's selection list, random features);
- `words-<k>.json`: one shard per first character `k` of a word (`a`-`z`, `0`-`9`, `_` for the
  rest): `{word: [name_ids, [feature_id, n_top_samples, ...]]}`, the features whose name holds the
  word and, for each feature, how many of its first `search_top` top samples hold it in their
  caption or label. A query loads only its words' shards; a word's prefixes are in its own shard.

Words are lower-cased runs of letters, digits and `_` (an apostrophe splits them), so whole-word
matching with plurals (car, cars, cares) and prefix fallback work as on the server. Sized for 65,536
features: ~1-2 MB of names plus shards that grow with the top samples' distinct words.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

from app.db import Index
from app.views.common import SaeCtx

WORD_RE = re.compile(r"[^\W]+")
SHARD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def words_of(text: str | None) -> set[str]:
    return set(WORD_RE.findall(text.lower())) if text else set()


def shard_key(word: str) -> str:
    return word[0] if word[0] in SHARD_CHARS else "_"


def _dump(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _sample_words(db: Index, ctx: SaeCtx, sample_ids: set[int]) -> dict[int, set[str]]:
    rows = db.cursor().execute(
        "SELECT sample_id, caption, label FROM samples WHERE dataset_id = ? AND sample_id IN "
        "(SELECT unnest(?::BIGINT[]))", [ctx.dataset_id, sorted(sample_ids)]).fetchall()
    return {int(s): words_of(c) | words_of(lab) for s, c, lab in rows}


def search_files(db: Index, ctx: SaeCtx, fids: list[int], search_top: int) -> dict[str, bytes]:
    """Site-relative path -> bytes of every search file of one SAE."""
    keep = set(fids)
    feats = db.cursor().execute("SELECT feature_id, name, density FROM features WHERE sae_id = ? ORDER BY feature_id",
                                [ctx.sae_id]).fetchall()
    feats = [r for r in feats if r[0] in keep]
    base = f"sae/{ctx.sae_id}/search/"
    out = {base + "features.json": _dump({
        "d_sae": ctx.d_sae, "ids": [r[0] for r in feats], "names": [r[1] for r in feats],
        "density": [None if r[2] is None else round(float(r[2]), 6) for r in feats]})}
    names: dict[str, list[int]] = defaultdict(list)
    for fid, name, _ in feats:
        for w in sorted(words_of(name)):
            names[w].append(fid)
    top = db.cursor().execute("SELECT feature_id, sample_id FROM feature_top WHERE sae_id = ? AND rank < ? "
                              "ORDER BY feature_id, rank", [ctx.sae_id, search_top]).fetchall()
    top = [(int(f), int(s)) for f, s in top if f in keep]
    swords = _sample_words(db, ctx, {s for _, s in top})
    counts: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for fid, sid in top:
        for w in swords.get(sid, ()):
            counts[w][fid] += 1
    shards: dict[str, dict[str, list]] = defaultdict(dict)
    for w in sorted(set(names) | set(counts)):
        flat = [v for fid, n in sorted(counts.get(w, {}).items()) for v in (fid, n)]
        shards[shard_key(w)][w] = [names.get(w, []), flat]
    for key, shard in sorted(shards.items()):
        out[f"{base}words-{key}.json"] = _dump(shard)
    return out
