"""Where a feature fires on the dataset map: its activation on every map sample, as one binary
column in the map's row order (`app.views.points` format), for colouring the map by a feature.

The index keeps a feature's activation for its top-N and activation-bin samples and, per sample,
its 16 strongest features; a sample outside all three gets "no value" (it either does not fire
the feature or fires it more weakly than its 16 strongest features). For TopK SAEs with
k <= 16 on single tokens that covers every firing sample exactly.
"""

from __future__ import annotations

import numpy as np

from app.db import Index
from app.views.points import _quantise, encode

_SQL = """
WITH acts AS (
  SELECT sample_id, activation FROM feature_top WHERE sae_id = ? AND feature_id = ?
  UNION ALL SELECT sample_id, activation FROM feature_quantiles WHERE sae_id = ? AND feature_id = ?
  UNION ALL SELECT sample_id, activation FROM sample_top WHERE sae_id = ? AND feature_id = ?),
best AS (SELECT sample_id, max(activation) AS activation FROM acts GROUP BY sample_id)
SELECT m.sample_id, coalesce(b.activation::DOUBLE, 'NaN'::DOUBLE) AS activation FROM sample_map m LEFT JOIN best b USING (sample_id)
WHERE m.sae_id = ? ORDER BY m.sample_id
"""


def feature_activations(db: Index, sae_id: str, fid: int) -> bytes:
    """Column `act` (uint8; 0: no value, 1-255 between min and max activation), rows as samples.bin."""
    res = db.cursor().execute(_SQL, [sae_id, fid] * 3 + [sae_id]).fetchnumpy()
    return encode_activations(sae_id, fid, np.asarray(res["activation"], dtype=np.float64))


def encode_activations(sae_id: str, fid: int, act: np.ndarray) -> bytes:
    """One feature's activation per map sample (NaN: no value) in the binary points format (also
    what a static-site publish writes, precompute.publish_batch)."""
    q, lo, hi = _quantise(act)
    return encode([("act", q, {"min": lo, "max": hi, "quantised": True})], len(act),
                  {"kind": "feature-activations", "sae_id": sae_id, "feature_id": fid,
                   "n_valued": int(np.isfinite(act).sum())})
