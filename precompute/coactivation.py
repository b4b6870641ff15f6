"""Co-activation neighbours: features that fire on the same samples.

The scan adds, chunk by chunk, how many samples each pair of features fires on together (a
sample fires a feature when its score > 0, as for `density`); nothing is re-read afterwards.
Two features' similarity is the Jaccard index of their firing samples,
n_both / (n_f + n_g - n_both). The pair counts are a dense [d_sae, d_sae] int32 array, so they
are kept only up to COACT_MAX_FEATURES features (256 MB); larger SAEs get no co-activation table.
Each chunk adds its rows' pairs of firing features with index_add_ (cost: rows x (most features
firing on one row)^2, not rows x d_sae^2).
"""

from __future__ import annotations

import numpy as np
import torch

from precompute.encoding import SampleCode

COACT_MAX_FEATURES = 8192
"""Largest SAE whose pair counts are kept: d_sae^2 int32 counts (256 MB at 8192)."""


class CoactivationCounts:
    """Running counts of samples on which two features both fire; `matrix()` is [d_sae, d_sae]
    (symmetric, diagonal = n_fired). Only pairs f < g are added (half the scattered writes), into
    a flat array with one spare slot that absorbs the padding's pairs."""

    PAIR_BUDGET = 1 << 24
    """(feature, feature) pairs generated at once; a chunk's rows are taken in groups below it."""

    def __init__(self, d_sae: int, device: str | torch.device):
        self.d_sae = d_sae
        self.flat = torch.zeros(d_sae * d_sae + 1, dtype=torch.int32, device=device)

    @torch.no_grad()
    def update(self, code: SampleCode, n_rows: int) -> None:
        """Add one chunk. Rows are padded to the most features any row fires ([rows, m], -1 first
        after sorting), so the pairs f < g of a group of rows are one gather and one index_add_."""
        if not code.rows.numel():
            return
        d, dev = self.d_sae, code.rows.device
        per_row = torch.bincount(code.rows, minlength=n_rows)
        m = int(per_row.max())
        pos = torch.arange(code.rows.numel(), device=dev) - (torch.cumsum(per_row, 0) - per_row)[code.rows]
        padded = torch.full((n_rows, m), -1, dtype=torch.long, device=dev)
        padded[code.rows, pos] = code.feats
        padded = padded.sort(dim=1).values  # ascending: a pair (i < j) of positions has f_i < f_j
        self.flat[torch.arange(d, device=dev) * (d + 1)] += torch.bincount(code.feats, minlength=d).int()
        if m < 2:
            return
        iu, ju = torch.triu_indices(m, m, offset=1, device=dev)
        step = max(1, self.PAIR_BUDGET // len(iu))
        for i in range(0, n_rows, step):
            a, b = padded[i : i + step, iu], padded[i : i + step, ju]
            keys = torch.where(a >= 0, a * d + b, d * d).flatten()  # a >= 0 implies b > a >= 0
            self.flat.index_add_(0, keys, torch.ones_like(keys, dtype=torch.int32))

    def matrix(self) -> torch.Tensor:
        upper = self.flat[:-1].view(self.d_sae, self.d_sae)
        return upper + upper.T - torch.diag(upper.diagonal())


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
