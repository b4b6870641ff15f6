"""Nearest dataset samples to an activation: what the model "sees" before and after an edit.

Each sample is one vector at the SAE's layer (the mean over its tokens for patch stores, the
token itself otherwise); similarity is cosine. Vectors are read once from the store, normalised
and kept in memory up to a budget; larger stores are streamed chunk by chunk per query.
"""

from __future__ import annotations

import numpy as np
import torch

from sae_core.store import ActivationStore

IN_MEMORY_BYTES = 2 * 2**30
CHUNK_SAMPLES = 16384


class Retrieval:
    def __init__(self, store_dpath, budget_bytes: int = IN_MEMORY_BYTES):
        self.store = ActivationStore(store_dpath)
        self.T = self.store.tokens_per_sample
        self.sample_ids = np.asarray(self.store.sample_ids())
        n, d = self.store.n_samples, self.store.d_in
        self._matrix = self._unit_rows(0, n) if n * d * 4 <= budget_bytes else None

    def _unit_rows(self, first_sample: int, stop_sample: int) -> torch.Tensor:
        rows = self.store.iter_chunks(CHUNK_SAMPLES * self.T, first_sample * self.T, stop_sample * self.T)
        parts = [chunk.float().reshape(-1, self.T, self.store.d_in).mean(1) for _, chunk in rows]
        return torch.nn.functional.normalize(torch.cat(parts), dim=-1)

    def nearest(self, acts: torch.Tensor, n: int = 8) -> list[dict]:
        """acts [tokens, d_in] -> the n most similar samples as {sample_id, cosine}, best first."""
        q = torch.nn.functional.normalize(acts.float().reshape(-1, acts.shape[-1]).mean(0), dim=0)
        if self._matrix is not None:
            sims = self._matrix @ q
            vals, idx = sims.topk(min(n, sims.numel()))
            return [{"sample_id": int(self.sample_ids[i]), "cosine": float(v)} for v, i in zip(vals, idx)]
        best_v, best_i = torch.empty(0), torch.empty(0, dtype=torch.long)
        for first in range(0, self.store.n_samples, CHUNK_SAMPLES):
            stop = min(first + CHUNK_SAMPLES, self.store.n_samples)
            sims = self._unit_rows(first, stop) @ q
            best_v = torch.cat([best_v, sims])
            best_i = torch.cat([best_i, torch.arange(first, stop)])
            keep = best_v.topk(min(n, best_v.numel())).indices
            best_v, best_i = best_v[keep], best_i[keep]
        order = best_v.argsort(descending=True)
        return [{"sample_id": int(self.sample_ids[best_i[i]]), "cosine": float(best_v[i])} for i in order]
