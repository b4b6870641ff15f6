"""Co-activation neighbours: features that fire on the same samples.

The scan adds, chunk by chunk, how many samples each pair of features fires on together (a
sample fires a feature when its score > 0, as for `density`); nothing is re-read afterwards.
Two features' similarity is the Jaccard index of their firing samples,
n_both / (n_f + n_g - n_both). The pair counts are a dense [d_sae, d_sae] int32 array, so they
are kept only up to COACT_MAX_FEATURES features (256 MB); larger SAEs get no co-activation table.
"""

from __future__ import annotations

import numpy as np
import torch

from precompute.encoding import SampleCode

COACT_MAX_FEATURES = 8192
"""Largest SAE whose pair counts are kept: d_sae^2 int32 counts (256 MB at 8192)."""


class CoactivationCounts:
    """Running counts of samples on which two features both fire ([d_sae, d_sae], diagonal = n_fired)."""

    def __init__(self, d_sae: int, device: str | torch.device):
        self.d_sae = d_sae
        self.counts = torch.zeros((d_sae, d_sae), dtype=torch.int32, device=device)

    @torch.no_grad()
    def update(self, code: SampleCode, n_rows: int) -> None:
        """Add one chunk: its firing entries as a sparse [rows, d_sae] 0/1 matrix B, counts += B^T B."""
        if not code.rows.numel():
            return
        dev = code.rows.device
        ones = torch.ones(code.rows.numel(), dtype=torch.float32, device=dev)
        sparse_t = torch.sparse_coo_tensor(torch.stack([code.feats, code.rows]), ones, (self.d_sae, n_rows), check_invariants=False)
        dense = torch.zeros((n_rows, self.d_sae), dtype=torch.float32, device=dev)
        dense[code.rows, code.feats] = 1.0
        # float32 sums of 0/1 are exact below 2^24 rows per chunk
        self.counts += torch.sparse.mm(sparse_t, dense).round_().to(torch.int32)


def top_coactivation(counts: np.ndarray, k: int, min_both: int = 2) -> tuple[np.ndarray, ...]:
    """Per feature, its k features with the highest Jaccard index of firing samples (ties: smaller id),
    among those firing together on at least `min_both` samples. Returns (feature, rank, neighbour,
    jaccard, n_both) row arrays."""
    c = np.asarray(counts, dtype=np.int64)
    d = c.shape[0]
    fired = np.diag(c).copy()
    union = fired[:, None] + fired[None, :] - c
    jac = np.where((c >= min_both) & (union > 0), c / np.maximum(union, 1), 0.0)
    np.fill_diagonal(jac, 0.0)
    k = min(k, max(d - 1, 0))
    order = np.argsort(-jac, axis=1, kind="stable")[:, :k]  # stable: equal scores keep the smaller id first
    vals = np.take_along_axis(jac, order, axis=1)
    f, r = np.nonzero(vals > 0)
    g = order[f, r]
    return f.astype(np.int32), r.astype(np.int32), g.astype(np.int32), vals[f, r].astype(np.float32), c[f, g]
